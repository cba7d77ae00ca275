"""vlm2vla-dataset: robot data -> episodes -> chat-formatted training examples.

    vlm2vla-dataset sim --out EPISODES [--kinds pick_up put_in ...] [--episodes 20] [--image-size 224]
    vlm2vla-dataset bag BAG [BAG ...] --out EPISODES
    vlm2vla-dataset recover BAG --out NEW_BAG
    vlm2vla-dataset build EPISODES [MORE ...] --out DATASET [--labeller annotations|verbaliser|openai]

`sim` and `bag` write episode folders (docs/data_and_training.md); `recover` makes a whole bag
of one whose recorder was killed before it closed (no metadata.yaml); a plain folder or JSONL in
that format from any other dataset goes straight to `build`. `build` splits, merges, labels,
writes train.jsonl / val.jsonl and the dataset card. Every command resumes: what is already
written is kept and skipped. Exit status 0 when something usable was produced, 1 otherwise,
2 when `--tokenizer` names no loadable tokenizer (checked before anything is built).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .arguments import image_side, positive_int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from vlm2vla_ros.data.labeller import LABELLERS, ON_FAILURE
    from vlm2vla_ros.sim import TASK_KINDS
    from vlm2vla_ros.sim.views import MAX_SIDE, MIN_SIDE

    ap = argparse.ArgumentParser(prog="vlm2vla-dataset", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="record scripted-expert episodes in the simulator")
    sim.add_argument("--out", required=True, help="episodes folder")
    sim.add_argument("--kinds", nargs="+", default=list(TASK_KINDS), choices=TASK_KINDS, help="task kinds")
    sim.add_argument("--episodes", type=positive_int, default=20, help="episodes per task kind (seeds from --first-seed)")
    sim.add_argument("--first-seed", type=int, default=0)
    sim.add_argument("--image-size", type=image_side(MIN_SIDE, MAX_SIDE), default=224)
    sim.add_argument("--lang", default="en", help="instruction language (en, es)")
    bag = sub.add_parser("bag", help="turn rosbag2 recordings of this node suite into episodes")
    bag.add_argument("bags", nargs="+", help="bag folders")
    bag.add_argument("--out", required=True, help="episodes folder")
    recover = sub.add_parser("recover", help="a whole bag from one whose recorder was killed (no metadata.yaml)")
    recover.add_argument("bag", help="the bag folder without metadata.yaml")
    recover.add_argument("--out", required=True, help="the recovered bag's folder (must not exist)")
    build = sub.add_parser("build", help="build the training dataset from episodes")
    build.add_argument("episodes", nargs="+", help="episode folders, folders of them, or episode JSONL files")
    build.add_argument("--out", required=True, help="dataset folder")
    build.add_argument("--labeller", default="annotations", choices=LABELLERS,
                       help="where subtasks and plans come from (default %(default)s)")
    build.add_argument("--on-failure", default="fallback", choices=ON_FAILURE,
                       help="when the labeller fails on an episode: label it from annotations/verbaliser, or skip it")
    build.add_argument("--openai-url", default=os.environ.get("VLM2VLA_LABELLER_URL", "http://127.0.0.1:8000/v1"))
    build.add_argument("--openai-model", default="gemini-2.5-pro")
    build.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    build.add_argument("--timeout", type=float, default=60.0, help="labeller request timeout, s")
    build.add_argument("--retries", type=int, default=3, help="labeller tries per episode")
    build.add_argument("--rpm", type=float, default=30.0, help="labeller requests per minute")
    build.add_argument("--cache", default=None, help="labeller answer cache (default: DATASET/labeller_cache)")
    build.add_argument("--val-fraction", type=float, default=0.1)
    build.add_argument("--include-failed", action="store_true", help="also use episodes that failed their task")
    build.add_argument("--no-verify", action="store_true", help="no subtask-completion examples")
    build.add_argument("--no-direction", action="store_true", help="no movement-direction examples")
    build.add_argument("--plan-totals", action="store_true",
                       help='start every plan with the move left in its subtask, "[dx, dy, dz] cm to go." (docs/miniature.md, finding 28)')
    build.add_argument("--tokenizer", default=None, help="model folder whose tokenizer counts tokens for the card")
    return ap.parse_args(argv)


def _print_skipped(skipped: Sequence[tuple[str, str]], limit: int = 20) -> None:
    for name, reason in list(skipped)[:limit]:
        print(f"  skipped {name}: {reason}")
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more (see build.json)")


def run_sim(args: argparse.Namespace) -> int:
    from vlm2vla_ros.data.sim_source import export_sim_episodes

    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    report = export_sim_episodes(Path(args.out), args.kinds, seeds, args.image_size, args.lang, progress=True)
    print(report.summary())
    _print_skipped(report.skipped)
    return 0 if report.written or report.existing else 1


def run_bag(args: argparse.Namespace) -> int:
    from vlm2vla_ros.data.bag_source import export_bag_episodes

    report = export_bag_episodes([Path(b) for b in args.bags], Path(args.out), progress=True)
    print(report.summary())
    _print_skipped(report.skipped)
    return 0 if report.written or report.existing else 1


def run_recover(args: argparse.Namespace) -> int:
    from vlm2vla_ros.recording import RecordingError, recover_bag

    try:
        counts = recover_bag(args.bag, args.out)
    except RecordingError as exc:
        raise ValueError(str(exc)) from None
    print(f"recovered {sum(counts.values())} messages into {args.out}: "
          + ", ".join(f"{topic} {n}" for topic, n in counts.items() if n))
    return 0 if any(counts.values()) else 1


def load_tokenizer(name: str) -> Any:
    """The card's tokenizer, loaded before the build so a wrong path fails before anything is
    written (not after a long labelling run); raises ValueError with a one-line reason."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        if not Path(name).exists():
            raise ValueError(f"no tokenizer at {name}: the folder does not exist") from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load a tokenizer from {name} ({reason})") from None


