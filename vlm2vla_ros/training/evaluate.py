"""Is the adapter any good? Offline action metrics, closed-loop sim success, VQA retention.

- Offline: on held-out chunk examples (val.jsonl), the engine writes a plan and a chunk from
  the sub-trajectory's first frame; compared with the recorded chunk: parse rate, per-axis
  direction agreement, step L2 error (cm), gripper accuracy.
- Closed loop: the engine drives the simulator through the robot's own ChunkExecutor (the
  same safety checks and cm -> joint mapping as on the Stretch) on seeded scenes per task
  kind; success is the simulator's check, never the model's claim.
- Reaching: on a pick-up scene, given the right first subtask, how near the chunks take the
  gripper to the named block (the chunk stage alone, without subtask lists or a verifier).
- Which link fails: `StageMix` builds a policy from stages of others, `ExpertReplay` stands in
  for any stage with the scripted expert's own solution of the scene.
- VQA retention: the same weights answer a VQA JSONL with the adapter on and off
  (peft's disable_adapter), so forgetting is measured directly.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlm2vla_ros.action_language import DEFAULT_LIMITS, ActionChunk, ActionLimits, ActionStep, MergeConfig
from vlm2vla_ros.rollout import MOVE_AGAIN_AFTER
from vlm2vla_ros.sim.views import TABLE_VIEW

AXES = ("dx", "dy", "dz")
DIRECTION_DEADBAND_CM = 0.5
"""Net moves smaller than this on an axis count as "no move" when comparing directions."""


def _sign(value: float) -> int:
    return 0 if abs(value) < DIRECTION_DEADBAND_CM else (1 if value > 0 else -1)


def compare_chunks(predicted: ActionChunk, reference: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Per-example action metrics of a predicted chunk against the recorded one."""
    pred = np.array([[s.dx, s.dy, s.dz, s.gripper] for s in predicted.steps], dtype=float)
    ref = np.array(reference, dtype=float).reshape(-1, 4)
    n = max(len(pred), len(ref))
    padded = np.zeros((2, n, 3))
    padded[0, : len(pred)] = pred[:, :3]
    padded[1, : len(ref)] = ref[:, :3]
    step_l2 = float(np.linalg.norm(padded[0] - padded[1], axis=1).mean())
    net_pred, net_ref = pred[:, :3].sum(axis=0), ref[:, :3].sum(axis=0)
    return {
        "direction": {axis: _sign(net_pred[i]) == _sign(net_ref[i]) for i, axis in enumerate(AXES)},
        "step_l2_cm": step_l2,
        "net_l2_cm": float(np.linalg.norm(net_pred - net_ref)),
        "gripper": int(pred[-1, 3]) == int(ref[-1, 3]),
        "steps": [len(pred), len(ref)],
    }


@dataclass
class OfflineMetrics:
    examples: int = 0
    parsed: int = 0
    parse_rate: float = 0.0
    direction_agreement: dict[str, float] = field(default_factory=dict)
    step_l2_cm: float = math.nan
    net_l2_cm: float = math.nan
    gripper_accuracy: float = math.nan
    mean_cycle_s: float = math.nan


def offline_eval(engine: Any, examples: Sequence[dict[str, Any]], progress: bool = False) -> tuple:
    """(OfflineMetrics, rows) over chunk-stage examples; a PolicyError counts as unparsed."""
    from PIL import Image
    from tqdm import tqdm

    from vlm2vla_ros.policy import PolicyError

    rows: list[dict[str, Any]] = []
    for example in tqdm(examples, desc="offline eval", disable=not progress):
        meta = example["meta"]
        with Image.open(example["images"][0]) as image:
            frame = np.asarray(image.convert("RGB"))
        row: dict[str, Any] = {"id": example["id"], "subtask": meta["subtask"], "reference": meta["chunk"]}
        start = time.perf_counter()
        try:
            result = engine.cycle(frame, meta["task"], meta["subtask"])
        except PolicyError as exc:
            row.update(parsed=False, error=str(exc)[:200])
        else:
            row.update(parsed=True, plan=result.plan, predicted=[[s.dx, s.dy, s.dz, s.gripper] for s in result.chunk.steps])
            row.update(compare_chunks(result.chunk, meta["chunk"]))
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    return summarise_offline(rows), rows


