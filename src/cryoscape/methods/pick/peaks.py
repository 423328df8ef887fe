"""Peaks of a score map: non-maximum suppression, sorting and the cleaning of large bright blobs.

Seed 004's picking pipeline turns a score map into particle centres in three named steps; two live here:

- **cleaning** (:func:`clean_score_map`): a pixel whose whole neighbourhood (a disc of diameter ``size_px``)
  scores above ``cutoff`` belongs to something larger than a particle (ice, an aggregate, a carbon edge); such
  regions are removed from the map.
- **filtering and sorting** (:func:`find_peaks`): candidates are the local maxima of the map (the pixel is the
  largest of its 3 × 3 neighbourhood) scoring above ``threshold``; visited from the highest score down, a
  candidate is kept when no kept one lies closer than ``min_distance_px`` (greedy non-maximum suppression,
  Euclidean distance), so the highest of two close maxima wins. Optionally the centres are refined to
  sub-pixel precision by a parabola through the 3 points along each axis.

Coordinates follow the project's convention: ``(x, y)`` in pixels of the map, 0-based pixel centres, ``x`` the
column, ``y`` the row.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.morphology import disk

__all__ = ["find_peaks", "clean_score_map", "refine_subpixel"]


def _as_numpy(score) -> np.ndarray:
    """A ``(H, W)`` tensor or array → float64 numpy (NaN → −inf, never a peak)."""
    if isinstance(score, torch.Tensor):
        score = score.detach().to("cpu", torch.float64).numpy()
    a = np.array(score, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"score map must be (H, W), got shape {a.shape}")
    a[np.isnan(a)] = -np.inf
    return a


def refine_subpixel(score, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centres of the maxima at integer ``(rows, cols)`` of ``score (H, W)``: along each axis, the
    vertex of the parabola through the values at ``−1, 0, +1``,

        δ = (f₋ − f₊) / (2 (f₋ − 2 f₀ + f₊)),   clipped to [−½, ½],

    (0 where the curvature is not negative, or at the map's edge). Returns float64 ``(x, y)`` arrays
    ``(cols + δx, rows + δy)``."""
    s = _as_numpy(score)
    H, W = s.shape
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)

    def offset(fm, f0, fp, inside):
        with np.errstate(invalid="ignore", divide="ignore"):
            curv = fm - 2 * f0 + fp
            d = np.where(inside & (curv < 0) & np.isfinite(curv), (fm - fp) / (2 * curv), 0.0)
        return np.clip(np.nan_to_num(d), -0.5, 0.5)

    f0 = s[rows, cols]
    ix = (cols > 0) & (cols < W - 1)
    iy = (rows > 0) & (rows < H - 1)
    cm, cp = np.clip(cols - 1, 0, W - 1), np.clip(cols + 1, 0, W - 1)
    rm, rp = np.clip(rows - 1, 0, H - 1), np.clip(rows + 1, 0, H - 1)
    dx = offset(s[rows, cm], f0, s[rows, cp], ix)
    dy = offset(s[rm, cols], f0, s[rp, cols], iy)
    return cols + dx, rows + dy


