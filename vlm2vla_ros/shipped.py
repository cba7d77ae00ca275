"""The miniature checkpoint that ships with the package (models/vlm2vla-mini), and where the
package's shared data lives: pure Python, so that the CLIs that take `mini` (vlm2vla-eval,
vlm2vla-demo) resolve it without ROS."""

from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path

PACKAGE = "vlm2vla_ros"
SHIPPED_MODEL = "mini"
SHIPPED_MODEL_DIR = ("models", "vlm2vla-mini")


def package_path(*parts: str) -> Path:
    """A path in the package's shared data (config/, models/): colcon's installed share dir
    (found through the ament index) when it holds it, else the source tree (an editable install,
    tests), else the share dir a plain `pip install .` makes under the environment's prefix, which
    no ament index names."""
    try:
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory(PACKAGE), *parts)
        if candidate.exists():
            return candidate
    except Exception:  # not installed with colcon
        pass
    source = Path(__file__).resolve().parents[1].joinpath(*parts)
    if source.exists():
        return source
    # the environment's prefix, the scheme's data dir (/usr/local with Debian's pip), --user's base
    for prefix in (sys.prefix, sysconfig.get_path("data"), site.USER_BASE or ""):
        installed = Path(prefix, "share", PACKAGE, *parts)
        if prefix and installed.exists():
            return installed
    return source


def shipped_model() -> tuple[Path, Path]:
    """(base, adapter) folders of the miniature VLM2VLA checkpoint shipped with the package
    (written by `vlm2vla-experiment --ship-to models/vlm2vla-mini`, docs/miniature.md)."""
    root = package_path(*SHIPPED_MODEL_DIR)
    base, adapter = root / "base", root / "adapter"
    for folder, name in ((base, "config.json"), (adapter, "adapter_config.json")):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"the shipped miniature model is missing {folder / name}; restore models/vlm2vla-mini from the "
                "repository, rebuild it with `vlm2vla-experiment --out runs/mini --ship-to models/vlm2vla-mini`, "
                "or use model_path 'tiny'"
            )
    return base, adapter


def resolve_shipped(model_path: str, adapter_path: str) -> tuple[str, str]:
    """'mini' becomes the shipped base and, unless one is given, its adapter; other values pass."""
    if model_path != SHIPPED_MODEL:
        return model_path, adapter_path
    base, adapter = shipped_model()
    return str(base), adapter_path or str(adapter)


def resolve_verifier_model(model_path: str) -> str:
    """The model a verifier loads: 'mini' is the shipped checkpoint's verifier of its own when it
    ships one (`vlm2vla-experiment --ship-to` with verifier_steps, docs/miniature.md finding 36),
    else its base (a verifier judges with the adapter off); other values pass."""
    if model_path != SHIPPED_MODEL:
        return model_path
    base, _adapter = shipped_model()
    verifier = base.parent / "verifier"
    return str(verifier) if (verifier / "config.json").is_file() else str(base)