def summarise_offline(rows: Sequence[dict[str, Any]]) -> OfflineMetrics:
    parsed = [r for r in rows if r["parsed"]]
    metrics = OfflineMetrics(examples=len(rows), parsed=len(parsed))
    if rows:
        metrics.parse_rate = len(parsed) / len(rows)
        metrics.mean_cycle_s = float(np.mean([r["seconds"] for r in rows]))
    if parsed:
        metrics.direction_agreement = {a: float(np.mean([r["direction"][a] for r in parsed])) for a in AXES}
        metrics.step_l2_cm = float(np.mean([r["step_l2_cm"] for r in parsed]))
        metrics.net_l2_cm = float(np.mean([r["net_l2_cm"] for r in parsed]))
        metrics.gripper_accuracy = float(np.mean([r["gripper"] for r in parsed]))
    return metrics


def _sim_robot(world: Any, view: str = TABLE_VIEW) -> tuple[Any, Any]:
    """(SimBackend, ChunkExecutor) on a world, with the robot's own limits; the camera in `view`."""
    from vlm2vla_ros.robot.config import RobotConfig
    from vlm2vla_ros.robot.executor import ChunkExecutor
    from vlm2vla_ros.sim.backend import SimBackend

    backend = SimBackend(world, view=view)
    robot = RobotConfig()
    return backend, ChunkExecutor(backend, robot.embodiment, robot.safety)


def evaluation_scene(task_kind: str, seed: int, alone: bool) -> tuple[Any, Any]:
    """make_scene's (world, task), cut down to the objects the task names when alone."""
    from vlm2vla_ros.sim.scene import make_scene

    world, task = make_scene(seed, task_kind)
    return (named_only(world, task) if alone else world), task


def episode_key(task_kind: str, seed: int) -> str:
    """A closed-loop episode's task id, and so its sampling seeds' key (PolicyEngine.restart_sampling):
    the demo sends its scene's task under the same id, so it draws what the evaluation drew."""
    return f"{task_kind}-{seed}"


