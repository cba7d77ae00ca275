"""vlm2vla-bench on the tiny model: the JSON report's figures."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlm2vla_ros.tools import bench


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("bench_cache")


def run_bench(monkeypatch, capsys, cache, *args: str) -> dict:
    monkeypatch.setenv("VLM2VLA_CACHE", str(cache))
    assert bench.main(["--json", "--image-size", "48x64", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_report_on_the_tiny_model(monkeypatch, capsys, cache) -> None:
    report = run_bench(monkeypatch, capsys, cache, "--cycles", "4", "--cycles-per-task", "2")
    assert report["cycles"] == report["completed_cycles"] == 4
    assert report["parse_failure_rate"] == 0.0 and report["chunk_attempts"] == 4
    assert 0 < report["median_cycle_s"] <= report["p90_cycle_s"]
    assert report["tokens_per_action_step"] > 1
    assert report["stages"]["subtasks"]["runs"] == 2 and report["stages"]["verify"]["runs"] == 4
    assert report["adapter"] and report["constrained"] is True
    assert report["mean_chunk_prompt_tokens_reused"] > 0


def test_without_constraints_failures_are_counted(monkeypatch, capsys, cache, tmp_path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text("max_retries: 2\nsubtasks: {max_new_tokens: 16}\nchunk: {max_new_tokens: 16}\n")
    report = run_bench(monkeypatch, capsys, cache, "--config", str(config), "--cycles", "2", "--no-constraints", "--no-reuse")
    assert report["constrained"] is False and report["reuse_prefix"] is False
    assert report["parse_failures"] > 0 and report["parse_failure_rate"] > 0
    assert report["mean_chunk_prompt_tokens_reused"] == 0
    if report["completed_cycles"] == 0:
        assert report["median_cycle_s"] is None and report["tokens_per_action_step"] is None


def test_table_output(monkeypatch, capsys, cache) -> None:
    monkeypatch.setenv("VLM2VLA_CACHE", str(cache))
    assert bench.main(["--image-size", "48x64", "--cycles", "1"]) == 0
    out = capsys.readouterr().out
    assert "parse failures: 0/1 (rate 0.000)" in out and "tokens per action step:" in out


def test_bad_arguments_and_folders_are_reported(monkeypatch, capsys, cache, tmp_path) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--cycles", "0"])
    assert bench.main(["--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
