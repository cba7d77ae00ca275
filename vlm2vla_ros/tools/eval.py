"""vlm2vla-eval: how good is an adapter? Offline metrics, closed-loop sim success, VQA retention.

    vlm2vla-eval --model MODEL_DIR --adapter ADAPTER_DIR --out REPORT_DIR
                 [--data DATASET] [--sim-kinds pick_up put_in --sim-seeds 10 [--verifier-model DIR]]
                 [--vqa vqa.jsonl]

--model mini: the shipped miniature checkpoint (its adapter unless --adapter names another);
--data: offline metrics on the dataset's held-out chunk examples (val.jsonl);
--sim-kinds: closed-loop success in the simulator over seeded scenes per task kind, each rate with
  its 95% Wilson interval; the verdicts come from the base (the adapter off), or from
  --verifier-model (mini: the shipped checkpoint's verifier of its own); with --constrained too,
  as the demo runs it;
--vqa: a JSONL of {image, question, answer}, answered with the adapter on and off.
Writes REPORT_DIR/report.md (+ plots) and metrics.json, and prints the metrics. Every input is
read before the model loads; when a part fails later, the parts already finished are still written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

PARTS = ("offline", "closed_loop", "vqa")  # the keys of the results, in the order they run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from vlm2vla_ros.rollout import MOVE_AGAIN_AFTER
    from vlm2vla_ros.sim import TASK_KINDS
    from vlm2vla_ros.sim.views import MAX_SIDE, MIN_SIDE
    from vlm2vla_ros.tools.arguments import image_side, non_negative_int, positive_int

    ap = argparse.ArgumentParser(prog="vlm2vla-eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="base model folder")
    ap.add_argument("--adapter", default=None, help="LoRA adapter folder (none: evaluate the base model)")
    ap.add_argument("--out", required=True, help="report folder")
    ap.add_argument("--config", default=None, help="policy config YAML (sampling, limits, prompts)")
    ap.add_argument("--data", default=None, help="dataset folder for offline metrics (val.jsonl)")
    ap.add_argument("--split", default="val", choices=("val", "train"))
    ap.add_argument("--max-examples", type=positive_int, default=200, help="first N held-out chunk examples")
    ap.add_argument("--constrained", action="store_true",
                    help="decode with the grammars (then the parse rate is 1 by construction)")
    ap.add_argument("--sim-kinds", nargs="*", default=[], choices=TASK_KINDS)
    ap.add_argument("--sim-seeds", type=positive_int, default=10, help="scenes per task kind")
    ap.add_argument("--sim-first-seed", type=int, default=10_000, help="far from the seeds used for training data")
    ap.add_argument("--max-cycles", type=positive_int, default=20, help="cycle limit of each closed-loop episode")
    ap.add_argument("--max-retries-per-subtask", type=non_negative_int, default=None,
                    help="fail an episode when one subtask is retried more often, as the policy node does (its "
                    "max_retries_per_subtask, 3); default: the cycle limit alone, the protocol of docs/miniature.md")
    ap.add_argument("--move-again-after", type=non_negative_int, default=MOVE_AGAIN_AFTER,
                    help="every N-th retry of a subtask that follows a move sends the episode back to that move, "
                    f"as the policy node's move_again_after does (default {MOVE_AGAIN_AFTER}; 0: never)")
    ap.add_argument("--verifier-model", default=None,
                    help="model folder that judges the closed loop's subtasks ('mini': the shipped verifier of its "
                    "own); default: the base with the adapter off")
    ap.add_argument("--image-size", type=image_side(MIN_SIDE, MAX_SIDE), default=224,
                    help="side of the rendered sim frames, pixels")
    ap.add_argument("--vqa", default=None, help="VQA JSONL of {image, question, answer}")
    ap.add_argument("--device", default="auto")
    return ap.parse_args(argv)


def offline_examples(data: str, split: str, max_examples: int) -> list[dict[str, Any]]:
    """The first held-out chunk examples, each frame checked now, not when the offline run reaches it."""
    from vlm2vla_ros.data.builder import read_examples

    path = Path(data) / f"{split}.jsonl"
    examples = read_examples(path, ("chunk",))[:max_examples]
    if not examples:
        raise ValueError(f"{path} holds no chunk examples")
    for example in examples:
        frame = example["images"][0] if example["images"] else None
        if frame is None or not Path(frame).is_file():
            raise ValueError(f"{path}: the frame of example {example.get('id')} does not exist ({frame})")
    return examples


def write_results(out: Path, results: dict[str, Any]) -> Path:
    """The report of the finished parts; a part that failed is named under "Not finished"."""
    from vlm2vla_ros.training import evaluate

    report = evaluate.write_report(out, results)
    failed = results.get("failed")
    if failed:
        with report.open("a", encoding="utf-8") as f:
            f.write(f"\n## Not finished\n\n- {failed['part']} failed: {failed['error']}\n")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from vlm2vla_ros.policy import PolicyConfig, PolicyError, load_policy
    from vlm2vla_ros.shipped import resolve_shipped, resolve_verifier_model
    from vlm2vla_ros.sim.views import read_model_view
    from vlm2vla_ros.training import evaluate

    if not (args.data or args.sim_kinds or args.vqa):
        print("vlm2vla-eval: nothing to evaluate; give --data, --sim-kinds or --vqa", file=sys.stderr)
        return 1
    if args.verifier_model and not args.sim_kinds:
        print("vlm2vla-eval: --verifier-model judges the closed loop; give --sim-kinds too", file=sys.stderr)
        return 1
    out = Path(args.out)
    engine = verifier = None
    try:
        # Every input first: a wrong path fails in a second, not after the model load and the long runs.
        if out.exists() and not out.is_dir():
            raise ValueError(f"report folder {out} is a file")
        earlier = [name for name in ("metrics.json", "report.md") if (out / name).exists()]
        if earlier:  # another model's report, or this one's from before: never written over
            raise ValueError(f"report folder {out} holds an earlier evaluation ({', '.join(earlier)}): give a new folder")
        model, adapter = resolve_shipped(args.model, args.adapter or "")
        verifier_model = resolve_verifier_model(args.verifier_model) if args.verifier_model else None
        if verifier_model and not (Path(verifier_model) / "config.json").is_file():
            raise ValueError(f"verifier model folder {verifier_model} holds no config.json: give a whole model folder "
                             "(a verifier judges with its own weights, no adapter)")
        examples = offline_examples(args.data, args.split, args.max_examples) if args.data else []
        vqa_items = evaluate.read_vqa(Path(args.vqa)) if args.vqa else []
        base = PolicyConfig.from_yaml(args.config) if args.config else PolicyConfig(model_path=model)
        # One try per stage and free decoding by default, so the parse rate measures the model.
        config = base.replace(
            model_path=model, adapter_path=adapter or None, device=args.device,
            constrained=args.constrained, max_retries=1,
        )
        view = read_model_view(config.model_path) if args.sim_kinds else None  # the camera the model was trained with
        engine = load_policy(config)
        if verifier_model:
            verifier = load_policy(config.replace(model_path=verifier_model, adapter_path=None))
    except (ValueError, PolicyError, FileNotFoundError) as exc:
        if engine is not None:  # the verifier's load failed after the policy's
            engine.close()
        print(f"vlm2vla-eval: {exc}", file=sys.stderr)
        return 1
    if vqa_items and not hasattr(engine.backend, "has_adapter"):  # vqa_retention's own check, before the long runs
        engine.close()
        if verifier is not None:
            verifier.close()
        print("vlm2vla-eval: --vqa needs the transformers backend (the adapter is switched on and off in process)",
              file=sys.stderr)
        return 1
    results: dict[str, Any] = {"model": model, "adapter": adapter or None, "constrained": args.constrained}
    part = "evaluation"
    try:
        if examples:
            part = "offline"
            metrics, rows = evaluate.offline_eval(engine, examples, progress=True)
            results["offline"] = {"metrics": asdict(metrics), "rows": rows}
        if args.sim_kinds:
            part = "closed loop"
            seeds = list(range(args.sim_first_seed, args.sim_first_seed + args.sim_seeds))
            judged_by = engine if verifier is None else evaluate.StageMix(engine, engine, verifier)
            rates, records = evaluate.closed_loop_eval(
                judged_by, args.sim_kinds, seeds, args.max_cycles, args.image_size, progress=True, view=view,
                max_retries_per_subtask=args.max_retries_per_subtask, move_again_after=args.move_again_after,
            )
            rule = (verifier or engine).config.verdict_margin
            results["closed_loop"] = {"success_rate": rates, "episodes": records, "verifier": verifier_model,
                                      "verdict_margin": asdict(rule) if rule is not None else None,
                                      "max_retries_per_subtask": args.max_retries_per_subtask,
                                      "move_again_after": args.move_again_after}
        if vqa_items:
            part = "VQA"
            vqa, rows = evaluate.vqa_retention(engine, vqa_items, progress=True)
            results["vqa"] = {"result": asdict(vqa), "rows": rows}
    except ValueError as exc:
        results["failed"] = {"part": part, "error": str(exc)}
        print(f"vlm2vla-eval: {part} failed: {exc}", file=sys.stderr)
    except BaseException as exc:  # a crash or Ctrl-C: the finished parts are written below, then it goes on up
        results["failed"] = {"part": part, "error": f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        try:
            engine.close()
        finally:
            if verifier is not None:
                verifier.close()
        report = write_results(out, results) if any(name in results for name in PARTS) else None
    if report is not None:
        print(evaluate.format_metrics(results))
        print(f"report: {report}" + (" (the finished parts only)" if "failed" in results else ""))
    return 1 if "failed" in results else 0


if __name__ == "__main__":
    sys.exit(main())