def closed_loop_episode(
    engine: Any, task_kind: str, seed: int, max_cycles: int = 20, image_size: int = 224, lang: str = "en",
    alone: bool = False, on_verdict: Callable[[Any, Any, int, bool], None] | None = None, view: str = TABLE_VIEW,
    judge: Callable[[Any, Any, str], bool] | None = None, max_retries_per_subtask: int | None = None,
    move_again_after: int = MOVE_AGAIN_AFTER,
) -> dict[str, Any]:
    """One seeded scene run by the policy (subtasks once, then plan + chunk + verify per cycle),
    its cycles, retries and end kept by rollout.TaskRun, the policy node's own state machine.
    max_retries_per_subtask: the node's limit of that name (3 in its config); None leaves only
    the cycle limit, the protocol of the documented figures (docs/miniature.md).
    move_again_after: the node's parameter of that name (rollout.MOVE_AGAIN_AFTER by default).
    alone: only the objects the task names stay (`named_only`), so success needs no choosing
    of the named block among others. on_verdict(world, task, subtask index, advance) sees each
    verdict with the world it judged, to score the verifier against the simulator. view: the
    camera's (sim.views.VIEWS), which must be the one the policy was trained on. judge(world,
    task, subtask): a verdict from the world itself in place of engine.verify (privileged; it
    stands in for a verifier outside the policy, as the paper's is)."""
    from vlm2vla_ros.policy import PolicyError
    from vlm2vla_ros.policy.engine import restart_sampling
    from vlm2vla_ros.rollout import TaskRun
    from vlm2vla_ros.topics import RUNNING, SUCCEEDED

    # every subtask may be retried in every cycle: a limit of max_cycles is no limit of its own
    retries = max_cycles if max_retries_per_subtask is None else max_retries_per_subtask
    world, task = evaluation_scene(task_kind, seed, alone)
    instruction = task.instruction(lang)
    run = TaskRun(episode_key(task_kind, seed), instruction, retries, max_cycles, move_again_after)  # checks the limits
    backend, executor = _sim_robot(world, view)
    record: dict[str, Any] = {"task_kind": task_kind, "seed": seed, "instruction": instruction, "alone": alone,
                              "cycles": 0, "ended": "", "moves_again": 0}
    try:
        restart_sampling(run.task_id, engine)  # as the policy node does at every task, by its id
        run.set_subtasks(engine.subtasks(backend.render(image_size, image_size), instruction).subtasks)
        record["subtasks"] = run.subtasks
        while run.state == RUNNING:
            cycle, index, subtask = run.cycle + 1, run.index, run.subtask
            record["cycles"] = cycle  # begun, so a cycle the model failed in counts too
            before = backend.render(image_size, image_size)
            chunk = engine.cycle(before, instruction, subtask).chunk
            run.chunk_sent(cycle)
            report = executor.execute(chunk)
            run.executed(cycle, report.status, report.reason)
            if run.state != RUNNING:  # the executor refused or failed the chunk
                record["ended"] = f"executor {report.status}: {report.reason}"
                break
            after = backend.render(image_size, image_size)
            following = run.next_subtask
            if judge is None:
                advance = engine.verify(before, after, subtask, following, run.retries[index]).advance
            else:
                advance = judge(backend.world, task, subtask)
            if on_verdict is not None:
                on_verdict(backend.world, task, index, advance)
            run.verdict(cycle, advance)
            record["moves_again"] += run.index < index
        record["subtasks_done"] = len(run.subtasks) if run.state == SUCCEEDED else run.furthest
        record["ended"] = record["ended"] or ("all subtasks done" if run.state == SUCCEEDED else
                                              "cycle limit" if run.message.startswith("cycle limit") else run.message)
    except PolicyError as exc:
        record["ended"] = f"policy error: {exc}"
    finally:
        backend.close()
    record["success"] = bool(task.check_success(backend.world))
    return record


def subtask_moves(episode: Any, index: int, merge: MergeConfig, held: int, limits: ActionLimits = DEFAULT_LIMITS
                  ) -> list[ActionStep]:
    """The merged moves the scripted expert's `episode` made in subtask `index` (held: the
    gripper command in force before it), or one still step when it made none there (the subtask
    was done before it began)."""
    from vlm2vla_ros.action_language.trajectory import merge_trajectory

    steps = [s for s in episode.steps if s.subtask_index == index]
    if not steps:
        return [ActionStep(0.0, 0.0, 0.0, held)]
    return merge_trajectory([s.delta_cm for s in steps], [s.gripper for s in steps], merge, limits, initial_gripper=held)


