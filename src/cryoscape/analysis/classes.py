"""Metrics of a 2-D classification: agreement of class labels with a ground truth, how alike the views inside a
class are, and how well a class average matches a clean reference projection.

- Label agreement: the adjusted Rand index (scikit-learn) and the Hungarian accuracy, the fraction of
  particles whose predicted cluster is matched one-to-one to their true class by the assignment that maximises
  the number of such particles (scipy's ``linear_sum_assignment`` on the contingency table).
- Views: the viewing direction of a pose ``R`` (CONVENTIONS.md) is its last row ``R[2, :]``, the direction
  along which the reference is projected. A projection along ``−d`` is the mirror image of the one along
  ``d``, and 2-D classification puts mirrored images in one class, so angles are mirror-aware by default:
  ``min(∠(d1, d2), ∠(d1, −d2)) = arccos |d1 · d2|``.
- Class average vs clean reference: align the reference to the average over mirror, in-plane rotation and
  shift (maximum real-space cross-correlation), then their Fourier ring correlation (FRC) on the shells of
  :class:`cryoscape.physics.imaging.ImagingGrid` through :func:`cryoscape.physics.likelihood.shell_correlation`,
  the core the FSC of :mod:`cryoscape.analysis.fsc` uses too.

Arrays in, numpy (float64) out; ``R`` may be numpy or torch, ``(N, 3, 3)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..physics.transform2d import mirror_images

__all__ = ["adjusted_rand", "hungarian_accuracy", "viewing_directions", "view_angles_deg", "pairs_within",
           "same_class_pairs_within", "neighbours_within", "Alignment2D", "mirror_images", "align_to_reference",
           "class_frc_vs_clean"]

_EXACT_PAIRS = 50_000_000  # count all pairs exactly up to this many; estimate from random pairs above it
_CHUNK = 4_000_000  # dot products per block when counting pairs


# -- label agreement ---------------------------------------------------------------------------------------------
def _labels(labels, truth) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(labels).ravel(), np.asarray(truth).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"labels and truth must be non-empty and of equal length, got {a.shape} and {b.shape}")
    return a, b


def adjusted_rand(labels, truth) -> float:
    """Adjusted Rand index of two labelings of ``N`` items, ``(N,)`` each (any hashable labels): 1 for the same
    partition, ≈ 0 for independent ones (can be negative). scikit-learn's ``adjusted_rand_score``."""
    from sklearn.metrics import adjusted_rand_score
    a, b = _labels(labels, truth)
    return float(adjusted_rand_score(b, a))


def hungarian_accuracy(labels, truth) -> float:
    """Fraction of items whose predicted cluster is matched to their true class, ``(N,)`` labels each.

    With the contingency table ``C[k, c]`` = number of items of predicted cluster ``k`` and true class ``c``,
    the one-to-one matching ``π`` (each cluster to at most one class and vice versa) maximising
    ``Σ_k C[k, π(k)]`` is found by ``scipy.optimize.linear_sum_assignment``; accuracy ``= Σ_k C[k, π(k)] / N``.
    The numbers of clusters and classes may differ: the items of unmatched clusters count as wrong. Invariant
    to renaming the labels; 1 for the same partition."""
    from scipy.optimize import linear_sum_assignment
    a, b = _labels(labels, truth)
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), np.int64)
    np.add.at(table, (ia, ib), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / a.size)


# -- viewing directions -------------------------------------------------------------------------------------------
def viewing_directions(R) -> np.ndarray:
    """Viewing direction of each pose: the last row of ``R``, ``(N, 3, 3)`` → ``(N, 3)`` float64 unit vectors.

    With RELION's ``A = Rz(psi) Ry(tilt) Rz(rot)`` it is ``(sin tilt cos rot, sin tilt sin rot, cos tilt)``,
    independent of the in-plane angle psi (CONVENTIONS.md)."""
    R = R.detach().cpu().numpy() if isinstance(R, torch.Tensor) else np.asarray(R)
    if R.ndim != 3 or R.shape[1:] != (3, 3):
        raise ValueError(f"rotations must be (N, 3, 3), got shape {R.shape}")
    return np.array(R[:, 2, :], dtype=np.float64)


def _unit(d) -> np.ndarray:
    d = np.asarray(d, np.float64)
    if d.shape[-1] != 3:
        raise ValueError(f"directions must have 3 components on the last axis, got shape {d.shape}")
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    if not (n > 0).all():
        raise ValueError("directions must be non-zero vectors")
    return d / n


