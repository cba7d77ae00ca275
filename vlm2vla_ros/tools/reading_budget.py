"""vlm2vla-reading-budget: how precisely must the policy read the named block's place?

    vlm2vla-reading-budget [--kind pick_up] [--scenes 100] [--sigmas 0 0.5 1 ...]
                           [--persistent 0 0.5 1] [--dead-band 0] [--cycles-per-subtask 3]
                           [--chunk-moves 1] [--alone] [--out TABLE.md]

Runs the miniature experiment's closed loop (its held-out scenes, merge rule, chunk size,
camera and cycle limit) with the scripted expert as the policy, misreading the named object's
place by a Gaussian error (with --dead-band, also reading "already there" within that distance
of where a "move above" should end, as the miniature's greedy plans do), and the simulator
judging each subtask (vlm2vla_ros.miniature.reading_budget). Prints a table of successes per
error and, with --out, writes it. No model is involved; 100 scenes a point take seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from vlm2vla_ros.rollout import MOVE_AGAIN_AFTER
    from vlm2vla_ros.sim import TASK_KINDS
    from vlm2vla_ros.tools.arguments import non_negative_int

    ap = argparse.ArgumentParser(prog="vlm2vla-reading-budget", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="pick_up", choices=TASK_KINDS)
    ap.add_argument("--scenes", type=int, default=100, help="held-out scenes, the experiment's first ones")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
                    help="reading error, cm a horizontal axis (one standard deviation)")
    ap.add_argument("--persistent", type=float, nargs="+", default=[0.0, 0.5, 1.0],
                    help="share of the error's variance fixed for an episode (0: drawn afresh every cycle)")
    ap.add_argument("--dead-band", type=float, default=0.0,
                    help="cm: a \"move above\" this near its goal reads as done (finding 32's near-field zeros)")
    ap.add_argument("--cycles-per-subtask", type=int, default=3, help="the experiment's cycles_per_subtask")
    ap.add_argument("--chunk-moves", type=int, default=1, help="the experiment's chunk_moves (0: whole subtasks)")
    ap.add_argument("--alone", action="store_true", help="only the objects the task names stay in the scene")
    ap.add_argument("--move-again-after", type=non_negative_int, default=MOVE_AGAIN_AFTER,
                    help="the experiment's move_again_after: back to a move after a missed grasp (0: never, the "
                    "loop of finding 33's table)")
    ap.add_argument("--out", default=None, help="write the table here (markdown)")
    args = ap.parse_args(argv)
    if args.scenes < 1 or args.cycles_per_subtask < 1 or args.chunk_moves < 0:
        ap.error("--scenes and --cycles-per-subtask must be positive, --chunk-moves at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    from vlm2vla_ros.miniature.experiment import ExperimentConfig, eval_seeds
    from vlm2vla_ros.miniature.reading_budget import ReadingError, budget_point, budget_table

    args = parse_args(argv)
    try:
        errors = [ReadingError(s, q, args.dead_band) for s in args.sigmas for q in args.persistent]
    except ValueError as exc:
        print(f"vlm2vla-reading-budget: {exc}", file=sys.stderr)
        return 2
    if args.out:  # before the runs, so a bad path fails first
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(ExperimentConfig.full(), chunk_moves=args.chunk_moves, pick_up_seeds=args.scenes,
                                 eval_seeds=args.scenes, cycles_per_subtask=args.cycles_per_subtask,
                                 move_again_after=args.move_again_after)
    seeds = eval_seeds(config, args.kind)
    points = []
    for error in errors:
        point = budget_point(error, args.kind, config, args.alone)
        print(f"sigma {error.sigma_cm:g} cm, persistent {error.persistent:g}: {point.successes} / {point.episodes}",
              flush=True)
        points.append(point)
    where = "the named objects alone" if args.alone else "whole scenes"
    lines = [f"{args.kind}, {where}, {len(seeds)} held-out scenes from seed {seeds[0]}, "
             f"{args.cycles_per_subtask} cycles a subtask, chunks of "
             + (f"{args.chunk_moves} merged move(s)" if args.chunk_moves else "whole subtasks")
             + (f", a dead band of {args.dead_band:g} cm" if args.dead_band else "")
             + (f", back to the move after every {args.move_again_after} missed grasps" if args.move_again_after > 1
                else ", back to the move after each missed grasp" if args.move_again_after else "")
             + ":", "",
             *budget_table(points, args.sigmas, args.persistent)]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
