"""vlm2vla-bench: time the policy's stages over N cycles and count unparseable chunks.

With no --model it builds (once, cached) the tiny random Gemma-3 and a random LoRA adapter,
so it runs on any machine; point --model/--adapter at real folders for real figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..machine import cpu_model

TASKS = ("pick up the carrot", "put the red block in the bowl", "move the blue cup to the left of the plate")


def percentile(values: Sequence[float], q: float) -> float | None:
    """None when nothing was measured (JSON has no NaN)."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vlm2vla-bench", description=__doc__)
    parser.add_argument("--model", help="local model folder (default: the cached tiny Gemma-3)")
    parser.add_argument("--adapter", help="local LoRA adapter folder (default with the tiny model: a random one)")
    parser.add_argument("--no-adapter", action="store_true", help="run the base model only")
    parser.add_argument("--config", help="PolicyConfig YAML; the flags below override it")
    parser.add_argument("--cycles", type=int, default=20, help="plan + chunk cycles to run (default 20)")
    parser.add_argument("--cycles-per-task", type=int, default=5, help="cycles between subtask generations (default 5)")
    parser.add_argument("--no-constraints", action="store_true", help="decode without grammars")
    parser.add_argument("--no-reuse", action="store_true", help="prefill the chunk prompt from scratch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--image-size", default="480x640", help="camera image HxW (default 480x640)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: 1 with the tiny model, torch's choice otherwise)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.cycles < 1 or args.cycles_per_task < 1:
        parser.error("--cycles and --cycles-per-task must be at least 1")
    try:
        args.height, args.width = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        parser.error(f"--image-size must look like 480x640, got {args.image_size!r}")
    return args


def build_config(args: argparse.Namespace) -> tuple[Any, bool]:
    """(config, is_tiny): the config file (if any) with the flags on top; no model means the tiny one."""
    from vlm2vla_ros.policy import PolicyConfig

    overrides: dict[str, object] = {"seed": args.seed}
    if args.model:
        overrides["model_path"] = args.model
    if args.adapter:
        overrides["adapter_path"] = args.adapter
    if args.device:
        overrides["device"] = args.device
    if args.no_constraints:
        overrides["constrained"] = False
    if args.no_reuse:
        overrides["reuse_prefix"] = False
    config = PolicyConfig.from_yaml(args.config, overrides) if args.config else PolicyConfig(**overrides)  # type: ignore[arg-type]
    tiny = config.backend == "transformers" and not config.model_path
    if tiny:
        from vlm2vla_ros.policy.tiny_model import ensure_tiny_adapter, ensure_tiny_model

        config = config.replace(model_path=str(ensure_tiny_model()), adapter_path=args.adapter or str(ensure_tiny_adapter()))
    if args.no_adapter:
        config = config.replace(adapter_path=None)
    return config, tiny


def run(args: argparse.Namespace) -> dict[str, object]:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    config, tiny = build_config(args)
    threads = args.threads or (1 if tiny else None)
    if threads and config.backend == "transformers":
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)  # a tiny model's ops are too small to gain from threads
        try:
            return measure(args, config)
        finally:
            torch.set_num_threads(previous)
    return measure(args, config)