class ExpertReplay:
    """The scripted expert's solution of one seeded scene as a policy engine: its subtask list,
    the chunk it executed for each subtask (merged with `merge`, the thresholds the dataset
    builder used for the policy's training data; the paper's by default), and a verifier
    that always advances. Privileged (it knows the world), so only a stand-in for one stage at a
    time in `StageMix`, to see which link of the chain fails. A scene the expert cannot solve
    raises PolicyError when asked, so an evaluation records that episode as failed and goes on."""

    def __init__(self, task_kind: str, seed: int, alone: bool = False, merge: MergeConfig | None = None) -> None:
        from vlm2vla_ros.sim.expert import ScriptedExpert

        world, task = evaluation_scene(task_kind, seed, alone)
        held = int(world.gripper_open)
        episode = ScriptedExpert().run(world, task, seed)
        self.failure = "" if episode.success else f"the expert could not solve {task_kind} seed {seed}"
        self.subtask_list = task.subtasks("en")
        self.chunks: dict[str, ActionChunk] = {}
        for index, name in enumerate(self.subtask_list):
            moves = subtask_moves(episode, index, merge or MergeConfig(), held)
            self.chunks[name] = ActionChunk(tuple(moves))
            held = moves[-1].gripper

    def subtasks(self, image: Any, task: str) -> Any:
        from vlm2vla_ros.policy import PolicyError
        from vlm2vla_ros.policy.types import SubtaskResult

        if self.failure:
            raise PolicyError(self.failure)
        return SubtaskResult(list(self.subtask_list), "; ".join(self.subtask_list), {}, {})

    def cycle(self, image: Any, task: str, subtask: str) -> Any:
        from vlm2vla_ros.policy import PolicyError
        from vlm2vla_ros.policy.types import CycleResult

        if self.failure:
            raise PolicyError(self.failure)
        if subtask not in self.chunks:
            raise PolicyError(f"the expert has no chunk for {subtask!r}")
        return CycleResult("expert", self.chunks[subtask], "expert", "", {}, {})

    def verify(self, before: Any, after: Any, subtask: str, next_subtask: str, retries: int = 0) -> Any:
        from vlm2vla_ros.policy.types import VerifyResult

        return VerifyResult(True, "expert: advance", {})


class StageMix:
    """A policy engine made of the stages of others: subtask lists from one, plan + chunk cycles
    from another, verification from a third (the action-token baseline has no verifier of its
    own; ExpertReplay in one place shows what the others can do)."""

    def __init__(self, subtasks: Any, cycles: Any, verifier: Any) -> None:
        self.subtasks_from, self.cycles_from, self.verifier = subtasks, cycles, verifier

    def subtasks(self, image: Any, task: str) -> Any:
        return self.subtasks_from.subtasks(image, task)

    def cycle(self, image: Any, task: str, subtask: str) -> Any:
        return self.cycles_from.cycle(image, task, subtask)

    def verify(self, before: Any, after: Any, subtask: str, next_subtask: str, retries: int = 0) -> Any:
        return self.verifier.verify(before, after, subtask, next_subtask, retries)

    def restart_sampling(self, key: str) -> None:
        from vlm2vla_ros.policy.engine import restart_sampling

        restart_sampling(key, self.subtasks_from, self.cycles_from, self.verifier)


def named_only(world: Any, task: Any) -> Any:
    """The world with only the objects the task names (the gripper as it was): a scene where
    acting needs no choosing of the named block among others. Refused when a kept object rests
    on one that would go."""
    from vlm2vla_ros.sim.world import TABLE

    kept = [o for o in world.objects if o.name in task.targets]
    names = {o.name for o in kept}
    floating = [o.name for o in kept if o.resting_on not in (TABLE, *names)]
    if floating:
        raise ValueError(f"cannot leave {floating} alone: they rest on objects the task does not name")
    return world.keeping(kept)


