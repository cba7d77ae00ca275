"""vlm2vla-experiment --quick: every stage of the miniature experiment, with micro sizes.

Checks the run's structure (report, metrics, plots, model folders, the shipped checkpoint),
not the numbers: a micro run trains for a few steps only.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("xgrammar")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from vlm2vla_ros.tools.experiment import main

    root = tmp_path_factory.mktemp("experiment")
    out, ship = root / "run", root / "models" / "vlm2vla-mini"
    assert main(["--out", str(out), "--quick", "--seed", "0", "--ship-to", str(ship)]) == 0
    return out, ship


@pytest.mark.slow
def test_report_and_metrics(run):
    from vlm2vla_ros.miniature.experiment import PLOTS

    out, _ = run
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    for section in ("## VQA accuracy", "## Closed-loop success", "## Grounding", "## Training", "## Stage times"):
        assert section in report
    assert "- camera: centred on the gripper in every stage (`view=gripper`" in report
    for plot in PLOTS:
        assert (out / plot).stat().st_size > 1000
        assert plot in report
    vqa = metrics["vqa"]
    for model in ("base", "vlm2vla", "baseline"):
        assert 0.0 <= vqa[model]["accuracy"] <= 1.0
        assert {"lang:en", "lang:es"} & set(vqa[model])
    # LoRA leaves the base untouched: with the adapter off the answers are the base's.
    assert vqa["adapter_off_answers_equal_base"] is True and vqa["adapter_off_checked_questions"] > 0
    for name in ("closed_loop_vlm2vla", "closed_loop_baseline"):
        rates = metrics[name]["success_rate"]
        assert set(rates) == {"en", "es"}
        assert set(rates["en"]) == {"pick_up", "put_in"} and set(rates["es"]) == {"pick_up"}
        episodes = metrics[name]["episodes"]
        assert len(episodes) == 3
        assert all(isinstance(e["success"], bool) and e["seed"] >= 50000 for e in episodes)
        assert any(e["lang"] == "es" and e["instruction"].startswith("recoge") for e in episodes)
    grounding = metrics["grounding"]
    assert grounding["tolerance_cm"] == 1.5 and len(grounding["rows"]) == 6  # 3 scenes: a block and the gripper each
    for model in ("base", "vlm2vla", "baseline"):
        for target in ("block", "gripper"):
            scores = grounding[model][target]
            assert scores["questions"] == 3 and 0 <= scores["read"] <= 3 and 0.0 <= scores["within_tolerance"] <= 1.0
            assert all(v >= 0 for v in scores["mean_guess_abs_cm"])
    assert all(r["image"].startswith("grounding_eval/") and (out / r["image"]).is_file() for r in grounding["rows"])
    for model in ("vlm2vla", "baseline"):  # --quick: one pick-up seed, two cycles of the chunk stage alone
        reach = metrics["reach"][model]
        (episode,) = reach["episodes"]
        assert episode["seed"] >= 50000 and episode["subtask"].startswith("move above the")
        assert [a["cycles"] for a in reach["after"]] == [0, 1, 2]
        assert reach["after"][0]["mean_cm"] == episode["distance_cm"][0] > 0
    assert "## Reaching the named block" in report
    assert set(metrics["reach"]) == {"vlm2vla", "baseline", "vlm2vla_alone", "baseline_alone"}
    assert all(e["alone"] for e in metrics["reach"]["vlm2vla_alone"]["episodes"])
    assert "| VLM2VLA, the named block alone |" in report
    # which link fails, last: pick-up with the named block alone, stages from the expert's replay
    chain = metrics["chain"]
    assert chain["kinds"] == ["pick_up"]
    (judged,) = chain["expert_verifier"]["episodes"]
    assert judged["alone"] and judged["cycles"] >= 1 and judged["subtasks"][0].startswith("move above the")
    for model in ("vlm2vla", "baseline"):
        for run in ("own", "expert_subtasks"):
            (episode,) = chain[model][run]["episodes"]
            assert episode["alone"] and episode["seed"] == metrics["reach"][model]["episodes"][0]["seed"]
            assert set(chain[model][run]["success_rate"]) == {"en"}
        assert chain[model]["expert_subtasks"]["episodes"][0]["subtasks"][0].startswith("move above the")
        assert 0.0 <= chain[model]["lists_right"]["pick_up"] <= 1.0
    assert "## Which link fails" in report
    success_rows = [line for line in report.split("## Which link fails")[1].splitlines() if "| success:" in line]
    assert len(success_rows) == 3  # each success rate with its interval, e.g. "0% (0-79%)" of one episode
    assert all(re.search(r"\| \d+% \(\d+-\d+%\) \| \d+% \(\d+-\d+%\) \|$", row) for row in success_rows), success_rows
    # every verdict of the runs with the expert's subtasks is counted against the simulator
    assert sum(chain["expert_verifier"]["verdicts"].values()) == judged["cycles"]
    for model in ("vlm2vla", "baseline"):
        (episode,) = chain[model]["expert_subtasks"]["episodes"]
        counted = sum(chain[model]["expert_subtasks"]["verdicts"].values())
        assert counted == episode["cycles"] - (not episode["ended"].startswith(("all subtasks", "cycle limit")))
    assert "| chunks from | advanced, done | advanced, not done | retried, done | retried, not done |" in report
    # and again by subtask: the expert's replay judged on each of its three subtasks at least once
    for run in (chain["expert_verifier"], chain["vlm2vla"]["expert_subtasks"], chain["baseline"]["expert_subtasks"]):
        by_subtask = run["verdicts_by_subtask"]
        assert {k: sum(c[k] for c in by_subtask.values()) for k in run["verdicts"]} == run["verdicts"]
    assert set(chain["expert_verifier"]["verdicts_by_subtask"]) == {"move_above", "grasp", "lift"}
    assert "| the expert: move above |" in report and "| the expert: lift |" in report
    assert "| pick_up | 1 | success: the expert's subtasks and chunks, the verifier judging |" in report
    # after everything else: the closed loop again with the simulator judging, English pick-ups
    judged = metrics["closed_loop_judged"]
    assert judged["kinds"] == ["pick_up"]
    for model in ("vlm2vla", "baseline"):
        (episode,) = judged[model]["episodes"]
        own = next(e for e in metrics[f"closed_loop_{model}"]["episodes"] if e["lang"] == "en" and e["task_kind"] == "pick_up")
        assert episode["seed"] == own["seed"] and episode["lang"] == "en" and not episode["alone"]
        assert set(judged[model]["success_rate"]) == {"en"} and 0 <= episode.get("subtasks_done", 0) <= 3
    assert "## Closed-loop success with the simulator judging" in report
    # every closed-loop rate carries its 95% interval over its episodes: one episode pins little
    assert re.search(r"\| pick_up \| en \| 1 \| (0% \(0-79%\)|100% \(21-100%\)) \|", report)
    assert list(metrics["timings_s"])[-6:] == ["evaluation: which link fails (the named objects alone)",
                                               "evaluation: copying (held-out texts)",
                                               "evaluation: which block is asked (three-block scenes)",
                                               "evaluation: closed loop, the simulator judging",
                                               "a verifier of its own: the base fine-tuned on completion cases alone",
                                               "evaluation: closed loop, a verifier of its own"]
    # last of all: a verifier of its own, trained apart from both models, judging the same English pick-ups
    verifier = metrics["verifier"]
    assert verifier["steps"] == 2 and len(verifier["losses"]) == 2 and verifier["kinds"] == ["pick_up"]
    assert 1 <= verifier["cases"] <= 4  # two steps of two new cases (a seed make_scene cannot lay out gives none)
    for judge in ("base", "verifier"):
        assert set(verifier["verdicts"][judge]) == {"move_above", "grasp", "lift"}
        assert all(sum(counts.values()) == 2 for counts in verifier["verdicts"][judge].values())
    for model in ("vlm2vla", "baseline"):
        (episode,) = verifier[model]["episodes"]
        assert episode["seed"] == judged[model]["episodes"][0]["seed"] and episode["lang"] == "en" and not episode["alone"]
    assert (out / "verifier" / "config.json").is_file() and (out / "verifier" / "sim_camera.json").is_file()
    trained = [(out / folder / "model.safetensors").read_bytes() for folder in ("verifier", "base")]
    assert trained[0] != trained[1]  # fine-tuned, not a copy of the base
    assert "## Closed-loop success with a verifier of its own" in report and "| its verifier | grasp |" in report
    assert verifier["margin"] == [0.0, 0.0] and not (out / "verifier" / "verdict_margin.json").exists()  # greedy
    assert "outscores" not in report
    # copying: --quick's two steps of copying alone (batch 4, new examples each) come first, one copy
    # example per scene joins the mixture, and three held-out requests are scored for every model
    copying = metrics["pretrain_copy"]
    assert (copying["steps"], copying["examples"], len(copying["losses"])) == (2, 8, 2)
    assert list(metrics["timings_s"])[4] == "pretraining the VLM (vision tower frozen): copying alone, new examples every batch"
    assert metrics["pretrain_data"]["per_kind"]["copy"] == 20  # --quick: 20 scenes
    assert metrics["copy"]["examples"] == 3 and len(metrics["copy"]["rows"]) == 3
    for model in ("base", "vlm2vla", "baseline"):
        assert 0.0 <= metrics["copy"][model]["exact"] <= 1.0
    assert "## Copying" in report and "2 steps of copying alone (8 new" in report
    assert "(20 of them copy examples, 1 a scene)" in report
    # --quick: batch 4, phases ((1, 2), (3, 2)); every phase draws new scenes for every step
    assert [(p["blocks"], p["steps"], p["examples"], len(p["losses"])) for p in metrics["pretrain_location"]] == [
        (1, 2, 8, 2), (3, 2, 8, 2)
    ]
    asked = "questions of kinds location, relative, direction (the gripper near the block) about new scenes"
    assert f"{asked} of 3 block(s)" in report and "vision tower frozen" in report
    # and location_mix 1: one example of every batch of the first kinds and the mixture is new
    # and verify_mix 1: one more example of every such batch is a new completion case, of "move
    # above", "grasp" and "lift" in turn
    assert (metrics["pretrain_first"]["new_examples"], metrics["pretrain"]["new_examples"]) == (4, 6)
    assert f"1 of every 4 examples were {asked} of 1 block(s)" in report
    assert '1 of every 4 examples were "move above" / "grasp" / "lift" completion cases about new scenes' in report
    # --quick: the vision tower's reading phase by colour, two steps of two new near scenes of 1-3
    # blocks, after its own pretraining
    assert list(metrics["timings_s"])[2:4] == [
        "pretraining the vision tower (heat maps, scene summary)",
        "pretraining the vision tower: where each colour's block is from the gripper, new scenes every batch",
    ]
    assert metrics["vision_reading"]["steps"] == 2 and len(metrics["vision_reading"]["losses"]) == 2
    assert metrics["vision_reading"]["blocks"] == 3
    assert ("- vision tower: after its own pretraining, 2 steps of reading where each colour's block is, in scenes of "
            "1-3 blocks, from the gripper") in report
    # --quick: chunks of one merged move each, and two pick-ups from starts near the block and two
    # that start at the grasp among the episodes
    assert metrics["action_data"]["reach_demos"] == 2 and metrics["action_data"]["grasp_demos"] == 2
    examples = [json.loads(line) for line in (out / "dataset" / "train.jsonl").read_text().splitlines()]
    assert all(len(e["meta"]["chunk"]) == 1 for e in examples if e["stage"] == "chunk")
    assert any(e["episode_id"].startswith("mini-reach-") for e in examples)
    assert any(e["episode_id"].startswith("mini-grasp-") for e in examples)
    assert ("(2 of them pick-ups from gripper starts near the block, on new scenes; 2 pick-ups that start at the "
            "grasp, from where a short \"move above\" leaves the gripper; every grasp closing at 0.25 of the block's "
            "height above its bottom, not its middle)") in report
    assert "chunks of 1 merged move(s), each from its own image" in report
    # --quick: grasp_height 0.25 (in the report above), so the task demonstrations' grasps close a quarter
    # of the block's height above its bottom: their chunks descend as the expert does there, not at the middle
    from vlm2vla_ros.sim.expert import ExpertConfig, ScriptedExpert
    from vlm2vla_ros.sim.scene import make_scene

    every = examples + [json.loads(line) for line in (out / "dataset" / "val.jsonl").read_text().splitlines()]
    chunked = sum(step[2] for e in every if e["episode_id"] == "mini-pick_up-00000-v0" and e["stage"] == "chunk"
                  and e["meta"]["subtask"].startswith("grasp") for step in e["meta"]["chunk"])
    descents = {}
    for share in (0.25, 0.5):
        world, task = make_scene(0, "pick_up")
        steps = ScriptedExpert(ExpertConfig(grasp_height=share)).run(world, task, 0).steps
        descents[share] = sum(s.delta_cm[2] for s in steps if s.subtask.startswith("grasp"))
    assert chunked == pytest.approx(descents[0.25], abs=0.1) and abs(chunked - descents[0.5]) > 0.5
    # --quick: rehearsal_scenes 3, the base's own examples of pretraining scenes 0-2 in both models' data
    rehearsed = [e for e in examples if e["stage"] == "rehearsal"]
    assert len(rehearsed) == metrics["action_data"]["rehearsal_examples"] > 0
    assert {int(e["id"].split("-")[1]) for e in rehearsed} == {0, 1, 2}
    assert all((out / "dataset" / e["images"][0]).is_file() for e in rehearsed)
    assert {e["meta"]["kind"] for e in rehearsed} >= {"caption", "copy"}
    assert f"{len(rehearsed)} of them the base's own pretraining examples of 3 scenes" in report
    action_examples = sum(e["stage"] in ("subtasks", "plan", "chunk") for e in examples)
    assert metrics["action_data"]["train_examples"] == action_examples + len(rehearsed)
    assert metrics["baseline_train"]["tokens_added"] == 125
    assert metrics["vlm2vla_train"]["steps"] == 2
    assert metrics["wall_time_s"] > 0 and set(metrics["timings_s"]) >= {
        "pretraining the VLM (vision tower frozen): location, 1 block(s), new scenes every batch",
        "pretraining the VLM (vision tower frozen): location, 3 block(s), new scenes every batch",
        "pretraining the VLM (vision tower frozen)",
        "VLM2VLA: LoRA fine-tuning",
    }
    # --quick: bind phases ((1, 2), (3, 2)) after the mixture, 2 of every 4 examples new relative
    # questions; the place head trains on every relative question
    bind = metrics["pretrain_bind"]
    assert [(p["blocks"], p["steps"], p["new_examples"], len(p["losses"])) for p in bind] == [(1, 2, 4, 2), (3, 2, 4, 2)]
    assert all(len(p["place_losses"]) == 2 and all(v > 0 for v in p["place_losses"]) for p in bind)
    timings = list(metrics["timings_s"])
    assert timings.index("pretraining the VLM (vision tower frozen)") + 3 == timings.index("saving the base")
    assert ("then 2 steps with 2 of every 4 examples questions of kinds relative about new scenes of 3 block(s), the rest "
            "from that mixture, with a temporary place head (weight 1.0) on every relative question") in report
    # and last, which block is asked: three held-out three-block scenes, for the base and VLM2VLA
    binding = metrics["binding"]
    assert len(binding["rows"]) == 3 and binding["near_cm"] == 3.0 and binding["tolerance_cm"] == 1.5
    for model in ("base", "vlm2vla"):
        b = binding[model]
        assert b["questions"] == 3 and b["near_asked"] + b["near_other"] + b["near_none"] == 3
    assert "## Which block is asked (held-out three-block scenes)" in report
    # the kernels change the trained weights (finding 23): the run pins them, and the report says so
    machine = metrics["machine"]
    assert machine["pinned"] is True and machine["cpu"]
    assert (machine["cpu_capability"], machine["onednn"], machine["mkl_cbwr"], machine["torch_threads"]) == (
        "AVX2", False, "AVX2", 2)
    assert "(AVX2 kernels); seed 0. Arithmetic pinned (ATen AVX2, MKL_CBWR=AVX2, oneDNN off, 2 threads)" in report


@pytest.mark.slow
def test_shipped_checkpoint_loads_in_the_policy_engine(run):
    from vlm2vla_ros.policy import PolicyConfig, load_policy
    from vlm2vla_ros.sim.render import render
    from vlm2vla_ros.sim.scene import make_scene

    _, ship = run
    assert sorted(p.name for p in (ship / "adapter").iterdir()) == ["action_language.json", "adapter_config.json",
                                                                    "adapter_model.safetensors", "base_fingerprint.json"]
    from vlm2vla_ros.policy.adapter_base import check_adapter_base

    check_adapter_base(ship / "base", ship / "adapter")  # the shipped base is the one it was trained on
    # the limits and prompts its dataset was built with, which load_policy holds a config against
    from vlm2vla_ros.policy.adapter_language import AdapterLanguage, read_adapter_language

    build = json.loads((run[0] / "dataset" / "build.json").read_text())["config"]
    assert read_adapter_language(ship / "adapter") == AdapterLanguage.from_dict(build)
    assert (ship / "base" / "config.json").is_file()
    assert (ship / "verifier" / "config.json").is_file()  # the quick run trains a verifier of its own
    # every stage is drawn centred on the gripper (the default); the shipped base says so for the demo's camera
    from vlm2vla_ros.sim.views import read_model_view

    assert read_model_view(ship / "base") == "gripper"
    engine = load_policy(PolicyConfig(model_path=str(ship / "base"), adapter_path=str(ship / "adapter"), device="cpu"))
    world, task = make_scene(1, "pick_up")
    frame = render(world, 64, 64)
    verdict = engine.verify(frame, frame, "move above the red block", "grasp the red block")
    assert verdict.raw_text in ("advance", "retry")
    engine.close()


def _weights_digest(out) -> str:
    digest = hashlib.sha256()
    for name in ("base/model.safetensors", "adapter/adapter_model.safetensors", "baseline/model.safetensors"):
        digest.update((out / name).read_bytes())
    return digest.hexdigest()


def _quick_run(out, *args, env) -> None:
    """The quick run in a process of its own, with env's kernel variables on top of this one's."""
    command = [sys.executable, "-m", "vlm2vla_ros.tools.experiment", "--out", str(out), "--quick", "--seed", "0", *args]
    from vlm2vla_ros.miniature.kernels import PINNED_ENVIRONMENT

    base_env = {k: v for k, v in os.environ.items() if k not in PINNED_ENVIRONMENT}
    r = subprocess.run(command, env={**base_env, "HF_HUB_OFFLINE": "1", **env}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.slow
def test_pinned_runs_make_the_same_weights_where_other_kernels_make_native_runs_differ(run, tmp_path):
    """A machine with other kernels, played on this one: ATen without vector kernels, oneDNN held
    to SSE4.1, MKL to AVX2. Native runs then train other weights; pinned ones must not, on the
    AMD CPUs where the pin was checked. On an Intel Xeon a pinned run inside the whole suite made
    other weights than the in-process run twice in three sessions (docs/miniature.md, findings
    31 and 33), so there the pinned half is skipped and only the native half is checked."""
    from vlm2vla_ros.machine import cpu_model

    other_machine = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    out, _ = run
    if "AMD" in cpu_model():
        _quick_run(tmp_path / "pinned", env=other_machine)
        assert _weights_digest(tmp_path / "pinned") == _weights_digest(out)
    _quick_run(tmp_path / "native", "--kernels", "native", env={})
    _quick_run(tmp_path / "native-other", "--kernels", "native", env=other_machine)
    assert _weights_digest(tmp_path / "native") != _weights_digest(tmp_path / "native-other")
    native = json.loads((tmp_path / "native" / "metrics.json").read_text())["machine"]
    assert native["pinned"] is False and native["onednn"] is True
    assert "Arithmetic native (`--kernels native`)" in (tmp_path / "native" / "report.md").read_text()


@pytest.mark.slow
def test_tower_again_retrains_the_tower_after_the_vlm_pretraining_and_freezes_it_for_binding(tmp_path, monkeypatch):
    """tower_again_steps: the tower's own pretraining again after the mixture, its reading moved
    after that, and the bind phases with the tower frozen while every earlier stage trained it.
    With bind_verify_mix the bind batches carry completion cases beside their questions, and
    with plan_totals every plan of the action data starts with the move left in its subtask, and
    lora_place_head trains a head on those totals beside the adapter; with split_digits the
    base's tokenizer writes every digit alone."""
    import dataclasses

    from transformers import AutoTokenizer

    from vlm2vla_ros.action_language import read_plan_total
    from vlm2vla_ros.miniature import model
    from vlm2vla_ros.miniature.experiment import ExperimentConfig, run_experiment

    trained_tower = []  # train_vision_tower by call: first kinds, mixture, two bind phases, the baseline (default)
    bind_batches = []  # the new examples of each bind phase's first batch, by stage
    real_train_full = model.train_full

    def spy(*args, **kwargs):
        trained_tower.append(kwargs.get("train_vision_tower", True))
        if kwargs.get("train_vision_tower") is False:
            count, draw = kwargs["fresh"]
            stages = [e["stage"] for e in draw(0)]
            assert len(stages) == count
            bind_batches.append(sorted(stages))
        return real_train_full(*args, **kwargs)

    monkeypatch.setattr(model, "train_full", spy)
    out = tmp_path / "again"  # in this process, for the spy: main pins the arithmetic in a process of its own once torch is loaded
    config = dataclasses.replace(ExperimentConfig.quick(), tower_again_steps=2, pretrain_freeze_tower=False, bind_verify_mix=1,
                                 plan_totals=True, split_digits=True, lora_place_head=1.0, near_plan_copies=3,
                                 lora_tower_lr=2e-4)
    run_experiment(out, config, log=lambda line: None)
    assert trained_tower == [True, True, False, False, True]
    assert bind_batches == [sorted(["relative"] * config.bind_fresh + ["verify"])] * 2
    report = (out / "report.md").read_text()
    assert (f"{config.bind_fresh} of every {config.pretrain_batch} examples questions of kinds relative about new scenes of 3 "
            'block(s), 1 new "move above" / "grasp" / "lift" completion cases, the rest from that mixture') in report
    assert 'every plan starts with the move left in its subtask, "[dx, dy, dz] cm to go."' in report
    plans = [json.loads(line)["meta"] for line in (out / "dataset" / "train.jsonl").read_text().splitlines()
             if json.loads(line)["stage"] == "plan"]
    stated = [read_plan_total(p["plan"]) for p in plans]
    assert plans and None not in stated
    # chunks of one move each: a subtask's last chunk is all that is left of it, its earlier ones are not
    gaps = [max(abs(a - b) for a, b in zip(total, p["chunk"][0][:3])) for (total, _), p in zip(stated, plans)]
    assert min(gaps) <= 0.11 and max(gaps) > 1.0
    assert "- tokenizer: every digit a token of its own (`split_digits`);" in report
    ids = [json.loads(line)["id"] for line in (out / "dataset" / "train.jsonl").read_text().splitlines()]
    copied = [i for i in ids if i.endswith("/near1")]  # near_plan_copies: each near plan twice more, right after it
    assert copied and [i for i in ids if i.endswith("/near2")] == [i[:-1] + "2" for i in copied]
    added = json.loads((out / "metrics.json").read_text())["action_data"]["near_plan_copies_added"]
    assert added == 2 * len(copied) and f"3 times ({added} copies added)" in report
    assert "the vision tower adapted too, lr 0.0002" in report  # lora_tower_lr: the adapter holds the tower's LoRA
    from safetensors.torch import load_file

    assert any("vision_tower" in name for name in load_file(out / "adapter" / "adapter_model.safetensors"))
    assert ", with a temporary place head (weight 1.0) on every plan's stated total (" in report
    tokenizer = AutoTokenizer.from_pretrained(out / "base", local_files_only=True)
    assert [tokenizer.decode([i]) for i in tokenizer("-12.5", add_special_tokens=False)["input_ids"]][-4:] == ["1", "2", ".", "5"]
    metrics = json.loads((out / "metrics.json").read_text())
    timings = list(metrics["timings_s"])
    mixture = timings.index("pretraining the VLM (all weights)")
    assert timings[mixture + 1:mixture + 5] == [
        "pretraining the vision tower again (heat maps, scene summary)",
        "pretraining the vision tower: where each colour's block is from the gripper, new scenes every batch",
        "pretraining the VLM (vision tower frozen): which block is asked, 1 block(s), beside the mixture",
        "pretraining the VLM (vision tower frozen): which block is asked, 3 block(s), beside the mixture",
    ]
    assert timings[mixture + 5] == "saving the base"
    assert timings[2:4] == ["pretraining the vision tower (heat maps, scene summary)",
                            "pretraining the VLM (all weights): copying alone, new examples every batch"]
    assert len(metrics["vision_again"]["losses"]) == 2 and len(metrics["vision_reading"]["losses"]) == 2
    again = metrics["vision_again"]["losses"]  # two steps: the last fifth is the last step
    assert ("- vision tower: after the VLM pretraining's mixture (below), its own pretraining again for 2 steps (loss "
            f"{again[-1]:.3f} over its last fifth), then 2 steps of reading") in (out / "report.md").read_text()
    assert "then the steps on which block is asked with the tower frozen;" in (out / "report.md").read_text()


