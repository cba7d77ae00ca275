"""Evaluation metrics: chunk comparison, offline summary, VQA scoring and input checks."""

import json
import math
import subprocess
import sys

import pytest

from vlm2vla_ros.action_language import ActionChunk, ActionStep, format_action_chunk
from vlm2vla_ros.training.evaluate import (
    compare_chunks,
    format_metrics,
    read_vqa,
    summarise_offline,
    vqa_correct,
    wilson_interval,
    write_report,
)


def chunk(*steps):
    return ActionChunk(tuple(ActionStep(*s) for s in steps))


def test_compare_chunks_direction_l2_and_gripper():
    result = compare_chunks(chunk((2.0, -1.0, 0.0, 1), (2.0, 0.0, -0.2, 0)), [[3.0, 1.0, 0.0, 1]])
    # net pred (4, -1, -0.2) vs ref (3, 1, 0): dx agrees, dy disagrees, dz both within the dead band
    assert result["direction"] == {"dx": True, "dy": False, "dz": True}
    # step 1: |(2,-1,0)-(3,1,0)| = sqrt(5); step 2 vs a zero move: |(2,0,-0.2)|
    assert result["step_l2_cm"] == pytest.approx((math.sqrt(5) + math.sqrt(4.04)) / 2)
    assert result["net_l2_cm"] == pytest.approx(math.sqrt(1 + 4 + 0.04))
    assert result["gripper"] is False and result["steps"] == [2, 1]


def test_offline_summary_counts_unparsed_answers():
    parsed = {"parsed": True, "seconds": 1.0, **compare_chunks(chunk((1.0, 0.0, 0.0, 1)), [[1.0, 0.0, 0.0, 1]])}
    rows = [parsed, {"parsed": False, "seconds": 3.0}]
    metrics = summarise_offline(rows)
    assert (metrics.examples, metrics.parsed, metrics.parse_rate) == (2, 1, 0.5)
    assert metrics.direction_agreement == {"dx": 1.0, "dy": 1.0, "dz": 1.0}
    assert metrics.step_l2_cm == 0.0 and metrics.gripper_accuracy == 1.0 and metrics.mean_cycle_s == 2.0
    assert math.isnan(summarise_offline([{"parsed": False, "seconds": 1.0}]).step_l2_cm)


@pytest.mark.parametrize(
    "prediction, answer, correct",
    [("Yes.", "yes", True), ("yes, there is", "Yes", True), ("yesterday", "yes", False), ("", "yes", False),
     ("Two cups", "two", True), ("no", "yes", False), ("3.5", "3", False), ("-3", "3", False), ("3.", "3", True),
     ("2.5 cm", "2.5", True), ("más lejos.", "Más lejos", True), ("más", "más lejos", False),
     ("left-hand", "left", False), ("the red block, I think", "the red block", True), ("it\u2019s red", "it's red", True),
     ("yes_", "yes", True), ("yes,no", "yes", True), ("+3", "3", True)],
)
def test_vqa_answers_are_matched_as_words(prediction, answer, correct):
    assert vqa_correct(prediction, answer) is correct


@pytest.mark.parametrize(("successes", "trials", "low", "high"), [
    (9, 20, 0.2582, 0.6579),  # statsmodels proportion_confint(9, 20, method="wilson")
    (31, 100, 0.2278, 0.4063),
    (0, 20, 0.0, 0.1611),  # not empty at none, as the normal approximation would be
    (20, 20, 0.8389, 1.0),
])
def test_wilson_interval_matches_the_reference_values(successes, trials, low, high):
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize(("successes", "trials"), [(1, 0), (-1, 5), (6, 5)])
def test_wilson_interval_refuses_impossible_counts(successes, trials):
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(successes, trials)


def test_vqa_file_problems_name_the_line(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "a.png", "question": "q?", "answer": "a"}) + "\n{bad\n")
    with pytest.raises(ValueError, match="q.jsonl:2 is not valid JSON"):
        read_vqa(tmp_path / "q.jsonl")
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "b.png", "question": "q?", "answer": "a"}))
    with pytest.raises(ValueError, match="does not exist"):
        read_vqa(tmp_path / "q.jsonl")


