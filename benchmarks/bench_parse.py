"""Time the action-language codec: parsing must be negligible next to model decoding.

Run: .venv/bin/python benchmarks/bench_parse.py   (prints microseconds per call)
"""

from __future__ import annotations

import os
import re
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vlm2vla_ros.action_language import (
    ActionParseError,
    chunk_regex,
    format_action_chunk,
    merge_trajectory,
    parse_action_chunk,
    parse_subtasks,
    verbalise_moves,
)

TYPICAL = "[[2.5, -0.3, 1.0, 1], [3.1, 0.0, -2.4, 1], [0.0, 0.4, -3.0, 1], [0.0, 0.0, -0.5, 0]]"
CHATTY = "Sure, here is the action chunk:\n```python\n" + TYPICAL.replace("], [", "],\n [") + "\n```\nDone!"
ADVERSARIAL = {
    "'[[' * 10000": "[[" * 10000,
    "a list of 6000 numbers": "[[" + "1, " * 6000 + "1]]",
    "'[1]' * 6000": "[1]" * 6000,
    "20k chars of prose": "word " * 4000,
}


def per_call_us(function, repeat: int = 5) -> float:
    """Best-of-`repeat` time per call in microseconds (auto-sized loops of ~0.2 s)."""
    timer = timeit.Timer(function)
    loops, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=loops)) / loops * 1e6


def rejected(text: str) -> None:
    try:
        parse_action_chunk(text)
    except ActionParseError:
        return
    raise AssertionError("adversarial input was accepted")


def main() -> None:
    chunk = parse_action_chunk(TYPICAL)
    pattern = re.compile(chunk_regex())
    deltas = [[0.4, 0.1, -0.2]] * 30 + [[0.0, 0.0, 0.0]] * 3 + [[0.0, 0.0, 0.5]] * 10
    gripper = [1] * 31 + [0] * 12
    rows = [
        ("parse typical 4-step chunk", lambda: parse_action_chunk(TYPICAL)),
        ("parse chunk in prose + code fence", lambda: parse_action_chunk(CHATTY)),
        ("parse paper single step", lambda: parse_action_chunk("[0.2, -0.3, 0.5, 0]")),
        ("format typical chunk", lambda: format_action_chunk(chunk)),
        ("grammar fullmatch (re)", lambda: pattern.fullmatch(TYPICAL)),
        ("verbalise typical chunk", lambda: verbalise_moves(chunk)),
        (
            "parse 4 numbered subtasks",
            lambda: parse_subtasks("1. Grasp a\n2. Lift a\n3. Move to b\n4. Release"),
        ),
        ("merge 43-step trajectory", lambda: merge_trajectory(deltas, gripper)),
    ]
    rows += [(f"reject {name}", lambda text=text: rejected(text)) for name, text in ADVERSARIAL.items()]
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  us/call")
    for name, function in rows:
        print(f"{name:<{width}}  {per_call_us(function):10.1f}")


if __name__ == "__main__":
    main()
