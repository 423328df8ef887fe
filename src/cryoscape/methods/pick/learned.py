"""A learned particle picker: a small CNN score map trained by positive-unlabelled learning from a few labelled
particles, with seed 004's five steps named in the code.

Seed 004's pipeline, step by step (the functions that do each):

1. **Score map** (:func:`score_map`): a fully convolutional network ``f`` gives every pixel of a (binned,
   normalised) micrograph a logit ``f(x)``, the log-odds that a particle is centred there.
2. **Cleaning** (:func:`cryoscape.methods.pick.peaks.clean_score_map`): a pixel whose whole neighbourhood is
   above a cutoff sits inside a large bright object (ice, an aggregate, a carbon edge), not on a particle:
   it is removed.
3. **Filtering** (:func:`cryoscape.methods.pick.peaks.find_peaks`): non-maximum suppression keeps the
   local maxima at least ``min_distance`` apart (the particle radius by default), refined to sub-pixel
   centres.
4. **Sorting**: picks are returned best first (by logit), so a threshold or a count is a cut of one list.
5. **Iteration** (:func:`fit_picker`, ``cfg.iterations``): the model's own most confident picks on all
   micrographs become extra positives and the model is trained again.

Preprocessing (:func:`prepare`): each micrograph is binned by ``k`` (block means) so that the particle
radius is about ``cfg.radius_bin`` binned pixels, its slowly varying background (a least-squares plane,
then a Gaussian blur of σ = 4 radii: ice gradients) subtracted, and it is divided by a robust standard deviation
(1.4826 · median absolute deviation) and clipped to ±``cfg.clip`` (ice blobs and carbon stay bounded).

Training (positive-unlabelled; Kiryo et al., NeurIPS 2017, "non-negative PU"): the labelled particles
give positive windows ``P`` (centres jittered by up to ``cfg.label_radius`` binned pixels, as Topaz counts
the pixels within a radius of a label as positive; Bepler et al., Nat. Methods 2019); windows at uniform
random pixels of all micrographs are the unlabelled ``U``. With the class prior ``π`` (the share of
unlabelled pixels that are positive: particles per micrograph × positive pixels per particle / pixels)
and the logistic loss ``ℓ(z, y) = log(1 + e^{−yz})``, the risk

    R = π · E_P[ℓ(f, +1)] + max(0, E_U[ℓ(f, −1)] − π · E_P[ℓ(f, −1)])

is minimised (the max keeps the estimated negative risk ≥ 0, which stops a flexible model from
overfitting the few positives). Each window is the network's receptive field, so a window gives exactly
the logit its centre pixel gets on the whole micrograph. Windows are drawn with a random one of the 8
symmetries of the square (particles have no preferred in-plane direction). The loop is the shared one
(:mod:`cryoscape.methods.training`: checkpoint per epoch, exact resume, progress with ETA, any device).

Coordinates: ``(x, y)`` float64 in the original micrograph's pixels, 0-based pixel centres, ``x`` the
column. A binned pixel ``u`` covers original pixels ``k u … k u + k − 1``, so its centre is
``x = k u + (k − 1)/2``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...io.errors import InputError
from ..training import Trainer, TrainConfig
from .peaks import clean_score_map, find_peaks

__all__ = ["PickerConfig", "PickerNet", "prepare", "bin_factor", "fit_picker", "score_map", "pick_learned",
           "pick_micrographs", "save_picker", "load_picker", "FORMAT"]

FORMAT = "cryoscape-picker-1"


@dataclass
class PickerConfig:
    """Options of the learned picker (the defaults are the measured best on benchmarks/picking.py).

    Attributes:
        radius_A: particle radius in Å (required: the scale everything is set from).
        radius_bin: the radius in binned pixels that the binning factor aims at (``k = round(r / apix /
            radius_bin)``, at least 1).
        clip: normalised micrographs are clipped to ±clip (robust standard deviations).
        channels: width of the network (hidden feature maps).
        label_radius: positives are drawn within this many binned pixels of a label.
        particles_per_micrograph: expected number of particles per micrograph, for the class prior π
            (Topaz's ``-n``); None: 60 % of the random-close-packing count of the field (a rough guess;
            give it when known).
        epochs, steps_per_epoch, batch_size, lr: training (batch_size positives and 3 × batch_size
            unlabelled windows per step), in each round.
        iterations: rounds of step 5 (retraining with the model's own confident picks); 0: none.
            Measured on benchmarks/picking.py (50 labels, 18 scored micrographs with junk; precision at 90 %
            recall, precision/recall at threshold 0, training s): 4 epochs + 1 iteration 0.934, 0.932/0.910,
            27 s (the default); 6 + 1: 0.941, 0.942/0.890, 38 s; 3 + 1: 0.933, 0.937/0.868, 25 s; 6 + 0:
            0.944, 0.950/0.815, 22 s; 8 + 0: 0.947, 0.957/0.785, 31 s. The iteration is what brings the recall
            at the default threshold up.
        min_distance_A: non-maximum suppression distance in Å; None: the radius.
        threshold: the logit below which peaks are dropped. 0 (probability ½) is the Bayes decision of the
            PU-trained classifier, whose output estimates P(particle | window); measured on
            benchmarks/picking.py it gives precision and recall within a few % of the best F1. (A cut between
            the two modes of the peak logits by a Gaussian mixture was tried and landed far too low: the
            background peaks' long lower tail pulls the mixture.)
        clean_cutoff: cleaning step: a pixel whose whole neighbourhood (a disc of 3 radii across) has a logit above
            this is removed; None: no cleaning.
        max_picks: at most this many picks per micrograph (None: no limit).
        seed, device, precision: as the training loop's.
        strip_rows: binned rows per inference strip (bounded memory).
    """

    radius_A: float = 0.0
    radius_bin: float = 6.0
    clip: float = 6.0
    channels: int = 32
    label_radius: float = 1.5
    particles_per_micrograph: float | None = None
    epochs: int = 4
    steps_per_epoch: int = 50
    batch_size: int = 64
    lr: float = 2e-3
    iterations: int = 1
    min_distance_A: float | None = None
    threshold: float = 0.0
    clean_cutoff: float | None = 4.0
    max_picks: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    strip_rows: int = 512

    def check(self) -> None:
        """Raise :class:`InputError` naming the first invalid option."""
        checks = [
            (math.isfinite(self.radius_A) and self.radius_A > 0, "--radius", f"must be > 0 Å, got {self.radius_A}"),
            (self.radius_bin >= 2, "radius_bin", f"must be ≥ 2 binned pixels, got {self.radius_bin}"),
            (self.clip > 0, "clip", f"must be > 0, got {self.clip}"),
            (self.channels >= 4, "channels", f"must be ≥ 4, got {self.channels}"),
            (self.label_radius >= 0, "label_radius", f"must be ≥ 0, got {self.label_radius}"),
            (self.particles_per_micrograph is None or self.particles_per_micrograph > 0,
             "particles_per_micrograph", f"must be > 0, got {self.particles_per_micrograph}"),
            (self.epochs >= 1 and self.steps_per_epoch >= 1 and self.batch_size >= 1, "epochs/steps/batch",
             "must be ≥ 1"),
            (self.lr > 0, "lr", f"must be > 0, got {self.lr}"),
            (self.iterations >= 0, "iterations", f"must be ≥ 0, got {self.iterations}"),
            (self.min_distance_A is None or self.min_distance_A >= 0, "min_distance_A", "must be ≥ 0"),
            (math.isfinite(self.threshold), "threshold", f"must be finite, got {self.threshold}"),
            (self.max_picks is None or self.max_picks >= 1, "max_picks", f"must be ≥ 1, got {self.max_picks}"),
            (self.strip_rows >= 32, "strip_rows", f"must be ≥ 32, got {self.strip_rows}"),
        ]
        for ok, where, problem in checks:
            if not ok:
                raise InputError(where, problem)


class PickerNet(torch.nn.Module):
    """Fully convolutional scorer, no padding: ``(B, 1, h, w) → (B, 1, h − 2m, w − 2m)`` logits with
    ``m = margin = 10`` (receptive field 21 × 21 binned pixels: 5×5, 5×5, 5×5 dilated 2, 3×3 dilated 2, 1×1).
    Leaky ReLUs (slope 0.1): with plain ReLUs, measured on micrographs with ice and aggregates, every hidden
    unit went silent on particles, whose logits then all equalled the output bias (a plateau of ties)."""

    margin = 10

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(1, c // 2, 5), torch.nn.LeakyReLU(0.1),
            torch.nn.Conv2d(c // 2, c, 5), torch.nn.LeakyReLU(0.1),
            torch.nn.Conv2d(c, c, 5, dilation=2), torch.nn.LeakyReLU(0.1),
            torch.nn.Conv2d(c, c, 3, dilation=2), torch.nn.LeakyReLU(0.1),
            torch.nn.Conv2d(c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def bin_factor(radius_A: float, apix: float, radius_bin: float) -> int:
    """The integer binning ``k = max(1, round(radius_A / apix / radius_bin))``."""
    return max(1, int(round(radius_A / apix / radius_bin)))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x (h, w)`` with reflect padding (σ in pixels)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    y = x[None, None]
    ry, rx = min(r, x.shape[0] - 1), min(r, x.shape[1] - 1)
    y = F.pad(y, (rx, rx, ry, ry), mode="reflect")
    y = F.conv2d(y, g[None, None, :, None][..., r - ry:r + ry + 1, :] if ry < r else g.view(1, 1, -1, 1))
    y = F.conv2d(y, g[None, None, None, :][..., r - rx:r + rx + 1] if rx < r else g.view(1, 1, 1, -1))
    return y[0, 0]


def _plane(x: torch.Tensor) -> torch.Tensor:
    """The least-squares plane ``a + b·col + c·row`` through ``x (h, w)`` (a linear ice gradient, which the
    blur alone cannot follow at the edges)."""
    h, w = x.shape
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64),
                                torch.linspace(-1, 1, w, dtype=torch.float64), indexing="ij")
    A = torch.stack([torch.ones_like(rows), cols, rows], -1).reshape(-1, 3)
    coef = torch.linalg.lstsq(A, x.double().reshape(-1, 1)).solution
    return (A @ coef).reshape(h, w).to(x.dtype)


def prepare(micrograph, apix: float, cfg: PickerConfig) -> tuple[torch.Tensor, int]:
    """Step 0: bin, flatten the background, normalise (module docstring) → ``(image (h, w) float32, k)``
    with ``h = H // k``, ``w = W // k``."""
    x = torch.as_tensor(np.asarray(micrograph), dtype=torch.float32)
    if x.ndim != 2:
        raise InputError("micrograph", f"expected an (H, W) image, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError("micrograph", "has NaN or infinite pixels")
    k = bin_factor(cfg.radius_A, apix, cfg.radius_bin)
    if x.shape[0] < k * (2 * PickerNet.margin + 1) or x.shape[1] < k * (2 * PickerNet.margin + 1):
        raise InputError("micrograph", f"{tuple(x.shape)} px is smaller than the picker's window "
                                       f"({k * (2 * PickerNet.margin + 1)} px at binning {k})")
    if k > 1:
        x = F.avg_pool2d(x[None, None], k)[0, 0]
    radius = cfg.radius_A / apix / k
    x = x - _plane(x)
    x = x - _gaussian_blur(x, 4 * radius)
    scale = 1.4826 * (x - x.median()).abs().median()
    if not scale > 0:
        scale = x.std().clamp_min(1e-12)
    return (x / scale).clamp(-cfg.clip, cfg.clip).contiguous(), k


def _positive_pixels(label_radius: float) -> int:
    """Pixels ``(dy, dx)`` with ``dy² + dx² ≤ r²``: how many positive centres one label gives."""
    r = int(math.floor(label_radius))
    d = np.arange(-r, r + 1)
    return int(((d[:, None] ** 2 + d[None, :] ** 2) <= label_radius ** 2).sum())


def class_prior(cfg: PickerConfig, shape_binned: tuple[int, int], k: int, apix: float) -> float:
    """π = particles per micrograph × positive pixels per particle / pixels of the binned micrograph.
    Without ``particles_per_micrograph``: 60 % of a random close packing of discs of the particle radius
    (packing fraction 0.547), i.e. ``0.6 · 0.547 · h w / (π r²)`` particles."""
    h, w = shape_binned
    n = cfg.particles_per_micrograph
    if n is None:
        r = cfg.radius_A / apix / k
        n = 0.6 * 0.547 * h * w / (math.pi * r * r)
    return float(min(0.5, n * _positive_pixels(cfg.label_radius) / (h * w)))


def _windows(stack: torch.Tensor, index: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor,
             sym: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 2m+1, 2m+1)`` windows of ``stack (M, h + 2m, w + 2m)`` (reflect-padded) centred at binned
    pixels ``(cy, cx)`` of micrographs ``index``, each under one of the 8 symmetries ``sym``."""
    m = PickerNet.margin
    d = torch.arange(-m, m + 1, device=stack.device)
    rows = (cy + m)[:, None, None] + d[None, :, None]
    cols = (cx + m)[:, None, None] + d[None, None, :]
    w = stack[index[:, None, None], rows, cols]
    out = torch.empty_like(w)
    for s in range(8):
        sel = sym == s
        if sel.any():
            v = w[sel]
            if s & 4:
                v = v.transpose(1, 2)
            out[sel] = torch.rot90(v, s & 3, dims=(1, 2))
    return out[:, None]


def _pu_loss(zp: torch.Tensor, zu: torch.Tensor, prior: float) -> torch.Tensor:
    """Non-negative PU risk with the logistic loss (module docstring)."""
    pos = F.softplus(-zp).mean()           # ℓ(f, +1) on P
    neg_on_p = F.softplus(zp).mean()       # ℓ(f, −1) on P
    neg_on_u = F.softplus(zu).mean()       # ℓ(f, −1) on U
    return prior * pos + torch.clamp(neg_on_u - prior * neg_on_p, min=0.0)


def _binned_labels(labels: list[np.ndarray], ks: list[int], shapes: list[tuple[int, int]]) -> tuple:
    """Original-pixel labels per micrograph → binned integer ``(micrograph, y, x)`` arrays inside the field."""
    mi, ys, xs = [], [], []
    for m, (xy, k, (h, w)) in enumerate(zip(labels, ks, shapes)):
        if xy is None or len(xy) == 0:
            continue
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        u = np.rint((xy - (k - 1) / 2) / k).astype(np.int64)
        keep = (u[:, 0] >= 0) & (u[:, 0] < w) & (u[:, 1] >= 0) & (u[:, 1] < h)
        mi.append(np.full(int(keep.sum()), m))
        xs.append(u[keep, 0])
        ys.append(u[keep, 1])
    if not mi:
        raise InputError("labels", "no labelled particle inside the micrographs")
    return np.concatenate(mi), np.concatenate(ys), np.concatenate(xs)


def _train_round(model: PickerNet, stack: torch.Tensor, shape: tuple[int, int], pos: tuple, prior: float,
                 cfg: PickerConfig, round_: int, checkpoint, progress) -> list[dict]:
    """One training round (steps 1 and 5 share it): nnPU on positive windows ``pos`` vs uniform windows."""
    h, w = shape
    M = stack.shape[0]
    pm, py, px = (torch.as_tensor(a) for a in pos)
    lr = cfg.lr if round_ == 0 else cfg.lr / 2
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=lr, schedule="cosine", seed=cfg.seed + 7919 * round_,
                       rng="per_epoch", device=cfg.device, precision=cfg.precision, checkpoint=checkpoint)
    signature = {**{k: getattr(cfg, k) for k in ("radius_A", "radius_bin", "channels", "label_radius", "epochs",
                                                  "steps_per_epoch", "batch_size", "lr", "seed", "clip")},
                 "round": round_, "n_pos": int(len(pm)), "prior": round(prior, 8), "shape": [M, h, w]}
    trainer = Trainer(model, opt, tcfg, signature)
    dev = trainer.device
    stack_dev = stack.to(dev)
    r = cfg.label_radius
    B = cfg.batch_size

    rank, world = trainer.rank, trainer.world_size

    def batches(epoch, gen):
        # every rank draws the same global batch and keeps its share (rank r: items r, r + world, …)
        for _ in range(cfg.steps_per_epoch):
            j = torch.randint(0, len(pm), (B,), generator=gen)
            ang = torch.rand(B, generator=gen) * 2 * math.pi
            rad = r * torch.sqrt(torch.rand(B, generator=gen))
            cy = (py[j] + torch.round(rad * torch.sin(ang)).long()).clamp(0, h - 1)
            cx = (px[j] + torch.round(rad * torch.cos(ang)).long()).clamp(0, w - 1)
            mu = torch.randint(0, M, (3 * B,), generator=gen)
            uy = torch.randint(0, h, (3 * B,), generator=gen)
            ux = torch.randint(0, w, (3 * B,), generator=gen)
            sym = torch.randint(0, 8, (4 * B,), generator=gen)
            p, u = slice(rank, B, world), slice(rank, 3 * B, world)
            yield (torch.cat([pm[j][p], mu[u]]), torch.cat([cy[p], uy[u]]), torch.cat([cx[p], ux[u]]),
                   torch.cat([sym[:B][p], sym[B:][u]]), len(range(rank, B, world)))

    def step(batch, ctx):
        index, cy, cx, sym = (t.to(ctx.device) for t in batch[:4])
        n_pos = batch[4]
        x = _windows(stack_dev, index, cy, cx, sym)
        with ctx.autocast():
            z = model(x).float().reshape(-1)
        return _pu_loss(z[:n_pos], z[n_pos:], prior), len(z)

    return trainer.fit(step, batches, extra={"config": asdict(cfg), "format": FORMAT}, progress=progress)


@torch.no_grad()
def score_map(model: PickerNet, image: torch.Tensor, strip_rows: int = 512) -> torch.Tensor:
    """Step 1: the logit of every pixel of a prepared (binned, normalised) ``image (h, w)`` → ``(h, w)``
    float32 on the CPU; the image is reflect-padded by the network's margin and scored in strips of
    ``strip_rows`` rows (peak memory ∝ ``strip_rows · w · channels``)."""
    m = PickerNet.margin
    dev = next(model.parameters()).device
    x = image.to(dev)
    x = F.pad(x[None, None], (m, m, m, m), mode="reflect")[0, 0]
    h = image.shape[0]
    out = torch.empty(image.shape, dtype=torch.float32)
    for r0 in range(0, h, strip_rows):
        r1 = min(h, r0 + strip_rows)
        out[r0:r1] = model(x[r0:r1 + 2 * m][None, None]).float()[0, 0].cpu()
    return out


def _picks_from_map(logits: torch.Tensor, step: float, origin: float, apix: float, cfg: PickerConfig,
                    threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2–4 on one logit map whose pixel ``u`` is the original pixel ``x = step · u + origin`` →
    ``(xy (n, 2) original pixels, score (n,))`` sorted by score (``threshold`` None: every peak)."""
    radius = cfg.radius_A / apix / step
    s = logits
    if cfg.clean_cutoff is not None:
        s = clean_score_map(s, cfg.clean_cutoff, max(3, int(round(3 * radius))))    # step 2: cleaning
    dist = (cfg.radius_A if cfg.min_distance_A is None else cfg.min_distance_A) / apix / step
    xy, score = find_peaks(s, max(1.0, dist), threshold=threshold,             # step 3: filtering (NMS)
                           max_picks=cfg.max_picks, edge_px=0, subpixel=True)
    order = np.argsort(-score, kind="stable")                                       # step 4: sorting
    xy, score = np.asarray(xy, np.float64)[order], np.asarray(score, np.float64)[order]
    return step * xy + origin, score


def fit_picker(micrographs: list, apix: float, labels: list, cfg: PickerConfig, checkpoint_dir=None,
               progress=None, log=None) -> tuple[PickerNet, dict]:
    """Train the picker (steps 1 and 5) → ``(model in eval mode, info)``.

    Args:
        micrographs: ``M`` images ``(H_m, W_m)`` (numpy or torch; sizes may differ), all of pixel size ``apix``.
        labels: ``M`` entries, each ``(n_m, 2)`` ``(x, y)`` labelled particle centres (original pixels) or
            None/empty for a micrograph with no labels (it still gives unlabelled windows).
        checkpoint_dir: folder for one checkpoint per round (``round<r>.pt``), resumed from when present.
        progress: ``advance(n)`` per training window.
    Returns ``info``: ``k`` (binning), ``prior`` (π), ``n_labels``, ``history`` (per round, per epoch).
    """
    cfg.check()
    if len(micrographs) != len(labels):
        raise InputError("labels", f"{len(labels)} label sets for {len(micrographs)} micrographs")
    prepared = [prepare(mic, apix, cfg) for mic in micrographs]
    ks = {k for _, k in prepared}
    shapes = {tuple(img.shape) for img, _ in prepared}
    if len(shapes) != 1:
        raise InputError("micrographs", f"the picker trains on micrographs of one size; got {sorted(shapes)}")
    k = ks.pop()
    shape = shapes.pop()
    m = PickerNet.margin
    stack = torch.stack([F.pad(img[None, None], (m, m, m, m), mode="reflect")[0, 0] for img, _ in prepared])
    pos = _binned_labels(labels, [k] * len(prepared), [shape] * len(prepared))
    prior = class_prior(cfg, shape, k, apix)
    torch.manual_seed(cfg.seed)
    model = PickerNet(cfg.channels)
    history = []
    for round_ in range(cfg.iterations + 1):
        ck = None if checkpoint_dir is None else Path(checkpoint_dir) / f"round{round_}.pt"
        history.append(_train_round(model, stack, shape, pos, prior, cfg, round_, ck, progress))
        if log is not None:
            log.info("picker round %d: %d positives, π = %.4f, last loss %.4f", round_, len(pos[0]), prior,
                     history[-1][-1]["loss"])
        if round_ == cfg.iterations:
            break
        # Step 5: iteration. Every micrograph's confident picks (above the threshold, at most as many as the
        # prior expects) join the labels as positives for the next round.
        model.eval()
        n_expect = max(1, int(round(prior * shape[0] * shape[1] / max(1, _positive_pixels(cfg.label_radius)))))
        new = []
        for img, _ in prepared:
            xy, _ = _picks_from_map(score_map(model, img, cfg.strip_rows), k, (k - 1) / 2, apix, cfg, cfg.threshold)
            new.append(xy[:n_expect])
        extra = _binned_labels([np.concatenate([np.asarray(a, np.float64).reshape(-1, 2), b]) if a is not None
                                else b for a, b in zip(labels, new)], [k] * len(prepared), [shape] * len(prepared))
        pos = extra
        model.train()
    model.eval()
    return model, {"k": k, "prior": prior, "n_labels": int(sum(0 if a is None else len(a) for a in labels)),
                   "n_positives_last_round": int(len(pos[0])), "history": history}


def pick_learned(micrograph, apix: float, cfg: PickerConfig, *, model: PickerNet, ctf=None,
                 progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1–4 on one micrograph with a trained ``model`` → ``(xy (n, 2), score (n,))``, best first
    (``ctf`` is not used: the network learned the particles' appearance under the data's CTFs)."""
    img, k = prepare(micrograph, apix, cfg)
    xy, score = _picks_from_map(score_map(model, img, cfg.strip_rows), k, (k - 1) / 2, apix, cfg, cfg.threshold)
    if progress is not None:
        progress.advance(1)
    return xy, score


def pick_micrographs(model: PickerNet, micrographs: list, apix: float, cfg: PickerConfig,
                     progress=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`pick_learned` on every micrograph → one ``(xy, score)`` per micrograph."""
    return [pick_learned(mic, apix, cfg, model=model, progress=progress) for mic in micrographs]


def save_picker(path, model: PickerNet, cfg: PickerConfig, info: dict) -> None:
    """Write the trained picker (weights + config + binning + prior) atomically to ``path``."""
    import os
    import tempfile

    path = Path(path)
    payload = {"format": FORMAT, "config": asdict(cfg), "state": model.state_dict(),
               "info": {k: v for k, v in info.items() if k != "history"}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_picker(path) -> tuple[PickerNet, PickerConfig, dict]:
    """Read a picker written by :func:`save_picker` → ``(model in eval mode, config, info)``;
    :class:`InputError` naming the file when it is not one."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(path, f"not a cryoscape picker model ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise InputError(path, f"not a cryoscape picker model (format {found!r})")
    cfg = PickerConfig(**payload["config"])
    model = PickerNet(cfg.channels)
    model.load_state_dict(payload["state"])
    model.eval()
    return model, cfg, payload["info"]