def test_report_holds_every_section_and_plots(tmp_path):
    rows = [{"parsed": True, "seconds": 1.0, **compare_chunks(chunk((1.0, 0.0, 0.0, 1)), [[1.5, 0.0, 0.0, 1]])}]
    from dataclasses import asdict

    results = {
        "model": "m", "adapter": "a",
        "offline": {"metrics": asdict(summarise_offline(rows)), "rows": rows},
        "closed_loop": {"success_rate": {"pick_up": 0.5},
                        "episodes": [{"task_kind": "pick_up", "success": True}, {"task_kind": "pick_up", "success": False}]},
        "vqa": {"result": {"questions": 4, "accuracy_adapter": 0.5, "accuracy_base": 0.75, "retention": 2 / 3}},
    }
    report = write_report(tmp_path, results).read_text()
    assert "| step L2 error (cm) | 0.50 |" in report
    assert "| pick_up | 0.50 | 0.09-0.91 | 2 |" in report and "retention (with / without): 0.667" in report
    assert "Verdicts from the base (the adapter off)" in report
    assert "pick_up 0.50 (0.09-0.91, 2 episodes)" in format_metrics(results)
    assert (tmp_path / "step_l2.png").is_file() and (tmp_path / "closed_loop.png").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["vqa"]["result"]["questions"] == 4


class _ReachEngine:
    """cycle() moves toward the named block as the scene was laid out (an oracle, scaled by
    `gain`), or raises the policy's own error when `fail`."""

    def __init__(self, seed, gain=1.0, fail=False):
        from vlm2vla_ros.sim.scene import make_scene

        world, task = make_scene(seed, "pick_up")
        self.world, self.task, self.gain, self.fail = world, task, gain, fail
        self.calls = 0

    def cycle(self, image, instruction, subtask):
        from vlm2vla_ros.policy import PolicyError
        from vlm2vla_ros.policy.types import CycleResult

        self.calls += 1
        assert image.ndim == 3 and instruction == self.task.instruction("en") and subtask.startswith("move above")
        if self.fail:
            raise PolicyError("garbage chunk")
        block = next(o for o in self.world.objects if o.name == self.task.pick)
        dx = self.gain * 100 * (block.x - self.world.gripper_x) if self.calls == 1 else 0.0
        dy = self.gain * 100 * (block.y - self.world.gripper_y) if self.calls == 1 else 0.0
        parts = max(1, math.ceil(max(abs(dx), abs(dy)) / 4))
        steps = chunk(*[(dx / parts, dy / parts, 0.0, 1)] * parts)
        return CycleResult("move", steps, "move", format_action_chunk(steps), {}, {})


def test_reach_episode_measures_the_distance_to_the_named_block_after_each_cycle():
    from vlm2vla_ros.training.evaluate import reach_episode

    oracle = reach_episode(_ReachEngine(50000), 50000, cycles=2, image_size=32)
    start, first, second = oracle["distance_cm"]
    assert start > 3 and first < 0.3 and second == first and oracle["ended"] == "done"
    assert oracle["subtask"].startswith("move above the") and oracle["subtask"].endswith("block")
    # each cycle's plan and chunk beside where the block was from the gripper: the oracle's first move is that place
    first_cycle, second_cycle = oracle["cycles"]
    assert first_cycle["plan"] == "move" and math.hypot(*first_cycle["to_block_cm"]) == pytest.approx(start, abs=0.01)
    moved = [sum(step[axis] for step in json.loads(first_cycle["chunk"])) for axis in (0, 1)]
    assert moved == pytest.approx(first_cycle["to_block_cm"], abs=0.25)  # each step rounded to 1 mm
    assert math.hypot(*second_cycle["to_block_cm"]) == pytest.approx(first, abs=0.01)
    assert json.loads(second_cycle["chunk"])[0][:2] == [0.0, 0.0]

    halfway = reach_episode(_ReachEngine(50000, gain=0.5), 50000, cycles=1, image_size=32)
    assert halfway["distance_cm"][0] == start and abs(halfway["distance_cm"][1] - start / 2) < 0.3

    alone = reach_episode(_ReachEngine(50000), 50000, cycles=1, image_size=32, alone=True)
    assert alone["alone"] and alone["distance_cm"] == oracle["distance_cm"][:2]  # the same block, the same place

    failed_engine = _ReachEngine(50000, fail=True)
    failed = reach_episode(failed_engine, 50000, cycles=2, image_size=32)
    assert failed["distance_cm"] == [start] and failed["ended"] == "policy error: garbage chunk" and failed_engine.calls == 1


