"""Files written whole or not at all: what a resumed build, training run or experiment reads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlm2vla_ros.files import copy_whole, partial_path, replaced_whole, write_whole


def test_a_block_that_raises_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "build.json"
    write_whole(target, "old")
    with pytest.raises(RuntimeError, match="cut short"), replaced_whole(target) as file:
        file.write("half of the new")
        raise RuntimeError("cut short")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.json"]


def test_the_target_takes_the_new_content_only_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "state.pkl"
    write_whole(target, b"old")
    with replaced_whole(target, "wb", sync=True) as file:
        file.write(b"new")
        assert target.read_bytes() == b"old" and partial_path(target).exists()
    assert target.read_bytes() == b"new" and not partial_path(target).exists()


def test_text_is_utf8_and_a_copy_is_whole(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    write_whole(source, "coge el bloque rojo, ¿vale?")
    assert source.read_bytes() == "coge el bloque rojo, ¿vale?".encode()
    copy_whole(source, tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "coge el bloque rojo, ¿vale?"
    with pytest.raises(FileNotFoundError):
        copy_whole(tmp_path / "missing.png", tmp_path / "c.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_copy_cut_off_partway_leaves_no_file_under_either_name(tmp_path: Path, monkeypatch) -> None:
    from vlm2vla_ros import files

    source = tmp_path / "frame.png"
    source.write_bytes(bytes(range(256)) * 40)

    def cut_off(original, copy):
        copy.write(original.read(100))
        raise OSError("no space left on device")

    monkeypatch.setattr(files.shutil, "copyfileobj", cut_off)
    with pytest.raises(OSError, match="no space left"):
        copy_whole(source, tmp_path / "copied.png")
    assert [p.name for p in tmp_path.iterdir()] == ["frame.png"]