def reach_episode(
    engine: Any, seed: int, cycles: int = 2, image_size: int = 224, alone: bool = False, view: str = TABLE_VIEW
) -> dict[str, Any]:
    """The chunk stage alone on a pick-up scene: given the right first subtask ("move above the
    red block") instead of its own list, `cycles` plan + chunk cycles run in the simulator, and
    the gripper's horizontal distance to the named block is measured before and after each
    (cm; a grasp needs GRASP_TOLERANCE_XY_M); each cycle's plan and chunk are kept beside where
    the block was from the gripper then (dx, dy in cm). Shows whether chunks follow the block's
    place, which closed-loop success cannot separate from wrong subtask lists or a wrong verifier.
    alone: the named block is the scene's only object (`named_only`), so following it needs
    reading its place but not picking it out of several."""
    from vlm2vla_ros.policy import PolicyError

    world, task = evaluation_scene("pick_up", seed, alone)
    backend, executor = _sim_robot(world, view)
    instruction, subtask = task.instruction("en"), task.subtasks("en")[0]

    def to_block_cm() -> tuple[float, float]:
        now = backend.world
        block = next(o for o in now.objects if o.name == task.pick)
        return 100 * (block.x - now.gripper_x), 100 * (block.y - now.gripper_y)

    def distance_cm() -> float:
        return math.hypot(*to_block_cm())

    record: dict[str, Any] = {"seed": seed, "subtask": subtask, "alone": alone, "distance_cm": [distance_cm()], "ended": "done",
                              "cycles": []}
    try:
        for _ in range(cycles):
            before = [round(v, 2) for v in to_block_cm()]
            result = engine.cycle(backend.render(image_size, image_size), instruction, subtask)
            record["cycles"].append({"to_block_cm": before, "plan": result.plan, "chunk": result.raw_chunk})
            report = executor.execute(result.chunk)
            record["distance_cm"].append(distance_cm())
            if report.status != "done":
                record["ended"] = f"executor {report.status}: {report.reason}"
                break
    except PolicyError as exc:
        record["ended"] = f"policy error: {exc}"
    finally:
        backend.close()
    return record


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for z = 1.96): 20 episodes pin a rate only
    to about +-20 points, so a report's rates carry it. Unlike the normal approximation it stays
    inside [0, 1] and is not empty at 0 or n successes."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes} of {trials}")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def retry_rules(closed: dict[str, Any]) -> str:
    """What ended a closed-loop report's episodes besides success, and when one went back to a
    move, in words (a report from before max_retries_per_subtask or move_again_after was written
    had the cycle limit alone and never went back)."""
    limit, again = closed.get("max_retries_per_subtask"), closed.get("move_again_after") or 0
    ends = "the cycle limit alone ends an episode" if limit is None else (
        f"an episode ends at the cycle limit or when a subtask is retried more than {limit} times")
    return ends if not again else (
        f"{ends}; a subtask after a move goes back to the move after "
        + ("each retry" if again == 1 else f"every {again} retries"))


def closed_loop_eval(
    engine: Any, task_kinds: Sequence[str], seeds: Sequence[int], max_cycles: int, image_size: int, progress: bool = False,
    view: str = TABLE_VIEW, max_retries_per_subtask: int | None = None, move_again_after: int = MOVE_AGAIN_AFTER,
) -> tuple:
    """({kind: success rate}, episode records); the camera in `view`, the policy's own;
    max_retries_per_subtask and move_again_after as closed_loop_episode's."""
    from tqdm import tqdm

    jobs = [(kind, seed) for kind in task_kinds for seed in seeds]
    records = [
        closed_loop_episode(engine, kind, seed, max_cycles, image_size, view=view,
                            max_retries_per_subtask=max_retries_per_subtask, move_again_after=move_again_after)
        for kind, seed in tqdm(jobs, desc="closed loop", disable=not progress)
    ]
    rates = {kind: float(np.mean([r["success"] for r in records if r["task_kind"] == kind])) for kind in task_kinds}
    return rates, records


@dataclass
class VQAResult:
    questions: int
    accuracy_adapter: float
    accuracy_base: float
    retention: float
    """accuracy with the adapter / accuracy without (1.0: nothing forgotten)."""


def write_vqa(path: Path, items: Sequence[dict[str, Any]]) -> None:
    """The VQA file read_vqa reads: one JSON object per line, UTF-8 kept as is. Image paths must
    be relative to the file's folder; extra keys (kind, lang, ...) ride along."""
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")