class _Seeing:
    """Records the images of subtasks() and hands every stage on to an engine."""

    def __init__(self, engine):
        self.engine, self.images = engine, []

    def subtasks(self, image, task):
        self.images.append(image)
        return self.engine.subtasks(image, task)

    def cycle(self, image, task, subtask):
        return self.engine.cycle(image, task, subtask)

    def verify(self, *args):
        return self.engine.verify(*args)


def test_closed_loop_with_the_named_objects_alone_runs_the_whole_chain():
    from vlm2vla_ros.training.evaluate import ExpertReplay, closed_loop_episode

    for kind, seed in (("pick_up", 50000), ("put_in", 50001)):
        replay = _Seeing(ExpertReplay(kind, seed, alone=True))
        alone = closed_loop_episode(replay, kind, seed, max_cycles=10, image_size=32, alone=True)
        assert alone["alone"] and alone["success"], alone
        assert alone["subtasks_done"] == len(replay.engine.subtask_list) == alone["cycles"]
        whole = closed_loop_episode(replay, kind, seed, max_cycles=10, image_size=32)
        assert not whole["alone"]
        # the camera saw the other objects only in the whole scene
        assert not (replay.images[0] == replay.images[1]).all()


class _Stage:
    """One stage's answers, fixed: a subtask list, a chunk, a verdict; counts its calls."""

    def __init__(self, subtasks=(), chunk_steps=(), advance=True):
        self.list, self.steps, self.advance, self.calls = list(subtasks), chunk_steps, advance, []

    def subtasks(self, image, task):
        from vlm2vla_ros.policy.types import SubtaskResult

        self.calls.append("subtasks")
        return SubtaskResult(self.list, "", {}, {})

    def cycle(self, image, task, subtask):
        from vlm2vla_ros.policy.types import CycleResult

        self.calls.append("cycle")
        return CycleResult("", chunk(*self.steps), "", "", {}, {})

    def verify(self, *args):
        from vlm2vla_ros.policy.types import VerifyResult

        self.calls.append("verify")
        return VerifyResult(self.advance, "", {})


def test_a_stage_mix_takes_each_stage_from_its_own_engine():
    from vlm2vla_ros.miniature.vqa import subtask_done
    from vlm2vla_ros.policy import PolicyError
    from vlm2vla_ros.training.evaluate import ExpertReplay, StageMix, closed_loop_episode

    # the expert's subtasks and chunks, a verifier that never advances: the first subtask forever
    expert, judge = ExpertReplay("pick_up", 50000, alone=True), _Stage(advance=False)
    seen = []
    stuck = closed_loop_episode(StageMix(expert, expert, judge), "pick_up", 50000, max_cycles=3, image_size=32, alone=True,
                                on_verdict=lambda world, task, index, advance: seen.append(
                                    (index, advance, subtask_done(world, task.plan[index]))))
    assert stuck["ended"] == "cycle limit" and stuck["subtasks_done"] == 0 and not stuck["success"]
    assert judge.calls == ["verify"] * 3
    # each verdict comes with the world it judged: above the block after the first move, past it after the next
    assert seen == [(0, False, True), (0, False, False), (0, False, False)]
    # the expert's subtasks, chunks from an engine that does not move: never picked up
    still = _Stage(chunk_steps=[(0.0, 0.0, 0.0, 1)])
    idle = closed_loop_episode(StageMix(expert, still, expert), "pick_up", 50000, max_cycles=6, image_size=32, alone=True)
    assert idle["ended"] == "all subtasks done" and not idle["success"] and still.calls == ["cycle"] * 3
    # a subtask the expert never did has no chunk: a clear policy error, not a guess
    wrong = _Stage(subtasks=["move above the moon"])
    lost = closed_loop_episode(StageMix(wrong, expert, expert), "pick_up", 50000, max_cycles=3, image_size=32, alone=True)
    assert lost["ended"] == "policy error: the expert has no chunk for 'move above the moon'"
    with pytest.raises(PolicyError, match="no chunk"):
        expert.cycle(None, "", "lift the moon")


