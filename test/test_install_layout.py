"""Build the package with colcon, as on the robot, and check ROS finds everything it needs.

`ros2 launch vlm2vla_ros stretch.launch.py` and `ros2 run vlm2vla_ros policy_node` work only if
the launch file, the config files, the shipped miniature model, the ament resource marker and one
executable per node land in the places ROS looks. This builds into a temporary workspace and
checks those places.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "vlm2vla_ros"
NODE_EXECUTABLES = ["camera_node", "policy_node", "executor_node", "verifier_node"]
TOOL_EXECUTABLES = ["vlm2vla-demo", "vlm2vla-task", "vlm2vla-sim", "vlm2vla-bench", "vlm2vla-bringup",
                    "vlm2vla-dataset", "vlm2vla-train", "vlm2vla-eval", "vlm2vla-experiment", "vlm2vla-reading-budget"]
REQUIRED_LAUNCH_FILES = ["stretch.launch.py"]


def _colcon() -> str:
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists() or importlib.util.find_spec("ament_package") is None:
        pytest.skip("colcon or ament_package is not installed (scripts/setup_env.sh installs both)")
    return str(colcon)


@pytest.fixture(scope="module")
def install_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / PACKAGE
    # Build from a copy of the tracked sources so the check sees what a fresh clone has.
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    result = subprocess.run(
        [_colcon(), "--log-base", str(ws / "log"), "build", "--base-paths", str(ws / "src"),
         "--build-base", str(ws / "build"), "--install-base", str(ws / "install")],
        cwd=ws, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout}\n{result.stderr}"
    return ws / "install" / PACKAGE


def test_ament_index_and_manifest(install_dir: Path) -> None:
    assert (install_dir / "share/ament_index/resource_index/packages" / PACKAGE).is_file()
    assert (install_dir / "share" / PACKAGE / "package.xml").is_file()


def test_launch_and_config_files_installed(install_dir: Path) -> None:
    share = install_dir / "share" / PACKAGE
    source_launch = sorted(p.name for p in (REPO / "launch").glob("*.launch.py"))
    source_config = sorted(p.name for p in (REPO / "config").glob("*.yaml"))
    for name in REQUIRED_LAUNCH_FILES:
        assert name in source_launch, f"launch/{name} is missing from the source tree"
    assert source_config, "config/ holds no YAML file"
    assert sorted(p.name for p in (share / "launch").glob("*.launch.py")) == source_launch
    assert sorted(p.name for p in (share / "config").glob("*.yaml")) == source_config


def test_shipped_miniature_checkpoint_installed(install_dir: Path) -> None:
    """The offline demo's default model ('mini') must be found in the share dir after colcon."""
    shipped = REPO / "models" / "vlm2vla-mini"
    source = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert {"base", "adapter"} <= {p.parts[0] for p in source} <= {"base", "adapter", "verifier"}
    installed = install_dir / "share" / PACKAGE / "models" / "vlm2vla-mini"
    for rel in source:
        assert (installed / rel).read_bytes() == (shipped / rel).read_bytes(), rel


def _entry_points(install_dir: Path) -> dict[str, str]:
    site = next((install_dir / "lib").glob("python3*/site-packages"))
    parser = configparser.ConfigParser()
    parser.read(next(site.glob(f"{PACKAGE}-*.egg-info")) / "entry_points.txt")
    return dict(parser["console_scripts"])


@pytest.mark.parametrize("name", NODE_EXECUTABLES + TOOL_EXECUTABLES)
def test_executable_installed_with_its_module(install_dir: Path, name: str) -> None:
    exe = install_dir / "lib" / PACKAGE / name
    assert exe.is_file(), f"{name} is not installed in lib/{PACKAGE}, so ros2 run cannot find it"
    target = _entry_points(install_dir)[name]
    module, _, function = target.partition(":")
    site = next((install_dir / "lib").glob("python3*/site-packages"))
    source = site / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"{name} points at {module}, which is not installed"
    tree = ast.parse(source.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body), (
        f"{module} has no top-level {function}() for {name}"
    )


def test_shared_data_is_found_after_a_plain_pip_install(tmp_path, monkeypatch):
    """`pip install .` (not editable, no colcon) puts config/ and models/ under the environment's
    share/vlm2vla_ros, which no ament index names; a source checkout's own files come first."""
    from vlm2vla_ros import shipped

    site = tmp_path / "lib" / "site-packages"
    (site / "vlm2vla_ros").mkdir(parents=True)
    share = tmp_path / "share" / "vlm2vla_ros"
    (share / "config").mkdir(parents=True)
    (share / "config" / "vlm2vla.yaml").write_text("{}\n")
    source_tree = shipped.package_path("config", "vlm2vla.yaml")
    assert source_tree == Path(shipped.__file__).resolve().parents[1] / "config" / "vlm2vla.yaml"
    monkeypatch.setattr(shipped, "__file__", str(site / "vlm2vla_ros" / "shipped.py"))
    monkeypatch.setattr(shipped.sys, "prefix", str(tmp_path))
    assert shipped.package_path("config", "vlm2vla.yaml") == share / "config" / "vlm2vla.yaml"
    assert shipped.package_path("config", "missing.yaml") == site / "config" / "missing.yaml"  # named in errors