def find_peaks(score, min_distance_px: float, *, threshold: float | None = None, max_picks: int | None = None,
               edge_px: int = 0, subpixel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Particle centres from a score map by non-maximum suppression (module docstring).

    Candidates are the pixels equal to the maximum of their 3 × 3 neighbourhood with ``score > threshold``
    (None: above the map's minimum) and at least ``edge_px`` pixels from every edge (rows ``edge_px .. H−1−
    edge_px`` are kept); from the highest down, a candidate closer than ``min_distance_px`` (Euclidean) to a
    kept one is dropped (distance exactly ``min_distance_px`` is allowed), until ``max_picks`` are kept
    (None: all). This is :func:`skimage.feature.peak_local_max` with a 3 × 3 footprint and ``p_norm = 2``.

    Args:
        score: ``(H, W)`` numpy array or torch tensor (any device; NaN never peaks).
        min_distance_px: least distance between two picks, pixels (≥ 0; ≤ 1 keeps every candidate).
        threshold: keep scores strictly above it. max_picks: at most this many (the highest).
        edge_px: exclude this many pixels at each edge (int ≥ 0).
        subpixel: refine each centre by :func:`refine_subpixel` (the reported score stays the pixel's value).
    Returns:
        ``xy (n, 2)`` float64 ``(x, y)`` pixel centres and ``score (n,)`` float64, by score, descending
        (ties in raster order).
    """
    s = _as_numpy(score)
    if not (min_distance_px >= 0 and math.isfinite(min_distance_px)):
        raise ValueError(f"min_distance_px must be a finite number ≥ 0, got {min_distance_px}")
    if int(edge_px) != edge_px or edge_px < 0:
        raise ValueError(f"edge_px must be an integer ≥ 0, got {edge_px}")
    if max_picks is not None and max_picks < 0:
        raise ValueError(f"max_picks must be ≥ 0, got {max_picks}")
    empty = np.zeros((0, 2)), np.zeros(0)
    if max_picks == 0 or s.size == 0:
        return empty
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        return empty
    thr = float(finite.min()) if threshold is None else float(threshold)
    num = np.inf if max_picks is None else int(max_picks)
    rc = peak_local_max(s, min_distance=float(min_distance_px), threshold_abs=thr, exclude_border=int(edge_px),
                        num_peaks=num, footprint=np.ones((3, 3), dtype=bool), p_norm=2)
    if len(rc) == 0:
        return empty
    rows, cols = rc[:, 0], rc[:, 1]
    values = s[rows, cols]
    keep = np.isfinite(values)
    rows, cols, values = rows[keep], cols[keep], values[keep]
    order = np.lexsort((cols, rows, -values))  # by score descending, ties in raster order
    rows, cols, values = rows[order], cols[order], values[order]
    if subpixel:
        x, y = refine_subpixel(s, rows, cols)
    else:
        x, y = cols.astype(np.float64), rows.astype(np.float64)
    return np.stack([x, y], -1), values.astype(np.float64)


def clean_score_map(score, cutoff: float, size_px: float, *, fill: float | None = None):
    """Seed 004's cleaning: remove regions of the map that score above ``cutoff`` over a whole neighbourhood.

    A pixel whose disc of radius ``R = size_px / 2`` (the neighbourhood, :func:`skimage.morphology.disk` of
    radius ``⌊R⌋``) lies entirely above ``cutoff`` is part of a blob larger than a particle (ice, an aggregate,
    a carbon edge). Those pixels (the erosion ``E`` of ``score > cutoff`` by the disc) and every pixel within
    ``2R`` of them (``E`` dilated by the disc of radius ``2⌊R⌋``) are set to ``fill`` (None: the map's minimum,
    which :func:`find_peaks` never picks). The dilation by twice the radius takes the whole blob away, its
    rim and corners included (a corner of a square plateau lies ``R√2 < 2R`` from ``E``), so no ring of false
    peaks is left around it; it also removes a particle touching the blob. Regions narrower than the disc
    (particles, when ``size_px`` exceeds their diameter) are left unchanged.

    Args:
        score: ``(H, W)`` numpy array or torch tensor. cutoff: score level. size_px: disc diameter, pixels (> 0).
        fill: value written into the removed pixels.
    Returns:
        The cleaned map, same type (tensor on the same device and dtype, or float64 array); the input is left
        unchanged.
    """
    if not (size_px > 0 and math.isfinite(size_px)):
        raise ValueError(f"size_px must be a finite number > 0, got {size_px}")
    s = _as_numpy(score)
    R = int(math.floor(size_px / 2))
    core = ndimage.binary_erosion(s > cutoff, structure=disk(R))
    blob = ndimage.binary_dilation(core, structure=disk(2 * R)) if core.any() else core
    finite = s[np.isfinite(s)]
    value = float(fill) if fill is not None else (float(finite.min()) if finite.size else 0.0)
    if isinstance(score, torch.Tensor):
        out = score.clone()
        out[torch.from_numpy(blob).to(score.device)] = value
        return out
    out = np.array(score, dtype=np.float64)
    out[blob] = value
    return out