def test_the_closed_loop_keeps_the_policy_nodes_rules():
    """The episode is rollout.TaskRun's: the node's per-subtask retry limit ends it when given,
    and without one the cycle limit alone does, as in the documented protocol."""
    from vlm2vla_ros.training.evaluate import ExpertReplay, StageMix, closed_loop_episode

    expert = ExpertReplay("pick_up", 50000, alone=True)
    limited = closed_loop_episode(StageMix(expert, expert, _Stage(advance=False)), "pick_up", 50000, max_cycles=10,
                                  image_size=32, alone=True, max_retries_per_subtask=2)
    assert limited["cycles"] == 3 and limited["subtasks_done"] == 0 and not limited["success"]
    assert limited["ended"] == "subtask 1 ('move above the pink block') not done after 2 retries"
    unlimited = closed_loop_episode(StageMix(expert, expert, _Stage(advance=False)), "pick_up", 50000, max_cycles=10,
                                    image_size=32, alone=True)
    assert unlimited["cycles"] == 10 and unlimited["ended"] == "cycle limit"
    once = closed_loop_episode(StageMix(expert, expert, _Stage(advance=False)), "pick_up", 50000, max_cycles=10,
                               image_size=32, alone=True, max_retries_per_subtask=0)
    assert once["cycles"] == 1 and "not done after 0 retries" in once["ended"]
    with pytest.raises(ValueError, match="max_cycles must be >= 1"):
        closed_loop_episode(expert, "pick_up", 50000, max_cycles=0, image_size=32)


class _Verdicts:
    """A verifier that answers from a list of verdicts, in turn, and records the subtasks judged."""

    def __init__(self, *advances):
        self.advances, self.judged = list(advances), []

    def verify(self, before, after, subtask, following, retries=0):
        from vlm2vla_ros.policy.types import VerifyResult

        self.judged.append((subtask, retries))
        return VerifyResult(self.advances.pop(0), "", {})


def test_a_missed_grasp_sends_the_closed_loop_back_to_its_move():
    """The node's move_again_after: a grasp judged not done goes back to "move above", which
    keeps its retries (the verdict margin's bar reads them), and so does the grasp; 0 retries the
    grasp where it is."""
    from vlm2vla_ros.training.evaluate import ExpertReplay, StageMix, closed_loop_episode, closed_loop_eval

    expert = ExpertReplay("pick_up", 50000, alone=True)
    verdicts = _Verdicts(False, True, False, True, True, True)
    record = closed_loop_episode(StageMix(expert, expert, verdicts), "pick_up", 50000, max_cycles=10, image_size=32,
                                 alone=True)
    move, grasp, lift = expert.subtask_list
    assert verdicts.judged == [(move, 0), (move, 1), (grasp, 0), (move, 1), (grasp, 1), (lift, 0)]
    assert record["moves_again"] == 1 and record["cycles"] == 6 and record["ended"] == "all subtasks done"
    verdicts = _Verdicts(False, True, False, True, True)
    record = closed_loop_episode(StageMix(expert, expert, verdicts), "pick_up", 50000, max_cycles=10, image_size=32,
                                 alone=True, move_again_after=0)
    assert verdicts.judged == [(move, 0), (move, 1), (grasp, 0), (grasp, 1), (lift, 0)]
    assert record["moves_again"] == 0 and record["cycles"] == 5
    # closed_loop_eval passes the rule on (the eval CLI's --move-again-after)
    for again, judged in ((1, [(move, 0), (grasp, 0), (move, 0), (grasp, 1)]), (0, [(move, 0), (grasp, 0), (grasp, 1)])):
        expert = ExpertReplay("pick_up", 50000)
        verdicts = _Verdicts(True, False, *[True] * 4)
        _, (record,) = closed_loop_eval(StageMix(expert, expert, verdicts), ["pick_up"], [50000], 4, 32,
                                         move_again_after=again)
        assert verdicts.judged[:len(judged)] == judged and record["moves_again"] == again, again


