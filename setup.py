"""ament_python package definition; the one place where Python dependencies are declared.

On the robot, colcon builds this and ROS packages come from apt (package.xml). Off the robot,
`scripts/setup_env.sh` installs the extras below into a virtual environment, ROS 2 included
(unofficial pip wheels, see README).
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vlm2vla_ros"

NODES = ["camera_node", "policy_node", "executor_node", "verifier_node"]
TOOLS = {
    "vlm2vla-demo": "demo",
    "vlm2vla-task": "task",
    "vlm2vla-sim": "sim_cli",
    "vlm2vla-bench": "bench",
    "vlm2vla-dataset": "dataset",
    "vlm2vla-train": "train",
    "vlm2vla-eval": "eval",
    "vlm2vla-experiment": "experiment",
    "vlm2vla-reading-budget": "reading_budget",
}
# verifier/: the run's verifier of its own, when the shipped run made one (--ship-to copies it)
MODEL_FOLDERS = ["models/vlm2vla-mini/base", "models/vlm2vla-mini/adapter", "models/vlm2vla-mini/verifier"]
# The one-process graph lives beside the nodes it composes.
BRINGUP = "vlm2vla-bringup = vlm2vla_ros.nodes.bringup:main"

EXTRAS = {
    # Rendering, video and image I/O. Headless OpenCV needs no X/GL system libraries.
    "vision": ["opencv-python-headless>=4.8", "pillow>=10", "imageio>=2.30"],
    # The policy engine. torch is pinned: scripts/setup_env.sh installs its CPU build
    # (2.13.0+cpu, PyTorch's CPU index) first, which this pin accepts; a plain pip install on a
    # GPU box takes PyPI's CUDA build.
    "model": [
        "torch==2.13.0",
        "transformers>=5.0,<6",
        "tokenizers>=0.22",
        "peft>=0.17",
        "accelerate>=1.0",
        "xgrammar>=0.1.20",
    ],
    "gpu": ["bitsandbytes>=0.45"],
    "train": ["matplotlib>=3.9", "tqdm>=4.60"],  # 3.9: boxplot(tick_labels=...), the dataset card
    # ROS 2 off the robot: unofficial Kilted wheels (rclpy with Fast DDS and the message packages
    # the nodes use). No cv-bridge: the PyPI build calls ndarray.tostring, gone in numpy 2, so
    # vlm2vla_ros/nodes/images.py converts images itself, the same code on and off the robot.
    # Never install these on the robot: it has Humble from apt.
    "ros-offline": [
        "ros-kilted-rclpy[fastrtps]",
        "ros-kilted-std-msgs",
        "ros-kilted-std-srvs",
        "ros-kilted-sensor-msgs",
        "ros-kilted-geometry-msgs",
        "ros-kilted-trajectory-msgs",
        "ros-kilted-diagnostic-msgs",
        "ros-kilted-builtin-interfaces",
    ],
    "bags": ["rosbags>=0.11"],
    # Real hardware (on the robot's NUC only).
    "robot": ["hello-robot-stretch-body>=0.7.30"],
    "dev": [
        "pytest>=7",
        "pytest-timeout>=2",
        "hypothesis>=6.100",
        "ruff>=0.8",
        "vermin>=1.6",
        "colcon-core",
        "colcon-ros",
        "colcon-python-setup-py",
        "colcon-package-information",
        "ros-kilted-ament-package",
    ],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/miniature", glob("config/miniature/*.txt")),
        # The miniature VLM2VLA checkpoint (the offline demo's default model, docs/miniature.md).
        *[(f"share/{PACKAGE}/{folder}", glob(f"{folder}/*")) for folder in MODEL_FOLDERS],
    ],
    python_requires=">=3.10",
    install_requires=["numpy>=1.21", "PyYAML>=5.4"],
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer="vlm2vla_ros maintainers",
    maintainer_email="maintainers@vlm2vla-ros.invalid",
    description="VLM2VLA (actions as language) on the Hello Robot Stretch RE1, as ROS 2 nodes.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [f"{node} = {PACKAGE}.nodes.{node}:main" for node in NODES]
        + [f"{tool} = {PACKAGE}.tools.{module}:main" for tool, module in TOOLS.items()]
        + [BRINGUP],
    },
)
