"""Training on a handful of examples must drive the answer loss clearly down.

The cached tiny model is random with Gemma's small initialisation: its final norm and tied
embeddings cap the logits near 1, so no adapter can fit anything. `fittable_tiny_model`
copies it with the final RMSNorm scaled up (weight 7 -> x8), which lets LoRA alone overfit
while leaving every loading and LoRA code path exactly as for Gemma-3.
"""

import json
import shutil

import pytest
from fittable_model import fittable_tiny_model

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return fittable_tiny_model(tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from vlm2vla_ros.data import LabellerSettings, build_dataset, load_episodes, make_labeller
    from vlm2vla_ros.data.sim_source import export_sim_episodes

    root = tmp_path_factory.mktemp("overfit")
    export_sim_episodes(root / "eps", ["pick_up"], [0], image_size=32)
    build_dataset(load_episodes([root / "eps"]).episodes, root / "full", make_labeller(LabellerSettings("annotations")))
    chunk = [line for line in (root / "full" / "train.jsonl").read_text().splitlines() if '"stage": "chunk"' in line]
    chunk += [line for line in (root / "full" / "val.jsonl").read_text().splitlines() if '"stage": "chunk"' in line]
    assert len(chunk) >= 3
    data = root / "data"
    data.mkdir()
    shutil.copytree(root / "full" / "images", data / "images")
    (data / "train.jsonl").write_text("\n".join(chunk[:4]) + "\n")
    (data / "val.jsonl").write_text("")
    return data


def test_lora_overfits_a_few_chunks(model_dir, dataset_dir, tmp_path):
    from vlm2vla_ros.training import TrainConfig, train

    config = TrainConfig(
        model_path=str(model_dir), dataset_dir=str(dataset_dir), output_dir=str(tmp_path / "adapter"),
        max_steps=30, batch_size=4, grad_accum=1, learning_rate=5e-3, gradient_checkpointing=False,
        save_steps=1000, device="cpu",
    )
    result = train(config)
    assert result.steps == 30 and not result.interrupted
    assert result.last_loss < 0.5 * result.first_loss, (result.first_loss, result.last_loss)
    for name in ("adapter_config.json", "adapter_model.safetensors", "loss.png", "train_log.json"):
        assert (tmp_path / "adapter" / name).is_file()
    log = json.loads((tmp_path / "adapter" / "train_log.json").read_text())
    examples = len((dataset_dir / "train.jsonl").read_text().splitlines())
    assert log["train_examples"] == examples and log["config"]["lora_r"] == 16
    from safetensors.torch import load_file

    assert not [name for name in load_file(tmp_path / "adapter" / "adapter_model.safetensors") if "vision_tower" in name]


def test_vision_tower_adapted_at_its_own_rate(model_dir, dataset_dir, tmp_path):
    """vision_learning_rate adds LoRA to the tower's linears, optimised at that rate. AdamW's
    first step moves each weight by at most its rate (by about it where the gradient is not
    tiny), and LoRA's B starts at zero, so after one step the largest B of each part is its rate."""
    from safetensors.torch import load_file

    from vlm2vla_ros.training import TrainConfig, train

    config = TrainConfig(
        model_path=str(model_dir), dataset_dir=str(dataset_dir), output_dir=str(tmp_path / "adapter"),
        max_steps=1, batch_size=4, grad_accum=1, learning_rate=5e-3, vision_learning_rate=5e-5,
        gradient_checkpointing=False, save_steps=1000, device="cpu",
    )
    train(config)
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")

    def largest_b(part: str) -> float:
        return max(float(w.abs().max()) for name, w in weights.items() if part in name and "lora_B" in name)

    assert {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"} <= {
        name.split(".")[-3] for name in weights if "vision_tower" in name}
    assert 0.5 * 5e-5 < largest_b("vision_tower") <= 5e-5 * 1.0001
    assert 0.5 * 5e-3 < largest_b("language_model") <= 5e-3 * 1.0001
    with pytest.raises(ValueError, match="vision_learning_rate must be a finite number >= 0"):
        config.replace(vision_learning_rate=-1e-4)


def test_interrupted_run_resumes_from_its_checkpoint(model_dir, dataset_dir, tmp_path):
    import shutil

    from vlm2vla_ros.training import TrainConfig, TrainError, train

    out, data = tmp_path / "adapter", tmp_path / "data"
    shutil.copytree(dataset_dir, data)  # (rebuilt below)
    config = TrainConfig(
        model_path=str(model_dir), dataset_dir=str(data), output_dir=str(out),
        max_steps=2, batch_size=2, grad_accum=1, gradient_checkpointing=True, save_steps=1, device="cpu",
    )
    train(config)
    with pytest.raises(TrainError, match="--resume"):
        train(config)
    resumed = train(config.replace(max_steps=4), resume=True)
    assert resumed.steps == 4
    log = json.loads((out / "train_log.json").read_text())
    assert [run["global_step"] for run in log["runs"]] == [2, 4]
    assert [e["step"] for e in log["log_history"] if "loss" in e] == [1, 2, 3, 4]
    with pytest.raises(TrainError, match="holds no checkpoint"):
        train(config.replace(output_dir=str(tmp_path / "fresh")), resume=True)
    # another learning rate or accumulation is another run; how long it goes on is not
    with pytest.raises(TrainError, match="other settings than the run started with: grad_accum, learning_rate"):
        train(config.replace(max_steps=6, learning_rate=1e-3, grad_accum=2), resume=True)
    # a checkpoint cut short while it was written (no trainer_state.json) is passed over
    (out / "checkpoints" / "checkpoint-9").mkdir()
    (out / "checkpoints" / "checkpoint-9" / "adapter_model.safetensors").write_bytes(b"")
    again = train(config.replace(max_steps=5), resume=True)
    assert again.steps == 5
    # the dataset rebuilt in the same folder: another shuffle, whose first batches the Trainer would skip
    train_file = data / "train.jsonl"
    train_file.write_text(train_file.read_text() + train_file.read_text().splitlines(keepends=True)[0])
    with pytest.raises(TrainError, match="other training examples than the run started with"):
        train(config.replace(max_steps=6), resume=True)
    # a record cut short (a full disk) is named, not a bare JSON error
    (out / "train_config.json").write_text('{"lora_r": ')
    with pytest.raises(TrainError, match=r"cannot read .*train_config\.json"):
        train(config.replace(max_steps=6), resume=True)
    # a finished run whose checkpoints were deleted to save space: its adapter is not overwritten
    adapter = (out / "adapter_model.safetensors").read_bytes()
    shutil.rmtree(out / "checkpoints")
    with pytest.raises(TrainError, match="holds an earlier run's adapter"):
        train(config)
    assert (out / "adapter_model.safetensors").read_bytes() == adapter


def test_the_cli_reports_a_run_whose_steps_logged_no_loss(model_dir, dataset_dir, tmp_path, capsys):
    """logging_steps above the step count: the adapter is saved, and the summary says n/a."""
    from vlm2vla_ros.tools.train import main

    config = tmp_path / "train.yaml"
    config.write_text("logging_steps: 50\nbatch_size: 2\ngrad_accum: 1\n")
    assert main(["--model", str(model_dir), "--data", str(dataset_dir), "--out", str(tmp_path / "a"), "--config",
                 str(config), "--max-steps", "1", "--device", "cpu"]) == 0
    assert "loss n/a -> n/a" in capsys.readouterr().out


def test_a_dataset_copied_without_its_frames_is_refused_before_the_model_loads(dataset_dir, tmp_path, capsys):
    import shutil

    from vlm2vla_ros.tools.train import main

    data = tmp_path / "data"
    shutil.copytree(dataset_dir, data, ignore=shutil.ignore_patterns("*.png", "*.jpg"))
    # no model folder at all: the frames are checked first, so this cannot fail on the model
    assert main(["--model", str(tmp_path / "no-model"), "--data", str(data), "--out", str(tmp_path / "a"),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "frame(s) the examples of" in err and "copied without its images/ folder" in err
    assert not (tmp_path / "a").exists()


def test_stage_repeats_upweight_a_stage_in_training(model_dir, dataset_dir, tmp_path):
    from vlm2vla_ros.training import TrainConfig, train

    config = TrainConfig(
        model_path=str(model_dir), dataset_dir=str(dataset_dir), output_dir=str(tmp_path / "adapter"),
        stage_repeats={"chunk": 3}, max_steps=1, batch_size=2, grad_accum=1, gradient_checkpointing=False,
        save_steps=1000, device="cpu",
    )
    train(config)
    log = json.loads((tmp_path / "adapter" / "train_log.json").read_text())
    examples = len((dataset_dir / "train.jsonl").read_text().splitlines())
    assert log["train_examples"] == 3 * examples and log["config"]["stage_repeats"] == {"chunk": 3}
    assert TrainConfig.from_dict(log["config"]) == config


@pytest.fixture(scope="module")
def plan_dataset_dir(tmp_path_factory):
    """Plans that state their totals ("[dx, dy, dz] cm to go. ...") and a chunk without one."""
    from vlm2vla_ros.data import BuildConfig, LabellerSettings, build_dataset, load_episodes, make_labeller
    from vlm2vla_ros.data.sim_source import export_sim_episodes

    root = tmp_path_factory.mktemp("plans")
    export_sim_episodes(root / "eps", ["pick_up"], [0], image_size=32)
    build_dataset(load_episodes([root / "eps"]).episodes, root / "full", make_labeller(LabellerSettings("annotations")),
                  BuildConfig(plan_totals=True))
    lines = [line for split in ("train", "val") for line in (root / "full" / f"{split}.jsonl").read_text().splitlines()]
    plans = [line for line in lines if '"stage": "plan"' in line]
    chunks = [line for line in lines if '"stage": "chunk"' in line]
    assert len(plans) >= 3 and chunks
    data = root / "data"
    data.mkdir()
    shutil.copytree(root / "full" / "images", data / "images")
    (data / "train.jsonl").write_text("\n".join(plans[:3] + chunks[:1]) + "\n")
    (data / "val.jsonl").write_text("")
    return data


def test_a_plan_total_head_trains_beside_the_adapter_and_is_not_saved(model_dir, plan_dataset_dir, dataset_dir, tmp_path,
                                                                      monkeypatch):
    from safetensors.torch import load_file

    from vlm2vla_ros.training import TrainConfig, TrainError, train, trainer
    from vlm2vla_ros.training.place_head import PlaceHead

    heads = []

    class Recorded(PlaceHead):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            heads.append((self, self.linear.weight.detach().clone()))

    monkeypatch.setattr(trainer, "PlaceHead", Recorded)

    config = TrainConfig(
        model_path=str(model_dir), dataset_dir=str(plan_dataset_dir), output_dir=str(tmp_path / "head"),
        max_steps=20, batch_size=4, grad_accum=1, learning_rate=5e-3, gradient_checkpointing=False,
        save_steps=1000, device="cpu", plan_total_head=1.0,
    )
    train(config)
    head = json.loads((tmp_path / "head" / "train_log.json").read_text())["plan_total_head"]
    assert head["batches"] == 20  # every batch of the four examples holds three plans
    assert head["last_rms_cm"] < 0.5 * head["first_rms_cm"], head
    (trained, start), = heads
    assert not (trained.linear.weight == start).all()  # the head's own weights are optimised, not only the adapter
    with_head = load_file(tmp_path / "head" / "adapter_model.safetensors")
    assert with_head and all("lora_" in name for name in with_head)  # a plain adapter: the head is dropped

    train(config.replace(output_dir=str(tmp_path / "plain"), plan_total_head=0.0))
    assert json.loads((tmp_path / "plain" / "train_log.json").read_text())["plan_total_head"] is None
    plain = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    assert plain.keys() == with_head.keys()
    assert any(not (plain[name] == with_head[name]).all() for name in plain)  # the head's term reached the adapter

    with pytest.raises(TrainError, match="--plan-totals"):  # plans without totals give the head nothing to learn
        train(config.replace(dataset_dir=str(dataset_dir), output_dir=str(tmp_path / "none")))
    with pytest.raises(ValueError, match="plan_total_head must be a finite number >= 0"):
        config.replace(plan_total_head=-1.0)


def test_examples_longer_than_max_length_are_left_out_and_counted(model_dir, dataset_dir, tmp_path, capsys):
    """One chunk answer made 40 moves long: cut at max_length it would train an unclosed list."""
    from vlm2vla_ros.training import TrainConfig, TrainError, train

    data = tmp_path / "data"
    shutil.copytree(dataset_dir, data)
    lines = (data / "train.jsonl").read_text().splitlines()
    long = json.loads(lines[0])
    long["id"] += "-long"
    long["messages"][-1]["content"][0]["text"] = "[" + ", ".join(["[1.0, 0.0, 0.0, 0]"] * 40) + "]"
    (data / "train.jsonl").write_text("\n".join([*lines, json.dumps(long)]) + "\n")
    from transformers import AutoProcessor

    from vlm2vla_ros.training import AnswerOnlyCollator

    lengths = AnswerOnlyCollator(AutoProcessor.from_pretrained(model_dir)).lengths([json.loads(x) for x in lines] + [long])
    assert max(lengths[:-1]) < lengths[-1]
    fits = max(lengths[:-1])
    config = TrainConfig(
        model_path=str(model_dir), dataset_dir=str(data), output_dir=str(tmp_path / "adapter"), max_length=fits,
        max_steps=1, batch_size=2, grad_accum=1, gradient_checkpointing=False, save_steps=1000, device="cpu",
    )
    train(config)
    log = json.loads((tmp_path / "adapter" / "train_log.json").read_text())
    assert log["train_examples"] == len(lines) and log["too_long_examples"] == {"train": 1, "val": 0}
    assert f"left out 1 training and 0 validation example(s) longer than max_length {fits}" in capsys.readouterr().out
    with pytest.raises(TrainError, match=f"every training example is longer than max_length {min(lengths) - 1}"):
        train(config.replace(max_length=min(lengths) - 1, output_dir=str(tmp_path / "none")))
    # a validation loss asked for is not dropped in silence when no validation example fits
    (data / "val.jsonl").write_text(json.dumps(long) + "\n")
    with pytest.raises(TrainError, match="eval_steps is 1 but every validation example is longer than max_length"):
        train(config.replace(eval_steps=1, output_dir=str(tmp_path / "no-val")))


def test_the_adapter_records_its_datasets_action_language_and_the_policy_checks_it(model_dir, dataset_dir, tmp_path,
                                                                                  caplog, capsys):
    import logging
    import shutil

    from vlm2vla_ros.action_language import ActionLimits
    from vlm2vla_ros.policy import PolicyConfig, PolicyError, PromptTemplates, load_policy
    from vlm2vla_ros.training import TrainConfig, train

    data, out = tmp_path / "data", tmp_path / "adapter"
    shutil.copytree(dataset_dir, data)
    build = json.loads((dataset_dir.parent / "full" / "build.json").read_text())
    build["config"]["limits"]["max_steps"] = 3
    (data / "build.json").write_text(json.dumps(build))
    config = TrainConfig(model_path=str(model_dir), dataset_dir=str(data), output_dir=str(out), max_steps=1,
                         batch_size=2, grad_accum=1, gradient_checkpointing=False, save_steps=1000, device="cpu")
    train(config)
    record = json.loads((out / "action_language.json").read_text())
    assert record == {"limits": build["config"]["limits"], "prompts": build["config"]["prompts"]}

    policy = PolicyConfig(model_path=str(model_dir), adapter_path=str(out), device="cpu")
    with pytest.raises(PolicyError, match="writes numbers with 1 decimal.*set limits.decimals to 1"):
        load_policy(policy.replace(limits=ActionLimits(decimals=2)))
    with caplog.at_level(logging.WARNING):
        load_policy(policy.replace(limits=ActionLimits(max_steps=2), prompts=PromptTemplates(plan="Plan: {task}"))).close()
    assert [r.getMessage() for r in caplog.records if r.name == "vlm2vla_ros.policy.engine"] == [
        f"adapter {out}: chunks are cut to 2 step(s); the adapter learnt up to 3",
        f"adapter {out}: the prompt template(s) plan differ from the ones the adapter was trained on"]

    # a dataset without build.json leaves no record, and takes away one left in the folder
    (data / "build.json").unlink()
    again = tmp_path / "again"
    again.mkdir()
    shutil.copyfile(out / "action_language.json", again / "action_language.json")
    train(config.replace(output_dir=str(again)))
    assert (again / "adapter_model.safetensors").is_file() and not (again / "action_language.json").exists()
    # a build.json that does not record them (written by hand): said, and the adapter trains without a record
    (data / "build.json").write_text('{"config": {"limits": {}}}')
    capsys.readouterr()
    train(config.replace(output_dir=str(tmp_path / "other")))
    assert "does not record the dataset's action limits and prompts" in capsys.readouterr().out
    assert (tmp_path / "other" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "other" / "action_language.json").exists()


def test_the_adapter_records_its_base_and_is_never_loaded_onto_another(model_dir, dataset_dir, tmp_path):
    """A LoRA adapter fits any base of the same shapes and on another one writes well-formed,
    meaningless chunks: the base it was trained on is recorded, and another is refused. The same
    weights saved again in other files are the same base."""
    import shutil

    from safetensors.torch import load_file, save_file

    from vlm2vla_ros.policy import PolicyConfig, PolicyError, load_policy
    from vlm2vla_ros.policy.adapter_base import BASE_FILE, base_fingerprint
    from vlm2vla_ros.training import TrainConfig, train

    out = tmp_path / "adapter"
    train(TrainConfig(model_path=str(model_dir), dataset_dir=str(dataset_dir), output_dir=str(out), max_steps=1,
                      batch_size=2, grad_accum=1, gradient_checkpointing=False, save_steps=1000, device="cpu"))
    record = json.loads((out / BASE_FILE).read_text())
    assert record == {"fingerprint": base_fingerprint(model_dir), "base": str(model_dir)}
    load_policy(PolicyConfig(model_path=str(model_dir), adapter_path=str(out), device="cpu")).close()

    # the same shapes, one weight changed: another base (a checkpoint trained further, say)
    other = tmp_path / "other-base"
    shutil.copytree(model_dir, other)
    (weights,) = other.glob("*.safetensors")
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(PolicyError, match="was trained on another base"):
        load_policy(PolicyConfig(model_path=str(other), adapter_path=str(out), device="cpu"))

    # the same weights split into two files: the same base
    split = tmp_path / "split-base"
    shutil.copytree(model_dir, split)
    (weights,) = split.glob("*.safetensors")
    tensors = load_file(weights)
    names = sorted(tensors)
    weights.unlink()
    save_file({n: tensors[n] for n in names[::2]}, split / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    save_file({n: tensors[n] for n in names[1::2]}, split / "model-00002-of-00002.safetensors", metadata={"format": "pt"})
    assert base_fingerprint(split) == base_fingerprint(model_dir)

    # a base whose weights file is cut short is named, not a bare JSON error
    (weights,) = other.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(PolicyError, match="cannot be read to check adapter"):
        load_policy(PolicyConfig(model_path=str(other), adapter_path=str(out), device="cpu"))
    shutil.rmtree(other)
    shutil.copytree(model_dir, other)
    (weights,) = other.glob("*.safetensors")
    tensors = load_file(weights)
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})

    # an unreadable record is named; no record at all is loaded unchecked (adapters from before it)
    (out / BASE_FILE).write_text("{")
    with pytest.raises(PolicyError, match="cannot be read.*delete it to load the adapter unchecked"):
        load_policy(PolicyConfig(model_path=str(model_dir), adapter_path=str(out), device="cpu"))
    (out / BASE_FILE).unlink()
    load_policy(PolicyConfig(model_path=str(other), adapter_path=str(out), device="cpu")).close()


def test_the_shipped_adapter_records_the_shipped_base():
    from vlm2vla_ros.policy.adapter_base import BASE_FILE, base_fingerprint, check_adapter_base
    from vlm2vla_ros.shipped import shipped_model

    base, adapter = shipped_model()
    assert json.loads((adapter / BASE_FILE).read_text())["fingerprint"] == base_fingerprint(base)
    check_adapter_base(base, adapter)


def test_a_base_whose_weights_are_not_safetensors_is_named_not_a_memory_error(tmp_path):
    """A Git LFS pointer cloned without git-lfs starts with b"version ", read as a header of
    about 2e18 bytes: reading it raised a bare MemoryError. A header or tensor offsets beyond the
    file are refused by name."""
    import struct

    from vlm2vla_ros.policy.adapter_base import BASE_FILE, base_fingerprint, check_adapter_base
    from vlm2vla_ros.policy.types import PolicyError

    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    (adapter / BASE_FILE).write_text(json.dumps({"fingerprint": "0" * 64, "base": "somewhere"}))
    weights = base / "model.safetensors"
    weights.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 5242880\n")
    with pytest.raises(ValueError, match="not a safetensors file.*Git LFS pointer"):
        base_fingerprint(base)
    with pytest.raises(PolicyError, match="cannot be read to check adapter.*Git LFS pointer"):
        check_adapter_base(base, adapter)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 4 << 30]}}).encode()
    weights.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(ValueError, match="tensor w's data offsets 0-4294967296 lie outside the file"):
        base_fingerprint(base)