class _Restarting(_Stage):
    def restart_sampling(self, key):
        self.calls.append(f"restart {key}")


def test_each_episode_samples_as_it_would_alone():
    """Every engine of a closed-loop episode restarts its sampling once, before the subtasks, as
    the policy node does at each task: an episode does not depend on those before it."""
    from vlm2vla_ros.training.evaluate import StageMix, closed_loop_episode

    policy, judge = _Restarting(["move above the pink block"], [(0.0, 0.0, 0.0, 1)]), _Restarting(advance=True)
    for _ in range(2):
        closed_loop_episode(StageMix(policy, policy, judge), "pick_up", 50000, max_cycles=3, image_size=32, alone=True)
    assert policy.calls == ["restart pick_up-50000", "subtasks", "cycle"] * 2
    assert judge.calls == ["restart pick_up-50000", "verify"] * 2


def test_the_simulator_judging_replaces_the_engines_verifier():
    from vlm2vla_ros.miniature.vqa import simulator_verdict
    from vlm2vla_ros.training.evaluate import ExpertReplay, StageMix, closed_loop_episode

    # the expert's chunks under a verifier that never advances would stay on the first subtask
    # (the test above); judged by the world, each subtask advances once done, and the verifier is never asked
    expert, verifier = ExpertReplay("pick_up", 50000, alone=True), _Stage(advance=False)
    record = closed_loop_episode(StageMix(expert, expert, verifier), "pick_up", 50000, max_cycles=6, image_size=32,
                                 alone=True, judge=simulator_verdict)
    assert record["success"] and record["ended"] == "all subtasks done" and record["cycles"] == 3
    assert verifier.calls == []
    # the same words in Spanish are the same subtasks; words the task does not have are never done
    world, task = _pick_up_world()
    for lang in ("en", "es"):
        assert [simulator_verdict(world, task, name) for name in task.subtasks(lang)] == [True, False, False]
    assert not simulator_verdict(world, task, "move above the moon")


def _pick_up_world():
    """Pick-up seed 50000 with the gripper put straight above its block: "move above" done, the rest not."""
    from vlm2vla_ros.sim.scene import make_scene

    world, task = make_scene(50000, "pick_up")
    block = world.object(task.pick)
    world.move_gripper(block.x - world.gripper_x, block.y - world.gripper_y, 0.0)
    return world, task


def test_a_scene_the_expert_cannot_solve_is_a_failed_episode_not_a_crash(monkeypatch):
    from vlm2vla_ros.sim.expert import Episode, ScriptedExpert
    from vlm2vla_ros.training.evaluate import ExpertReplay, StageMix, closed_loop_episode

    monkeypatch.setattr(ScriptedExpert, "run", lambda self, world, task, seed, image_size=None: Episode(task, seed))
    expert = ExpertReplay("pick_up", 50000, alone=True)
    judge = _Stage()
    record = closed_loop_episode(StageMix(expert, expert, judge), "pick_up", 50000, max_cycles=3, image_size=32)
    assert record["ended"] == "policy error: the expert could not solve pick_up seed 50000"
    assert not record["success"] and judge.calls == []
    # its subtasks from another engine: the cycle refuses the same way
    lists = _Stage(subtasks=["move above the red block"])
    record = closed_loop_episode(StageMix(lists, expert, judge), "pick_up", 50000, max_cycles=3, image_size=32)
    assert record["ended"] == "policy error: the expert could not solve pick_up seed 50000" and record["cycles"] == 1


