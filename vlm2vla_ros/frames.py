"""Camera frame sources and the image transform the camera node applies (no ROS here).

Sources (the camera node's `source` parameter):
- "sim": the simulated Stretch's head camera (needs the SimBackend in the same process);
- "device:N" or "/dev/videoN": an OpenCV/V4L2 device (the Stretch head D435i colour stream);
- a video file (.mp4, .avi, .mkv, .mov, .webm, .gif);
- a folder of images (.png, .jpg, .jpeg, .bmp), played in name order.
Every source returns HxWx3 uint8 RGB frames; None means "no frame now" (end of a file that
does not loop, or a device read failure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif")
REOPEN_AFTER_FAILURES = 10
"""Failed reads in a row after which a camera device is opened again (a USB camera unplugged
and plugged back in comes back without restarting the node)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ROTATIONS = (0, 90, 180, 270)


class FrameSourceError(RuntimeError):
    """A source that cannot be opened or read; the message says which and why."""


class FrameSource:
    name = "source"

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file."""


class SimFrameSource(FrameSource):
    """Renders the simulated world; `backend` is a sim.backend.SimBackend."""

    name = "sim"

    def __init__(self, backend: Any, width: int = 224, height: int = 224) -> None:
        from .sim.views import image_size_problem

        problem = image_size_problem(width, height)
        if problem:
            raise FrameSourceError(f"source 'sim': {problem}")
        self.backend, self.width, self.height = backend, width, height

    def read(self) -> np.ndarray | None:
        return self.backend.render(self.width, self.height)


class OpenCVSource(FrameSource):
    """A V4L2 device or a video file through cv2.VideoCapture (BGR -> RGB). A device that stops
    giving frames is opened again every REOPEN_AFTER_FAILURES failed reads; a file is not."""

    def __init__(self, target: Any, loop: bool, device: bool = False) -> None:
        import cv2

        self.name = f"opencv:{target}"
        self._cv2 = cv2
        self._target, self._loop, self._device = target, loop and isinstance(target, str), device
        self._failures = 0
        self.reopened = 0
        self._cap = self._open()
        if not self._cap.isOpened():
            raise FrameSourceError(f"OpenCV cannot open {target!r} (no such device or unreadable video)")

    def read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if not ok and self._loop:
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok or frame is None:
            self._failures += 1
            if self._device and self._failures % REOPEN_AFTER_FAILURES == 0:
                self._cap.release()
                self._cap = self._open()
                self.reopened += 1
            return None
        self._failures = 0
        try:
            return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)
        except self._cv2.error as exc:  # a frame of the wrong layout: the camera goes on, this frame is lost
            raise FrameSourceError(f"{self.name} gave a frame that cannot be converted: {exc}") from None

    def _open(self) -> Any:
        cap = self._cv2.VideoCapture(self._target)
        if self._device:
            # one frame queued instead of the driver's usual four: read at 5 Hz from a 30 Hz camera,
            # the oldest of four queued frames is several reads old, yet it is stamped when read
            cap.set(self._cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def close(self) -> None:
        self._cap.release()


class FolderSource(FrameSource):
    """Image files of a folder in name order; loops when asked."""

    def __init__(self, folder: Path, loop: bool) -> None:
        import cv2

        self._cv2 = cv2
        self.name = f"folder:{folder}"
        self.files: list[Path] = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise FrameSourceError(f"folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        self._loop, self._i = loop, 0

    def read(self) -> np.ndarray | None:
        if self._i >= len(self.files):
            if not self._loop:
                return None
            self._i = 0
        path = self.files[self._i]
        self._i += 1
        frame = self._cv2.imread(str(path), self._cv2.IMREAD_COLOR)
        if frame is None:
            raise FrameSourceError(f"cannot read image {path}")
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)


def open_source(spec: str, loop: bool = True, sim_backend: Any = None, width: int = 224, height: int = 224) -> FrameSource:
    """The source named by spec (see the module docstring); raises FrameSourceError."""
    spec = (spec or "").strip()
    if spec == "sim":
        if sim_backend is None:
            raise FrameSourceError(
                "source 'sim' renders the simulated Stretch, which lives in another process here: run the "
                "one-process bringup, or let executor_node publish the frames (parameter sim_camera: true)"
            )
        return SimFrameSource(sim_backend, width or 224, height or 224)
    if spec.startswith("device:"):
        try:
            index = int(spec.split(":", 1)[1])
        except ValueError:
            raise FrameSourceError(f"camera source {spec!r}: 'device:' must be followed by a number") from None
        return OpenCVSource(index, loop=False, device=True)
    if spec.startswith("/dev/video"):
        return OpenCVSource(spec, loop=False, device=True)
    path = Path(spec).expanduser()
    if not spec:
        raise FrameSourceError("camera source is empty: use sim, device:N, /dev/videoN, a video file or a folder")
    if path.is_dir():
        return FolderSource(path, loop)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return OpenCVSource(str(path), loop)
    if path.is_file():
        raise FrameSourceError(f"camera source {spec!r} is a file but not a video ({'/'.join(VIDEO_SUFFIXES)})")
    raise FrameSourceError(f"camera source {spec!r} does not exist (use sim, device:N, a video file or a folder)")


IMAGE_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}
"""The sensor_msgs/Image encodings read here: those a camera driver gives in 8 bits."""


def image_array(encoding: str, height: int, width: int, step: int, data: Any) -> np.ndarray:
    """HxWx3 uint8 RGB from a sensor_msgs/Image's fields (rows may be padded to `step` bytes):
    the one reader of images off the wire and out of bags. Raises ValueError saying what does
    not fit."""
    channels = IMAGE_CHANNELS.get(encoding)
    if channels is None:
        raise ValueError(f"image encoding {encoding!r} is not supported (one of {sorted(IMAGE_CHANNELS)})")
    height, width, step = int(height), int(width), int(step)
    if height < 1 or width < 1:
        raise ValueError(f"an image of {width}x{height} pixels has none")
    if step < width * channels:
        # a row must hold every pixel; a short step would otherwise fail later as a bare reshape error
        raise ValueError(f"an image's step {step} is smaller than width x channels = {width * channels}")
    buffer = np.frombuffer(bytes(data), dtype=np.uint8)
    if buffer.size < height * step:
        raise ValueError(f"an image holds {buffer.size} bytes, fewer than height x step = {height * step}")
    image = buffer[: height * step].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if encoding in ("bgr8", "bgra8"):
        image = image[:, :, 2::-1]
    elif encoding == "rgba8":
        image = image[:, :, :3]
    elif encoding == "mono8":
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def looks_grey(rgb: np.ndarray) -> bool:
    """Whether an RGB frame's three channels are the same everywhere: an infrared or depth
    stream that OpenCV widened to three channels (a RealSense's V4L2 devices include both),
    which no colour camera's noise leaves. The policy reads colours; it would act blind."""
    return rgb.ndim == 3 and rgb.shape[2] == 3 and bool(
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    )


def transform(image: np.ndarray, rotate_deg: int = 0, width: int = 0, height: int = 0) -> np.ndarray:
    """Rotate clockwise by rotate_deg (the RE1 head camera is mounted sideways), then resize.

    width/height 0 keep the size; an HxW (grey) or HxWx4 image becomes HxWx3.
    """
    import cv2

    if rotate_deg not in ROTATIONS:
        raise ValueError(f"rotate_deg must be one of {ROTATIONS}, got {rotate_deg}")
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"frames must be HxWx3, got shape {img.shape}")
    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    if rotate_deg:
        img = cv2.rotate(img, codes[rotate_deg])
    if width or height:
        h, w = img.shape[:2]
        new_w = width or max(1, round(w * height / h))
        new_h = height or max(1, round(h * width / w))
        if (new_w, new_h) != (w, h):
            img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)
