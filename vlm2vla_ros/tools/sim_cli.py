"""vlm2vla-sim: draw simulator scenes and measure the scripted expert.

vlm2vla-sim render --seed 3 --out scene.png [--size 224] [--task-kind put_in] [--annotate]
vlm2vla-sim expert --task-kind all --episodes 200 --seed 0 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlm2vla_ros.sim.expert import run_expert
from vlm2vla_ros.sim.scene import make_scene
from vlm2vla_ros.sim.tasks import TASK_KIND_HELP, TASK_KINDS
from vlm2vla_ros.sim.views import TABLE_VIEW, VIEWS
from vlm2vla_ros.tools.arguments import image_side, positive_int

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


_image_side = image_side(64, 640)


def _image_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"output must end in one of {', '.join(IMAGE_SUFFIXES)}, got {text!r}"
        )
    return path


def build_parser() -> argparse.ArgumentParser:
    kinds = "\n".join(f'  {kind:16s} e.g. "{TASK_KIND_HELP[kind]}"' for kind in TASK_KINDS)
    parser = argparse.ArgumentParser(
        prog="vlm2vla-sim",
        description="The kinematic tabletop simulator: render scenes, run the scripted expert.",
        epilog=f"task kinds:\n{kinds}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    render_p = sub.add_parser("render", help="draw the seeded scene to an image file")
    render_p.add_argument("--seed", type=int, required=True)
    render_p.add_argument("--out", type=_image_path, required=True, help="image path (.png or .jpg)")
    render_p.add_argument(
        "--size", type=_image_side, default=224, help="square image side, 64-640 (default 224)"
    )
    render_p.add_argument(
        "--task-kind", choices=TASK_KINDS, default=None, help="default: drawn from the seed"
    )
    render_p.add_argument(
        "--annotate", action="store_true", help="write the instruction and subtasks on the image"
    )
    render_p.add_argument(
        "--view", choices=VIEWS, default=TABLE_VIEW, help="the whole table, or centred on the gripper"
    )

    expert_p = sub.add_parser(
        "expert",
        help="run the scripted expert on seeded scenes and report its success rate",
        epilog=f"task kinds:\n{kinds}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    expert_p.add_argument("--task-kind", choices=(*TASK_KINDS, "all"), required=True)
    expert_p.add_argument("--episodes", type=positive_int, required=True, help="episodes per task kind")
    expert_p.add_argument("--seed", type=int, default=0, help="first seed; episode i uses seed + i")
    expert_p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _render(args: argparse.Namespace) -> int:
    import cv2

    from vlm2vla_ros.sim.render import annotate, render

    world, task = make_scene(args.seed, args.task_kind)
    image = render(world, args.size, args.size, args.view)
    if args.annotate:
        image = annotate(image, [task.instruction(), *task.subtasks()])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        print(f"vlm2vla-sim: could not write {args.out}.", file=sys.stderr)
        return 1
    print(f"{args.out}: {task.kind}: {task.instruction()}")
    return 0


def _measure(kind: str, episodes: int, seed: int) -> dict:
    results = [run_expert(kind, seed + i, render_images=False) for i in range(episodes)]
    successes = sum(e.success for e in results)
    return {
        "task_kind": kind,
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "mean_steps": sum(len(e.steps) for e in results) / episodes,
    }


def _expert(args: argparse.Namespace) -> int:
    kinds = TASK_KINDS if args.task_kind == "all" else (args.task_kind,)
    per_kind = [_measure(kind, args.episodes, args.seed) for kind in kinds]
    if len(per_kind) == 1:
        report = per_kind[0]
    else:
        total = sum(r["episodes"] for r in per_kind)
        successes = sum(r["successes"] for r in per_kind)
        report = {
            "task_kind": "all",
            "episodes": total,
            "successes": successes,
            "success_rate": successes / total,
            "mean_steps": sum(r["mean_steps"] * r["episodes"] for r in per_kind) / total,
            "per_kind": {r["task_kind"]: r for r in per_kind},
        }
    if args.json:
        print(json.dumps(report))
    else:
        for r in per_kind:
            print(
                f"{r['task_kind']:16s} {r['successes']}/{r['episodes']} = {r['success_rate']:.1%}, "
                f"mean {r['mean_steps']:.1f} steps"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _render(args) if args.command == "render" else _expert(args)


if __name__ == "__main__":
    sys.exit(main())
