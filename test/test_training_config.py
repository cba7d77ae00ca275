"""vlm2vla-train's settings: wrong files, types and ranges are one-line errors, before any model loads."""

import json
import math

import pytest

from vlm2vla_ros.training.config import TrainConfig

REQUIRED = {"model_path": "m", "dataset_dir": "d", "output_dir": "o"}


def test_malformed_yaml_is_a_value_error_naming_the_file(tmp_path):
    file = tmp_path / "train.yaml"
    file.write_text("lora_r: [16\n")
    with pytest.raises(ValueError, match=r"train\.yaml is not valid YAML: .* at line 2") as err:
        TrainConfig.from_yaml(str(file), **REQUIRED)
    assert "\n" not in str(err.value)


def test_the_cli_prints_a_malformed_yaml_as_one_line_and_fails(tmp_path, capsys):
    pytest.importorskip("transformers")
    from vlm2vla_ros.tools.train import main

    file = tmp_path / "train.yaml"
    file.write_text("learning_rate: : 1\n")
    assert main(["--model", "m", "--data", "d", "--out", "o", "--config", str(file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vlm2vla-train: training config file") and "not valid YAML" in err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("lora_r", "16", "lora_r must be a whole number, got '16'"),
    ("lora_r", 16.0, "lora_r must be a whole number"),
    ("batch_size", True, "batch_size must be a whole number"),
    ("learning_rate", "5e-5", "learning_rate must be a number, got '5e-5' (YAML reads"),
    ("gradient_checkpointing", "no", "gradient_checkpointing must be true or false"),
    ("lr_scheduler", 1, "lr_scheduler must be a string"),
    ("stages", "plan", "stages must be a list of stage names"),
    ("stage_repeats", [1], "stage_repeats must be a mapping"),
    ("max_steps", -3, "max_steps must be at least 1, or -1 to train by epochs, got -3"),  # not silently by epochs
])
def test_values_of_the_wrong_type_are_refused_by_name(tmp_path, key, value, reason):
    file = tmp_path / "train.yaml"
    file.write_text(json.dumps({key: value}))  # JSON is YAML
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(".", r"\.")):
        TrainConfig.from_yaml(str(file), **REQUIRED)


@pytest.mark.parametrize(("key", "value"), [
    ("learning_rate", math.inf), ("learning_rate", math.nan), ("learning_rate", 0.0), ("epochs", math.inf),
    ("vision_learning_rate", math.inf), ("plan_total_head", math.inf),
    ("warmup_ratio", 1.0), ("warmup_ratio", 10), ("warmup_ratio", -0.1), ("warmup_ratio", math.nan),
    ("lora_dropout", 1.0), ("lora_dropout", -0.5), ("weight_decay", -0.01), ("weight_decay", math.inf),
    ("save_total_limit", -1), ("eval_steps", -1),
])
def test_values_out_of_range_are_refused_by_name(key, value):
    with pytest.raises(ValueError, match=key):
        TrainConfig(**REQUIRED, **{key: value})


def test_the_cli_refuses_an_infinite_learning_rate(capsys):
    pytest.importorskip("transformers")
    from vlm2vla_ros.tools.train import main

    assert main(["--model", "m", "--data", "d", "--out", "o", "--lr", "inf"]) == 1
    assert "learning_rate must be a finite number > 0, got inf" in capsys.readouterr().err


def test_valid_values_are_kept_as_given():
    config = TrainConfig(**REQUIRED, warmup_ratio=0.05, lora_dropout=0.1, weight_decay=0.01, save_total_limit=0,
                         learning_rate=1, epochs=2, stages=("plan",))
    assert (config.warmup_ratio, config.lora_dropout, config.weight_decay, config.save_total_limit) == (0.05, 0.1, 0.01, 0)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_the_experiments_lora_settings_pass():
    from vlm2vla_ros.miniature.experiment import ExperimentConfig

    for experiment in (ExperimentConfig.full(), ExperimentConfig.quick()):
        assert experiment.lora_train("b", "d", "o").warmup_ratio == 0.05


def test_eval_steps_with_an_empty_validation_split_is_an_error(tmp_path):
    pytest.importorskip("transformers")
    from vlm2vla_ros.training import TrainError, train

    (tmp_path / "train.jsonl").write_text(json.dumps({"stage": "plan", "messages": []}) + "\n")
    (tmp_path / "val.jsonl").write_text("")
    config = TrainConfig(model_path=str(tmp_path / "model"), dataset_dir=str(tmp_path), output_dir=str(tmp_path / "out"),
                         eval_steps=5)
    with pytest.raises(TrainError, match="eval_steps is 5 but .*val.jsonl holds no examples"):
        train(config)
