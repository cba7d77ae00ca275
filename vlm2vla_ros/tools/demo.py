"""vlm2vla-demo: the whole system on a simulated Stretch, end to end, on a laptop CPU.

    vlm2vla-demo --out demo_out [--task "pick up the red block"] [--model DIR] [--seed N]

Starts the simulated Stretch and the full node graph in one process (camera, policy,
executor, verifier, recorder), loads the model (default: the miniature VLM2VLA shipped in
models/vlm2vla-mini, base + LoRA adapter + a verifier of its own, trained by
`vlm2vla-experiment` on the simulator, docs/miniature.md), sends one task and runs it until
the policy ends it, the cycle limit or the time limit. Writes to --out:
- bag/          rosbag2 (sqlite3) of every rollout topic;
- summary.json  task, success, subtasks, cycles, parse failures, timings, verdicts, events;
- rollout.gif   the camera view with the current subtask and plan drawn on it.
A previous run's three move to run-<when they were written>/ in the same folder first.

`success` is the simulator's own check of the scene's task on the final world state; it
never comes from the policy's or the verifier's claims. The default scene is a pick-up, the
task the shipped miniature was evaluated on (docs/miniature.md, findings 43-46). The task goes
out under the evaluation's episode id (`pick_up-2`), which keys the policy's sampling seeds, so
the demo on a scene draws what `vlm2vla-eval` drew there. It runs the evaluation's protocol
too: 11 cycles and no retry limit per subtask. `vlm2vla-eval --model mini --verifier-model
mini --constrained --sim-kinds pick_up --sim-first-seed 0 --sim-seeds 10 --max-cycles 11`
picks up seeds 2, 4, 5 and 8, and the demo gives the same outcome and cycle count scene by
scene (finding 46). The default, seed 2, is the first of them. A run is repeatable: the same scene, model
and CPU give the same rollout. It fails the longer task kinds (put_in, stack, ...); `--model
tiny` runs the untrained test model instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import topics

DEFAULT_KIND = "pick_up"


def parse_args(argv: list | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vlm2vla-demo", description="Run one task on the simulated Stretch, record it.")
    ap.add_argument("--out", default="vlm2vla_demo", help="folder for bag/, summary.json and rollout.gif")
    ap.add_argument("--task", default=None, help="instruction to send (default: the scene's own task)")
    ap.add_argument(
        "--model", default="mini",
        help="model folder ('mini': the shipped miniature VLM2VLA with its adapter; 'tiny': the untrained test model)",
    )
    ap.add_argument("--adapter", default="", help="LoRA adapter folder (default: none, or the shipped one for 'mini')")
    ap.add_argument("--seed", type=int, default=2, help="scene seed (default 2: a pick-up the shipped model finishes)")
    ap.add_argument("--task-kind", default=DEFAULT_KIND, help="sim task kind (default %(default)s)")
    ap.add_argument("--verifier", default="vlm", choices=("vlm", "count"), help="verifier backend")
    ap.add_argument(
        "--verifier-model", default="",
        help="model folder of the vlm verifier (default: the --model's; 'mini': the shipped verifier of its own when "
             "there is one, else the shipped base)",
    )
    ap.add_argument("--max-cycles", type=int, default=11,
                    help="cycle limit of the task, the only one: no subtask has a retry limit of its own (default "
                    "%(default)s: the pick-up protocol of vlm2vla-eval's documented figures)")
    ap.add_argument("--timeout", type=float, default=240.0, help="time limit of the rollout, seconds")
    ap.add_argument("--fps", type=float, default=4.0, help="camera rate (and video frame rate)")
    ap.add_argument("--config", default=None, help="ROS 2 parameters YAML (default: the package's vlm2vla.yaml)")
    args = ap.parse_args(argv)
    if args.verifier_model and args.verifier != "vlm":
        ap.error("--verifier-model is the vlm verifier's model; --verifier count loads none")
    return args


class Watcher:
    """Collects everything the summary and the video need, from the topics."""

    def __init__(self, node: Any) -> None:
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from ..nodes.common import qos_for

        self.node = node
        self.lock = threading.Lock()
        self.task_id = ""
        self.status: dict[str, Any] = {}
        self.first_status: dict[str, Any] = {}
        self.plan = ""
        self.chunks: list[dict] = []
        self.events: list[dict] = []
        self.verdicts: list[dict] = []
        self.frames: list[Any] = []
        self.done = threading.Event()
        self.task_pub = node.create_publisher(String, topics.TASK.name, qos_for(topics.TASK))
        node.create_subscription(Image, topics.IMAGE.name, self._image, qos_for(topics.IMAGE))
        for topic, fn in (
            (topics.POLICY_STATUS, self._status),
            (topics.POLICY_CHUNK, self._chunk),
            (topics.EXECUTOR_EVENT, self._event),
            (topics.VERDICT, self._verdict),
        ):
            node.create_subscription(String, topic.name, self._json(fn), qos_for(topic))

    def _json(self, fn: Any) -> Any:
        def callback(msg: Any) -> None:
            try:
                d = topics.decode(msg.data, ("task_id",))
            except topics.PayloadError:
                return
            if self.task_id and d["task_id"] == self.task_id:
                with self.lock:
                    fn(d)

        return callback

    def _status(self, d: dict) -> None:
        if d.get("subtasks") and not self.first_status:
            self.first_status = d
        self.status = d
        if d.get("state") in topics.TERMINAL_STATES:
            self.done.set()

    def _chunk(self, d: dict) -> None:
        self.chunks.append(d)
        self.plan = str(d.get("plan", ""))

    def _event(self, d: dict) -> None:
        if d.get("event") != "started":
            self.events.append(d)

    def _verdict(self, d: dict) -> None:
        self.verdicts.append(d)

    def _image(self, msg: Any) -> None:
        from ..nodes.images import from_msg

        if not self.task_id:
            return
        with self.lock:
            s = self.status
            lines = [f"task: {s.get('task', '')}"[:58]]
            if s.get("subtasks"):
                lines.append(f"subtask {int(s.get('subtask_index', 0)) + 1}/{len(s['subtasks'])}: {s.get('subtask', '')}"[:58])
            lines.append(f"cycle {s.get('cycle', 0)}  state {s.get('state', '')}  {s.get('phase', '')}")
            if self.plan:
                lines.append(f"plan: {self.plan}"[:58])
        self.frames.append((from_msg(msg), lines))


def _video(frames: list[Any], path: Path, fps: float) -> int:
    import cv2
    import imageio.v2 as imageio

    from ..sim.render import annotate

    if not frames:
        return 0
    images = []
    for img, lines in frames:
        big = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
        images.append(annotate(big, lines))
    imageio.mimsave(str(path), images, duration=1000.0 / fps, loop=0)  # milliseconds a frame
    return len(images)


def _timings(w: Watcher) -> dict[str, Any]:
    per_cycle = [c.get("timings", {}) for c in w.chunks]
    keys = sorted({k for t in per_cycle for k in t})
    out: dict[str, Any] = {"per_cycle": per_cycle}
    for k in keys:
        values = [float(t[k]) for t in per_cycle if isinstance(t.get(k), (int, float))]
        if values:
            out[k] = {"median": round(statistics.median(values), 4), "total": round(sum(values), 4)}
    if w.first_status.get("timings"):
        out["subtasks"] = w.first_status["timings"]
    verify = [float(v.get("timings", {}).get("verify_total_s", 0.0)) for v in w.verdicts]
    if verify:
        out["verify_s"] = {"median": round(statistics.median(verify), 4), "total": round(sum(verify), 4)}
    return out


RUN_OUTPUTS = ("bag", "summary.json", "rollout.gif")


def keep_previous_run(out: Path) -> Path | None:
    """Move a previous run's bag, summary and video aside (to run-<when they were written>/) so
    that this run's take their names and no recording is ever deleted or left beside another
    run's summary; returns where they went (None: there was none)."""
    previous = [out / name for name in RUN_OUTPUTS if (out / name).exists()]
    if not previous:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(max(p.stat().st_mtime for p in previous)))
    target = out / f"run-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = out / f"run-{stamp}-{n}"
    target.mkdir()
    for path in previous:
        path.rename(target / path.name)
    return target


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    import rclpy

    from ..nodes.bringup import DEFAULT_CONFIG, build_graph, run_graph
    from ..nodes.bringup import verifier_model as bringup_verifier_model
    from ..nodes.common import Shutdown, config_path
    from ..nodes.policy_node import TINY_MODEL
    from ..shipped import resolve_shipped
    from ..sim.backend import SimBackend
    from ..sim.scene import make_scene
    from ..sim.views import read_model_view
    from ..training.evaluate import episode_key

    t_start = time.monotonic()
    # Resolved and checked here, so a missing checkpoint fails before anything is written.
    model, adapter = resolve_shipped(args.model, args.adapter)
    verifier_model = (
        bringup_verifier_model({"model_path": args.model}, {"model_path": args.verifier_model})
        if args.verifier == "vlm" else ""
    )
    checked = (("model", model), ("adapter", adapter), ("verifier model", verifier_model))
    for what, folder in ((w, f) for w, f in checked if f != TINY_MODEL):
        if folder and not Path(folder).expanduser().is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist")
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    bag = out / "bag"
    kept = keep_previous_run(out)
    if kept is not None:
        print(f"the previous run's bag, summary and video are kept in {kept}", flush=True)
    world, scene_task = make_scene(args.seed, args.task_kind or None)
    instruction = (args.task or scene_task.instruction()).strip()
    backend = SimBackend(world, view=read_model_view(model))  # the camera the model was trained with
    print(f"scene seed {args.seed} ({scene_task.kind}): {scene_task.instruction()}", flush=True)
    own_verifier = f"; verifier: {verifier_model}" if verifier_model and verifier_model != model else ""
    print(f"model: {model}{f' + adapter {adapter}' if adapter else ''}{own_verifier}; loading ...", flush=True)
    overrides = {
        # the evaluation's protocol: the cycle limit alone (the robot's config retries a subtask 3 times)
        "policy_node": {"model_path": model, "adapter_path": adapter, "max_cycles": args.max_cycles,
                        "max_retries_per_subtask": args.max_cycles},
        "verifier_node": {"backend": args.verifier, "model_path": verifier_model},
        "camera_node": {"rate_hz": args.fps},
    }
    rclpy.init()
    try:
        graph = build_graph(
            args.config or config_path(DEFAULT_CONFIG), "all", sim=True, overrides=overrides, backend=backend,
            record_dir=str(bag),
        )
        try:
            demo_node = rclpy.create_node("vlm2vla_demo")
            graph.add(demo_node)
            w = Watcher(demo_node)
            w.task_id = episode_key(args.task_kind, args.seed)  # the evaluation's id: its sampling seeds too
            t_graph = time.monotonic()
            print(f"graph up in {t_graph - t_start:.1f} s; task: {instruction!r}", flush=True)

            sent = threading.Event()

            def done() -> bool:
                if not sent.is_set() and w.task_pub.get_subscription_count() > 0:
                    from std_msgs.msg import String

                    w.task_pub.publish(String(data=topics.encode_task(instruction, w.task_id)))
                    sent.set()
                return w.done.is_set() or time.monotonic() - t_graph > args.timeout

            shutdown = run_graph(graph, done=done, shutdown=Shutdown())
        finally:
            graph.close()  # idempotent: run_graph has closed it, unless what came before it failed
        interrupted = shutdown.signal is not None
        final_world = backend.world
    finally:
        if rclpy.ok():
            rclpy.shutdown()

    success = bool(scene_task.check_success(final_world))
    n_frames = _video(w.frames, out / "rollout.gif", args.fps)
    status = w.status
    from ..recording import read_bag

    bag_counts = {k: len(v) for k, v in read_bag(bag).items()}
    summary = {
        "task": instruction,
        "success": success,
        "success_source": f"simulator check_success of the scene task: {scene_task.instruction()!r}",
        "scene": {"seed": args.seed, "kind": scene_task.kind, "instruction": scene_task.instruction()},
        "model": model,
        "adapter": adapter,
        "verifier": args.verifier if args.verifier != "vlm" else verifier_model,
        "camera_view": backend.view,
        "policy_state": status.get("state", "no status"),
        "policy_message": status.get("message", "" if sent.is_set() else "the task was never delivered"),
        "subtasks": status.get("subtasks", []),
        "subtasks_reached": int(status.get("furthest_subtask_index", status.get("subtask_index", 0)))
        + (1 if status.get("subtasks") else 0),
        "cycles": len(w.chunks),
        "parse_failures": int(status.get("parse_failures", 0)),
        "timings": _timings(w),
        "chunks": [{k: c.get(k) for k in ("cycle", "subtask", "plan", "text")} for c in w.chunks],
        "events": [{k: e.get(k) for k in ("cycle", "event", "reason", "steps_executed", "findings")} for e in w.events],
        "verdicts": [{k: v.get(k) for k in ("cycle", "subtask", "verdict", "reason")} for v in w.verdicts],
        "final_world": final_world.observation(),
        "interrupted": interrupted,
        "wall_time_s": round(time.monotonic() - t_start, 2),
        "bag": bag.name,  # beside summary.json (relative, so that they move aside together)
        "bag_messages": bag_counts,
        "video": "rollout.gif",
        "video_frames": n_frames,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.task is not None and not args.task.strip():
        print("error: --task is empty", file=sys.stderr)
        return 2
    if args.max_cycles < 1 or not args.timeout > 0 or not 0.5 <= args.fps <= 30:
        print("error: --max-cycles must be >= 1, --timeout > 0, --fps in [0.5, 30]", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        s = run_demo(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print(f"task:      {s['task']}")
    print(f"subtasks:  {'; '.join(s['subtasks']) or '-'}")
    print(f"policy:    {s['policy_state']} after {s['cycles']} cycle(s): {s['policy_message']}")
    print(f"verdicts:  {', '.join(v['verdict'] for v in s['verdicts']) or '-'}")
    print(f"parse failures: {s['parse_failures']}")
    print(f"SUCCESS (simulator check): {s['success']}")
    print(f"wrote {args.out}/summary.json, {args.out}/rollout.gif ({s['video_frames']} frames), "
          f"{args.out}/bag ({sum(s['bag_messages'].values())} messages) in {s['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
