"""Where the work runs: the torch device, the cores torch may use, autocast, and torch.distributed.

- :func:`resolve_device` turns ``--device auto|cpu|cuda|cuda:N`` into a :class:`torch.device` (``auto``: CUDA
  when torch sees a GPU); under ``torchrun`` a bare ``cuda`` means this process's GPU, ``cuda:LOCAL_RANK``.
- :func:`usable_cores` is the number of cores this process may actually use: the smaller of its CPU affinity
  and the cgroup CPU quota (a container limited to 2 CPUs on a 64-core host gets 2, not 64).
  :func:`set_threads` gives torch that many threads (shared among the processes ``torchrun`` started on
  this node), or the ``--threads`` override.
- :func:`autocast_dtype` is the reduced precision the device does in hardware, or None.
- :func:`dist_info`, :func:`init_distributed`, :func:`is_main`, :func:`barrier`, :func:`all_reduce_sum`,
  :func:`all_reduce_mean`: the few distributed operations the training loop needs. Without ``torchrun``
  (no ``WORLD_SIZE`` in the environment) they describe one process and do nothing.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import NamedTuple

import torch

from ..io.errors import InputError

__all__ = ["resolve_device", "usable_cores", "set_threads", "autocast_dtype", "to_device", "DistInfo",
           "dist_info", "init_distributed", "is_distributed", "is_main", "barrier", "all_reduce_sum",
           "all_reduce_mean"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


# --- devices ---------------------------------------------------------------------------------------------

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (CUDA when ``torch.cuda.is_available()``, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
    → :class:`torch.device`. Under ``torchrun`` ``"auto"``/``"cuda"`` pick GPU ``LOCAL_RANK``.

    Raises :class:`InputError` (``--device``) for an unknown name, for CUDA without a GPU, and for a GPU
    index torch does not have.
    """
    name = str(device).strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError("--device", "CUDA requested but torch sees no GPU")
        if name == "cuda":
            index = dist_info().local_rank
        else:
            try:
                index = int(name.split(":", 1)[1])
            except ValueError:
                raise InputError("--device", f"expected cuda:N with an integer N, got {device!r}") from None
            if dist_info().local_world_size > 1:  # every local rank would take the same GPU
                raise InputError("--device", f"{device!r} names one GPU for {dist_info().local_world_size} local "
                                             "ranks; give --device cuda (rank r uses GPU r)")
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise InputError("--device", f"GPU {index} requested but torch sees {count} GPU(s)")
        return torch.device("cuda", index)
    raise InputError("--device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")
                      ) -> float | None:
    """CPUs allowed by the cgroup quota (``quota / period``; may be fractional), or None without a quota.

    cgroup v2: ``cpu.max`` holds ``"<quota> <period>"`` or ``"max <period>"``; cgroup v1:
    ``cpu/cpu.cfs_quota_us`` (−1: none) and ``cpu/cpu.cfs_period_us``. Both are looked up in the process's
    own cgroup (from ``/proc/self/cgroup``) and at the root of the mount (what a container sees); the
    smallest quota found counts.
    """
    rel_v2, rel_v1 = "", ""
    try:
        for line in self_cgroup.read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[0] == "0" and parts[1] == "":
                rel_v2 = parts[2].lstrip("/")
            elif len(parts) == 3 and "cpu" in parts[1].split(","):
                rel_v1 = parts[2].lstrip("/")
    except OSError:
        pass
    limits = []
    for folder in dict.fromkeys((root / rel_v2, root)):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and float(period) > 0:
                limits.append(float(quota) / float(period))
        except (OSError, ValueError):
            pass
    for folder in dict.fromkeys((root / "cpu" / rel_v1, root / "cpu", root / "cpu,cpuacct" / rel_v1)):
        try:
            quota = float((folder / "cpu.cfs_quota_us").read_text())
            period = float((folder / "cpu.cfs_period_us").read_text())
            if quota > 0 and period > 0:
                limits.append(quota / period)
        except (OSError, ValueError):
            pass
    return min(limits) if limits else None


def usable_cores() -> int:
    """Cores this process may use: ``min(len(os.sched_getaffinity(0)), ⌊cgroup quota⌋)``, at least 1.

    The quota is rounded down (a quota of 1.5 CPUs gets 1 thread: more threads than the quota are
    throttled, not faster). Without affinity support ``os.cpu_count()`` stands for the affinity.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, math.floor(quota))
    return max(1, cores)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (``--threads``) or, when None, to :func:`usable_cores` divided
    among the processes of this node (``LOCAL_WORLD_SIZE`` under ``torchrun``), at least 1. Returns it."""
    if n is None:
        n = usable_cores() // max(1, dist_info().local_world_size)
    elif n < 1:
        raise InputError("--threads", f"must be ≥ 1, got {n}")
    n = max(1, int(n))
    torch.set_num_threads(n)
    return n


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for float32.

    ``"fp32"``: None. ``"bf16"``: bfloat16 (on CUDA only where the GPU has it; on a CPU without a bfloat16
    matrix unit torch emulates it, slower but allowed when asked for). ``"fp16"``: float16, CUDA only (it
    needs the loss scaling the training loop does). ``"auto"``: bfloat16 on a CUDA GPU that has it and on a
    CPU with :func:`cryoscape.utils.hardware.native_bf16`, else None.
    """
    kind = torch.device(device).type
    if precision not in PRECISIONS:
        raise InputError("--precision", f"expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if kind == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not bf16:
            raise InputError("--precision", "bf16 requested but this GPU does not support bfloat16; use fp16")
        if precision == "fp16":
            return torch.float16
        return torch.bfloat16 if bf16 else None
    if precision == "fp16":
        raise InputError("--precision", "fp16 needs a CUDA device; use bf16 or fp32 on a CPU")
    if precision == "bf16":
        return torch.bfloat16
    from .hardware import native_bf16
    return torch.bfloat16 if native_bf16() else None


def to_device(obj, device: torch.device):
    """``obj`` with every tensor in it moved to ``device``: tensors, tuples (named too), lists, dicts and
    dataclass instances, recursively; anything else is returned as it is. A tensor already there is not
    copied."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_device(getattr(obj, f.name), device)
                                           for f in dataclasses.fields(obj) if f.init})
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


# --- torch.distributed -------------------------------------------------------------------------------------

class DistInfo(NamedTuple):
    """This process's place among the processes ``torchrun`` started (0, 1, 0, 1 without torchrun)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def dist_info() -> DistInfo:
    """Rank, world size, local rank and local world size from the environment ``torchrun`` sets
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    return DistInfo(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")),
                    int(env.get("LOCAL_WORLD_SIZE", str(world))))


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by ``torchrun`` with ``WORLD_SIZE > 1``: backend ``nccl`` for a
    CUDA ``device`` (made the current GPU), ``gloo`` for the CPU. Returns :func:`is_distributed`.

    Does nothing when already initialised or when running as one process.
    """
    import torch.distributed as dist
    if dist_info().world_size <= 1:
        return is_distributed()
    if not dist.is_available():
        raise RuntimeError("launched by torchrun but this torch has no torch.distributed")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return is_distributed()


def is_main() -> bool:
    """True on rank 0 (the process that writes files and logs), and always without torchrun."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return dist_info().rank == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    import torch.distributed as dist
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks, in place (``t`` itself in one process). For ``nccl`` ``t`` must be on the
    GPU."""
    import torch.distributed as dist
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over ranks, in place."""
    import torch.distributed as dist
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t
