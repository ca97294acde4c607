"""Helpers shared by the dlc-* reproductions."""

from __future__ import annotations

from typing import Any


def or_value(values: list[Any], missing: float) -> list[float]:
    """``values`` with ``None`` (a non-finite result) replaced by ``missing``."""
    return [missing if v is None else v for v in values]
