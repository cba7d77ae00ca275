"""Dataset building from scripted-expert episodes: every stage, the merge rule, split, resume."""

import hashlib
import json

import pytest

from vlm2vla_ros.action_language import (
    ActionChunk,
    ActionLimits,
    ActionStep,
    parse_action_chunk,
    verbalise_moves,
)
from vlm2vla_ros.data import (
    BuildConfig,
    LabellerSettings,
    build_dataset,
    load_episodes,
    make_labeller,
    split_of,
)
from vlm2vla_ros.data.builder import repeat_stages
from vlm2vla_ros.data.card import write_card
from vlm2vla_ros.data.sim_source import export_sim_episodes
from vlm2vla_ros.tools.dataset import main as dataset_main


@pytest.fixture(scope="module")
def episodes_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    report = export_sim_episodes(root, ["pick_up", "put_in"], [0, 1], image_size=48)
    assert len(report.written) == 4
    return root


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_stage_is_written_from_the_prompts_with_merged_chunks(episodes_dir, tmp_path):
    loaded = load_episodes([episodes_dir])
    out = tmp_path / "ds"
    report = build_dataset(loaded.episodes, out, make_labeller(LabellerSettings("verbaliser")))
    examples = lines(out / "train.jsonl") + lines(out / "val.jsonl")
    stages = {e["stage"] for e in examples}
    assert stages == {"subtasks", "plan", "chunk", "verify", "direction"}
    assert sum(sum(c.values()) for c in report.counts.values()) == len(examples)
    limits = ActionLimits()
    for e in examples:
        assert e["messages"][-1]["role"] == "assistant"
        for image in e["images"]:
            assert (out / image).is_file()
        if e["stage"] == "chunk":
            chunk = parse_action_chunk(e["messages"][-1]["content"][0]["text"], limits)
            assert 1 <= len(chunk) <= limits.max_steps
            # merged moves: far larger than the expert's <= 1 cm steps
            assert max(abs(v) for s in chunk.steps for v in (s.dx, s.dy, s.dz)) > 1.5
            # the chunk continues the plan conversation, and the plan describes this chunk
            assert e["messages"][1]["content"][0]["text"] == e["meta"]["plan"]
            steps = tuple(ActionStep(*s) for s in e["meta"]["chunk"])
            assert e["meta"]["plan"] in (verbalise_moves(ActionChunk(steps)), verbalise_moves(ActionChunk(steps), 1),
                                         verbalise_moves(ActionChunk(steps), 0))
    verify = [e for e in examples if e["stage"] == "verify"]
    assert {e["messages"][-1]["content"][0]["text"] for e in verify} == {"advance", "retry"}
    assert all(len(e["images"]) == 2 for e in verify)
    subtasks = [e for e in examples if e["stage"] == "subtasks"]
    assert len(subtasks) == 4
    assert subtasks[0]["messages"][-1]["content"][0]["text"].startswith("1. move above the")


def test_plan_totals_start_every_plan_with_the_move_left_in_its_subtask(episodes_dir, tmp_path):
    from vlm2vla_ros.action_language import plan_with_total, read_plan_total

    loaded = load_episodes([episodes_dir])
    out = tmp_path / "ds"
    build_dataset(loaded.episodes, out, make_labeller(LabellerSettings("verbaliser")),
                  BuildConfig(plan_totals=True, verify_examples=False, direction_examples=False))
    examples = lines(out / "train.jsonl") + lines(out / "val.jsonl")
    chunks = [e for e in examples if e["stage"] == "chunk"]
    assert chunks and len(chunks) == sum(e["stage"] == "plan" for e in examples)
    for e in chunks:
        plan = e["meta"]["plan"]
        steps = [ActionStep(*s) for s in e["meta"]["chunk"]]
        stated = read_plan_total(plan)
        assert stated is not None
        # one window per subtask here: the move left is the whole chunk's sum, to the rounding of the merge
        total, words = stated
        assert plan == plan_with_total(words, total)
        assert words in (verbalise_moves(steps), verbalise_moves(steps, 1), verbalise_moves(steps, 0))
        summed = [sum(getattr(s, axis) for s in steps) for axis in ("dx", "dy", "dz")]
        assert all(abs(a - b) <= 0.05 * len(steps) + 0.051 for a, b in zip(total, summed)), (plan, summed)
        assert e["messages"][1]["content"][0]["text"] == plan  # the chunk continues the plan conversation
    assert any(max(abs(v) for v in read_plan_total(e["meta"]["plan"])[0]) > 3 for e in chunks)


