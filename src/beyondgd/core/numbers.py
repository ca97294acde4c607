"""Numbers for JSON records: no NaN or infinity, a failed value is ``None``."""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """A float, or ``None`` when it is missing or not finite; lists, tuples and dicts are
    converted element by element; integers, booleans and strings pass through unchanged."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    value = float(value)  # floats, numpy and 0-d torch scalars
    return value if math.isfinite(value) else None
