"""Printing a benchmark's figures: a readable table, then the JSON object as the last line."""

from __future__ import annotations

import json


def print_figures(fig: dict, digits: int = 5) -> None:
    """One ``name value`` line per figure, then ``json.dumps`` of all (floats rounded) as the last line."""
    width = max(len(k) for k in fig) + 2
    for k, v in fig.items():
        print(f"{k:{width}s} {v:.4f}" if isinstance(v, float) else f"{k:{width}s} {v}")
    print(json.dumps({k: (round(v, digits) if isinstance(v, float) else v) for k, v in fig.items()}))
