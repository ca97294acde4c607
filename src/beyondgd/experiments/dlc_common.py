"""Helpers shared by the dlc-* reproductions."""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(obj: Any) -> Any:
    """Replace non-finite floats (at any depth of lists/dicts) by ``None``, as records require."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def or_value(values: list[Any], missing: float) -> list[float]:
    """``values`` with ``None`` (a non-finite result) replaced by ``missing``."""
    return [missing if v is None else v for v in values]
