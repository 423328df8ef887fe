"""Training the VAE with known poses: Adam on the loss of :mod:`.model`, a checkpoint after every epoch,
resume from it, and the latents of every particle at the end.

Determinism: the networks are initialised from ``seed``; epoch ``e`` shuffles and draws its noise ``ε``
from a generator seeded with ``(seed, e)``. A run resumed from the checkpoint of epoch ``e`` therefore
continues exactly as the uninterrupted run (same thread count, same machine).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ...data.particles import ParticleData
from ...io.errors import InputError
from .data import FourierPoints, ParticleSource
from .model import HetVAE

__all__ = ["VAEConfig", "VAEResult", "train_vae", "load_model", "encode_all", "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"
IN_MEMORY_LIMIT_BYTES = 4e9


@dataclass
class VAEConfig:
    """Options.

    Network: ``zdim``; encoder ``encoder`` ("mlp" or "cnn"), ``enc_dim`` wide with ``enc_layers`` residual
    layers; decoder ``dec_dim`` wide with ``dec_layers`` residual layers (counted as cryoDRGN counts them),
    positional encoding ``pe_type`` ("gaussian", measured better on AdK, or "geom") with ``pe_dim``
    frequencies (default ``D/2``) and ``pe_sigma``, output "complex" or "hartley".

    Training: ``epochs``, ``batch_size``, Adam ``lr`` (1e-3: better than 1e-4 or 3e-4 at equal epochs on
    AdK; docs/benchmarks.md), ``beta`` (KL weight; default ``1/zdim``), ``seed``, ``in_memory`` (None:
    when the prepared data take under 4 GB), ``chunk`` (images read at a time when lazy), ``use_ctf``,
    ``schedule`` ("cosine", the default: the step of epoch ``e`` of ``E`` is ``lr · ½(1 + cos(π(e−1)/E))``,
    measured better than "constant" at both SNRs on AdK),
    ``bf16`` (the decoder's matrix products in bfloat16 autocast; None: where the CPU multiplies bfloat16
    in hardware, :func:`cryoscape.utils.hardware.native_bf16`; measured 1.5–2.3× faster, same accuracy).
    """

    zdim: int = 8
    enc_dim: int = 256
    enc_layers: int = 3
    dec_dim: int = 256
    dec_layers: int = 3
    encoder: str = "mlp"
    pe_type: str = "gaussian"
    pe_dim: int | None = None
    pe_sigma: float = 0.5
    output: str = "complex"
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    beta: float | None = None
    seed: int = 0
    in_memory: bool | None = None
    chunk: int = 1024
    use_ctf: bool = True
    bf16: bool | None = None
    schedule: str = "cosine"

    ARCH = ("zdim", "enc_dim", "enc_layers", "dec_dim", "dec_layers", "encoder", "pe_type", "pe_dim", "pe_sigma",
            "output")
    TRAINING = ("batch_size", "lr", "beta", "seed", "use_ctf", "bf16", "schedule")

    def arch(self) -> dict:
        return {k: getattr(self, k) for k in self.ARCH}

    def kl_weight(self) -> float:
        return self.beta if self.beta is not None else (1.0 / self.zdim if self.zdim else 0.0)

    def check(self) -> None:
        """Raise :class:`InputError` naming the CLI option of the first bad value."""
        from ...cli.checks import at_least, one_of
        for name, v, lo in (("--zdim", self.zdim, 0), ("--enc-dim", self.enc_dim, 1),
                            ("--enc-layers", self.enc_layers, 0), ("--dec-dim", self.dec_dim, 1),
                            ("--dec-layers", self.dec_layers, 0), ("--epochs", self.epochs, 1),
                            ("--batch-size", self.batch_size, 1), ("--chunk", self.chunk, 1),
                            ("--seed", self.seed, 0)):
            at_least(name, v, lo)
        if self.pe_dim is not None:
            at_least("--pe-dim", self.pe_dim, 1)
        one_of("--encoder", self.encoder, ("mlp", "cnn"))
        one_of("--pe-type", self.pe_type, ("geom", "gaussian"))
        one_of("--output", self.output, ("complex", "hartley"))
        one_of("--schedule", self.schedule, ("constant", "cosine"))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError("--lr", f"must be > 0, got {self.lr}")
        if self.beta is not None and not self.beta >= 0:
            raise InputError("--beta", f"must be ≥ 0, got {self.beta}")


@dataclass
class VAEResult:
    """``z_mu``, ``z_logvar``: ``(N, zdim)`` latents of every particle (in the input order);
    ``history``: per-epoch dicts; ``model``: the trained :class:`HetVAE`; ``norm``: the data scales."""

    z_mu: np.ndarray
    z_logvar: np.ndarray
    history: list
    model: HetVAE
    norm: tuple


def build_model(D: int, cfg: VAEConfig) -> HetVAE:
    torch.manual_seed(cfg.seed)
    points = FourierPoints.for_box(D)
    return HetVAE(D, int(points.pixels.sum()), cfg.zdim, cfg.enc_dim, cfg.enc_layers, cfg.dec_dim, cfg.dec_layers,
                  cfg.encoder, cfg.pe_type, cfg.pe_dim, cfg.pe_sigma, cfg.output, cfg.seed)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


@torch.no_grad()
def encode_all(model: HetVAE, source: ParticleSource, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(μ, log σ²)`` of every particle, ``(N, zdim)`` each, in the input order."""
    mus, logvars = [], []
    for b in source.batches(np.arange(len(source)), batch_size):
        mu, logvar = model.encode(b.x)
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus).numpy(), torch.cat(logvars).numpy()


