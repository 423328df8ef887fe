"""Training the VAE with known poses on the one training loop (:mod:`cryoscape.methods.training`): Adam on
the loss of :mod:`.model`, cosine or constant steps, a checkpoint after every epoch and exact resume,
device placement, bfloat16 autocast where the device has it, and DistributedDataParallel under ``torchrun``.

Determinism: the networks are initialised from ``seed``; epoch ``e`` shuffles and draws its noise ``ε`` from
the loop's per-epoch generator (seeded ``seed · 1_000_003 + e``). A run resumed from the checkpoint of epoch
``e`` therefore continues exactly as the uninterrupted run (same thread count, machine and world size).
Under ``torchrun`` every rank takes its part of each global batch of ``batch_size`` images and draws ``ε``
for the whole global batch (keeping its rows), so ``N`` processes follow one process with the same global
batch up to the order of floating-point sums.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ...data.particles import ParticleData
from ...io.errors import InputError
from ...physics.imaging import ImagingGrid
from ...utils.checks import at_least, one_of
from ..training import TrainConfig, Trainer
from .data import ParticleSource, encoder_mask
from .model import HetVAE

__all__ = ["VAEConfig", "VAEResult", "train_vae", "load_model", "encode_all", "build_model", "checkpoint_signature",
           "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"
IN_MEMORY_LIMIT_BYTES = 4e9


@dataclass
class VAEConfig:
    """Options.

    Network: ``zdim``; encoder ``encoder`` ("mlp" or "cnn"), ``enc_dim`` wide with ``enc_layers`` residual
    layers; decoder ``dec_dim`` wide with ``dec_layers`` residual layers (counted as cryoDRGN counts them),
    positional encoding ``pe_type`` ("gaussian", measured better on AdK, or "geom") with ``pe_dim``
    frequencies (default ``D/2``) and ``pe_sigma``, output "complex" or "hartley".

    Training: ``epochs``, ``batch_size`` (the global batch under ``torchrun``), Adam ``lr`` (1e-3: better
    than 1e-4 or 3e-4 at equal epochs on AdK; docs/benchmarks.md), ``beta`` (KL weight; default
    ``1/zdim``), ``seed``, ``in_memory`` (None: when the prepared data take under 4 GB), ``chunk`` (images
    read at a time when lazy), ``buffer`` (lazy: a shuffle buffer of that many images, reads in file order;
    None: a full shuffle), ``use_ctf``, ``schedule`` ("cosine", the default: the step of epoch ``e`` of
    ``E`` is ``lr · ½(1 + cos(π(e−1)/E))``, measured better than "constant" at both SNRs on AdK),
    ``bf16`` (the decoder's products in bfloat16 autocast; None: where the device has it,
    :func:`cryoscape.utils.devices.autocast_dtype`; measured 1.5–2.3× faster on a CPU, same accuracy),
    ``device`` ("auto", "cpu", "cuda" or "cuda:N").
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
    buffer: int | None = None
    use_ctf: bool = True
    bf16: bool | None = None
    schedule: str = "cosine"
    device: str = "auto"

    ARCH = ("zdim", "enc_dim", "enc_layers", "dec_dim", "dec_layers", "encoder", "pe_type", "pe_dim", "pe_sigma",
            "output")
    TRAINING = ("batch_size", "lr", "beta", "seed", "use_ctf", "bf16", "schedule")

    def arch(self) -> dict:
        return {k: getattr(self, k) for k in self.ARCH}

    def kl_weight(self) -> float:
        return self.beta if self.beta is not None else (1.0 / self.zdim if self.zdim else 0.0)

    def precision(self) -> str:
        """The training loop's ``precision``: "auto" (``bf16`` None), "bf16" or "fp32"."""
        return {None: "auto", True: "bf16", False: "fp32"}[self.bf16]

    def check(self) -> None:
        """Raise :class:`InputError` naming the CLI option of the first bad value."""
        for name, v, lo in (("--zdim", self.zdim, 0), ("--enc-dim", self.enc_dim, 1),
                            ("--enc-layers", self.enc_layers, 0), ("--dec-dim", self.dec_dim, 1),
                            ("--dec-layers", self.dec_layers, 0), ("--epochs", self.epochs, 1),
                            ("--batch-size", self.batch_size, 1), ("--chunk", self.chunk, 1),
                            ("--seed", self.seed, 0)):
            at_least(name, v, lo)
        if self.pe_dim is not None:
            at_least("--pe-dim", self.pe_dim, 1)
        if self.buffer is not None:
            at_least("--buffer", self.buffer, 1)
        one_of("--encoder", self.encoder, ("mlp", "cnn"))
        one_of("--pe-type", self.pe_type, ("geom", "gaussian"))
        one_of("--output", self.output, ("complex", "hartley"))
        one_of("--schedule", self.schedule, ("constant", "cosine"))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError("--lr", f"must be > 0, got {self.lr}")
        if self.beta is not None and not self.beta >= 0:
            raise InputError("--beta", f"must be ≥ 0, got {self.beta}")

    def train_config(self, checkpoint: str | Path | None = None) -> TrainConfig:
        """The training loop's options for this configuration."""
        return TrainConfig(epochs=self.epochs, lr=self.lr, schedule=self.schedule, seed=self.seed, rng="per_epoch",
                           device=self.device, precision=self.precision(), checkpoint=checkpoint)


