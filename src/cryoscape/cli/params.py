"""``-p KEY=VALUE`` method options → a method config's fields, typed (shared by the commands that take them)."""

from __future__ import annotations

import typing
from dataclasses import fields

__all__ = ["parse_config_params"]


def parse_config_params(owner: str, config_cls, params: list[str]) -> dict:
    """``KEY=VALUE`` strings → overrides of ``config_cls``'s fields, each value converted to the field's type
    (int, float, bool, str; ``none`` for an optional field); :class:`InputError` for an unknown key (listing
    ``owner``'s options) or a value of the wrong type."""
    from ..io.errors import InputError

    hints = typing.get_type_hints(config_cls)
    known = {f.name for f in fields(config_cls)}
    out = {}
    for item in params:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError("--param", f"expected KEY=VALUE, got {item!r}")
        if key not in known:
            raise InputError("--param", f"{owner} has no option {key!r}; it has {', '.join(sorted(known))}")
        kind = hints.get(key)
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind) if typing.get_args(kind) else kind
        try:
            if value.lower() in ("none", "null") and typing.get_args(kind):
                out[key] = None
            elif base is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            elif base in (int, float):
                out[key] = base(value)
            else:
                out[key] = value
        except ValueError:
            raise InputError("--param", f"{key} expects {getattr(base, '__name__', base)}, got {value!r}") from None
    return out