def read_vqa(path: Path) -> list[dict[str, str]]:
    """{image, question, answer} per line; image paths are relative to the file's folder."""
    if not path.is_file():
        raise ValueError(f"VQA file {path} does not exist")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise ValueError(f"{path}:{number} is not valid JSON") from None
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item[k] for k in ("image", "question", "answer")):
            raise ValueError(f"{path}:{number} needs non-empty strings image, question and answer")
        image = path.parent / item["image"]
        if not image.is_file():
            raise ValueError(f"{path}:{number}: image {image} does not exist")
        items.append({"image": str(image), "question": item["question"], "answer": item["answer"]})
    if not items:
        raise ValueError(f"VQA file {path} holds no questions")
    return items


VQA_WORD = re.compile(r"-?[^\W_]+(?:[.'-][^\W_]+)*")
"""A word of an answer: letters and digits, with a minus sign in front and '.', "'" or '-'
inside kept (3.5, -2, left-hand, it's), so that "3.5" or "-3" is not read as the answer "3"."""


def vqa_correct(prediction: str, answer: str) -> bool:
    """The reference answer's words are the prediction's first words (case, a typographic
    apostrophe and the punctuation around words ignored)."""

    def words(text: str) -> list[str]:
        return VQA_WORD.findall(text.lower().replace("\u2019", "'"))

    pred, ref = words(prediction), words(answer)
    return bool(ref) and pred[: len(ref)] == ref


