"""The one training loop: step schedule, a checkpoint after every epoch and exact resume, progress with ETA,
device placement, autocast, and DistributedDataParallel under ``torchrun``.

A method supplies its model and optimiser, a *batch source* and a *step*:

- ``batches(epoch, generator) -> iterable of batches``: this rank's batches of epoch ``epoch`` (1-based), in
  an order drawn from ``generator`` (e.g. :func:`cryoscape.data.loader.shuffled_batches` for data held in
  memory, :meth:`cryoscape.data.loader.ParticleLoader.batches` for a particle stack on disk). Under torchrun
  every rank must yield the same number of batches (the loaders split each global batch over the ranks);
- ``step(batch, ctx) -> (loss, n)`` or ``(loss, n, metrics)``: the mean loss over the ``n`` items of the
  batch (a 0-d tensor with a graph), and optional floats to average per item into the history. ``ctx`` is a
  :class:`StepContext`: the epoch's ``generator`` (for noise, so that a resumed run draws the same), the
  ``device`` (batches arrive there), and ``ctx.autocast()``, the reduced-precision context the step puts
  around the parts that profit (a network's forward pass; the loss itself is better left in float32).
  Under torchrun a rank's part of a last batch can be empty (fewer images than ranks): the step is then
  called with the empty batch and must return ``n = 0`` (its loss is replaced by zero).

Randomness. ``rng="per_epoch"``: epoch ``e`` gets a fresh CPU generator seeded ``seed · 1_000_003 + e``
(:func:`cryoscape.data.loader.epoch_generator`). ``rng="continuous"``: one CPU generator seeded ``seed``
runs through all epochs and its state is checkpointed. Either way a resumed run ends with the same
parameters, bit for bit, as an uninterrupted one (same machine, thread count and world size); torch's
global generator is checkpointed too.

Step schedule of epoch ``e`` of ``E`` for every parameter group: ``"cosine"``:
``lr · ½(1 + cos(π (e − 1) / E))`` (large steps first, small at the end); ``"constant"``: ``lr``.

Distributed (``torchrun``, ``WORLD_SIZE > 1``): the process group is joined (gloo on CPU, nccl on CUDA); the
step runs inside DistributedDataParallel, which averages gradients over the ranks. Each rank's loss is
weighted by ``world · n_rank / n_global`` first, so the averaged gradient is that of the mean loss over the
global batch — the gradient one process gets with the same global batch, also when the ranks' parts differ
in size (an empty part takes part with a zero loss). Losses and metrics in the history are sums over the
ranks divided by the global count. Only rank 0 writes the checkpoint and logs; rank 0 reads the checkpoint
and sends it to the others, so all ranks resume from the same state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.loader import epoch_generator
from ..io.errors import InputError
from ..utils import devices

__all__ = ["TrainConfig", "StepContext", "Trainer", "train", "learning_rate", "load_checkpoint"]

SCHEDULES = ("cosine", "constant")
RNGS = ("per_epoch", "continuous")
_RESERVED = ("signature", "epoch", "model", "opt", "gen", "rng", "cuda_rng", "scaler", "history", "items")


@dataclass
class TrainConfig:
    """``epochs`` (the schedule's length ``E``), ``lr`` (base step), ``schedule`` ("cosine" | "constant"),
    ``seed`` and ``rng`` ("per_epoch" | "continuous", see the module docstring), ``device`` ("auto" | "cpu" |
    "cuda" | "cuda:N"), ``precision`` ("auto" | "bf16" | "fp16" | "fp32";
    :func:`cryoscape.utils.devices.autocast_dtype`), ``checkpoint``: file written after every epoch and
    resumed from when present (None: neither)."""

    epochs: int = 20
    lr: float = 1e-3
    schedule: str = "cosine"
    seed: int = 0
    rng: str = "per_epoch"
    device: str = "auto"
    precision: str = "auto"
    checkpoint: str | Path | None = None

    def check(self) -> None:
        """Raise :class:`InputError` naming the option of the first bad value."""
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise InputError("--epochs", f"must be an integer ≥ 1, got {self.epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError("--lr", f"must be > 0, got {self.lr}")
        for name, value, allowed in (("--schedule", self.schedule, SCHEDULES), ("--rng", self.rng, RNGS),
                                     ("--precision", self.precision, devices.PRECISIONS)):
            if value not in allowed:
                raise InputError(name, f"expected one of {', '.join(allowed)}, got {value!r}")
        if self.seed < 0:
            raise InputError("--seed", f"must be ≥ 0, got {self.seed}")


def learning_rate(lr: float, epoch: int, epochs: int, schedule: str) -> float:
    """The step of epoch ``epoch`` (1-based) of ``epochs``: ``lr · ½(1 + cos(π (e − 1) / E))`` or ``lr``."""
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
    return lr


@dataclass
class StepContext:
    """What a step may need: ``epoch``, ``generator`` (a CPU generator: on a GPU draw on the CPU and move,
    ``torch.randn(shape, generator=ctx.generator).to(ctx.device)``), ``device``, ``dtype`` (autocast dtype or
    None), ``rank`` and ``world_size``."""

    epoch: int
    generator: torch.Generator
    device: torch.device
    dtype: torch.dtype | None
    rank: int = 0
    world_size: int = 1

    def autocast(self):
        """``torch.autocast`` in ``dtype`` on this device (a no-op context when ``dtype`` is None)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)