def measure(args: argparse.Namespace, config) -> dict[str, object]:
    from vlm2vla_ros.policy import PolicyError, load_policy

    engine = load_policy(config)
    rng = np.random.default_rng(args.seed)
    times: dict[str, list[float]] = {"subtasks": [], "plan": [], "chunk": [], "verify": [], "cycle": []}
    tokens: dict[str, list[int]] = {"subtasks": [], "plan": [], "chunk": [], "verify": []}
    reused: list[int] = []
    chunk_tokens = steps = failures = attempts = failed_cycles = 0
    subtasks: list[str] = []
    task = TASKS[0]
    try:
        image = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
        for index in range(args.cycles):
            if index % args.cycles_per_task == 0:
                task = TASKS[(index // args.cycles_per_task) % len(TASKS)]
                try:
                    result = engine.subtasks(image, task)
                    subtasks = result.subtasks
                    times["subtasks"].append(result.timings["subtasks"])
                    tokens["subtasks"].append(result.tokens["subtasks"])
                except PolicyError:
                    subtasks = [task]
            after = rng.integers(0, 256, image.shape, dtype=np.uint8)
            try:
                cycle = engine.cycle(image, task, subtasks[0])
            except PolicyError as exc:
                failed_cycles += 1
                if exc.stage == "chunk":
                    failures += exc.failures
                    attempts += exc.failures
                continue
            chunk_failures = cycle.parse_failures
            failures += chunk_failures
            attempts += chunk_failures + 1
            for stage in ("plan", "chunk", "cycle"):
                times[stage].append(cycle.timings[stage])
            tokens["plan"].append(cycle.tokens["plan"])
            tokens["chunk"].append(cycle.tokens["chunk"])
            reused.append(cycle.tokens["chunk_reused"])
            chunk_tokens += cycle.tokens["chunk"]
            steps += len(cycle.chunk)
            next_subtask = subtasks[1] if len(subtasks) > 1 else ""
            verdict = engine.verify(image, after, subtasks[0], next_subtask)
            times["verify"].append(verdict.timings["verify"])
            tokens["verify"].append(verdict.tokens.get("verify", 0))
            image = after
    finally:
        engine.close()
    return {
        "cycles": args.cycles,
        "completed_cycles": len(times["cycle"]),
        "failed_cycles": failed_cycles,
        "median_cycle_s": percentile(times["cycle"], 50),
        "p90_cycle_s": percentile(times["cycle"], 90),
        "parse_failure_rate": failures / attempts if attempts else None,
        "chunk_attempts": attempts,
        "parse_failures": failures,
        "tokens_per_action_step": chunk_tokens / steps if steps else None,
        "mean_chunk_prompt_tokens_reused": float(np.mean(reused)) if reused else 0.0,
        "stages": {
            stage: {
                "runs": len(values),
                "median_s": percentile(values, 50),
                "p90_s": percentile(values, 90),
                "mean_tokens": float(np.mean(tokens[stage])) if tokens.get(stage) else None,
            }
            for stage, values in times.items()
        },
        "model": config.model_path,
        "adapter": config.adapter_path,
        "device": config.device,
        "constrained": config.constrained,
        "reuse_prefix": config.reuse_prefix,
        "machine": f"{platform.machine()} {cpu_model()}",
    }


def print_table(report: dict[str, object]) -> None:
    print(f"model: {report['model']}  adapter: {report['adapter']}  device: {report['device']}")
    print(f"constrained: {report['constrained']}  reuse_prefix: {report['reuse_prefix']}")
    print(f"{'stage':<10}{'runs':>6}{'median s':>11}{'p90 s':>10}{'tokens':>9}")
    stages = report["stages"]
    assert isinstance(stages, dict)
    for stage, row in stages.items():
        mean_tokens = "" if row["mean_tokens"] is None else f"{row['mean_tokens']:.1f}"
        print(f"{stage:<10}{row['runs']:>6}{_number(row['median_s']):>11}{_number(row['p90_s']):>10}{mean_tokens:>9}")
    print(f"cycles: {report['completed_cycles']}/{report['cycles']} completed")
    print(f"tokens per action step: {_number(report['tokens_per_action_step'])}")
    print(f"chunk prompt tokens reused from the plan stage (mean): {report['mean_chunk_prompt_tokens_reused']:.1f}")
    print(f"parse failures: {report['parse_failures']}/{report['chunk_attempts']} "
          f"(rate {_number(report['parse_failure_rate'])})")


def _number(value: object) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from vlm2vla_ros.policy import PolicyError

    try:
        report = run(args)
    except (PolicyError, ValueError) as exc:
        print(f"vlm2vla-bench: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, sort_keys=True, allow_nan=False))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
