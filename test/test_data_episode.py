"""The episode format: writing, loading, validation and the reasons given for rejects."""

import json

import numpy as np
import pytest
from PIL import Image

from vlm2vla_ros.data import EpisodeError, load_episodes, write_episode
from vlm2vla_ros.data.episode import episode_from_dict


def frame(value=0):
    return np.full((8, 8, 3), value, dtype=np.uint8)


def small_episode(root, episode_id="ep-1", **kwargs):
    args = dict(
        instruction="pick up the red block",
        source="test",
        frames=[frame(i) for i in range(4)],
        deltas_cm=[[1, 0, 0], [1, 0, 0], [0, 0, -1], [0, 0, 0]],
        gripper=[1, 1, 1, 0],
        subtasks=["move", "move", "grasp", "grasp"],
        final_frame=frame(9),
        success=True,
    )
    args.update(kwargs)
    return write_episode(root, episode_id, **args)


def test_written_episode_loads_back_with_derived_subtask_indices(tmp_path):
    small_episode(tmp_path)
    report = load_episodes([tmp_path])
    assert report.skipped == []
    (episode,) = report.episodes
    assert episode.instruction == "pick up the red block"
    assert [s.subtask_index for s in episode.steps] == [0, 0, 1, 1]
    assert episode.subtask_spans() == [(0, 2, "move"), (2, 4, "grasp")]
    assert episode.deltas_cm().shape == (4, 3) and episode.gripper_states() == [1, 1, 1, 0]
    assert np.asarray(Image.open(episode.image_path(episode.steps[2].image)))[0, 0, 0] == 2


def test_existing_episode_is_never_overwritten(tmp_path):
    small_episode(tmp_path)
    with pytest.raises(FileExistsError):
        small_episode(tmp_path)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"steps": []}, "no actions"),
        ({"instruction": "  "}, "no instruction"),
        ({"steps": [{"image": None, "delta_cm": [0, 0, 0], "gripper": 1}]}, "first step has no image"),
        ({"steps": [{"image": "f.png", "delta_cm": [0, 0], "gripper": 1}]}, "no action"),
        ({"steps": [{"image": "f.png", "delta_cm": [0, 0, 0], "gripper": 2}]}, "gripper must be 0"),
        ({"steps": [{"image": "missing.png", "delta_cm": [0, 0, 0], "gripper": 1}]}, "does not exist"),
        (
            {"steps": [{"image": "f.png", "delta_cm": [0, 0, 0], "gripper": 1, "subtask": "a"},
                       {"image": "f.png", "delta_cm": [0, 0, 0], "gripper": 1}]},
            "some steps name a subtask",
        ),
        (
            {"steps": [{"image": "f.png", "delta_cm": [0, 0, 0], "gripper": 1, "subtask": "a", "subtask_index": 1},
                       {"image": "f.png", "delta_cm": [0, 0, 0], "gripper": 1, "subtask": "b", "subtask_index": 0}]},
            "goes backwards",
        ),
    ],
)
def test_bad_episodes_are_rejected_with_their_cause(tmp_path, change, reason):
    Image.fromarray(frame()).save(tmp_path / "f.png")
    data = {"episode_id": "e", "instruction": "do it", "steps": [{"image": "f.png", "delta_cm": [1, 0, 0], "gripper": 1}]}
    data.update(change)
    with pytest.raises(EpisodeError, match=reason):
        episode_from_dict(data, tmp_path, "e")


def test_jsonl_dataset_counts_each_skipped_line_and_duplicate(tmp_path):
    Image.fromarray(frame()).save(tmp_path / "f.png")
    good = {"episode_id": "a", "instruction": "do it", "steps": [{"image": "f.png", "delta_cm": [1, 0, 0], "gripper": 1}]}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "episode_id": "b", "steps": []}), json.dumps(good), ""]
    (tmp_path / "data.jsonl").write_text("\n".join(lines))
    report = load_episodes([tmp_path / "data.jsonl", tmp_path / "nowhere"])
    assert [e.episode_id for e in report.episodes] == ["a"]
    reasons = [reason for _, reason in report.skipped]
    assert len(reasons) == 4
    assert any("not valid JSON" in r for r in reasons)
    assert any("no actions" in r for r in reasons)
    assert any("duplicate episode_id" in r for r in reasons)
    assert any("does not exist" in r for r in reasons)


@pytest.mark.parametrize("content", [b"", b"not an image"])
def test_empty_or_corrupt_frames_are_rejected(tmp_path, content):
    folder = small_episode(tmp_path)
    (folder / "000002.png").write_bytes(content)
    report = load_episodes([tmp_path])
    assert report.episodes == []
    ((name, reason),) = report.skipped
    assert name == str(folder) and "step 2" in reason and "cannot be read as an image" in reason


def test_episode_folder_without_episode_json_is_reported(tmp_path):
    small_episode(tmp_path)
    (tmp_path / "pngs-only").mkdir()
    Image.fromarray(frame()).save(tmp_path / "pngs-only" / "000000.png")
    (tmp_path / ".staging").mkdir()  # hidden: an interrupted writer's, not an episode
    report = load_episodes([tmp_path])
    assert [e.episode_id for e in report.episodes] == ["ep-1"]
    assert report.skipped == [(str(tmp_path / "pngs-only"), "has no episode.json")]
    assert load_episodes([tmp_path / "pngs-only"]).skipped == [
        (str(tmp_path / "pngs-only"), "holds no episode.json folders and no .jsonl files")
    ]
