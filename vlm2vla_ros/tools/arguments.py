"""Argument types the command-line tools share: a bad value is argparse's usage error, before any work."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _integer_from(text: str, lowest: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < lowest:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _integer_from(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _integer_from(text, 0, "an integer of 0 or more")


def image_side(lo: int, hi: int) -> Callable[[str], int]:
    """An argument type for a square image's side in [lo, hi] pixels."""

    def side(text: str) -> int:
        value = positive_int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"image size must be {lo} to {hi} pixels, got {value}")
        return value

    return side
