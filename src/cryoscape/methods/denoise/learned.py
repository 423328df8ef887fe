"""A learned denoiser trained without clean data: a small U-Net (:mod:`.unet`) trained on the images to be
denoised, by noise2noise on frame pairs or by Neighbor2Neighbor on single images, then applied by tiles.

Training data: random ``crop × crop`` windows of the (per-image normalised) images, each under a random
one of the 8 symmetries of the square (valid for noise that is white or isotropic), ``batch_size`` per step,
``steps_per_epoch`` steps per epoch, Adam with the cosine step schedule, on the one training loop
(:mod:`cryoscape.methods.training`: a checkpoint after every epoch and exact resume). Every random draw
comes from the loop's per-epoch generator, so a resumed run ends with the same parameters, bit for bit.

Modes (``f`` the network, ``y`` a noisy crop, ``x`` the clean image):

- ``"n2n"`` (Lehtinen et al. 2018): two independent noisy views ``a = x + n₁``, ``b = x + n₂`` of the same
  image (e.g. the even and odd frame sums of a movie): loss ``‖f(a) − b‖²``, each pair in a random one of
  the two directions. Since ``E[b | a] = E[x | a]``, the minimiser is the MMSE estimate of ``x``.
- ``"n2s"`` self-supervised on single images, Neighbor2Neighbor (Huang et al., CVPR 2021): each 2×2 cell
  of ``y`` gives one random pixel to ``g₁(y)`` and one of its horizontal or vertical neighbours in the cell
  to ``g₂(y)`` (two half-size images whose noise is independent when the noise is pixel-independent);
  loss ``‖f(g₁) − g₂‖² + γ ‖f(g₁) − g₂ − (g₁(f(y)) − g₂(f(y)))‖²`` with ``f(y)`` computed without gradient.
  The regulariser makes ``f`` usable on the full-size image; since inference here applies ``f`` at the
  sampling it learned (the four polyphase components, :func:`apply_unet`), the default is ``γ = 0``, which
  skips ``f(y)`` and halves the cost of a step (measured: same correlation with the clean micrograph,
  0.897 with γ = 0 vs 0.895 with γ = 2 on the full image, 0.908 vs 0.905 interleaved components).
- ``"auto"``: ``"n2n"`` when pairs are given, else ``"n2s"``.

Inference (:func:`apply_unet`): each image is normalised (``(y − mean) / std``), cut into overlapping tiles
(at most ``tile × tile``, overlapping by at least ``overlap`` pixels, spread evenly), each tile denoised,
and the tiles blended with weights ``sin²``/``cos²`` across each overlap (a partition of unity, so a smooth
blend with no seams), then the scale undone. Memory is bounded by the tile size, not the image size.
The output estimates the clean image WITH the CTF of the input (``REMOVES_CTF = False``).

Measured defaults (2 synthetic 1024² micrographs of CTF-affected AdK particles, 1.5 Å/px, white noise at
SNR 0.1; 2 shared CPU cores): a plain (not residual) U-Net of 16 channels and depth 3 (correlation with the
clean micrograph 0.895 vs 0.825 for the residual form at 200 steps); 32 channels, depth 4 or a step of
3e-3 did not beat it (0.9125, 0.910, 0.911 vs 0.913 at 400 steps, interleaved inference).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from ...io.errors import InputError
from ...utils import devices
from ...utils.checks import at_least, one_of
from ..training import TrainConfig, Trainer
from .unet import UNet

__all__ = ["UNetConfig", "fit_unet", "apply_unet", "denoise_unet", "save_unet", "load_unet", "build_model",
           "neighbor_indices", "subsample", "normalise", "tile_starts", "REMOVES_CTF", "MODES"]

REMOVES_CTF = False
MODES = ("auto", "n2n", "n2s")
FORMAT = "cryoscape-unet-denoiser-1"
# tiles per forward pass: about this many pixels (bounds the activations' memory)
PIXELS_PER_PASS = 2 ** 20


@dataclass
class UNetConfig:
    """Options.

    Network: ``channels`` (width of the first level; level ``l`` has ``channels · 2^l``, capped at 4×),
    ``depth`` (levels below the first; the network takes images of at least ``2^depth`` pixels),
    ``residual`` (the network adds its output to the input).
    Training: ``mode`` ("auto" | "n2n" | "n2s", see the module docstring), ``crop`` (training window side,
    pixels; shrunk to the image when larger), ``batch_size`` (windows per step), ``epochs``,
    ``steps_per_epoch``, ``lr`` (Adam, cosine schedule), ``gamma`` (Neighbor2Neighbor's regulariser weight
    γ), ``seed``, ``precision`` ("auto": bfloat16 autocast where the device multiplies it in hardware,
    "bf16", "fp32"), ``device`` ("auto" | "cpu" | "cuda" | "cuda:N"), ``checkpoint`` (file written after
    every epoch and resumed from; None: none).
    Inference: ``tile`` (largest tile side, pixels), ``overlap`` (least overlap of neighbouring tiles).
    The defaults are the measured ones (module docstring): 10 epochs of 40 steps of 8 windows of 128².
    """

    mode: str = "auto"
    channels: int = 16
    depth: int = 3
    residual: bool = False
    crop: int = 128
    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int = 40
    lr: float = 1e-3
    gamma: float = 0.0
    tile: int = 512
    overlap: int = 32
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    checkpoint: str | None = None

    ARCH = ("channels", "depth", "residual")

    def check(self) -> None:
        """Raise :class:`InputError` naming the option of the first bad value."""
        one_of("--mode", self.mode, MODES)
        for name, value, low in (("--channels", self.channels, 1), ("--depth", self.depth, 0),
                                 ("--batch-size", self.batch_size, 1), ("--epochs", self.epochs, 1),
                                 ("--steps-per-epoch", self.steps_per_epoch, 1), ("--seed", self.seed, 0),
                                 ("--overlap", self.overlap, 0), ("--gamma", self.gamma, 0)):
            at_least(name, value, low)
        for name, value in (("--channels", self.channels), ("--depth", self.depth), ("--crop", self.crop),
                            ("--tile", self.tile), ("--overlap", self.overlap), ("--epochs", self.epochs),
                            ("--batch-size", self.batch_size), ("--steps-per-epoch", self.steps_per_epoch)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(name, f"must be an integer, got {value!r}")
        m = 2 ** self.depth
        at_least("--crop", self.crop, 2 * m)
        at_least("--tile", self.tile, m)
        if self.overlap >= self.tile:
            raise InputError("--overlap", f"must be smaller than --tile ({self.tile}), got {self.overlap}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError("--lr", f"must be > 0, got {self.lr}")
        one_of("--precision", self.precision, ("auto", "bf16", "fp32"))

    def resolved_mode(self, has_pairs: bool) -> str:
        """``"n2n"`` or ``"n2s"``; :class:`InputError` for n2n without pairs."""
        if self.mode == "auto":
            return "n2n" if has_pairs else "n2s"
        if self.mode == "n2n" and not has_pairs:
            raise InputError("--mode", "n2n needs frame pairs (two independent noisy halves of each image)")
        return self.mode


# --- data ------------------------------------------------------------------------------------------------

def _check_images(images, where: str = "images") -> torch.Tensor:
    """``images`` as an ``(N, H, W)`` float32 CPU tensor (not a copy when it already is one)."""
    if not isinstance(images, torch.Tensor):
        raise InputError(where, f"expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 3:
        raise InputError(where, f"expected (N, H, W) images, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise InputError(where, "no images (empty stack)")
    images = images.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(images).all()):
        raise InputError(where, "contains NaN or infinite pixels")
    return images


def normalise(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``((y − μ) / s, μ, s)`` per image: ``μ`` the mean, ``s`` the standard deviation (1 where it is 0);
    ``μ, s`` have shape ``(N, 1, 1)``. Float64 statistics."""
    y = images.double()
    mean = y.mean(dim=(1, 2), keepdim=True)
    std = y.std(dim=(1, 2), keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((y - mean) / std).float(), mean.float(), std.float()


def _symmetry(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 symmetries of the square on the last two axes: ``k mod 4`` quarter turns, flipped
    when ``k ≥ 4``."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def _crops(stack: torch.Tensor, index: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, size: int,
           sym: torch.Tensor) -> torch.Tensor:
    """``(B, C, size, size)`` windows of ``stack`` ``(N, C, H, W)``."""
    return torch.stack([_symmetry(stack[i, :, y:y + size, x:x + size], int(k))
                        for i, y, x, k in zip(index.tolist(), oy.tolist(), ox.tolist(), sym.tolist())])


def neighbor_indices(shape: tuple[int, int, int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbor2Neighbor's random choice for ``shape = (B, h, w)`` cells: ``(i₁, i₂)``, each ``(B, 1, h, w)``
    int64 in ``0..3`` (the position ``2·row + col`` in the 2×2 cell), ``i₁`` uniform, ``i₂`` uniform among
    the two horizontal/vertical neighbours of ``i₁`` (never ``i₁`` itself, never the diagonal)."""
    first = torch.randint(0, 4, (shape[0], 1, shape[1], shape[2]), generator=generator)
    horizontal = torch.randint(0, 2, first.shape, generator=generator).bool()
    second = torch.where(horizontal, first ^ 1, first ^ 2)  # flip the column bit or the row bit
    return first, second


def subsample(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The half-size image ``(B, C, H/2, W/2)`` taking from each 2×2 cell of ``x`` ``(B, C, H, W)`` (H, W
    even) the pixel ``index`` ``(B, 1, H/2, W/2)`` (``2·row + col``), the same for every channel."""
    B, C, H, W = x.shape
    cells = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(B, C, H // 2, W // 2, 4)
    return torch.gather(cells, 4, index.to(x.device).expand(B, C, -1, -1).unsqueeze(-1)).squeeze(-1)


# --- the network -----------------------------------------------------------------------------------------

def build_model(cfg: UNetConfig) -> UNet:
    """A fresh :class:`UNet` initialised from ``cfg.seed`` (torch's global generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return UNet(cfg.channels, cfg.depth, cfg.residual)


def _memory_format(device: torch.device, dtype) -> torch.memory_format:
    """Channels-last on a CPU running bfloat16 (oneDNN's fast path: measured several times faster there),
    else the default layout."""
    return torch.channels_last if (device.type == "cpu" and dtype is not None) else torch.contiguous_format


def _crop_size(cfg: UNetConfig, H: int, W: int, mode: str, m: int) -> int:
    """The training window side: ``cfg.crop`` shrunk to the image (even for n2s); InputError when the
    image is too small for the network."""
    size = min(cfg.crop, H, W)
    need = 2 * m if mode == "n2s" else m
    if mode == "n2s":
        size -= size % 2
    if size < need:
        raise InputError("images", f"{H}×{W} pixels is too small to train the U-Net (depth {cfg.depth}) in mode "
                                   f"{mode}: at least {need}×{need} pixels needed; use a smaller --depth")
    return size


def fit_unet(images: torch.Tensor, cfg: UNetConfig | None = None, pairs=None, checkpoint=None,
             progress=None) -> tuple[UNet, list[dict]]:
    """Train a :class:`UNet` on ``images`` ``(N, H, W)`` (n2s) or on ``pairs`` (n2n) → ``(model, history)``.

    ``pairs``: ``(a, b)``, two ``(N, H, W)`` tensors, independent noisy halves of each image (e.g. even and
    odd frame sums), or one ``(N, 2, H, W)`` tensor holding them; with pairs, n2n trains on them only.
    ``checkpoint`` (or ``cfg.checkpoint``): file written after every epoch (atomically) and resumed from
    when present with the same configuration. ``progress``: ``advance(n)`` per training window.
    ``history``: one dict per epoch (``epoch``, ``lr``, ``loss``, ``wall_s``, ``images_per_s``). The model is
    returned in eval mode on the training device.
    """
    cfg = cfg or UNetConfig()
    cfg.check()
    images = _check_images(images)
    mode = cfg.resolved_mode(pairs is not None)
    if mode == "n2n":
        if isinstance(pairs, torch.Tensor) and pairs.ndim == 4 and pairs.shape[1] == 2:
            pairs = (pairs[:, 0], pairs[:, 1])
        if not (isinstance(pairs, (tuple, list)) and len(pairs) == 2):
            raise InputError("pairs", "expected two (N, H, W) tensors (a, b) of independent noisy halves, or "
                                      "one (N, 2, H, W) tensor")
        a, b = _check_images(pairs[0], "pairs[0]"), _check_images(pairs[1], "pairs[1]")
        if a.shape != b.shape:
            raise InputError("pairs", f"the halves differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        stack = torch.stack([normalise(a)[0], normalise(b)[0]], dim=1)  # (N, 2, H, W)
    else:
        stack = normalise(images)[0].unsqueeze(1)  # (N, 1, H, W)
    N, _, H, W = stack.shape
    model = build_model(cfg)
    model.sampling.fill_(2 if mode == "n2s" else 1)
    size = _crop_size(cfg, H, W, mode, model.min_size)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule="cosine", seed=cfg.seed, rng="per_epoch",
                       device=cfg.device, precision=cfg.precision,
                       checkpoint=checkpoint if checkpoint is not None else cfg.checkpoint)
    signature = {**{k: getattr(cfg, k) for k in ("channels", "depth", "residual", "batch_size", "steps_per_epoch",
                                                  "lr", "gamma", "seed", "precision")},
                 "mode": mode, "crop": size, "shape": [N, H, W]}
    trainer = Trainer(model, opt, tcfg, signature)
    fmt = _memory_format(trainer.device, trainer.dtype)
    model.to(memory_format=fmt)  # in place: the optimiser keeps its parameters
    gamma = float(cfg.gamma)

    def batches(epoch, generator):
        for _ in range(cfg.steps_per_epoch):
            B = cfg.batch_size
            index = torch.randint(0, N, (B,), generator=generator)
            oy = torch.randint(0, H - size + 1, (B,), generator=generator)
            ox = torch.randint(0, W - size + 1, (B,), generator=generator)
            sym = torch.randint(0, 8, (B,), generator=generator)
            x = _crops(stack, index, oy, ox, size, sym)
            if mode == "n2n":  # both directions: swap input and target at random
                swap = torch.randint(0, 2, (B,), generator=generator).bool()
                x = torch.where(swap[:, None, None, None], x.flip(1), x)
            yield x

    def step(x, ctx):
        if mode == "n2n":
            with ctx.autocast():
                out = model(x[:, :1].contiguous(memory_format=fmt))
            return F.mse_loss(out.float(), x[:, 1:]), len(x)
        i1, i2 = neighbor_indices((len(x), size // 2, size // 2), ctx.generator)
        g1, g2 = subsample(x, i1), subsample(x, i2)
        with ctx.autocast():
            out = model(g1.contiguous(memory_format=fmt)).float()
        diff = out - g2
        rec = diff.square().mean()
        if gamma == 0:
            return rec, len(x)
        with torch.no_grad(), ctx.autocast():
            fy = model(x.contiguous(memory_format=fmt)).float()
        reg = (diff - (subsample(fy, i1) - subsample(fy, i2))).square().mean()
        return rec + gamma * reg, len(x), {"rec": float(rec.detach()), "reg": float(reg.detach())}

    history = trainer.fit(step, batches, extra={"config": asdict(cfg), "format": FORMAT}, progress=progress)
    model.eval()
    return model, history


# --- inference -------------------------------------------------------------------------------------------

def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[list[int], int]:
    """Tiles along one axis of ``length`` pixels → ``(starts, size)``: the fewest tiles of at most ``tile``
    pixels overlapping by at least ``overlap``, their size shrunk (to a multiple of ``multiple`` when
    possible) so that they spread evenly; one tile of ``length`` when ``length ≤ tile``."""
    if length <= tile:
        return [0], length
    n = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    size = min(tile, length, -(-size // multiple) * multiple)
    if n == 1:
        return [0], size
    starts = [round(i * (length - size) / (n - 1)) for i in range(n)]
    return starts, size


def _weights(starts: list[int], size: int, length: int) -> list[torch.Tensor]:
    """The blending weight ``(size,)`` of each tile along one axis: 1, with ``sin²`` rising over the overlap
    with the previous tile and ``cos²`` falling over the overlap with the next, so the weights of all tiles
    sum to 1 at every pixel."""
    out = []
    for i, s in enumerate(starts):
        w = torch.ones(size, dtype=torch.float64)
        if i > 0:
            o = starts[i - 1] + size - s
            if o > 0:
                w[:o] = torch.sin(math.pi / 2 * (torch.arange(o, dtype=torch.float64) + 0.5) / o) ** 2
        if i + 1 < len(starts):
            o = s + size - starts[i + 1]
            if o > 0:
                w[size - o:] = torch.cos(math.pi / 2 * (torch.arange(o, dtype=torch.float64) + 0.5) / o) ** 2
        out.append(w)
    return out


@torch.no_grad()
def apply_unet(model: UNet, images: torch.Tensor, tile: int = 512, overlap: int = 32, device=None,
               precision: str = "auto", progress=None) -> torch.Tensor:
    """Denoise ``images`` ``(N, H, W)`` with a trained ``model`` → a new ``(N, H, W)`` float32 CPU tensor.

    Each image is normalised, cut into tiles of at most ``tile × tile`` overlapping by at least ``overlap``
    (:func:`tile_starts`; an image no larger than ``tile`` is one tile, so the result is exactly the
    whole-image result), denoised about :data:`PIXELS_PER_PASS` pixels at a time, blended (:func:`_weights`)
    and scaled back. A network trained on sub-images of every second pixel (``model.sampling`` = 2,
    Neighbor2Neighbor) is applied at that sampling, to each of the four polyphase components
    ``c_{dy,dx} = y[dy::2, dx::2]`` (``dy, dx ∈ {0, 1}``); each output is resampled onto the full grid by
    cubic splines (pixel ``(r, c)`` of the image sits at ``((r − dy)/2, (c − dx)/2)`` in the component;
    ``scipy.ndimage.map_coordinates``) and the four are averaged, so every pixel's estimate draws on all
    the data. Measured on synthetic 1024² micrographs (SNR 0.1): correlation with the clean micrograph
    0.948 for this average, 0.913 for interleaving the four outputs, 0.897 for the network on the full
    image.
    ``device``: where the network runs (None: where the model is). ``precision``: "auto" (bfloat16
    autocast where the device multiplies it in hardware, with channels-last memory on a CPU), "bf16" or
    "fp32". ``progress``: ``advance(1)`` per image done.
    Raises :class:`InputError` for an image smaller than the network's minimum (``model.min_size`` times
    ``model.sampling``).
    """
    images = _check_images(images)
    N, H, W = images.shape
    step = int(model.sampling)
    m = model.min_size * step
    if H < m or W < m:
        raise InputError("images", f"{H}×{W} pixels is smaller than the U-Net's minimum tile of {m}×{m} pixels")
    at_least("--tile", tile, model.min_size)
    if not 0 <= overlap < tile:
        raise InputError("--overlap", f"must be ≥ 0 and smaller than --tile ({tile}), got {overlap}")
    one_of("--precision", precision, ("auto", "bf16", "fp32"))
    dev = next(model.parameters()).device if device is None else devices.resolve_device(device)
    dtype = devices.autocast_dtype(dev, precision)
    fmt = _memory_format(dev, dtype)
    net = copy.deepcopy(model).to(dev, memory_format=fmt).eval()
    norm, mean, std = normalise(images)
    if step == 1:
        return _tiled(net, norm, tile, overlap, dev, dtype, fmt, progress) * std + mean
    out = np.zeros((N, H, W))
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    phases = [(dy, dx) for dy in range(step) for dx in range(step)]
    for k, (dy, dx) in enumerate(phases):
        part = _tiled(net, norm[:, dy::step, dx::step], tile, overlap, dev, dtype, fmt, None).numpy()
        where = [(rows - dy) / step, (cols - dx) / step]  # full-grid pixels in this component's pixels
        for n in range(N):
            out[n] += ndimage.map_coordinates(part[n], where, order=3, mode="nearest")
            if progress is not None and k == len(phases) - 1:
                progress.advance(1)
    return torch.from_numpy(out / len(phases)).float() * std + mean


def _tiled(net: UNet, norm: torch.Tensor, tile: int, overlap: int, dev: torch.device, dtype, fmt,
           progress) -> torch.Tensor:
    """``net`` on ``norm`` ``(N, H, W)`` by blended tiles (see :func:`apply_unet`) → ``(N, H, W)`` float32."""
    N, H, W = norm.shape
    m = net.min_size
    ys, th = tile_starts(H, tile, overlap, m)
    xs, tw = tile_starts(W, tile, overlap, m)
    wy, wx = _weights(ys, th, H), _weights(xs, tw, W)
    jobs = [(n, i, j) for n in range(N) for i in range(len(ys)) for j in range(len(xs))]
    per_pass = max(1, PIXELS_PER_PASS // (th * tw))
    tiles_per_image = len(ys) * len(xs)
    out = torch.zeros(N, H, W, dtype=torch.float64)
    done = 0
    for k in range(0, len(jobs), per_pass):
        part = jobs[k:k + per_pass]
        x = torch.stack([norm[n, ys[i]:ys[i] + th, xs[j]:xs[j] + tw] for n, i, j in part]).unsqueeze(1)
        x = x.to(dev).contiguous(memory_format=fmt)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            y = net(x)
        y = y.float().cpu()[:, 0].double()
        for (n, i, j), t in zip(part, y):
            out[n, ys[i]:ys[i] + th, xs[j]:xs[j] + tw] += t * wy[i][:, None] * wx[j][None, :]
        if progress is not None:
            finished = (k + len(part)) // tiles_per_image
            if finished > done:
                progress.advance(finished - done)
                done = finished
    return out.float()


def denoise_unet(images: torch.Tensor, ctf=None, apix: float = 1.0, cfg: UNetConfig | None = None,
                 progress=None, pairs=None) -> torch.Tensor:
    """Train a U-Net on ``images`` ``(N, H, W)`` (Neighbor2Neighbor; or noise2noise on ``pairs`` =
    ``(a, b)``, the independent halves whose sum or mean ``images`` holds) and denoise ``images`` with it
    → a new ``(N, H, W)`` float32 CPU tensor estimating the clean images with their CTF. ``ctf`` and
    ``apix`` are not used (the network learns from the data). ``progress``: ``advance(1)`` per image
    denoised."""
    cfg = cfg or UNetConfig()
    model, _ = fit_unet(images, cfg, pairs=pairs)
    return apply_unet(model, images, tile=cfg.tile, overlap=cfg.overlap, precision=cfg.precision,
                      progress=progress)


# --- files -----------------------------------------------------------------------------------------------

def save_unet(model: UNet, cfg: UNetConfig, path: str | Path) -> Path:
    """Write the trained ``model`` (state dict) and its ``cfg`` to ``path`` (atomically) → the path."""
    from ...io.atomic import atomic_path
    path = Path(path)
    state = {"format": FORMAT, "config": asdict(cfg),
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_unet(path: str | Path, device="cpu") -> tuple[UNet, UNetConfig]:
    """A model written by :func:`save_unet` (or a training checkpoint of :func:`fit_unet`) →
    ``(model in eval mode on device, its UNetConfig)``; :class:`InputError` when the file is missing or
    holds something else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError
        names = {f.name for f in fields(UNetConfig)}
        cfg = UNetConfig(**{k: v for k, v in state["config"].items() if k in names})
        model = build_model(cfg)
        model.load_state_dict(state["model"])
    except Exception as exc:
        raise InputError(path, f"not a cryoscape U-Net denoiser ({type(exc).__name__})") from None
    return model.eval().to(devices.resolve_device(device)), cfg