@dataclass
class VAEResult:
    """``z_mu``, ``z_logvar``: ``(N, zdim)`` latents of every particle (in the input order);
    ``history``: per-epoch dicts (``epoch``, ``lr``, ``loss``, ``mse``, ``kl``, ``wall_s``,
    ``images_per_s``); ``model``: the trained :class:`HetVAE` (on the training device); ``norm``: the data
    scales; ``device``: where it trained; ``world_size``: processes that trained it."""

    z_mu: np.ndarray
    z_logvar: np.ndarray
    history: list
    model: HetVAE
    norm: tuple
    device: str = "cpu"
    world_size: int = 1


def build_model(D: int, cfg: VAEConfig) -> HetVAE:
    """A fresh model for box ``D``, initialised from ``torch.manual_seed(cfg.seed)``."""
    torch.manual_seed(cfg.seed)
    return HetVAE(D, int(encoder_mask(D).sum()), cfg.zdim, cfg.enc_dim, cfg.enc_layers, cfg.dec_dim,
                  cfg.dec_layers, cfg.encoder, cfg.pe_type, cfg.pe_dim, cfg.pe_sigma, cfg.output, cfg.seed)


@torch.no_grad()
def encode_all(model: HetVAE, source: ParticleSource, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(μ, log σ²)`` of every particle, ``(N, zdim)`` each, in the input order (on the model's device)."""
    device = next(model.parameters()).device
    mus, logvars = [], []
    for b in source.in_order(batch_size):
        mu, logvar = model.encode(b.x.to(device))
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    return torch.cat(mus).numpy(), torch.cat(logvars).numpy()


def checkpoint_signature(cfg: VAEConfig, data: ParticleData) -> dict:
    """What a checkpoint must agree on to be resumed (the number of epochs may grow)."""
    return {**cfg.arch(), **{k: getattr(cfg, k) for k in cfg.TRAINING}, "D": data.D, "n_particles": len(data)}


def _in_memory(cfg: VAEConfig, data: ParticleData, grid: ImagingGrid) -> bool:
    if cfg.in_memory is not None:
        return cfg.in_memory
    P, n_pixels = len(grid.points), int(encoder_mask(data.D).sum())
    return len(data) * (8 * P + 4 * n_pixels + 4 * P) < IN_MEMORY_LIMIT_BYTES


def train_vae(data: ParticleData, cfg: VAEConfig, checkpoint: str | Path | None = None, progress=None,
              log=None, on_epoch=None) -> VAEResult:
    """Train on ``data`` (poses required). With ``checkpoint`` (a file path), the state is written there after
    every epoch (atomically, by rank 0) and, if present at the start with the same configuration, training
    resumes from it.

    ``progress``: object with ``advance(n)`` (one unit per image per epoch). ``log``: optional logger.
    ``on_epoch(epoch, model)``: called after each epoch's checkpoint.
    Raises :class:`InputError` for a bad option, a checkpoint of another configuration, or ``cuda`` without
    a GPU.
    """
    cfg.check()
    grid = ImagingGrid(data.D, data.apix)
    model = build_model(data.D, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    trainer = Trainer(model, opt, cfg.train_config(checkpoint), checkpoint_signature(cfg, data), log)
    norm = trainer.extra.get("norm")
    source = ParticleSource(data, grid, cfg.encoder, _in_memory(cfg, data, grid), cfg.chunk, cfg.use_ctf,
                            norm=None if norm is None else tuple(norm), buffer=cfg.buffer)
    on_device = grid.to(trainer.device)
    beta, rank, world = cfg.kl_weight(), trainer.rank, trainer.world_size

    def step(batch, ctx):
        loss, mse, kl = model.loss(batch, on_device, beta, ctx.generator, ctx.autocast)
        return loss, len(batch.index), {"mse": mse, "kl": kl}

    def batches(epoch, generator):
        return source.batches(epoch, generator, cfg.batch_size, rank, world)

    extra = {"config": asdict(cfg), "norm": list(source.norm), "apix": data.apix}
    history = trainer.fit(step, batches, extra=extra, progress=progress, on_epoch=on_epoch)
    model.eval()
    z_mu, z_logvar = encode_all(model, source)
    return VAEResult(z_mu, z_logvar, history, model, tuple(source.norm), str(trainer.device), world)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[HetVAE, dict]:
    """A trained model from a checkpoint (or a folder holding ``checkpoint.pt``) → ``(model, state)`` on
    ``device``; ``state["config"]``, ``["apix"]``, ``["signature"]["D"]`` describe it."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        cfg = VAEConfig(**state["config"])
        model = build_model(state["signature"]["D"], cfg)
        model.load_state_dict(state["model"])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"not a cryoscape VAE checkpoint ({type(exc).__name__})") from None
    model.eval()
    return model.to(device), state
