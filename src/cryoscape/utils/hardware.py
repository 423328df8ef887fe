"""What the processor can do, for choices that depend on it."""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["native_bf16"]


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 matrices in hardware (x86 ``avx512_bf16`` or ``amx_bf16``
    in ``/proc/cpuinfo``); elsewhere bfloat16 would be emulated and slower than float32, so False."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})
