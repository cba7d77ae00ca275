"""VLM2VLA for the Hello Robot Stretch RE1: robot actions written as language.

The package is layered: pure-Python cores (``action_language``, ``policy``,
``robot``, ``sim``) that never import ROS, thin rclpy shells in ``nodes``, and
command-line tools in ``tools``.
"""

__version__ = "0.1.0"