def run_build(args: argparse.Namespace) -> int:
    from vlm2vla_ros.data import (
        BuildConfig,
        LabellerSettings,
        OpenAILabellerConfig,
        build_dataset,
        load_episodes,
        make_labeller,
    )
    from vlm2vla_ros.data.card import write_card

    out = Path(args.out)
    try:
        tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    except ValueError as exc:
        print(f"vlm2vla-dataset: {exc}", file=sys.stderr)
        return 2
    loaded = load_episodes([Path(p) for p in args.episodes])
    print(loaded.summary())
    config = BuildConfig(
        val_fraction=args.val_fraction,
        include_failed=args.include_failed,
        verify_examples=not args.no_verify,
        direction_examples=not args.no_direction,
        plan_totals=args.plan_totals,
    )
    settings = LabellerSettings(
        kind=args.labeller,
        on_failure=args.on_failure,
        openai=OpenAILabellerConfig(
            base_url=args.openai_url,
            model=args.openai_model,
            api_key=os.environ.get(args.api_key_env, ""),
            timeout_s=args.timeout,
            retries=args.retries,
            requests_per_minute=args.rpm,
            cache_dir=args.cache or str(out / "labeller_cache"),
        ),
    )
    labeller = make_labeller(settings, config.merge)
    report = build_dataset(
        loaded.episodes, out, labeller, config, fallback=args.on_failure == "fallback", progress=True, skipped=loaded.skipped
    )
    print(report.summary())
    if report.notes:
        print("  notes: " + ", ".join(f"{k} {v}" for k, v in sorted(report.notes.items()) if v))
    if report.labeller:
        print("  labeller: " + ", ".join(f"{k} {v}" for k, v in report.labeller.items()))
    _print_skipped(report.skipped)
    if not any(report.counts.get("train", {}).values()):  # the reasons above say why; a card of nothing would only fail
        print(f"vlm2vla-dataset: no training example was built in {out}", file=sys.stderr)
        return 1
    card = write_card(out, tokenizer)
    print(f"dataset: {out / 'train.jsonl'}, {out / 'val.jsonl'}; card: {card}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return {"sim": run_sim, "bag": run_bag, "recover": run_recover, "build": run_build}[args.command](args)
    except (ValueError, OSError) as exc:  # OSError: a full disk, a folder that exists; its text names the file
        print(f"vlm2vla-dataset: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
