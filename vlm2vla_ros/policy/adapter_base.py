"""Which base model an adapter was trained on, so it is never loaded onto another.

A LoRA adapter fits any base of the same shapes: on a different one (the pretrained instead of
the instruction-tuned checkpoint, a miniature base trained again) it loads without an error, and
under constrained decoding it still writes well-formed chunks, which then mean nothing and move
the robot. The trainer records a fingerprint of the base beside the adapter (BASE_FILE);
load_policy compares it with the base it is given. The fingerprint reads the safetensors
headers (every tensor's name, dtype and shape) and the first bytes of every tensor: cheap for a
12B model, the same however the weights are split into files, different for other weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vlm2vla_ros.files import write_whole

from .types import PolicyError

BASE_FILE = "base_fingerprint.json"
"""Beside an adapter's weights: {"fingerprint": ..., "base": the path it was trained from}."""
SAMPLE_BYTES = 4096
"""How much of each tensor's data the fingerprint reads."""
MAX_HEADER_BYTES = 100_000_000
"""safetensors' own cap on a header: a larger size field is not a safetensors file."""


def base_fingerprint(model_dir: str | Path) -> str:
    """A hex digest of the base's weights (names, dtypes, shapes, each tensor's first bytes); ''
    when the folder has no safetensors files (weights in another format are not fingerprinted)."""
    tensors: dict[str, tuple[str, list[int], bytes]] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        file_size = path.stat().st_size
        with path.open("rb") as file:
            size = int.from_bytes(file.read(8), "little")
            if not 0 < size <= min(file_size - 8, MAX_HEADER_BYTES):  # e.g. a Git LFS pointer: "version ..."
                raise ValueError(f"{path} is not a safetensors file (header size {size} in a file of {file_size} "
                                 "bytes; a Git LFS pointer not pulled?)")
            header = json.loads(file.read(size))
            start = 8 + size
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                begin, end = entry["data_offsets"]
                if not 0 <= begin <= end <= file_size - start:
                    raise ValueError(f"{path}: tensor {name}'s data offsets {begin}-{end} lie outside the file")
                file.seek(start + begin)
                tensors[name] = (entry["dtype"], entry["shape"], file.read(min(SAMPLE_BYTES, end - begin)))
    if not tensors:
        return ""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        dtype, shape, sample = tensors[name]
        digest.update(json.dumps([name, dtype, shape]).encode("utf-8"))
        digest.update(sample)
    return digest.hexdigest()


def record_adapter_base(adapter_dir: str | Path, model_dir: str | Path) -> None:
    """Write BASE_FILE beside a freshly saved adapter (nothing when the base has no fingerprint)."""
    fingerprint = base_fingerprint(model_dir)
    target = Path(adapter_dir) / BASE_FILE
    target.unlink(missing_ok=True)
    if fingerprint:
        write_whole(target, json.dumps({"fingerprint": fingerprint, "base": str(model_dir)}, indent=1) + "\n")


def check_adapter_base(model_dir: str | Path, adapter_dir: str | Path) -> None:
    """PolicyError when the adapter records a base other than model_dir; nothing to check when it
    records none (adapters trained before the record, or by other tools) or the base has no
    safetensors weights."""
    path = Path(adapter_dir) / BASE_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        expected, trained_on = str(recorded["fingerprint"]), str(recorded.get("base", "?"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PolicyError(f"{path} cannot be read ({type(exc).__name__}: {exc}); delete it to load the adapter "
                          "unchecked", "load") from None
    try:
        actual = base_fingerprint(model_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a truncated or foreign .safetensors file
        raise PolicyError(f"the weights in {model_dir} cannot be read to check adapter {adapter_dir}'s base "
                          f"({type(exc).__name__}: {exc})", "load") from None
    if actual and actual != expected:
        raise PolicyError(f"adapter {adapter_dir} was trained on another base ({trained_on}) than {model_dir}: "
                          "on it the adapter would write well-formed but meaningless chunks. Give the base it was "
                          f"trained on; if {model_dir} holds the same weights saved again, delete {path} to load "
                          "it unchecked", "load")
