"""The one grammar of canonical action text, and the number conversions it rests on.

Numbers are handled as integers in units of 10**-decimals cm ("units") so that the bound
in the grammar, the parser's range check and the formatter's output agree exactly.
The regex uses only literals, character classes, plain groups, alternation and bounded
repetition, so Python `re`, xgrammar and vLLM structured outputs all accept it.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from .types import DEFAULT_LIMITS, ActionLimits, ActionValueError

_ONE = Decimal(1)


def to_units(value: Decimal, limits: ActionLimits) -> int:
    """Round a value in cm to the nearest unit (ties away from zero)."""
    if not value.is_finite():
        raise ActionValueError(f"value {value} is not a finite number")
    try:
        return int(value.scaleb(limits.decimals).quantize(_ONE, rounding=ROUND_HALF_UP))
    except InvalidOperation:  # more digits than Decimal's context holds (|value| >= ~1e24)
        raise ActionValueError(f"value {value} is far beyond the limits") from None


def float_to_units(value: float, limits: ActionLimits) -> int:
    """Like to_units for a float, rounding its shortest decimal form (so 1.15 -> 1.2)."""
    if not math.isfinite(value):
        raise ActionValueError(f"value {value!r} is not a finite number")
    return to_units(Decimal(repr(float(value))), limits)


def units_to_text(units: int, decimals: int) -> str:
    """Canonical text of a number of units: exactly `decimals` fractional digits, no -0."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**decimals)
    if decimals == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:0{decimals}d}"


def _digits_range(lo: int, hi: int, width: int) -> str:
    """Regex for the zero-padded `width`-digit strings of the integers lo..hi."""
    if width == 0:
        return ""
    if lo == 0 and hi == 10**width - 1:
        return "[0-9]" if width == 1 else f"[0-9]{{{width}}}"
    step = 10 ** (width - 1)
    first_lo, rest_lo = divmod(lo, step)
    first_hi, rest_hi = divmod(hi, step)
    if first_lo == first_hi:
        return f"{first_lo}{_digits_range(rest_lo, rest_hi, width - 1)}"
    # Leading digits whose trailing digits may be anything share one character class.
    full_lo = first_lo if rest_lo == 0 else first_lo + 1
    full_hi = first_hi if rest_hi == step - 1 else first_hi - 1
    parts = []
    if full_lo != first_lo:
        parts.append(f"{first_lo}{_digits_range(rest_lo, step - 1, width - 1)}")
    if full_lo <= full_hi:
        parts.append(_digit_class(full_lo, full_hi) + _digits_range(0, step - 1, width - 1))
    if full_hi != first_hi:
        parts.append(f"{first_hi}{_digits_range(0, rest_hi, width - 1)}")
    return _alternatives(parts)


def _digit_class(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"[{lo}-{hi}]"


def _integer_range(lo: int, hi: int) -> str:
    """Regex for the integers lo..hi written without leading zeros."""
    parts = []
    for width in range(len(str(lo)), len(str(hi)) + 1):
        low = max(lo, 10 ** (width - 1) if width > 1 else 0)
        high = min(hi, 10**width - 1)
        parts.append(_digits_range(low, high, width))
    return _alternatives(parts)


def _units_range(lo: int, hi: int, decimals: int) -> str:
    """Regex for the canonical texts of lo..hi units (0 <= lo <= hi)."""
    if decimals == 0:
        return _integer_range(lo, hi)
    scale = 10**decimals
    whole_lo, frac_lo = divmod(lo, scale)
    whole_hi, frac_hi = divmod(hi, scale)
    if whole_lo == whole_hi:
        return f"{whole_lo}\\.{_digits_range(frac_lo, frac_hi, decimals)}"
    parts = [f"{whole_lo}\\.{_digits_range(frac_lo, scale - 1, decimals)}"]
    if whole_hi - whole_lo > 1:
        parts.append(
            f"{_integer_range(whole_lo + 1, whole_hi - 1)}\\.{_digits_range(0, scale - 1, decimals)}"
        )
    parts.append(f"{whole_hi}\\.{_digits_range(0, frac_hi, decimals)}")
    return _alternatives(parts)


def _alternatives(parts: list) -> str:
    """One part as is, several as one group (so results never have a top-level "|")."""
    return parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"


def number_regex(limits: ActionLimits = DEFAULT_LIMITS) -> str:
    """Regex for one canonical coordinate: -max..max in steps of one unit, never "-0"."""
    magnitude = _units_range(0, limits.max_units, limits.decimals)
    negative = _units_range(1, limits.max_units, limits.decimals)
    return f"({magnitude}|-{negative})"


def chunk_regex(limits: ActionLimits = DEFAULT_LIMITS) -> str:
    """THE grammar: canonical chunk text with 1..max_steps steps, e.g. "[[2.5, -0.3, 1.0, 1]]"."""
    number = number_regex(limits)
    step = f"\\[{number}, {number}, {number}, [01]\\]"
    if limits.max_steps == 1:
        return f"\\[{step}\\]"
    return f"\\[{step}(, {step}){{0,{limits.max_steps - 1}}}\\]"
