"""vlm2vla-eval: how good is an adapter? Offline metrics, closed-loop sim success, VQA retention.

    vlm2vla-eval --model MODEL_DIR --adapter ADAPTER_DIR --out REPORT_DIR
                 [--data DATASET] [--sim-kinds pick_up put_in --sim-seeds 10] [--vqa vqa.jsonl]

--data: offline metrics on the dataset's held-out chunk examples (val.jsonl);
--sim-kinds: closed-loop success in the simulator over seeded scenes per task kind;
--vqa: a JSONL of {image, question, answer}, answered with the adapter on and off.
Writes REPORT_DIR/report.md (+ plots) and metrics.json, and prints the metrics.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from vlm2vla_ros.sim import TASK_KINDS

    ap = argparse.ArgumentParser(prog="vlm2vla-eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="base model folder")
    ap.add_argument("--adapter", default=None, help="LoRA adapter folder (none: evaluate the base model)")
    ap.add_argument("--out", required=True, help="report folder")
    ap.add_argument("--config", default=None, help="policy config YAML (sampling, limits, prompts)")
    ap.add_argument("--data", default=None, help="dataset folder for offline metrics (val.jsonl)")
    ap.add_argument("--split", default="val", choices=("val", "train"))
    ap.add_argument("--max-examples", type=int, default=200)
    ap.add_argument("--constrained", action="store_true",
                    help="decode with the grammars (then the parse rate is 1 by construction)")
    ap.add_argument("--sim-kinds", nargs="*", default=[], choices=TASK_KINDS)
    ap.add_argument("--sim-seeds", type=int, default=10, help="scenes per task kind")
    ap.add_argument("--sim-first-seed", type=int, default=10_000, help="far from the seeds used for training data")
    ap.add_argument("--max-cycles", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--vqa", default=None, help="VQA JSONL of {image, question, answer}")
    ap.add_argument("--device", default="auto")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from vlm2vla_ros.data.builder import read_examples
    from vlm2vla_ros.policy import PolicyConfig, PolicyError, load_policy
    from vlm2vla_ros.sim.views import read_model_view
    from vlm2vla_ros.training import evaluate

    if not (args.data or args.sim_kinds or args.vqa):
        print("vlm2vla-eval: nothing to evaluate; give --data, --sim-kinds or --vqa", file=sys.stderr)
        return 1
    try:
        base = PolicyConfig.from_yaml(args.config) if args.config else PolicyConfig(model_path=args.model)
        # One try per stage and free decoding by default, so the parse rate measures the model.
        config = base.replace(
            model_path=args.model, adapter_path=args.adapter, device=args.device,
            constrained=args.constrained, max_retries=1,
        )
        engine = load_policy(config)
    except (ValueError, PolicyError) as exc:
        print(f"vlm2vla-eval: {exc}", file=sys.stderr)
        return 1
    results: dict[str, Any] = {"model": args.model, "adapter": args.adapter, "constrained": args.constrained}
    try:
        if args.data:
            examples = read_examples(Path(args.data) / f"{args.split}.jsonl", ("chunk",))[: args.max_examples]
            if not examples:
                raise ValueError(f"{args.data}/{args.split}.jsonl holds no chunk examples")
            metrics, rows = evaluate.offline_eval(engine, examples, progress=True)
            results["offline"] = {"metrics": asdict(metrics), "rows": rows}
        if args.sim_kinds:
            seeds = list(range(args.sim_first_seed, args.sim_first_seed + args.sim_seeds))
            rates, records = evaluate.closed_loop_eval(
                engine, args.sim_kinds, seeds, args.max_cycles, args.image_size, progress=True,
                view=read_model_view(config.model_path),  # the camera the model was trained with
            )
            results["closed_loop"] = {"success_rate": rates, "episodes": records}
        if args.vqa:
            items = evaluate.read_vqa(Path(args.vqa))
            vqa, rows = evaluate.vqa_retention(engine, items, progress=True)
            results["vqa"] = {"result": asdict(vqa), "rows": rows}
    except ValueError as exc:
        print(f"vlm2vla-eval: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    report = evaluate.write_report(Path(args.out), results)
    print(evaluate.format_metrics(results))
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