def test_split_is_by_episode_and_deterministic(episodes_dir, tmp_path):
    loaded = load_episodes([episodes_dir])
    out = tmp_path / "ds"
    build_dataset(loaded.episodes, out, make_labeller(LabellerSettings("annotations")), BuildConfig(val_fraction=0.3))
    train = {e["episode_id"] for e in lines(out / "train.jsonl")}
    val = {e["episode_id"] for e in lines(out / "val.jsonl")}
    assert train and val and not train & val
    groups = {e["episode_id"]: e["split_group"] for e in lines(out / "train.jsonl") + lines(out / "val.jsonl")}
    # validation holds the groups hashed into it; with none hashed there, the one of lowest hash
    hashed = {g for g in groups.values() if split_of(g, 0.3, "vlm2vla") == "val"}
    lowest = min(set(groups.values()), key=lambda g: hashlib.sha256(f"vlm2vla:{g}".encode()).digest())
    assert {groups[i] for i in val} == (hashed or {lowest})
    # pinned: SHA-256 of "salt:group" is the same on every machine and run (Python's hash() is not)
    assert [split_of(f"sim-scene-{i:05d}", 0.3, "vlm2vla") for i in range(5)] == ["train", "train", "val", "val", "val"]
    assert split_of("sim-scene-00001", 0.33, "vlm2vla") == "val"  # its hash is 0.3213...


@pytest.mark.parametrize("exported_before_groups", [False, True])
def test_one_demonstration_in_two_languages_lands_in_one_split(tmp_path, exported_before_groups):
    """An es episode is the en one's scene and moves with other words: were it validated while
    its twin trains, validation would score what the model was trained on. An export made before
    episodes carried a split group is grouped by its ids."""
    root = tmp_path / "episodes"
    for lang in ("en", "es"):
        export_sim_episodes(root, ["pick_up"], range(8), image_size=32, lang=lang)
    export_sim_episodes(root, ["stack"], range(8), image_size=32)  # the same tables, another task
    if exported_before_groups:
        for file in root.glob("*/episode.json"):
            data = json.loads(file.read_text())
            del data["meta"]["split_group"]
            file.write_text(json.dumps(data))
    out = tmp_path / "ds"
    build_dataset(load_episodes([root]).episodes, out, make_labeller(LabellerSettings("annotations")), BuildConfig(val_fraction=0.5))
    split_by_id = {e["episode_id"]: name for name in ("train", "val") for e in lines(out / f"{name}.jsonl")}
    assert len(split_by_id) == 24 and set(split_by_id.values()) == {"train", "val"}
    for seed in range(8):
        assert split_by_id[f"sim-pick_up-en-{seed:05d}"] == split_by_id[f"sim-pick_up-es-{seed:05d}"]
        # a scene's objects and places come from its seed alone: its other tasks are split with it
        assert split_by_id[f"sim-stack-en-{seed:05d}"] == split_by_id[f"sim-pick_up-en-{seed:05d}"]


