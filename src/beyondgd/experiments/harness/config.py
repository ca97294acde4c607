"""Presets as data over one base config; ``--set`` overrides with dotted keys and type checks."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: nested dicts merge key by key, anything else is
    replaced. A ``None`` value in ``override`` removes the key (a preset drops a method)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=JSON", ...]`` -> ``{"a.b": value}``. Values must be JSON (strings in quotes)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(
                f"--set expects KEY=VALUE with VALUE in JSON (e.g. seeds=8, "
                f"methods.adam.lr=0.01, 'datasets=[\"digits\"]'); got {item!r}"
            )
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"--set {key}: the value {text!r} is not JSON ({err.msg}); write strings in "
                f"double quotes, e.g. {key}='\"{text}\"', and lists as [1, 2]"
            ) from None
    return out


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}.get(
        type(value), "object" if isinstance(value, Mapping) else type(value).__name__
    )


def _check_type(key: str, value: Any, expected: Any) -> None:
    """Raise ``TypeError`` unless ``value`` has the type of the preset's ``expected`` value."""
    if expected is None:
        return  # the preset leaves it open
    ok: bool
    if isinstance(expected, bool):
        ok = isinstance(value, bool)
    elif isinstance(expected, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(expected, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(expected, str):
        ok = isinstance(value, str)
    elif isinstance(expected, list):
        ok = isinstance(value, list)
        if ok and expected:
            kinds = {_type_name(e) for e in expected}
            if len(kinds) == 1:
                for i, item in enumerate(value):
                    _check_type(f"{key}[{i}]", item, expected[0])
    elif isinstance(expected, Mapping):
        ok = isinstance(value, Mapping)
        if ok:
            for sub, item in value.items():
                if sub not in expected:
                    raise ValueError(f"--set {key}: unknown key {sub!r}; known: {sorted(expected)}")
                _check_type(f"{key}.{sub}", item, expected[sub])
    else:
        ok = True
    if not ok:
        raise TypeError(
            f"--set {key}={json.dumps(value)}: expected {_type_name(expected)} "
            f"(the preset has {json.dumps(expected)}), got {_type_name(value)}"
        )


def apply_set(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with each dotted ``key: value`` of ``overrides`` set, after checking that the
    key exists and the value has the preset's type (an int is accepted where a float is)."""
    out = copy.deepcopy(dict(config))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = out
        for depth, part in enumerate(parts):
            if not isinstance(node, dict):
                raise ValueError(
                    f"--set {dotted}: {'.'.join(parts[:depth])} is not an object, so it has no "
                    f"key {part!r}"
                )
            if part not in node:
                where = ".".join(parts[:depth]) or "the config"
                raise ValueError(
                    f"--set {dotted}: unknown key {part!r} in {where}; known: {sorted(node)}"
                )
            if depth == len(parts) - 1:
                _check_type(dotted, value, node[part])
                node[part] = copy.deepcopy(value)
            else:
                node = node[part]
    return out