def test_named_only_keeps_the_tasks_objects_and_the_gripper():
    from vlm2vla_ros.sim.scene import make_scene
    from vlm2vla_ros.sim.world import BLOCK, SimObject, SimWorld
    from vlm2vla_ros.training.evaluate import named_only

    for kind, seed in (("pick_up", 50000), ("put_in", 50001)):
        world, task = make_scene(seed, kind)
        alone = named_only(world, task)
        assert sorted(o.name for o in alone.objects) == sorted(task.targets) and len(world.objects) > len(task.targets)
        assert alone.gripper == world.gripper and alone.gripper_open == world.gripper_open
        assert alone.object(task.targets[0]).x == world.object(task.targets[0]).x
    # a named block standing on one the task does not name cannot be left alone
    from vlm2vla_ros.sim.tasks import Referent, Task

    low = SimObject("blue block", BLOCK, "blue", (30, 80, 230), "cube", 0.30, 0.0, 0.0, 0.045, 0.04)
    high = SimObject("red block", BLOCK, "red", (220, 30, 30), "cube", 0.30, 0.0, 0.04, 0.045, 0.04, resting_on="blue block")
    stacked = SimWorld([low, high], gripper_x=0.2, gripper_y=0.0, gripper_z=0.2, gripper_open=True)
    pick_red = Task("pick_up", (Referent("red block", BLOCK, "red"),), pick="red block")
    with pytest.raises(ValueError, match="rest on objects the task does not name"):
        named_only(stacked, pick_red)


def _dataset(tmp_path, examples=3):
    """A dataset folder of `examples` held-out chunk examples, each with a real frame."""
    from PIL import Image

    data = tmp_path / "ds"
    data.mkdir()
    lines = []
    for i in range(examples):
        Image.new("RGB", (32, 32)).save(data / f"f{i}.png")
        lines.append(json.dumps({"id": f"e{i}", "stage": "chunk", "images": [f"f{i}.png"],
                                 "meta": {"task": "pick up the red block", "subtask": "move above the red block",
                                          "chunk": [[1.0, 0.0, 0.0, 1]]}}))
    (data / "val.jsonl").write_text("\n".join(lines) + "\n")
    return data


class _StubEngine:
    """Answers every chunk with one small move; counts how often it was loaded and closed."""

    loaded = 0
    instances: list = []

    def __init__(self, config):
        type(self).loaded += 1
        type(self).instances.append(self)
        self.config = config
        self.closed = False

    def cycle(self, image, task, subtask):
        from vlm2vla_ros.policy.types import CycleResult

        steps = chunk((1.0, 0.0, 0.0, 1))
        return CycleResult("move", steps, "move", format_action_chunk(steps), {}, {})

    def close(self):
        self.closed = True


@pytest.fixture
def stub_engine(monkeypatch):
    import vlm2vla_ros.policy

    _StubEngine.loaded = 0
    _StubEngine.instances = []
    monkeypatch.setattr(vlm2vla_ros.policy, "load_policy", _StubEngine)
    return _StubEngine