def load_checkpoint(path: str | Path, signature: dict | None) -> dict:
    """The saved state at ``path``; :class:`InputError` when it is unreadable or was written for another
    ``signature`` (the configuration a checkpoint must agree with to be resumed)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(path, f"cannot read the checkpoint ({type(exc).__name__})") from None
    signature = signature or {}
    if not isinstance(state, dict) or "model" not in state or state.get("signature") != signature:
        theirs = state.get("signature") if isinstance(state, dict) else None
        theirs = theirs if isinstance(theirs, dict) else {}
        diff = sorted(k for k in set(signature) | set(theirs) if theirs.get(k, None) != signature.get(k, None))
        raise InputError(path, "checkpoint of another configuration (differs in " + (", ".join(diff) or "format")
                         + "); remove it or use another output folder")
    return state


class _StepModule(torch.nn.Module):
    """The step as a module's forward, so that DistributedDataParallel sees it run (any model method the
    step calls then takes part in the gradient averaging)."""

    def __init__(self, model: torch.nn.Module, step: Callable):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, batch, ctx: StepContext):
        loss, n, metrics = _unpack(self.step(batch, ctx))
        if n == 0:  # an empty part of a last batch: zero gradients, but every parameter takes part
            loss = sum((p * 0).sum() for p in self.model.parameters() if p.requires_grad)
        return loss, n, metrics


def _unpack(out) -> tuple[torch.Tensor, int, dict]:
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise TypeError("a step returns (loss, n) or (loss, n, metrics)")
    return out[0], int(out[1]), (out[2] if len(out) == 3 else {})


class Trainer:
    """Sets up a run: resolves the device and precision, joins the process group under torchrun, moves the
    model there, and restores a checkpoint written with the same ``signature`` (model, optimiser, generators,
    history; ``extra``: what else it held, e.g. data scales — read it before building the data, then
    :meth:`fit`).

    Attributes: ``device``, ``dtype`` (autocast), ``history`` (per-epoch dicts so far), ``start_epoch``
    (the first epoch :meth:`fit` runs), ``extra`` (the checkpoint's other entries; ``{}`` on a fresh start),
    ``rank``, ``world_size``.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                 signature: dict | None = None, log=None):
        cfg.check()
        self.model, self.opt, self.cfg, self.signature = model, optimizer, cfg, dict(signature or {})
        self.device = devices.resolve_device(cfg.device)
        self.dtype = devices.autocast_dtype(self.device, cfg.precision)
        self.distributed = devices.init_distributed(self.device)
        info = devices.dist_info()
        self.rank, self.world_size = (info.rank, info.world_size) if self.distributed else (0, 1)
        self.log = log if devices.is_main() else None
        self.model.to(self.device)  # in place: the optimiser keeps its parameters
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.gen = torch.Generator().manual_seed(cfg.seed) if cfg.rng == "continuous" else None
        self.history, self.start_epoch, self.items, self.extra = [], 1, 0, {}
        state = self._read_state()
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            if self.gen is not None:
                self.gen.set_state(state["gen"])
            if state.get("rng") is not None:
                torch.set_rng_state(state["rng"])
            if state.get("cuda_rng") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.history, self.start_epoch, self.items = list(state["history"]), state["epoch"] + 1, state.get("items", 0)
            self.extra = {k: v for k, v in state.items() if k not in _RESERVED}
            if self.log:
                self.log.info("resuming from %s after epoch %d", cfg.checkpoint, state["epoch"])

    def _read_state(self) -> dict | None:
        """The checkpoint, read by rank 0 and sent to the others (an error on rank 0 is raised on all)."""
        path = self.cfg.checkpoint
        state = None
        if self.rank == 0 and path is not None and Path(path).exists():
            try:
                state = load_checkpoint(path, self.signature)
            except InputError as exc:
                state = exc
        if self.distributed:
            box = [state]
            torch.distributed.broadcast_object_list(box, src=0)
            state = box[0]
        if isinstance(state, InputError):
            raise state
        return state

    def _save(self, epoch: int, extra: dict) -> None:
        from ..io.atomic import atomic_path
        clash = sorted(set(extra) & set(_RESERVED))
        if clash:
            raise ValueError(f"extra checkpoint entries use reserved names: {clash}")
        state = {"signature": self.signature, "epoch": epoch, "model": self.model.state_dict(),
                 "opt": self.opt.state_dict(), "gen": None if self.gen is None else self.gen.get_state(),
                 "rng": torch.get_rng_state(), "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                 "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                 "history": self.history, "items": self.items, **extra}
        with atomic_path(self.cfg.checkpoint) as tmp:
            torch.save(state, tmp)

    def _reduce(self, values: list[float]) -> list[float]:
        """Sums over the ranks (the values themselves in one process)."""
        if not self.distributed:
            return values
        on = self.device if self.device.type == "cuda" else torch.device("cpu")
        return devices.all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=on)).tolist()

    def fit(self, step: Callable, batches: Callable[[int, torch.Generator], Iterable], extra: dict | None = None,
            progress=None, on_epoch: Callable[[int, torch.nn.Module], None] | None = None) -> list[dict]:
        """Train epochs ``start_epoch .. epochs``; return the history, one dict per epoch: ``epoch``, ``lr``,
        ``loss`` (mean per item), the step's metrics (means per item), ``wall_s``, ``images_per_s``.

        ``extra``: entries saved in every checkpoint beside the training state. ``progress``: object with
        ``advance(n)``, advanced by the items of every batch (all ranks; the epochs done before a resume at
        once). ``on_epoch(epoch, model)``: called after each epoch's checkpoint.
        Raises FloatingPointError as soon as a batch's loss is not finite.
        """
        cfg, opt, extra = self.cfg, self.opt, dict(extra or {})
        if progress is not None and self.start_epoch > 1:
            progress.advance(min(self.start_epoch - 1, cfg.epochs) * self.items)
        run = step
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel
            run = DistributedDataParallel(_StepModule(self.model, step))
        walls = []
        for epoch in range(self.start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            gen = self.gen if self.gen is not None else epoch_generator(cfg.seed, epoch)
            ctx = StepContext(epoch, gen, self.device, self.dtype, self.rank, self.world_size)
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg.lr, epoch, cfg.epochs, cfg.schedule)
            total, seen, sums = 0.0, 0, {}
            self.model.train()
            for batch in batches(epoch, gen):
                if self.device.type != "cpu":
                    batch = devices.to_device(batch, self.device)
                opt.zero_grad(set_to_none=True)
                loss, n, metrics = _unpack(run(batch, ctx))
                value = float(loss.detach()) * n if n else 0.0
                if self.distributed:
                    n_all, value = self._reduce([n, value])
                    n_all = int(n_all)
                    loss = loss * (self.world_size * n / n_all)
                else:
                    n_all = n
                if not math.isfinite(value):
                    raise FloatingPointError(f"training diverged at epoch {epoch} (loss {value / max(n_all, 1)}); "
                                             "lower the learning rate (--lr)")
                self.scaler.scale(loss).backward()
                self.scaler.step(opt)
                self.scaler.update()
                total += value
                seen += n_all
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + (v * n if n else 0.0)
                if progress is not None:
                    progress.advance(n_all)
            if seen == 0:
                raise ValueError(f"the batch source gave no items in epoch {epoch}")
            sums = dict(zip(sums, self._reduce(list(sums.values()))))
            wall = time.perf_counter() - t0
            walls.append(wall)
            self.items = seen
            self.history.append({"epoch": epoch, "lr": opt.param_groups[0]["lr"], "loss": total / seen,
                                 **{k: v / seen for k, v in sums.items()}, "wall_s": wall,
                                 "images_per_s": seen / wall})
            if self.log:
                eta = sum(walls) / len(walls) * (cfg.epochs - epoch)
                self.log.info("epoch %d/%d: loss %.6g%s, %.1f images/s, ETA %.0f s", epoch, cfg.epochs,
                              total / seen, "".join(f", {k} {v / seen:.6g}" for k, v in sums.items()),
                              seen / wall, eta)
            if cfg.checkpoint is not None and self.rank == 0:
                self._save(epoch, extra)
            if on_epoch is not None:
                on_epoch(epoch, self.model)
        return self.history


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: Callable,
          batches: Callable[[int, torch.Generator], Iterable], cfg: TrainConfig, signature: dict | None = None,
          extra: dict | None = None, progress=None, log=None,
          on_epoch: Callable[[int, torch.nn.Module], None] | None = None) -> list[dict]:
    """``Trainer(model, optimizer, cfg, signature, log).fit(step, batches, extra, progress, on_epoch)``."""
    return Trainer(model, optimizer, cfg, signature, log).fit(step, batches, extra, progress, on_epoch)
