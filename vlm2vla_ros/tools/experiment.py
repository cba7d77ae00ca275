"""vlm2vla-experiment: the miniature VLM2VLA experiment, from scratch, on a CPU.

    vlm2vla-experiment --out runs/mini [--seed 0] [--quick] [--ship-to models/vlm2vla-mini]
                       [--kernels pinned|native] [--threads N] [--settings config/miniature/tower_recipe.txt]
                       [--set reach_demos=6000 --set "location_kinds=('relative', 'direction')" ...]
    vlm2vla-experiment --out runs/mini --resume [--kernels pinned|native] [--threads N] [--ship-to ...]

Builds and pretrains a small Gemma-3-architecture VLM on simulator VQA (English and Spanish),
fine-tunes it into VLM2VLA (LoRA, actions as text) and into the action-token baseline (full
fine-tuning), evaluates VQA accuracy and closed-loop success on held-out seeds, and writes
OUT/report.md, OUT/metrics.json and the plots. --ship-to copies the VLM2VLA base + adapter
(the offline demo's model), and the run's verifier of its own when it made one
(verifier_steps). --quick is a micro run for tests. The arithmetic is pinned
(miniature/kernels.py) so that x86-64 CPUs with AVX2 of one vendor train the same weights: AMD
EPYC machines make one set, an Intel Xeon another, since MKL takes its AVX2 path on Intel
CPUs only (docs/miniature.md, finding 32), and inside the test suite it has twice made yet
others (finding 33); --kernels native lets torch choose for this CPU. After every stage the run
folder holds a checkpoint; --resume goes on after the last finished stage of a run whose process
was lost, with the checkpoint's settings, and makes the numbers of a run never stopped.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def parse_args(argv: list | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vlm2vla-experiment", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="run folder (must not exist or be empty, unless --resume)")
    ap.add_argument("--resume", action="store_true",
                    help="go on after the last stage the run in --out finished (its checkpoint), with its settings; "
                         "give the --kernels and --threads it was started with")
    ap.add_argument("--seed", type=int, default=None, help="seed of every stage (default 0)")
    ap.add_argument("--quick", action="store_true", help="micro run with tiny sizes and step counts (tests)")
    ap.add_argument("--ship-to", default="", help="copy the VLM2VLA base + adapter (+ verifier/) here (e.g. models/vlm2vla-mini)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: 2 with pinned kernels, torch's default with native ones)")
    ap.add_argument("--kernels", default="pinned", choices=("pinned", "native"),
                    help="pinned (default): the same weights on the AMD CPUs checked; an Intel Xeon makes others (ATen "
                         "AVX2, MKL_CBWR, no oneDNN, 2 threads); native: torch's choice for this CPU, whose weights are this machine's")
    ap.add_argument("--view", default="", choices=("", "table", "gripper"),
                    help="the simulated camera's view in every stage (default: the documented run's, gripper)")
    ap.add_argument("--settings", action="append", default=[], metavar="FILE",
                    help="a file of KEY=VALUE lines ('#' lines and blank ones skipped), applied before any --set "
                         "(repeatable; config/miniature/ holds the documented recipes)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one ExperimentConfig setting, VALUE a Python literal (repeatable; "
                         "the runs of docs/miniature.md's findings are written this way)")
    return ap.parse_args(argv)


def _as_setting(key: str, value: Any, default: Any) -> Any:
    """value checked against the type of the setting's default; lists become tuples."""

    def tuples(v: Any) -> Any:
        return tuple(tuples(x) for x in v) if isinstance(v, (list, tuple)) else v

    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple))
        value = tuples(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"--set {key}: expected a value of type {type(default).__name__}, got {value!r}")
    return value


def settings_file(path: Path) -> list[str]:
    """The KEY=VALUE lines of a settings file, so that a long recipe is one file and not a page
    of --set; lines starting with '#' and blank lines are skipped. Raises ValueError naming the
    file and line of anything else that is not KEY=VALUE, and when the file cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--settings {path}: cannot be read ({exc})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"--settings {path}, line {number}: expected KEY=VALUE, got {line!r}")
        pairs.append(line)
    return pairs


def with_settings(config: Any, pairs: list[str]) -> Any:
    """config with each "KEY=VALUE" of pairs applied (VALUE a Python literal); unknown keys, the
    model's size (spec) and values of the wrong type are refused with the setting named."""
    fields = {f.name for f in dataclasses.fields(config)} - {"spec"}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(f"--set takes KEY=VALUE with KEY one of the experiment's settings "
                             f"(ExperimentConfig, spec excepted), got {pair!r}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"--set {key}: {text!r} is not a Python literal (quote strings: {key}='...')") from None
        changes[key] = _as_setting(key, value, getattr(config, key))
    return dataclasses.replace(config, **changes)


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.threads < 0:
        print("error: --threads must be >= 0", file=sys.stderr)
        return 2
    from ..miniature import kernels

    pinned = args.kernels == "pinned"
    # The pinning variables are read when torch loads: set them now, or, if this process loaded
    # torch already (a caller in Python), run the experiment in a process of its own.
    run_in_child = pinned and not kernels.environment_is_pinned(os.environ) and "torch" in sys.modules
    if pinned and not run_in_child:
        os.environ.update(kernels.PINNED_ENVIRONMENT)
    import torch

    from ..miniature.experiment import ExperimentConfig, read_checkpoint, run_experiment, ship

    out = Path(args.out).expanduser()
    if args.resume:
        if args.quick or args.seed is not None or args.view or args.settings or args.set:
            print("error: --resume goes on with the checkpoint's own settings: drop --quick, --seed, --view, --settings "
                  "and --set", file=sys.stderr)
            return 2
        try:
            config = read_checkpoint(out)["config"]
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        seed = 0 if args.seed is None else args.seed
        config = ExperimentConfig.quick(seed) if args.quick else ExperimentConfig.full(seed)
        if args.view:
            config = dataclasses.replace(config, view=args.view)
        try:
            config = with_settings(config, [pair for path in args.settings for pair in settings_file(path)] + args.set)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if run_in_child:
        child = [sys.executable, "-m", "vlm2vla_ros.tools.experiment", *argv]
        return subprocess.run(child, env=kernels.with_pinned_environment(os.environ), check=False).returncode
    if pinned:
        arithmetic = kernels.pinned_arithmetic(args.threads or kernels.PINNED_THREADS)
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        arithmetic = contextlib.nullcontext()
    try:
        with arithmetic:
            metrics = run_experiment(out, config, log=lambda line: print(line, flush=True), resume=args.resume)
    except kernels.ArithmeticNotPinned as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.ship_to:
        target = ship(out, Path(args.ship_to).expanduser())
        print(f"shipped the VLM2VLA checkpoint to {target}")
    print(f"report: {out / 'report.md'} ({metrics['wall_time_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