def test_eval_checks_every_input_before_loading_the_model(tmp_path, capsys, stub_engine):
    from vlm2vla_ros.tools.eval import main

    data, out = _dataset(tmp_path), tmp_path / "report"
    base = ["--model", str(tmp_path), "--out", str(out), "--data", str(data)]
    assert main([*base, "--vqa", str(tmp_path / "missing.jsonl")]) == 1
    assert "missing.jsonl does not exist" in capsys.readouterr().err
    (data / "f2.png").unlink()
    assert main(base) == 1
    assert "f2.png" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main([*base, "--max-examples", "2", "--out", str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
    assert stub_engine.loaded == 0 and not out.exists()


@pytest.mark.parametrize("failure, code", [(ValueError("the simulator broke"), 1), (RuntimeError("out of memory"), None)])
def test_eval_writes_the_finished_parts_when_a_later_part_fails(tmp_path, capsys, monkeypatch, stub_engine, failure, code):
    from vlm2vla_ros.tools.eval import main
    from vlm2vla_ros.training import evaluate

    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(evaluate, "closed_loop_eval", broken)
    out = tmp_path / "report"
    argv = ["--model", str(tmp_path), "--out", str(out), "--data", str(_dataset(tmp_path)), "--sim-kinds", "pick_up"]
    if code is None:
        with pytest.raises(RuntimeError, match="out of memory"):
            main(argv)
    else:
        assert main(argv) == code
        assert "the simulator broke" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["offline"]["metrics"]["examples"] == 3 and "closed_loop" not in metrics
    assert metrics["failed"]["part"] == "closed loop" and str(failure) in metrics["failed"]["error"]
    report = (out / "report.md").read_text()
    assert "| examples | 3 |" in report and "## Not finished" in report and str(failure) in report


def test_eval_closed_loop_takes_its_verdicts_from_the_verifier_model(tmp_path, capsys, monkeypatch, stub_engine):
    from vlm2vla_ros.tools.eval import main
    from vlm2vla_ros.training import evaluate

    seen = {}

    def closed_loop(engine, kinds, seeds, max_cycles, image_size, progress=False, view=None, **rules):
        seen["engine"], seen["rules"] = engine, rules
        return {"pick_up": 0.5}, [{"task_kind": "pick_up", "success": s % 2 == 0} for s in seeds]

    monkeypatch.setattr(evaluate, "closed_loop_eval", closed_loop)
    judge = tmp_path / "judge"
    judge.mkdir()
    (judge / "config.json").write_text("{}")
    out = tmp_path / "report"
    argv = ["--model", str(tmp_path), "--adapter", str(tmp_path / "a"), "--out", str(out), "--sim-kinds", "pick_up",
            "--sim-seeds", "4", "--verifier-model", str(judge)]
    assert main(argv) == 0
    policy, verifier = stub_engine.instances
    assert verifier.config.model_path == str(judge) and verifier.config.adapter_path is None
    assert policy.config.adapter_path == str(tmp_path / "a")
    engine = seen["engine"]  # subtasks and cycles from the policy, verdicts from the verifier model
    assert (engine.subtasks_from, engine.cycles_from, engine.verifier) == (policy, policy, verifier)
    assert policy.closed and verifier.closed
    report = (out / "report.md").read_text()
    # no retry limit but the cycles' unless given
    assert seen["rules"] == {"max_retries_per_subtask": None, "move_again_after": 1}
    assert "the cycle limit alone ends an episode; a subtask after a move goes back to the move after each retry" in report
    assert f"Verdicts from `{judge}`" in report and "| pick_up | 0.50 | 0.15-0.85 | 4 |" in report
    assert "pick_up 0.50 (0.15-0.85, 4 episodes)" in capsys.readouterr().out
    # the policy node's retry limit
    argv[argv.index(str(out))] = str(tmp_path / "report2")
    assert main([*argv, "--max-retries-per-subtask", "3", "--move-again-after", "0"]) == 0
    assert seen["rules"] == {"max_retries_per_subtask": 3, "move_again_after": 0}
    report = (tmp_path / "report2" / "report.md").read_text()
    assert "an episode ends at the cycle limit or when a subtask is retried more than 3 times;" in report
    assert "goes back" not in report


def test_eval_mini_is_the_shipped_checkpoint_and_its_verifier(tmp_path, monkeypatch, stub_engine):
    from vlm2vla_ros.shipped import shipped_model
    from vlm2vla_ros.tools.eval import main
    from vlm2vla_ros.training import evaluate

    views = []
    monkeypatch.setattr(evaluate, "closed_loop_eval", lambda engine, kinds, seeds, *a, view=None, **k: (
        views.append(view) or ({"pick_up": 1.0}, [{"task_kind": "pick_up", "success": True}])))
    argv = ["--model", "mini", "--verifier-model", "mini", "--out", str(tmp_path / "r"), "--sim-kinds", "pick_up",
            "--sim-seeds", "1"]
    assert main(argv) == 0
    base, adapter = shipped_model()
    policy, verifier = stub_engine.instances
    assert (policy.config.model_path, policy.config.adapter_path) == (str(base), str(adapter))
    assert verifier.config.model_path == str(base.parent / "verifier")
    assert views == ["gripper"]  # the camera the shipped model was trained with


def test_eval_runs_without_ros():
    """vlm2vla-eval, 'mini' included, is for machines with the model stack and no ROS."""
    code = ("import sys; sys.modules['rclpy'] = None\n"
            "from vlm2vla_ros.tools.eval import main\n"
            "from vlm2vla_ros.shipped import resolve_shipped, resolve_verifier_model\n"
            "assert resolve_shipped('mini', '')[0].endswith('base') and resolve_verifier_model('mini').endswith('verifier')\n"
            "sys.exit(main(['--model', 'mini', '--out', 'unused']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "nothing to evaluate" in done.stderr, done.stderr


def test_eval_refuses_a_verifier_model_it_cannot_use_before_loading(tmp_path, capsys, stub_engine):
    from vlm2vla_ros.tools.eval import main

    base = ["--model", str(tmp_path), "--out", str(tmp_path / "r")]
    assert main([*base, "--sim-kinds", "pick_up", "--verifier-model", str(tmp_path / "missing")]) == 1
    assert "verifier model folder" in capsys.readouterr().err
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")  # an adapter is not a model that judges alone
    assert main([*base, "--sim-kinds", "pick_up", "--verifier-model", str(tmp_path / "adapter")]) == 1
    assert "holds no config.json" in capsys.readouterr().err
    assert main([*base, "--data", str(_dataset(tmp_path)), "--verifier-model", str(tmp_path)]) == 1
    assert "give --sim-kinds too" in capsys.readouterr().err
    assert stub_engine.loaded == 0 and not (tmp_path / "r").exists()


def test_eval_max_examples_takes_the_first_ones(tmp_path, capsys, stub_engine):
    from vlm2vla_ros.tools.eval import main

    out = tmp_path / "report"
    argv = ["--model", str(tmp_path), "--out", str(out), "--data", str(_dataset(tmp_path)), "--max-examples", "2"]
    assert main(argv) == 0
    assert "offline: 2 examples" in capsys.readouterr().out and "## Not finished" not in (out / "report.md").read_text()
    assert [r["id"] for r in json.loads((out / "metrics.json").read_text())["offline"]["rows"]] == ["e0", "e1"]
    report = (out / "report.md").read_text()
    assert main(argv) == 1  # a second evaluation into the same folder would overwrite the first's report
    assert "holds an earlier evaluation (metrics.json, report.md)" in capsys.readouterr().err
    assert (out / "report.md").read_text() == report and stub_engine.loaded == 1


@pytest.mark.parametrize(
    "flag, value, message",
    [("--max-examples", "-1", "positive integer"), ("--max-examples", "0", "positive integer"),
     ("--sim-seeds", "0", "positive integer"), ("--max-cycles", "0", "positive integer"),
     ("--max-cycles", "-3", "positive integer"), ("--sim-seeds", "two", "positive integer"),
     ("--image-size", "0", "positive integer"), ("--image-size", "16", "32 to 4096 pixels"),
     ("--max-retries-per-subtask", "-1", "an integer of 0 or more"),
     ("--max-retries-per-subtask", "three", "an integer of 0 or more")],
)
def test_eval_refuses_bad_counts_and_sizes(tmp_path, capsys, stub_engine, flag, value, message):
    from vlm2vla_ros.tools.eval import main

    argv = ["--model", str(tmp_path), "--out", str(tmp_path / "r"), "--sim-kinds", "pick_up", flag, value]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"{flag}: " in err and message in err
    assert stub_engine.loaded == 0


def test_the_tools_read_their_arguments_without_opencv():
    """Offline evaluation and dataset builds need no renderer (a GPU box may lack the vision extra)."""
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from vlm2vla_ros.tools import dataset, eval\n"
            "print(eval.parse_args(['--model', 'm', '--out', 'o', '--data', 'd', '--image-size', '64']).image_size,\n"
            "      dataset.parse_args(['build', 'episodes', '--out', 'ds']).out)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["64", "ds"], done.stderr
