"""The simulated head camera's views (drawn by sim.render), kept free of OpenCV so that
configs and the backend can check a view without importing it."""

from __future__ import annotations

import json
import numbers
from pathlib import Path

TABLE_VIEW, GRIPPER_VIEW = "table", "gripper"
VIEWS = (TABLE_VIEW, GRIPPER_VIEW)
MIN_SIDE, MAX_SIDE = 32, 4096
"""The image sides (pixels) the renderer draws; here so that the tools can refuse others without OpenCV."""


def image_size_problem(width: object, height: object) -> str | None:
    """Why the renderer cannot draw a width x height image, or None when it can. The one check
    behind the renderer, the simulated camera source and the executor's simulated camera, so that
    each refuses a size when it is configured, not on its first frame."""
    for name, side in (("width", width), ("height", height)):
        if isinstance(side, bool) or not isinstance(side, numbers.Integral) or not MIN_SIDE <= side <= MAX_SIDE:
            return f"image {name} must be an integer from {MIN_SIDE} to {MAX_SIDE} pixels, got {side!r}"
    return None


def check_view(view: str) -> str:
    """`view` itself when it is one of VIEWS; a clear ValueError otherwise."""
    if view not in VIEWS:
        raise ValueError(f"camera view must be one of {list(VIEWS)}, got {view!r}.")
    return view


VIEW_FILE = "sim_camera.json"
"""Written into a model folder by the miniature experiment: the view its images were drawn in,
so the demo's simulated camera shows the policy what it was trained on."""


def read_model_view(model_dir: str | Path) -> str:
    """The view a model folder was trained on; TABLE_VIEW when it does not say (older folders,
    models trained elsewhere)."""
    path = Path(model_dir) / VIEW_FILE
    if not path.is_file():
        return TABLE_VIEW
    try:
        view = json.loads(path.read_text(encoding="utf-8"))["view"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} must be JSON with a 'view' key ({list(VIEWS)}): {exc}") from exc
    return check_view(view)


def write_model_view(model_dir: str | Path, view: str) -> Path:
    path = Path(model_dir) / VIEW_FILE
    path.write_text(json.dumps({"view": check_view(view)}) + "\n", encoding="utf-8")
    return path