def vqa_answers(
    engine: Any,
    items: Sequence[dict[str, str]],
    sides: Sequence[tuple[str, bool]] = (("adapter", True), ("base", False)),
    max_new_tokens: int = 16,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Greedy answers per item, one per (name, adapter on) side: row[name] and row[name_correct]."""
    from PIL import Image
    from tqdm import tqdm

    from vlm2vla_ros.policy.config import StageSampling
    from vlm2vla_ros.policy.prompts import question_messages
    from vlm2vla_ros.policy.types import GenerationRequest

    rows = []
    for item in tqdm(items, desc="VQA", disable=not progress):
        with Image.open(item["image"]) as image:
            frame = np.asarray(image.convert("RGB"))
        row: dict[str, Any] = {"question": item["question"], "answer": item["answer"]}
        for name, adapter in sides:
            request = GenerationRequest(
                messages=question_messages(item["question"]),
                images=(frame,),
                sampling=StageSampling(temperature=0.0),
                max_new_tokens=max_new_tokens,
                use_adapter=adapter,
            )
            text = engine.backend.generate(request).text
            row[name] = text
            row[f"{name}_correct"] = vqa_correct(text, item["answer"])
        rows.append(row)
    return rows


def vqa_retention(engine: Any, items: Sequence[dict[str, str]], max_new_tokens: int = 16, progress: bool = False) -> tuple:
    """(VQAResult, rows): greedy answers of the same weights with the adapter on and off."""
    if not hasattr(engine.backend, "has_adapter"):
        raise ValueError("VQA retention needs the transformers backend (the adapter is switched on and off in process)")
    rows = vqa_answers(engine, items, max_new_tokens=max_new_tokens, progress=progress)
    on = float(np.mean([r["adapter_correct"] for r in rows]))
    off = float(np.mean([r["base_correct"] for r in rows]))
    retention = on / off if off > 0 else (1.0 if on == 0 else math.inf)
    return VQAResult(len(rows), on, off, retention), rows


def write_report(out_dir: Path, results: dict[str, Any]) -> Path:
    """report.md (+ plots) and metrics.json; returns the Markdown file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(jsonable(results), indent=1))
    lines = ["# vlm2vla evaluation", "", f"- model: `{results.get('model')}`", f"- adapter: `{results.get('adapter')}`", ""]
    offline = results.get("offline")
    if offline:
        m = offline["metrics"]
        lines += [
            "## Offline action metrics (held-out episodes)",
            "",
            "| metric | value |",
            "|---|---|",
            f"| examples | {m['examples']} |",
            f"| parse rate | {m['parse_rate']:.3f} |",
        ]
        lines += [f"| direction agreement {a} | {m['direction_agreement'].get(a, math.nan):.3f} |" for a in AXES]
        lines += [
            f"| step L2 error (cm) | {m['step_l2_cm']:.2f} |",
            f"| net displacement error (cm) | {m['net_l2_cm']:.2f} |",
            f"| gripper accuracy | {m['gripper_accuracy']:.3f} |",
            f"| mean plan + chunk time (s) | {m['mean_cycle_s']:.2f} |",
            "",
        ]
        parsed = [r for r in offline["rows"] if r["parsed"]]
        if parsed:
            fig, ax = plt.subplots(figsize=(5, 3))
            ax.hist([r["step_l2_cm"] for r in parsed], bins=20)
            ax.set_xlabel("step L2 error (cm)")
            ax.set_ylabel("examples")
            fig.tight_layout()
            fig.savefig(out_dir / "step_l2.png", dpi=100)
            plt.close(fig)
            lines += ["![step L2 error](step_l2.png)", ""]
    closed = results.get("closed_loop")
    if closed:
        verifier = closed.get("verifier")
        lines += ["## Closed loop in the simulator", "",
                  f"Verdicts from {'`' + verifier + '`' if verifier else 'the base (the adapter off)'}; "
                  f"{retry_rules(closed)}; "
                  "the interval is the 95% Wilson interval of the rate over its episodes.", "",
                  "| task kind | success rate | 95% interval | episodes |", "|---|---|---|---|"]
        for kind, rate in closed["success_rate"].items():
            n = sum(1 for r in closed["episodes"] if r["task_kind"] == kind)
            low, high = wilson_interval(sum(bool(r["success"]) for r in closed["episodes"] if r["task_kind"] == kind), n)
            lines.append(f"| {kind} | {rate:.2f} | {low:.2f}-{high:.2f} | {n} |")
        lines.append("")
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(list(closed["success_rate"]), list(closed["success_rate"].values()))
        ax.set_ylim(0, 1)
        ax.set_ylabel("success rate")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(out_dir / "closed_loop.png", dpi=100)
        plt.close(fig)
        lines += ["![closed-loop success](closed_loop.png)", ""]
    vqa = results.get("vqa")
    if vqa:
        r = vqa["result"]
        lines += [
            "## VQA retention (same weights, adapter on vs off)",
            "",
            f"- questions: {r['questions']}",
            f"- accuracy with adapter: {r['accuracy_adapter']:.3f}",
            f"- accuracy without adapter (base): {r['accuracy_base']:.3f}",
            f"- retention (with / without): {r['retention']:.3f}",
            "",
        ]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples and dict keys made JSON-ready; NaN and infinities become null."""
    if hasattr(value, "__dataclass_fields__"):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_metrics(results: dict[str, Any]) -> str:
    """One line per metric, for the terminal."""
    out: list[str] = []
    offline = results.get("offline")
    if offline:
        m = offline["metrics"]
        agreement = " ".join(f"{a}={m['direction_agreement'].get(a, math.nan):.2f}" for a in AXES)
        out.append(
            f"offline: {m['examples']} examples, parse rate {m['parse_rate']:.2f}, direction agreement {agreement}, "
            f"step L2 {m['step_l2_cm']:.2f} cm, gripper accuracy {m['gripper_accuracy']:.2f}"
        )
    closed = results.get("closed_loop")
    if closed:
        parts = []
        for kind, rate in closed["success_rate"].items():
            outcomes = [bool(r["success"]) for r in closed["episodes"] if r["task_kind"] == kind]
            low, high = wilson_interval(sum(outcomes), len(outcomes))
            parts.append(f"{kind} {rate:.2f} ({low:.2f}-{high:.2f}, {len(outcomes)} episodes)")
        out.append("closed loop success: " + ", ".join(parts))
    vqa = results.get("vqa")
    if vqa:
        r = vqa["result"]
        out.append(
            f"VQA: adapter {r['accuracy_adapter']:.2f}, base {r['accuracy_base']:.2f}, retention {r['retention']:.2f}"
        )
    return "\n".join(out)