def test_pinned_arithmetic_refuses_a_torch_loaded_without_the_pin(monkeypatch):
    import torch

    from vlm2vla_ros.miniature.kernels import PINNED_ENVIRONMENT, ArithmeticNotPinned, pinned_arithmetic

    for key in PINNED_ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ArithmeticNotPinned, match="--kernels native"), pinned_arithmetic():
        pass
    if torch.backends.cpu.get_cpu_capability() != "AVX2":  # the variables set after torch chose its kernels
        for key, value in PINNED_ENVIRONMENT.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(ArithmeticNotPinned, match="runs .* kernels"), pinned_arithmetic():
            pass


def test_pinned_arithmetic_turns_onednn_off_and_sets_threads_inside_only():
    from vlm2vla_ros.miniature.kernels import with_pinned_environment

    code = (
        "import torch; from vlm2vla_ros.miniature.kernels import pinned_arithmetic, arithmetic_record\n"
        "torch.set_num_threads(1); before = (torch.backends.mkldnn.enabled, torch.get_num_threads())\n"
        "with pinned_arithmetic(3):\n"
        "    inside = arithmetic_record()\n"
        "print(before, (inside['onednn'], inside['torch_threads'], inside['pinned'], inside['cpu_capability']),"
        " (torch.backends.mkldnn.enabled, torch.get_num_threads()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=with_pinned_environment(os.environ), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "(True, 1) (False, 3, True, 'AVX2') (True, 1)"


def test_refuses_a_non_empty_folder(tmp_path):
    from vlm2vla_ros.tools.experiment import main

    (tmp_path / "old.txt").write_text("x")
    assert main(["--out", str(tmp_path), "--quick"]) == 1


def test_settings_from_the_command_line_are_typed_and_checked(tmp_path, capsys):
    from vlm2vla_ros.miniature.experiment import ExperimentConfig
    from vlm2vla_ros.tools.experiment import main, with_settings

    base = ExperimentConfig.full()
    config = with_settings(base, [
        "reach_demos=6000", "chunk_moves=1", "pretrain_freeze_tower=True", "pretrain_lr=1e-3", "lora_lr=1",
        "location_phases=[[1, 400], [3, 2000]]", "location_kinds=('relative', 'direction')", " view = 'table' ",
    ])
    assert (config.reach_demos, config.chunk_moves, config.pretrain_freeze_tower, config.view) == (6000, 1, True, "table")
    assert config.location_phases == ((1, 400), (3, 2000)) and config.location_kinds == ("relative", "direction")
    assert config.lora_lr == 1.0 and isinstance(config.lora_lr, float)
    assert with_settings(base, []) == base
    tower = with_settings(base, ["lora_tower_lr=2e-4"])  # the adapter's tower rate reaches the trainer
    assert tower.lora_train(Path("b"), Path("d"), Path("o")).vision_learning_rate == 2e-4
    assert base.lora_train(Path("b"), Path("d"), Path("o")).vision_learning_rate == 0.0
    assert with_settings(base, ["verify_mix_subtasks=['grasp', 'lift']"]).verify_mix_subtasks == ("grasp", "lift")
    for pairs, message in [
        (["no_such_setting=1"], "KEY one of the experiment's settings"),
        (["reach_demos"], "KEY=VALUE"),
        (["spec=1"], "spec excepted"),
        (["reach_demos=lots"], "not a Python literal"),
        (["reach_demos=True"], "of type int"),
        (["pretrain_freeze_tower=1"], "of type bool"),
        (["location_kinds='relative'"], "of type tuple"),
        (["reach_demos=10"], "needs chunk_moves"),  # the config's own check, with chunk_moves 0
        (["rehearsal_scenes=6001"], "0 to pretrain_scenes"),  # more scenes than the base was pretrained on
        (["reading_blocks=0"], "at least 1"),
        (["verify_mix_subtasks=('grasp', 'place')"], "completion cases exist for"),
        (["bind_phases=((3, 10),)", "bind_fresh=32"], "are the new examples of a bind batch"),
        (["bind_phases=((3, 10),)", "bind_fresh=28", "bind_verify_mix=4"], "together at most pretrain_batch - 1"),
        (["bind_phases=((3, 10),)", "bind_verify_mix=-1"], "bind_verify_mix 0 or more"),
        (["bind_verify_mix=2"], "bind_phases is empty"),
        (["bind_kinds=('colour',)"], "bind_kinds are questions"),
        (["place_head=-1.0"], "0 \\(off\\) or more"),
        (["lora_place_head=-1.0", "plan_totals=True"], "0 \\(off\\) or more"),
        (["lora_place_head=1.0"], "plan_totals is off"),
        (["tower_again_steps=-1"], "tower_again_steps is a number of steps"),
        (["lora_tower_lr=-0.0002"], "lora_tower_lr is a learning rate"),
        (["near_plan_copies=0"], "near_plan_copies is how many times"),
        (["near_plan_copies=3"], "near_plan_copies picks plans by the totals they state, and plan_totals is off"),
        (["judged_kinds=('pick_up', 'juggle')"], "judged_kinds are task kinds"),
        (["verifier_subtasks=('place',)"], "verifier_subtasks: completion cases exist for"),
        (["verifier_steps=-1"], "verifier_steps must be 0 or more"),
        (["verifier_steps=10", "judged_kinds=()"], "judges the closed loop on judged_kinds"),
        (["verifier_steps=100000", "verifier_batch=16"], "would reach the held-out ones"),
        (["verifier_margin=(2.0, -0.5)"], "verdict_margin.step"),
        (["verifier_margin=(2.0,)"], "a \\(start, step\\) pair"),
    ]:
        with pytest.raises(ValueError, match=message):
            with_settings(base, pairs)
    # the command refuses a bad setting before it creates or trains anything
    out = tmp_path / "run"
    assert main(["--out", str(out), "--quick", "--set", "reach_demos=lots"]) == 2
    assert "reach_demos" in capsys.readouterr().err and not out.exists()


def test_a_settings_file_is_a_recipe_that_set_overrides(tmp_path, capsys):
    from vlm2vla_ros.miniature.experiment import ExperimentConfig
    from vlm2vla_ros.tools.experiment import main, settings_file, with_settings

    recipe = tmp_path / "recipe.txt"
    recipe.write_text("# a comment\n\nchunk_moves=1\n  reach_demos = 6000  \n# reach_demos=7\nreach_cycles=3\n")
    assert settings_file(recipe) == ["chunk_moves=1", "reach_demos = 6000", "reach_cycles=3"]
    # the shipped recipe (finding 38's) is whole and valid: every line a setting the config takes
    shipped_file = Path(__file__).resolve().parents[1] / "config" / "miniature" / "tower_recipe.txt"
    shipped = with_settings(ExperimentConfig.full(), settings_file(shipped_file))
    assert (shipped.lora_tower_lr, shipped.near_plan_copies, shipped.verifier_steps, shipped.plan_totals) == (
        2e-4, 3, 1500, True)
    assert shipped.bind_phases == ((1, 1000), (3, 3000), (3, 3000), (3, 3000)) and shipped.chunk_moves == 1
    assert shipped.grasp_height == 0.1  # finding 43
    assert shipped.verifier_margin == (2.0, 0.75)  # finding 50: the shipped verifier's verdict_margin.json
    assert with_settings(ExperimentConfig.full(), settings_file(recipe) + ["reach_demos=7"]).reach_demos == 7
    (tmp_path / "bad.txt").write_text("chunk_moves=1\nreach_demos 6000\n")
    with pytest.raises(ValueError, match="bad.txt, line 2: expected KEY=VALUE"):
        settings_file(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="cannot be read"):
        settings_file(tmp_path / "missing.txt")
    # the command takes both; a bad setting or a missing file is refused before anything is made
    out = tmp_path / "run"
    assert main(["--out", str(out), "--quick", "--settings", str(recipe), "--set", "reach_demos=lots"]) == 2
    assert "reach_demos" in capsys.readouterr().err and not out.exists()
    assert main(["--out", str(out), "--quick", "--settings", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: cannot be read" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_a_verifier_with_a_bar_carries_it_in_its_folder_and_the_report_says_so(run, tmp_path):
    import dataclasses

    from vlm2vla_ros.miniature.experiment import ExperimentConfig, _margin_words, train_verifier
    from vlm2vla_ros.policy import PolicyConfig, VerdictMargin, load_policy

    out, _ = run
    config = dataclasses.replace(ExperimentConfig.quick(), verifier_margin=(2.0, 0.75))
    train_verifier(out / "base", tmp_path / "verifier", config, log=lambda line: None)
    rule = VerdictMargin(2.0, 0.75, ("move",))
    assert load_policy(PolicyConfig(model_path=str(tmp_path / "verifier"), device="cpu")).config.verdict_margin == rule
    assert _margin_words([2.0, 0.75]) == (' Its "move above" verdicts advance when "advance" outscores "retry" by more '
                                          "than 2 logits, 0.75 less after each retry of the subtask (finding 50).")
    assert _margin_words([0.0, 0.0]) == _margin_words(None) == ""


def test_location_errors_score_answers_against_the_references():
    from vlm2vla_ros.miniature.experiment import location_errors

    rows = [
        {"answer": "x 30 y 10", "m": "x 30 y 11"},  # 1 cm off: within 1.5 cm
        {"answer": "x 20 y -10", "m": "x 22 y -9"},  # 2.2 cm off
        {"answer": "x 40 y 0", "m": "move above the red block"},  # not a location: counted, not read
    ]
    scores = location_errors(rows, "m", tolerance_cm=1.5)
    assert scores["questions"] == 3 and scores["read"] == 2
    assert scores["mean_abs_cm"] == [1.0, 1.0]
    assert scores["within_tolerance"] == pytest.approx(1 / 3)
    assert scores["mean_guess_abs_cm"] == pytest.approx([20 / 3, 20 / 3])  # references' mean is x 30, y 0
    assert location_errors(rows[2:], "m", 1.5)["mean_abs_cm"] == [None, None]
    with pytest.raises(ValueError, match="locations"):
        location_errors([{"answer": "yes", "m": "x 1 y 1"}], "m", 1.5)


def test_plan_totals_are_scored_against_where_the_block_was():
    from vlm2vla_ros.miniature.experiment import plan_total_errors, reach_lines

    def episode(*cycles):
        return {"cycles": [{"plan": plan, "to_block_cm": where} for plan, where in cycles]}

    episodes = [
        episode(("[3.0, 4.0, -8.0] cm to go. Move forward.", [0.0, 0.0]),  # 5 cm off
                ("[1.0, 1.0, -8.0] cm to go. Move forward.", [1.0, 2.0])),  # 1 cm off
        episode(("Move forward.", [5.0, 5.0]),  # states no total: left out
                ("[0.0, 0.0, -8.0] cm to go. Move down.", [0.6, -0.8])),  # 1 cm off
    ]
    assert plan_total_errors(episodes, 1.5) == {0: {"read": 1, "median_cm": 5.0, "within": 0},
                                                 1: {"read": 2, "median_cm": pytest.approx(1.0), "within": 2}}
    assert plan_total_errors([episode(("Move forward.", [1.0, 1.0]))], 1.5) == {}
    after = [{"cycles": k, "mean_cm": 5.0, "within_tolerance": 0.0} for k in range(3)]
    with_totals = {"vlm2vla": {"tolerance_cm": 1.5, "after": after, "episodes": episodes},
                   "baseline": {"tolerance_cm": 1.5, "after": after, "episodes": [episode(("Move.", [1.0, 1.0]))]}}
    text = "\n".join(reach_lines(with_totals))
    assert "| VLM2VLA | 5.0 cm, 0 of 1 | 1.0 cm, 2 of 2 |" in text and "| baseline |" not in text.split("Plans that state")[1]
    # (3, 4) then (0, -1) in one episode: the pair's product is -4, so nothing persists (clipped at 0).
    # Near the block (1.5-5 cm) only the second cycle's 2.2 cm, with 1.4 cm stated: no dead band.
    assert ("- VLM2VLA: median 1.0 cm, persistent share 0.00 (3 plans, 1 pairs of consecutive cycles); "
            "dead band 0 of 1") in text
    assert "- baseline" not in text
    plain = {"vlm2vla": {**with_totals["vlm2vla"], "episodes": [{"distance_cm": [5.0]}]}, "baseline": with_totals["baseline"]}
    assert "Plans that state" not in "\n".join(reach_lines(plain))


def test_copy_scores_count_exact_repeats_per_content(tmp_path):
    from types import SimpleNamespace

    from vlm2vla_ros.miniature import vqa
    from vlm2vla_ros.miniature.experiment import copy_scores

    items = vqa.copy_set(range(8), tmp_path, image_size=32)
    answers = {i["question"]: i["answer"] for i in items}
    wrong = {items[0]["question"], items[1]["question"]}  # two answers off by a character or a space

    class Backend:
        def generate(self, request):
            question = request.messages[0]["content"][-1]["text"]
            text = answers[question]
            if question in wrong:
                text = text[:-1] if question == items[0]["question"] else text.replace(" ", "  ", 1)
            if not request.use_adapter:
                text = "no"  # the base side repeats nothing
            return SimpleNamespace(text=text + "\n")

    scores = copy_scores(SimpleNamespace(backend=Backend()), items, tmp_path / "copy.jsonl")
    assert scores["examples"] == 8 and scores["adapter"]["exact"] == pytest.approx(6 / 8) and scores["base"]["exact"] == 0
    for content in {i["content"] for i in items}:
        share = [i["question"] not in wrong for i in items if i["content"] == content]
        assert scores["adapter"][f"content:{content}"] == pytest.approx(sum(share) / len(share))


def test_completion_verdicts_count_each_verdict_against_the_simulator():
    """A verifier that always advances: every held-out case lands in an "advanced" column, and the
    columns split by the simulator's label (move-above cases are done and missed about half each)."""
    import dataclasses

    from vlm2vla_ros.miniature.experiment import ExperimentConfig, completion_verdicts
    from vlm2vla_ros.policy.types import VerifyResult

    seen = []

    class Advances:
        def verify(self, before, after, subtask, next_subtask):
            seen.append((before.shape, after.shape, subtask, next_subtask))
            return VerifyResult(True, "advance", {}, {})

    config = dataclasses.replace(ExperimentConfig.quick(), verifier_eval_cases=12, verifier_subtasks=("move_above", "lift"))
    verdicts = completion_verdicts(Advances(), config)
    assert set(verdicts) == {"move_above", "lift"}
    for counts in verdicts.values():
        assert counts["retried_done"] == counts["retried_not_done"] == 0
        assert counts["advanced_done"] + counts["advanced_not_done"] == 12
    assert verdicts["move_above"]["advanced_done"] >= 1 and verdicts["move_above"]["advanced_not_done"] >= 1
    assert len(seen) == 24 and all(b == a == (64, 64, 3) for b, a, _, _ in seen)
    # each case asked in its task's own words; a "move above" is never a task's last subtask
    assert all(subtask for _, _, subtask, _ in seen) and all(following for _, _, _, following in seen[:12])
    # a verifier trained on its own "move above" rule (finding 47) is scored on cases drawn and labelled by it
    import numpy as np

    from vlm2vla_ros.miniature import vqa
    from vlm2vla_ros.miniature.experiment import VERIFIER_EVAL_FIRST_SEED
    from vlm2vla_ros.sim.render import render

    own = dataclasses.replace(config, verifier_done_cm=1.2, verifier_miss_cm=4.0, verifier_before_cm=(0.5, 15.0))
    rule = own.verifier_cases()
    assert rule == vqa.MoveAboveCases(done_m=0.012, miss_m=0.04, before_m=(0.005, 0.15))
    seen.clear()
    images = []

    class Records(Advances):
        def verify(self, before, after, subtask, next_subtask):
            images.append(after)
            return super().verify(before, after, subtask, next_subtask)

    counts = completion_verdicts(Records(), dataclasses.replace(own, verifier_subtasks=("move_above",)))["move_above"]
    drawn = list(vqa.move_above_worlds(range(VERIFIER_EVAL_FIRST_SEED, VERIFIER_EVAL_FIRST_SEED + 12), rule))
    assert counts["advanced_done"] == sum(vqa.subtask_done(after, task.plan[index], rule.done_m)
                                          for _, _, after, task, index, _ in drawn)
    assert all(np.array_equal(image, render(after, own.image_size, own.image_size, own.view))
               for image, (_, _, after, *_) in zip(images, drawn, strict=True))


@pytest.mark.parametrize("change", [dict(verifier_done_cm=5.0, verifier_miss_cm=4.0), dict(verifier_done_cm=0.0),
                                    dict(verifier_before_cm=(15.0, 5.0)), dict(verifier_before_cm=(1.0, 2.0, 3.0))])
def test_a_verifier_rule_whose_cases_cannot_be_drawn_is_refused(change):
    import dataclasses

    from vlm2vla_ros.miniature.experiment import ExperimentConfig

    with pytest.raises(ValueError, match="move-above cases need|verifier_before_cm"):
        dataclasses.replace(ExperimentConfig.quick(), **change)


class _Stop(Exception):
    """A lost process, played by the log: raised when a chosen line is written."""


def _stop_at(text: str):
    def log(line: str) -> None:
        if text in line:
            raise _Stop(line)

    return log


def _without_times(value):
    """metrics with every wall-clock figure, and the record of the resumption, left out."""
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items()
                if k not in ("timings_s", "wall_time_s", "seconds", "resumed", "elapsed_s")}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


@pytest.mark.slow
def test_a_run_stopped_five_times_and_resumed_makes_the_numbers_of_one_never_stopped(tmp_path):
    """Stopped in its first stage (nothing finished), after the tower's reading phase (its
    gradients are left on the weights and the place head does not exist yet), after the location
    phases (the location seeds have moved on), as the first three-block bind phase starts (the
    place head and the completion seeds too) and inside the grounding evaluation (its folder half written,
    the engines' sampling counts moved on); each resume goes on after the last finished stage,
    and the end is the run that was never stopped: the same metrics, weights and report but for
    times. A finished run is not resumed again."""
    import dataclasses

    from vlm2vla_ros.miniature.experiment import ExperimentConfig, read_checkpoint, run_experiment

    config = dataclasses.replace(ExperimentConfig.quick(), bind_phases=((1, 2), (3, 2), (3, 2)), bind_verify_mix=1)
    whole, stopped = tmp_path / "whole", tmp_path / "again"  # names of one length: paths are in the adapter config
    run_experiment(whole, config, log=lambda line: None)
    never_stopped = json.loads((whole / "metrics.json").read_text())
    stages = list(never_stopped["timings_s"])
    bind = "pretraining the VLM (vision tower frozen): which block is asked, 3 block(s), beside the mixture"
    stops = [  # (a line the stopped process writes, the stages finished by then)
        ("tokenizer and base model folder ...", 0),
        ("copying alone, new examples every batch ...", stages.index("pretraining the VLM (vision tower frozen): copying alone, "
                                                                     "new examples every batch")),
        ("first question kinds ...", stages.index("pretraining the VLM (vision tower frozen): first question kinds")),
        (f"{bind} ...", stages.index(bind)),
        ("  grounding base:", stages.index("evaluation: grounding (where things are)")),
    ]
    for number, (text, finished) in enumerate(stops):
        lines = []

        def log(line: str, text=text, lines=lines) -> None:
            lines.append(line)
            _stop_at(text)(line)

        with pytest.raises(_Stop):
            run_experiment(stopped, config, log=log, resume=number > 0)
        state = read_checkpoint(stopped)
        assert len(state["finished"]) == finished, text
        if number:
            assert "going on after stage" in lines[0] and lines[1].endswith(f"{stages[stops[number - 1][1]]} ...")
        if number == 1:
            saved = stopped / "checkpoint" / state["counters"]["model"]
            assert (saved / "gradients.pt").is_file() and not (saved / "place_head.pt").exists()
        if number == 3:
            assert (stopped / "checkpoint" / state["counters"]["model"] / "place_head.pt").is_file()
        if number == 4:
            assert (stopped / "grounding_eval").is_dir() and state["counters"]["model"] is None
            assert not list((stopped / "checkpoint").glob("model-*"))  # the base is saved: no pretraining model is kept
    with pytest.raises(ValueError, match="other settings \\(finetune_steps\\)"):
        run_experiment(stopped, dataclasses.replace(config, finetune_steps=3), log=lambda line: None, resume=True)
    resumed = run_experiment(stopped, config, log=lambda line: None, resume=True)

    assert _without_times(json.loads((stopped / "metrics.json").read_text())) == _without_times(never_stopped)
    assert [r["stages_done"] for r in resumed["resumed"]] == [finished for _, finished in stops]
    assert list(resumed["timings_s"]) == stages  # each stage timed once, the repeated bind phase apart
    assert _weights_digest(stopped) == _weights_digest(whole)
    assert (stopped / "verifier" / "model.safetensors").read_bytes() == (whole / "verifier" / "model.safetensors").read_bytes()

    def body(report: Path) -> list[str]:
        """The report without its times: the first paragraph, every "N s", the stage table (last)."""
        lines = report.read_text().split("## Stage times")[0].splitlines()
        return [re.sub(r"\b[0-9.]+ s\b", "N s", line) for line in lines if not line.startswith("Wall time")]

    assert body(stopped / "report.md") == body(whole / "report.md")
    assert "resumed from its checkpoint 5 time(s)" in (stopped / "report.md").read_text()
    with pytest.raises(ValueError, match="the run is finished"):
        run_experiment(stopped, config, log=lambda line: None, resume=True)


def test_resume_takes_the_checkpoints_settings_and_needs_one(tmp_path, capsys):
    from vlm2vla_ros.tools.experiment import main

    assert main(["--out", str(tmp_path), "--resume", "--set", "finetune_steps=3"]) == 2
    assert "drop --quick, --seed" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--resume"]) == 1
    assert "has no checkpoint" in capsys.readouterr().err


def test_the_report_names_the_verifiers_rule_and_flags_a_verifier_blind_to_the_images():
    """A verifier whose training never left the answer's prior (one of finding 47's draws retried
    98% of every "move above") is flagged in the report; one that tells done from not done is not.
    The verdict table states the rule its held-out cases were drawn and labelled by."""
    from vlm2vla_ros.miniature.experiment import blind_subtasks, verifier_lines

    seeing = {"advanced_done": 45, "advanced_not_done": 6, "retried_done": 5, "retried_not_done": 44}
    prior = {"advanced_done": 2, "advanced_not_done": 1, "retried_done": 48, "retried_not_done": 49}
    always = {"advanced_done": 0, "advanced_not_done": 0, "retried_done": 50, "retried_not_done": 50}
    one_label = {"advanced_done": 50, "advanced_not_done": 0, "retried_done": 0, "retried_not_done": 0}
    assert blind_subtasks({"move_above": seeing, "grasp": prior, "lift": always, "other": one_label}) == ["grasp", "lift"]

    episode = {"task_kind": "pick_up", "lang": "en", "success": True}
    v = {"steps": 1500, "seconds": 369.0, "cases": 24000, "kinds": ["pick_up"],
         "vlm2vla": {"episodes": [episode]}, "baseline": {"episodes": [episode]},
         "move_above_cm": {"done": 1.2, "miss": 4.0, "before": [0.5, 15.0]},
         "verdicts": {"base": {"move_above": prior}, "verifier": {"move_above": seeing}}}
    headline = {"episodes": [episode]}
    report = "\n".join(verifier_lines(v, headline, headline))
    assert "the gripper within 1.2 cm of the block" in report and "misses to 4 cm, the gripper 0.5-15 cm off" in report
    assert "one subtask; drawn as" in report
    assert "do not follow the images" not in report  # the base's blindness is the base's
    v["verdicts"]["verifier"] = {"move_above": prior}
    assert "**Its verdicts do not follow the images** (move above" in "\n".join(verifier_lines(v, headline, headline))
    del v["move_above_cm"]  # a run before finding 47: the pretraining's rule
    older = "\n".join(verifier_lines(v, headline, headline))
    assert "the gripper within 0.8 cm of the block" in older and "around one subtask; labels from the simulator" in older