def view_angles_deg(d1, d2, mirror: bool = True) -> np.ndarray:
    """Angle (degrees) between directions ``d1`` and ``d2`` (``(..., 3)``, broadcast; need not be unit length).

    ``arccos(d1·d2 / |d1||d2|)``; with ``mirror`` the mirror-aware ``min(∠(d1, d2), ∠(d1, −d2))
    = arccos |d1·d2| / (|d1||d2|)``, in ``[0, 90]``."""
    c = np.sum(_unit(d1) * _unit(d2), axis=-1)
    if mirror:
        c = np.abs(c)
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def _cos_threshold(max_deg: float) -> float:
    if not (0 <= max_deg <= 180):
        raise ValueError(f"max_deg must be in [0, 180], got {max_deg}")
    # a hair of slack so that an angle of exactly max_deg (up to rounding) counts as within
    return math.cos(math.radians(max_deg)) - 1e-12


def _count_close_pairs(d: np.ndarray, cos_thr: float, mirror: bool) -> int:
    """Number of pairs ``i < j`` of unit rows of ``d`` with (mirror-aware) cosine ≥ ``cos_thr``, in blocks."""
    n = len(d)
    rows = max(1, _CHUNK // max(n, 1))
    total = 0
    for s in range(0, n - 1, rows):
        c = d[s:s + rows] @ d[s + 1:].T  # block rows i = s.., columns j = s+1..
        if mirror:
            c = np.abs(c)
        i = np.arange(s, min(s + rows, n))[:, None]
        j = np.arange(s + 1, n)[None, :]
        total += int(np.count_nonzero((c >= cos_thr) & (j > i)))
    return total


def pairs_within(R, max_deg: float = 20.0, mirror: bool = True, seed: int = 0) -> float:
    """Fraction of ALL pairs ``i < j`` of the ``N`` poses ``R`` (``(N, 3, 3)``) whose viewing directions are
    within ``max_deg`` degrees (mirror-aware by default): the chance level of :func:`same_class_pairs_within`
    for a classification that ignores the views. For uniform directions it is ``1 − cos(max_deg)`` with the
    mirror (``(1 − cos(max_deg)) / 2`` without). Counted exactly up to 5·10⁷ pairs; above that, estimated from
    as many random pairs (``seed``; standard error ≤ 10⁻⁴)."""
    d = _unit(viewing_directions(R))
    n = len(d)
    if n < 2:
        raise ValueError("need at least 2 poses to form a pair")
    thr = _cos_threshold(max_deg)
    n_pairs = n * (n - 1) // 2
    if n_pairs <= _EXACT_PAIRS:
        return _count_close_pairs(d, thr, mirror) / n_pairs
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(_EXACT_PAIRS // _CHUNK):
        i = rng.integers(0, n, _CHUNK)
        j = (i + rng.integers(1, n, _CHUNK)) % n  # j ≠ i, uniform over the others
        c = np.sum(d[i] * d[j], axis=1)
        hits += int(np.count_nonzero((np.abs(c) if mirror else c) >= thr))
    return hits / (_EXACT_PAIRS // _CHUNK * _CHUNK)


def same_class_pairs_within(labels, R, max_deg: float = 20.0, mirror: bool = True) -> float:
    """Fraction of same-class pairs whose viewing directions are within ``max_deg`` degrees.

    Over all pairs ``i < j`` with ``labels[i] == labels[j]`` (``labels (N,)``, ``R (N, 3, 3)``), the fraction
    with (mirror-aware by default) angle ``≤ max_deg``. Classes of one particle have no pairs. Compare it
    with :func:`pairs_within` (the same fraction over all pairs): a classification that groups images by view
    scores well above it, one that ignores the view scores at it. ``nan`` when no class has two members."""
    lab = np.asarray(labels).ravel()
    d = _unit(viewing_directions(R))
    if len(lab) != len(d):
        raise ValueError(f"{len(lab)} labels for {len(d)} poses")
    thr = _cos_threshold(max_deg)
    _, inv = np.unique(lab, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.flatnonzero(np.diff(inv[order])) + 1
    hits = pairs = 0
    for members in np.split(order, bounds):
        m = len(members)
        if m > 1:
            pairs += m * (m - 1) // 2
            hits += _count_close_pairs(d[members], thr, mirror)
    return hits / pairs if pairs else float("nan")


def neighbours_within(neighbours, R, max_deg: float = 10.0, mirror: bool = True) -> float:
    """Fraction of (image, neighbour) pairs whose viewing directions are within ``max_deg`` degrees.

    ``neighbours (N, k)`` int: row ``i`` lists the neighbours of image ``i`` (indices into ``R (N, 3, 3)``);
    an entry equal to ``i`` itself (a class that lists its reference image first) or negative (no neighbour)
    is skipped. Over the remaining pairs ``(i, neighbours[i, j])``, the fraction with (mirror-aware by default)
    angle ``≤ max_deg``."""
    nb = np.asarray(neighbours)
    d = _unit(viewing_directions(R))
    if nb.ndim != 2 or len(nb) != len(d):
        raise ValueError(f"neighbours must be (N, k) with N = {len(d)} poses, got shape {nb.shape}")
    if not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(f"neighbours must be integer indices, got {nb.dtype}")
    if nb.size and nb.max() >= len(d):
        raise ValueError(f"neighbour index {int(nb.max())} is out of range for {len(d)} poses")
    i = np.broadcast_to(np.arange(len(nb))[:, None], nb.shape)
    keep = (nb >= 0) & (nb != i)
    if not keep.any():
        return float("nan")
    return float(np.mean(view_angles_deg(d[i[keep]], d[nb[keep]], mirror) <= max_deg + 1e-9))


# -- class average vs clean reference -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Alignment2D:
    """The transform that best maps a reference onto an image: ``image ≈ shift(rotate(M^mirror(reference),
    psi), shift_A)`` with ``M`` the mirror :func:`mirror_images`, ``rotate`` =
    :func:`cryoscape.physics.transform2d.rotate_images` (``psi`` radians) and ``shift`` =
    :func:`cryoscape.physics.shift.shift_images` (``shift_A`` = ``(x, y)`` Å, content moves by ``+shift_A``).
    ``correlation``: the normalised cross-correlation at that transform (Pearson over the box); ``aligned``:
    the transformed reference ``(D, D)``."""

    psi: float
    shift_A: tuple[float, float]
    mirror: bool
    correlation: float
    aligned: np.ndarray


def _peak_offset(cc: np.ndarray, i: int) -> float:
    """Sub-pixel offset of a maximum at ``cc[i]`` (periodic 1-D) from the parabola through three samples."""
    a, b, c = cc[(i - 1) % len(cc)], cc[i], cc[(i + 1) % len(cc)]
    den = a - 2 * b + c
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0


def _best_shift(image: torch.Tensor, cands: torch.Tensor):
    """For each candidate ``(M, D, D)``: the circular cross-correlation ``cc[t] = Σ_p image(p) cand(p − t)``
    by FFT, normalised by both norms (zero-mean images), and its integer peak ``t = (tx, ty)`` px."""
    D = image.shape[-1]
    a = image - image.mean()
    c = cands - cands.mean(dim=(-2, -1), keepdim=True)
    norm = torch.linalg.vector_norm(a) * torch.linalg.vector_norm(c, dim=(-2, -1)).clamp_min(1e-300)
    cc = torch.fft.irfft2(torch.fft.rfft2(a) * torch.fft.rfft2(c).conj(), s=(D, D)) / norm[:, None, None]
    flat = cc.reshape(len(cc), -1)
    score, arg = flat.max(dim=1)
    return cc, score, arg // D, arg % D


def align_to_reference(image, reference, apix: float = 1.0, step_deg: float = 2.0) -> Alignment2D:
    """Find mirror, in-plane angle and shift that map ``reference (D, D)`` onto ``image (D, D)`` (see
    :class:`Alignment2D`), by maximum normalised cross-correlation.

    Search: both mirrors × rotations ``psi`` on a grid of ``step_deg`` over 360°, each with every periodic
    integer shift at once (FFT cross-correlation), the shift refined to sub-pixel by a parabola through the
    peak and its neighbours on each axis; then twice: 21 rotations within ±``step_deg`` (then ±``step_deg/10``)
    of the best, scored at that sub-pixel shift, and the shift again at the best of them. Cost:
    ``2 · 360 / step_deg + 44`` rotations and FFTs of ``D × D``."""
    from ..physics.shift import shift_images
    from ..physics.transform2d import rotate_images

    img = torch.as_tensor(np.asarray(image, np.float64))
    ref = torch.as_tensor(np.asarray(reference, np.float64))
    if img.ndim != 2 or img.shape != ref.shape or img.shape[0] != img.shape[1]:
        raise ValueError(f"image and reference must be square and equal in shape, got {tuple(img.shape)} "
                         f"and {tuple(ref.shape)}")
    if not (0 < step_deg <= 90):
        raise ValueError(f"step_deg must be in (0, 90], got {step_deg}")
    D = img.shape[-1]
    refs = torch.stack([ref, mirror_images(ref)])

    def search(psis: torch.Tensor):
        """Best (mirror, psi) over ``psis`` with every integer shift; its sub-pixel shift (px, signed)."""
        n = len(psis)
        cands = rotate_images(refs.repeat_interleave(n, 0), psis.repeat(len(refs)))  # mirror-major
        cc, score, ty, tx = _best_shift(img, cands)
        k = int(torch.argmax(score))
        ccn, ty, tx = cc[k].numpy(), int(ty[k]), int(tx[k])
        shift = [tx + _peak_offset(ccn[ty], tx), ty + _peak_offset(ccn[:, tx], ty)]
        return k // n, float(psis[k % n]), [(s + D / 2) % D - D / 2 for s in shift]  # periodic → [−D/2, D/2)

    def place(psis: torch.Tensor, shift_px) -> torch.Tensor:
        t = torch.tensor([shift_px], dtype=torch.float64).expand(len(psis), 2) * apix
        return shift_images(rotate_images(refs.expand(len(psis), D, D), psis), t, apix)

    def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a - a.mean(dim=(-2, -1), keepdim=True), b - b.mean(dim=(-2, -1), keepdim=True)
        return (a * b).sum((-2, -1)) / torch.sqrt((a * a).sum((-2, -1)) * (b * b).sum((-2, -1))).clamp_min(1e-300)

    step = math.radians(step_deg)
    m, psi, shift = search(torch.arange(0.0, 2 * math.pi, step, dtype=torch.float64))
    refs = refs[m:m + 1]
    for width in (step, step / 10):  # rotation refined at the sub-pixel shift, then the shift at that rotation
        psis = psi + torch.linspace(-width, width, 21, dtype=torch.float64)
        psi = float(psis[int(torch.argmax(pearson(img, place(psis, shift))))])
        _, _, shift = search(torch.tensor([psi], dtype=torch.float64))
    sx, sy = shift
    aligned = place(torch.tensor([psi], dtype=torch.float64), shift)[0]
    a, b = img - img.mean(), aligned - aligned.mean()
    corr = float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()).clamp_min(1e-300))
    psi = (psi + math.pi) % (2 * math.pi) - math.pi
    return Alignment2D(psi=psi, shift_A=(sx * apix, sy * apix), mirror=bool(m), correlation=corr,
                       aligned=aligned.numpy())


def class_frc_vs_clean(average, clean, apix: float, threshold: float = 0.5, step_deg: float = 2.0
                       ) -> tuple[np.ndarray, float]:
    """FRC of a class average against a clean reference projection, after aligning the reference to it.

    ``average``, ``clean``: ``(D, D)`` images (any scale and offset); ``apix`` Å/pixel. The reference is
    aligned by :func:`align_to_reference` (mirror, rotation, shift), then
    ``FRC(r) = Re Σ_{|k|∈r} F_avg F_ref* / sqrt(Σ |F_avg|² · Σ |F_ref|²)`` on the ``rfft2`` half plane with
    Friedel weights, over the integer shells ``r = 0 .. D//2 − 1`` of :class:`~cryoscape.physics.imaging.
    ImagingGrid` (frequency ``r / (D apix)``, as the FSC of :mod:`cryoscape.analysis.fsc`).

    Returns ``(frc (D//2,) float64, resolution_A)``: the resolution where the FRC first drops below
    ``threshold`` (:func:`cryoscape.analysis.fsc.resolution_at`; ``2 apix`` if it never does). The default 0.5
    is the criterion for a comparison against a noiseless reference (0.143 is for two noisy half sets).

    The alignment fits the reference to whatever is in ``average``, so the low shells read high even for an
    unrelated image: pure white noise against a D = 32 reference of blobs gives 0.3–0.65 on shells 1–5 and ≈ 0
    beyond D/4 (measured, mean of 10 noise images)."""
    from ..physics.fourier import rfft2_centered
    from ..physics.imaging import ImagingGrid
    from ..physics.likelihood import shell_correlation
    from .fsc import resolution_at

    fit = align_to_reference(average, clean, apix, step_deg)
    avg = torch.as_tensor(np.asarray(average, np.float64))
    D = avg.shape[-1]
    grid = ImagingGrid(D, apix, dtype=torch.float64)
    frc = shell_correlation(rfft2_centered(avg), rfft2_centered(torch.as_tensor(fit.aligned)), grid.shell,
                            grid.n_shells, grid.friedel).numpy()
    return frc, float(resolution_at(frc, D, apix, threshold))