def test_rerun_resumes_and_other_settings_are_refused(episodes_dir, tmp_path):
    loaded = load_episodes([episodes_dir])
    out = tmp_path / "ds"
    labeller = make_labeller(LabellerSettings("annotations"))
    first = build_dataset(loaded.episodes[:2], out, labeller)
    before = (out / "episodes" / f"{loaded.episodes[0].episode_id}.jsonl").stat().st_mtime_ns
    second = build_dataset(loaded.episodes, out, labeller)
    assert len(first.episodes_built) == 2
    assert sorted(second.episodes_resumed) == sorted(first.episodes_built) and len(second.episodes_built) == 2
    assert (out / "episodes" / f"{loaded.episodes[0].episode_id}.jsonl").stat().st_mtime_ns == before
    assert len({e["episode_id"] for e in lines(out / "train.jsonl") + lines(out / "val.jsonl")}) == 4
    with pytest.raises(ValueError, match="different settings"):
        build_dataset(loaded.episodes, out, labeller, BuildConfig(direction_examples=False))
    (out / "build.json").write_text('{"config": {"val_fr')  # cut short: the settings are unknown, not "the same"
    with pytest.raises(ValueError, match="cannot be read, so the settings .* are unknown"):
        build_dataset(loaded.episodes, out, labeller, BuildConfig(direction_examples=False))


def test_a_build_cut_off_mid_copy_leaves_no_half_frame_for_the_rerun(episodes_dir, tmp_path, monkeypatch):
    """A killed build keeps no truncated PNG that the rerun would take as copied and training
    would only fail on hours in."""
    from vlm2vla_ros import files

    loaded = load_episodes([episodes_dir])
    out = tmp_path / "ds"
    labeller = make_labeller(LabellerSettings("annotations"))
    real_copy = files.shutil.copyfileobj

    def killed_mid_copy(source, target):
        target.write(source.read()[:20])
        target.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(files.shutil, "copyfileobj", killed_mid_copy)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(loaded.episodes[:1], out, labeller)
    monkeypatch.setattr(files.shutil, "copyfileobj", real_copy)
    build_dataset(loaded.episodes[:1], out, labeller)
    episode = loaded.episodes[0]
    copied = sorted((out / "images" / episode.episode_id).glob("*.png"))
    assert copied and all(c.read_bytes() == episode.image_path(c.name).read_bytes() for c in copied)


