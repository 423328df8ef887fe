"""Particle extraction: boxes cut from a micrograph at picked centres, centred to a fraction of a pixel,
optionally phase-flipped, binned, contrast-inverted and normalised (RELION's conventions).

For particle ``j`` at ``c_j = (x, y)`` (micrograph pixels, 0-based pixel centres, ``x`` the column), in this
order, on a box of ``B`` pixels of ``apix`` Å:

1. **Window.** ``w_j[r, s] = M[round(y) − B//2 + r, round(x) − B//2 + s]``, ``r, s = 0 .. B−1``: pixel
   ``round(c_j)`` lands on the box centre ``B//2`` (the simulator pastes particle boxes the same way;
   ``round`` is numpy's, half to even). A window that leaves the micrograph is refused (``edge="raise"``)
   or filled beyond the edge with the micrograph's mean (``edge="pad"``: the mean, not zero, so a padded
   box has no step that normalisation would count as background variance or the CTF would ring at).
   :func:`box_inside` says which windows lie wholly inside.
2. **Sub-pixel centring** (``subpixel``). The particle then sits at ``δ_j = c_j − round(c_j)`` px
   (``|δ| ≤ ½``) from the centre; it is moved by ``−δ_j`` with the forward model's phase ramp
   (:func:`~cryoscape.physics.shift.shift_images`: ``Ŵ(k) · exp(+2πi k·δ_j apix)``, periodic in the box, so
   at most half a pixel column wraps around). Without it, the RELION origin of the particle is
   ``−δ_j apix`` Å (:func:`subpixel_residual`).
3. **Phase flip** (``phase_flip_ctf``). ``F⁻¹[sign(CTF) · F[w_j]]`` on the ``B`` box with the micrograph's CTF
   (:func:`~cryoscape.physics.transform2d.phase_flip`): the CTF is translation invariant, so the
   micrograph's CTF is the particle's.
4. **Binning** (``bin = k``). Fourier cropping to ``B/k`` pixels (:func:`~cryoscape.methods.downsample.
   crop_images`: no aliasing, values kept as densities); the pixel size becomes ``k · apix``.
5. **Inversion** (``invert``): ``w ↦ −w``, for micrographs whose particles are dark (our simulator and
   RELION's extracted particles are white: protein positive at low resolution).
6. **Normalisation** (``normalize``), as RELION's ``relion_preprocess --norm``: the background is the pixels
   farther than ``bg_radius_px`` from the box centre (default ``0.375 · B/k``, RELION's "75 % of the box"
   diameter); with ``ramp`` (RELION's default) the least-squares plane ``a + b x + c y`` through the
   background is subtracted, else its mean ``a``; then the box is divided by the background's standard
   deviation (population, ``1/m``). The background then has mean 0 and standard deviation 1 exactly.

Particles are processed in batches of ``batch`` (memory ``≈ batch · B² · 24`` bytes beside the micrograph).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...io.errors import InputError
from ...physics.ctf import CTFParams
from ...physics.imaging import ImagingGrid
from ...physics.shift import shift_images
from ...physics.transform2d import phase_flip
from ..downsample import crop_images

__all__ = ["extract_particles", "box_inside", "subpixel_residual", "window_corners", "background_mask",
           "normalize_background", "DEFAULT_BG_FRACTION", "EDGES"]

DEFAULT_BG_FRACTION = 0.375
"""Default background radius as a fraction of the (output) box: RELION's default background circle has a
diameter of 75 % of the box."""
EDGES = ("raise", "pad")


def _as_xy(xy) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"coordinates must be (n, 2) (x, y), got shape {xy.shape}")
    return xy


def window_corners(xy, box: int) -> np.ndarray:
    """Top-left pixel ``(x0, y0)`` of every window, ``(n, 2)`` int64: ``round(c) − box//2``."""
    return np.round(_as_xy(xy)).astype(np.int64) - box // 2


def subpixel_residual(xy) -> np.ndarray:
    """``δ = c − round(c)``, ``(n, 2)`` float64 px in ``[−½, ½]``: where the particle sits in its window,
    from the box centre (before sub-pixel centring). Its RELION origin is ``−δ · apix`` Å."""
    xy = _as_xy(xy)
    return xy - np.round(xy)