def _signature(cfg: VAEConfig, data: ParticleData) -> dict:
    """What a checkpoint must agree on to be resumed (the number of epochs may grow)."""
    return {**cfg.arch(), **{k: getattr(cfg, k) for k in cfg.TRAINING}, "D": data.D, "n_particles": len(data)}


def _load_checkpoint(path: Path, signature: dict) -> dict:
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:
        raise InputError(path, f"cannot read the checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("signature") != signature:
        theirs = state.get("signature") if isinstance(state, dict) else None
        diff = sorted(k for k in signature if theirs is None or theirs.get(k) != signature[k])
        raise InputError(path, "checkpoint of another configuration (differs in " + ", ".join(diff) +
                         "); use a new output folder or --overwrite")
    return state


def train_vae(data: ParticleData, cfg: VAEConfig, out_dir: str | Path | None = None, progress=None,
              log=None) -> VAEResult:
    """Train on ``data`` (poses required). With ``out_dir``, ``checkpoint.pt`` there is written after every
    epoch (atomically) and, if present at the start with the same configuration, training resumes from it.

    ``progress``: object with ``advance(n)`` (one unit per image per epoch). ``log``: optional logger.
    """
    cfg.check()
    if cfg.bf16 is None:
        from ...utils.hardware import native_bf16
        cfg = replace(cfg, bf16=native_bf16())
    points = FourierPoints.for_box(data.D)
    signature = _signature(cfg, data)
    ckpt = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    state = _load_checkpoint(ckpt, signature) if ckpt is not None and ckpt.exists() else None
    n = len(data)
    prepared_bytes = n * (8 * points.n_points + 4 * int(points.pixels.sum()) + 4 * points.n_points)
    in_memory = cfg.in_memory if cfg.in_memory is not None else prepared_bytes < IN_MEMORY_LIMIT_BYTES
    source = ParticleSource(data, points, cfg.encoder, in_memory, cfg.chunk, cfg.use_ctf,
                            norm=None if state is None else tuple(state["norm"]))
    model = build_model(data.D, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history, start = [], 1
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        history, start = state["history"], state["epoch"] + 1
        if log:
            log.info("resuming from %s after epoch %d", ckpt, state["epoch"])
        if progress is not None:
            progress.advance(min(state["epoch"], cfg.epochs) * n)
    beta, plane, weight = cfg.kl_weight(), points.plane, points.weight
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.perf_counter()
        gen = _epoch_generator(cfg.seed, epoch)
        if cfg.schedule == "cosine":  # lr · ½(1 + cos(π (e − 1) / E)): large steps first, small at the end
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
        order = torch.randperm(n, generator=gen).numpy()
        total = mse_sum = kl_sum = 0.0
        model.train()
        for batch in source.batches(order, cfg.batch_size):
            opt.zero_grad(set_to_none=True)
            loss, mse, kl = model.loss(batch, plane, weight, beta, gen, cfg.bf16)
            loss.backward()
            opt.step()
            b = len(batch.index)
            total += float(loss.detach()) * b
            mse_sum += mse * b
            kl_sum += kl * b
            if progress is not None:
                progress.advance(b)
        if not math.isfinite(total):
            raise FloatingPointError(f"training diverged at epoch {epoch}; lower --lr")
        wall = time.perf_counter() - t0
        history.append({"epoch": epoch, "lr": opt.param_groups[0]["lr"], "loss": total / n, "mse": mse_sum / n, "kl": kl_sum / n,
                        "wall_s": wall, "images_per_s": n / wall})
        if log:
            log.info("epoch %d: loss %.6f (mse %.6f, kl %.3f), %.1f images/s", epoch, total / n, mse_sum / n,
                     kl_sum / n, n / wall)
        if ckpt is not None:
            from ...io.atomic import atomic_path
            with atomic_path(ckpt) as tmp:
                torch.save({"signature": signature, "config": asdict(cfg), "norm": list(source.norm),
                            "epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(),
                            "history": history, "apix": data.apix}, tmp)
    model.eval()
    z_mu, z_logvar = encode_all(model, source)
    return VAEResult(z_mu, z_logvar, history, model, tuple(source.norm))


def load_model(path: str | Path) -> tuple[HetVAE, dict]:
    """A trained model from a checkpoint (or a run folder holding ``checkpoint.pt``) → ``(model, state)``;
    ``state["config"]``, ``["apix"]``, ``["signature"]["D"]`` describe it."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        state = torch.load(path, weights_only=False)
        cfg = VAEConfig(**state["config"])
        model = build_model(state["signature"]["D"], cfg)
        model.load_state_dict(state["model"])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"not a cryoscape VAE checkpoint ({type(exc).__name__})") from None
    model.eval()
    return model, state
