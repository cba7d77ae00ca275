"""The GPU benchmarks run end to end on the scaled-down config (--tiny), so a lent GPU's short
lease is not spent finding a broken script: their reports hold what the docs quote from them."""

import importlib
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("xgrammar")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(name: str, argv: list[str], capsys) -> dict:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
    capsys.readouterr()
    assert module.main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from vlm2vla_ros.tools.dataset import main as dataset_main

    root = tmp_path_factory.mktemp("bench_data")
    assert dataset_main(["sim", "--out", str(root / "episodes"), "--kinds", "pick_up", "--episodes", "1",
                         "--image-size", "48"]) == 0
    assert dataset_main(["build", str(root / "episodes"), "--out", str(root / "dataset"), "--labeller", "verbaliser"]) == 0
    return root / "dataset"


def test_lora_train_step_trains_only_the_adapter(dataset, capsys):
    report = run_benchmark("gemma3_12b_train_step", ["--data", str(dataset), "--tiny", "--steps", "2", "--warmup", "1",
                                                     "--batch-size", "2"], capsys)
    assert report["steps"] == 2
    assert 0 < report["trainable_parameters"] < report["parameters"] / 5
    assert report["gradient_checkpointing"] is True
    assert report["tokens_per_step_mean"] > report["answer_tokens_per_step_mean"] > 0
    assert report["examples_per_s"] == pytest.approx(2 / report["median_step_s"])


def test_full_fine_tuning_trains_every_weight_and_max_seconds_cuts_the_loop(dataset, capsys):
    report = run_benchmark("gemma3_12b_train_step", ["--data", str(dataset), "--tiny", "--steps", "5", "--warmup", "0",
                                                     "--full", "--no-checkpointing", "--max-seconds", "0"], capsys)
    assert report["trainable_parameters"] == report["parameters"]
    assert report["gradient_checkpointing"] is False
    assert report["steps"] == 1  # the first step is always timed, then the time limit ends the loop


@pytest.mark.parametrize(
    "flags, reused",
    [([], True), (["--no-reuse"], False), (["--constrained"], True), (["--text-layers", "3"], True),
     (["--static-cache", "1024", "--warmup", "1"], False)],
)
def test_latency_cycles_reuse_the_prefix_unless_told_not_to(flags, reused, capsys):
    report = run_benchmark("gemma3_12b_latency", ["--tiny", "--cycles", "2", "--warmup", "0", *flags], capsys)
    assert report["cycles"] == 2
    assert len(report["warmup_cycle_s"]) == (1 if "--static-cache" in flags else 0)
    assert report["static_cache_tokens"] == (1024 if "--static-cache" in flags else 0)
    assert report["constrained"] is ("--constrained" in flags)
    assert (report["tokens"]["chunk_reused_tokens"] > 0) is reused
    assert report["median_cycle_s"] > 0 and report["lora_r"] == 16
    assert report["text_layers"] == (3 if "--text-layers" in flags else 6)