def box_inside(xy, box: int, shape) -> np.ndarray:
    """``(n,)`` bool: the ``box``-pixel window of each centre lies wholly inside a micrograph of
    ``shape = (H, W)`` pixels (step 1 of the module docstring)."""
    H, W = int(shape[0]), int(shape[1])
    c = window_corners(xy, box)
    return (c[:, 0] >= 0) & (c[:, 1] >= 0) & (c[:, 0] + box <= W) & (c[:, 1] + box <= H)


def background_mask(box: int, radius_px: float, device=None) -> torch.Tensor:
    """``(box, box)`` bool: pixels farther than ``radius_px`` from the centre pixel ``box//2``."""
    r = torch.arange(box, dtype=torch.float64, device=device) - box // 2
    return (r[:, None] ** 2 + r[None, :] ** 2) > radius_px ** 2


def normalize_background(images: torch.Tensor, radius_px: float, ramp: bool = True) -> torch.Tensor:
    """RELION-style normalisation (step 6 of the module docstring) of ``(n, D, D)`` images: subtract the
    background's least-squares plane (``ramp``) or mean, divide by the background's standard deviation.

    Raises :class:`InputError` when fewer than 4 pixels lie outside ``radius_px`` (no background to measure).
    An image whose background is constant (std 0) is only made zero-mean."""
    n, D = images.shape[0], images.shape[-1]
    bg = background_mask(D, radius_px, images.device)
    m = int(bg.sum())
    if m < 4:
        raise InputError("--radius-A", f"a background radius of {radius_px:.1f} px leaves {m} pixels of a "
                                       f"{D}-pixel box outside it; use a smaller radius")
    x = images.to(torch.float64)
    vals = x.reshape(n, -1)[:, bg.reshape(-1)]  # (n, m)
    if ramp:
        yy, xx = torch.nonzero(bg, as_tuple=True)
        design = torch.stack([torch.ones(m, dtype=torch.float64, device=x.device), (xx - D // 2).double(),
                              (yy - D // 2).double()], 1)  # (m, 3)
        coef = vals @ torch.linalg.pinv(design).T  # (n, 3): a, b, c of the plane a + b x + c y
        r = torch.arange(D, dtype=torch.float64, device=x.device) - D // 2
        a, b, c = (coef[:, i, None, None] for i in range(3))
        plane = a + b * r[None, None, :] + c * r[None, :, None]
        resid = vals - (coef @ design.T)
    else:
        plane = vals.mean(1)[:, None, None]
        resid = vals - vals.mean(1, keepdim=True)
    std = resid.pow(2).mean(1).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((x - plane) / std[:, None, None]).to(images.dtype)


def _ctf_for(ctf: CTFParams, sel: slice) -> CTFParams:
    """The CTF of the particles at ``sel``: the micrograph's one entry, or theirs."""
    return ctf if len(ctf) == 1 else ctf.subset(sel)


def extract_particles(micrograph, xy, box: int, apix: float, *, subpixel: bool = True, normalize: bool = True,
                      phase_flip_ctf: CTFParams | None = None, invert: bool = False, bin: int = 1,
                      bg_radius_px: float | None = None, ramp: bool = True, edge: str = "raise",
                      batch: int = 256, progress=None) -> torch.Tensor:
    """Cut, centre and normalise particle boxes (module docstring, steps 1–6).

    Args:
        micrograph: ``(H, W)`` tensor or array (float32 is used; on its device).
        xy: ``(n, 2)`` float64 centres ``(x, y)`` in pixels, 0-based pixel centres, ``x`` the column.
        box: window ``B`` in micrograph pixels (≥ 2). apix: micrograph pixel size, Å.
        subpixel: move each particle by its residual ``−δ`` to the box centre (Fourier phase shift).
        normalize: background (outside ``bg_radius_px``) to mean 0 and standard deviation 1.
        phase_flip_ctf: the micrograph's CTF (one entry, or one per particle): flip phases by ``sign(CTF)``.
        invert: multiply by −1 (dark particles to white).
        bin: output box ``B / bin`` (``bin`` must divide ``B``) by Fourier cropping; pixel size ``bin · apix``.
        bg_radius_px: background radius in *output* pixels (default ``0.375 · B / bin``).
        ramp: subtract the background's plane (RELION's default) rather than its mean.
        edge: ``"raise"`` (windows must lie inside the micrograph) or ``"pad"`` (the micrograph's mean
            beyond its edges).
        batch: particles per batch (bounds memory). progress: optional object with ``advance(n)``.
    Returns:
        ``(n, B/bin, B/bin)`` float32 on the micrograph's device.
    Raises:
        InputError: a box smaller than 2 or larger than the micrograph, a ``bin`` that does not divide it, a
            centre outside the micrograph or (``edge="raise"``) a window leaving it, non-finite pixels or
            centres, an unknown ``edge``.
    """
    mic = torch.as_tensor(micrograph)
    mic = mic.to(torch.float32) if mic.dtype != torch.float32 else mic
    if mic.ndim != 2:
        raise ValueError(f"micrograph must be (H, W), got {tuple(mic.shape)}")
    H, W = mic.shape
    xy = _as_xy(xy)
    box, bin = int(box), int(bin)
    if edge not in EDGES:
        raise InputError("edge", f"must be one of {EDGES}, got {edge!r}")
    if box < 2 or box > min(H, W):
        raise InputError("--box", f"a {box}-pixel box does not fit a {H} × {W} micrograph")
    if bin < 1 or box % bin or box // bin < 2:
        raise InputError("--bin", f"must divide the box ({box} px) and leave ≥ 2 px, got {bin}")
    if not (apix > 0 and math.isfinite(apix)):
        raise InputError("--apix", f"must be > 0, got {apix}")
    if not np.isfinite(xy).all():
        raise InputError("coordinates", "non-finite (NaN/inf) coordinates")
    outside = (xy[:, 0] < -0.5) | (xy[:, 0] >= W - 0.5) | (xy[:, 1] < -0.5) | (xy[:, 1] >= H - 0.5)
    if outside.any():
        i = int(np.nonzero(outside)[0][0])
        raise InputError("coordinates", f"centre {i + 1} at (x, y) = ({xy[i, 0]:.1f}, {xy[i, 1]:.1f}) px lies "
                                        f"outside the {W} × {H} (W × H) micrograph")
    if not bool(torch.isfinite(mic).all()):
        raise InputError("micrograph", "contains NaN or infinite pixels")
    inside = box_inside(xy, box, (H, W))
    if edge == "raise" and not inside.all():
        raise InputError("coordinates", f"{int((~inside).sum())} of {len(xy)} boxes of {box} px leave the "
                                        "micrograph (skip them, or pad)")
    if phase_flip_ctf is not None and len(phase_flip_ctf) not in (1, len(xy)):
        raise ValueError(f"{len(phase_flip_ctf)} CTF entries for {len(xy)} particles (need 1 or one each)")
    d = box // bin
    radius = DEFAULT_BG_FRACTION * d if bg_radius_px is None else float(bg_radius_px)
    dev = mic.device
    fill = float(mic.mean(dtype=torch.float64)) if edge == "pad" else 0.0
    grid = ImagingGrid(box, apix, pad=1, dtype=torch.float32, device=dev) if phase_flip_ctf is not None else None
    corners = torch.as_tensor(window_corners(xy, box), device=dev)
    delta = torch.as_tensor(subpixel_residual(xy), dtype=torch.float32, device=dev)
    offs = torch.arange(box, device=dev)
    out = torch.empty(len(xy), d, d, dtype=torch.float32, device=dev)
    for s in range(0, len(xy), max(1, int(batch))):
        sel = slice(s, min(s + max(1, int(batch)), len(xy)))
        rows = corners[sel, 1, None] + offs  # (b, B)
        cols = corners[sel, 0, None] + offs
        w = mic[rows.clamp(0, H - 1)[:, :, None], cols.clamp(0, W - 1)[:, None, :]]  # (b, B, B)
        if edge == "pad":
            valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
            w = torch.where(valid, w, torch.full_like(w, fill))
        if subpixel:
            w = shift_images(w, -delta[sel] * apix, apix)
        if phase_flip_ctf is not None:
            w = phase_flip(w, _ctf_for(phase_flip_ctf, sel), grid)
        if bin > 1:
            w = crop_images(w, d).to(torch.float32)
        if invert:
            w = -w
        if normalize:
            w = normalize_background(w, radius, ramp)
        out[sel] = w
        if progress is not None:
            progress.advance(sel.stop - sel.start)
    return out
