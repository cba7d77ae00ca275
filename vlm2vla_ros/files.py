"""Files that appear whole or not at all.

A build, a training run or an experiment cut short (Ctrl-C, a full disk, a power cut) is resumed
from what it left on disk, so a half-written file must never carry the final name: it would be
read back as finished. Each writer here writes `<name>.partial` beside the target and renames it
over the target in one step (atomic on POSIX within a folder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def partial_path(path: Path) -> Path:
    """Where a file is written before it takes its name (a reader's glob for the name skips it)."""
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def replaced_whole(path: Path, mode: str = "w", sync: bool = False) -> Iterator[IO[Any]]:
    """An open file that replaces `path` when the block ends without an exception; on one, the
    partial file is removed and `path` is left as it was. sync: flushed to the disk before the
    rename (for a checkpoint that must survive a power cut)."""
    partial = partial_path(path)
    encoding = None if "b" in mode else "utf-8"
    try:
        with partial.open(mode, encoding=encoding) as file:
            yield file
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_whole(path: Path, data: str | bytes) -> None:
    """path's content replaced by data in one step (text as UTF-8)."""
    with replaced_whole(path, "wb" if isinstance(data, bytes) else "w") as file:
        file.write(data)


def copy_whole(source: Path, target: Path) -> None:
    """A copy of source at target, in one step."""
    with source.open("rb") as original, replaced_whole(target, "wb") as file:
        shutil.copyfileobj(original, file)