def test_a_first_build_cut_short_is_resumed_only_with_its_settings(episodes_dir, tmp_path, monkeypatch):
    """build.json's full record is written at the end; its settings are written first, or a
    rerun with other settings after a Ctrl-C would mix two datasets' episodes."""
    from vlm2vla_ros.data import builder

    loaded = load_episodes([episodes_dir])
    out = tmp_path / "ds"
    labeller = make_labeller(LabellerSettings("annotations"))
    real = builder.episode_examples
    calls = []

    def cut_short(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(builder, "episode_examples", cut_short)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(loaded.episodes, out, labeller)
    monkeypatch.setattr(builder, "episode_examples", real)
    with pytest.raises(ValueError, match="different settings"):
        build_dataset(loaded.episodes, out, labeller, BuildConfig(direction_examples=False))
    report = build_dataset(loaded.episodes, out, labeller)  # the same settings go on
    assert len(report.episodes_resumed) == 1 and len(report.episodes_built) == 3


def test_failed_episodes_are_skipped_unless_asked_for(tmp_path, episodes_dir):
    loaded = load_episodes([episodes_dir])
    loaded.episodes[0].success = False
    report = build_dataset(loaded.episodes[:2], tmp_path / "a", make_labeller(LabellerSettings("annotations")))
    assert [e for e, _ in report.skipped] == [loaded.episodes[0].episode_id]
    report = build_dataset(
        loaded.episodes[:2], tmp_path / "b", make_labeller(LabellerSettings("annotations")), BuildConfig(include_failed=True)
    )
    assert len(report.episodes_built) == 2


def test_unannotated_episode_falls_back_from_annotations_to_one_subtask(tmp_path, episodes_dir):
    data = json.loads((episodes_dir / "sim-pick_up-en-00000" / "episode.json").read_text())
    for step in data["steps"]:
        step.pop("subtask"), step.pop("subtask_index")
    data["episode_id"] = "plain"
    (tmp_path / "plain.jsonl").write_text(json.dumps(data))
    for step in data["steps"]:
        step["image"] = str(episodes_dir / "sim-pick_up-en-00000" / step["image"]) if step["image"] else None
    data["final_image"] = str(episodes_dir / "sim-pick_up-en-00000" / "final.png")
    (tmp_path / "plain.jsonl").write_text(json.dumps(data))
    loaded = load_episodes([tmp_path / "plain.jsonl"])
    assert loaded.skipped == []
    report = build_dataset(loaded.episodes, tmp_path / "ds", make_labeller(LabellerSettings("annotations")))
    assert report.notes["labeller_fallbacks"] == 1
    # frames named by absolute paths are copied into the dataset under flat names: it stays whole when moved
    copied = {image for e in lines(tmp_path / "ds" / "train.jsonl") + lines(tmp_path / "ds" / "val.jsonl")
              for image in e["images"]}
    assert copied and all(image.startswith("images/plain/") and (tmp_path / "ds" / image).is_file() for image in copied)
    subtasks = [e for e in lines(tmp_path / "ds" / "train.jsonl") + lines(tmp_path / "ds" / "val.jsonl") if e["stage"] == "subtasks"]
    assert subtasks[0]["meta"]["subtasks"] == ["pick up the purple block"]


def test_cli_builds_dataset_and_card(episodes_dir, tmp_path, capsys):
    out = tmp_path / "ds"
    assert dataset_main(["build", str(episodes_dir), "--out", str(out), "--labeller", "verbaliser"]) == 0
    text = capsys.readouterr().out
    assert "4 episode(s) built" in text
    card = (out / "README.md").read_text()
    assert "| chunk |" in card and "mean abs" in card
    assert (out / "action_magnitudes.png").is_file() and (out / "token_lengths.png").is_file()
    with pytest.raises(SystemExit) as usage:  # argparse's exit 2, before anything is written
        dataset_main(["sim", "--out", str(tmp_path / "neg"), "--episodes", "-3"])
    assert usage.value.code == 2 and not (tmp_path / "neg").exists()
    with pytest.raises(SystemExit) as usage:  # a frame the renderer cannot draw, refused before any episode
        dataset_main(["sim", "--out", str(tmp_path / "tiny"), "--image-size", "8"])
    assert usage.value.code == 2 and not (tmp_path / "tiny").exists()
    assert "image size must be 32 to 4096 pixels, got 8" in capsys.readouterr().err
    assert dataset_main(["build", str(tmp_path / "nothing"), "--out", str(tmp_path / "empty")]) == 1
    said = capsys.readouterr()  # the build's own summary, then why it stops: not an error of the card's plots
    assert "0 episode(s) built" in said.out and "no training example was built" in said.err, said
    assert not (tmp_path / "empty" / "README.md").exists()
    assert dataset_main(["build", str(episodes_dir), "--out", str(tmp_path / "totals"), "--labeller", "verbaliser",
                         "--plan-totals"]) == 0
    plans = [e["meta"]["plan"] for e in lines(tmp_path / "totals" / "train.jsonl") if e["stage"] == "plan"]
    assert plans and all(" cm to go. " in plan for plan in plans)
    assert not any(" cm to go. " in e["meta"]["plan"] for e in lines(out / "train.jsonl") if e["stage"] == "plan")
    write_card(out)  # rewriting the card is idempotent


def test_repeat_stages_copies_only_the_named_stages_in_order():
    examples = [{"id": 1, "stage": "subtasks"}, {"id": 2, "stage": "plan"}, {"id": 3, "stage": "chunk"}]
    repeated = repeat_stages(examples, {"subtasks": 3, "chunk": 2})
    assert [e["id"] for e in repeated] == [1, 1, 1, 2, 3, 3]
    assert repeat_stages(examples, {}) == examples


@pytest.mark.parametrize("repeats", [{"subtask": 2}, {"plan": 0}, {"plan": 1.5}, {"plan": True}])
def test_training_config_refuses_bad_stage_repeats(repeats):
    from vlm2vla_ros.training.config import TrainConfig

    with pytest.raises(ValueError, match="stage_repeats"):
        TrainConfig(model_path="m", dataset_dir="d", output_dir="o", stage_repeats=repeats)


def test_resume_with_another_labeller_or_include_failed_is_refused_naming_it(episodes_dir, tmp_path, capsys):
    loaded = load_episodes([episodes_dir])
    out = tmp_path / "ds"
    build_dataset(loaded.episodes[:1], out, make_labeller(LabellerSettings("annotations")))
    with pytest.raises(ValueError, match="labeller annotations -> verbaliser"):
        build_dataset(loaded.episodes[:1], out, make_labeller(LabellerSettings("verbaliser")))
    assert json.loads((out / "build.json").read_text())["config"]["labeller"] == "annotations"
    # the command line gives the same one-line refusal, not "1 resumed"
    assert dataset_main(["build", str(episodes_dir), "--out", str(out), "--labeller", "verbaliser"]) == 1
    captured = capsys.readouterr()
    assert "labeller annotations -> verbaliser" in captured.err and "resumed" not in captured.out
    loaded.episodes[0].success = False
    failed = tmp_path / "failed"
    build_dataset(loaded.episodes[:1], failed, make_labeller(LabellerSettings("annotations")), BuildConfig(include_failed=True))
    with pytest.raises(ValueError, match="include_failed True -> False"):
        build_dataset(loaded.episodes[:1], failed, make_labeller(LabellerSettings("annotations")))


def test_an_unreadable_frame_skips_its_episode_only(episodes_dir, tmp_path):
    import shutil

    copy = tmp_path / "episodes"
    shutil.copytree(episodes_dir, copy)
    loaded = load_episodes([copy])
    broken = loaded.episodes[0]
    broken.image_path(broken.steps[0].image).unlink()  # gone between loading and building
    report = build_dataset(loaded.episodes, tmp_path / "ds", make_labeller(LabellerSettings("verbaliser")))
    assert [e for e, _ in report.skipped] == [broken.episode_id]
    assert "cannot be read or written" in report.skipped[0][1]
    assert len(report.episodes_built) == len(loaded.episodes) - 1


def test_cli_refuses_a_missing_tokenizer_before_building(episodes_dir, tmp_path, capsys):
    out = tmp_path / "ds"
    assert dataset_main(["build", str(episodes_dir), "--out", str(out), "--tokenizer", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer at" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert dataset_main(["build", str(episodes_dir), "--out", str(out), "--tokenizer", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "cannot load a tokenizer" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_full_disk_ends_the_build_instead_of_skipping_every_episode(episodes_dir, tmp_path, monkeypatch):
    """A frame that cannot be read costs its episode; an output that cannot be written would cost
    every one (and pay the labeller for each), so it ends the build, naming the error."""
    import errno

    from vlm2vla_ros.data import builder

    def full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(builder, "copy_whole", full)
    loaded = load_episodes([episodes_dir])
    with pytest.raises(OSError, match="No space left on device"):
        build_dataset(loaded.episodes, tmp_path / "ds", make_labeller(LabellerSettings("verbaliser")))
    assert list((tmp_path / "ds" / "episodes").iterdir()) == []


def test_a_folder_that_holds_something_else_is_not_built_into(episodes_dir, tmp_path, capsys):
    """`--out .` in a repository would write the dataset card over its README."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("my project\n")
    assert dataset_main(["build", str(episodes_dir), "--out", str(folder), "--labeller", "verbaliser"]) == 1
    assert "is not empty and holds no dataset build (build.json)" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["README.md"] and (folder / "README.md").read_text() == "my project\n"


def test_a_dataset_line_that_is_not_an_example_is_named(tmp_path):
    from vlm2vla_ros.data import read_examples

    path = tmp_path / "train.jsonl"
    path.write_text('{"stage": "chunk", "messages": [], "images": []}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"train\.jsonl:2 is not a dataset example"):
        read_examples(path)
    path.write_text('{"conversations": [], "images": []}\n')  # another project's format
    with pytest.raises(ValueError, match=r"train\.jsonl:1 is not a dataset example"):
        read_examples(path)
