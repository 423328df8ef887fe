"""Blob picking: a Laplacian-of-Gaussian detector at the particle's size, needing no labels or templates.

For a micrograph ``I`` of ``H × W`` pixels of ``apix`` Å and a particle of diameter ``d = 2r`` Å:

1. **Normalise** (:func:`normalise_micrograph`, shared with the template matcher): Fourier-crop to the working
   pixel size ``a ≈ work_apix`` (``h × w`` pixels; working pixel ``(i, j)`` sits at original pixel
   ``(i · H/h, j · W/w)``), band-pass with Gaussian edges (high-pass at ``highpass_A`` removes ice gradients
   and uneven illumination; low-pass at ``lowpass_A``), subtract the mean, divide by the standard deviation,
   and multiply by the polarity (``+1`` bright, ``−1`` dark particles), so particles are bright.
2. **CTF matched filter** (optional, with the micrograph's ``ctf``): ``I ← CTF ⊛ I`` by
   :func:`cryoscape.physics.imaging.apply_ctf`. A particle's transform ``CTF · P̂`` becomes ``CTF² · P̂``, whose
   sign no longer flips between Thon rings: the whole particle is one bright blob (the matched filter of the
   CTF for white noise). Measured on 1024² AdK micrographs at SNR 0.003: average precision 0.90 with it, 0.83
   without; at SNR 0.001, 0.48 and 0.39 (σ = r/√2 then).
3. **Score map**: the scale-normalised Laplacian of Gaussian, ``S = −σ² ∇²(G_σ * I)`` with ``σ = sigma_ratio ·
   r`` in working pixels (a blob's strongest response is at the σ of the Gaussian of its second moment,
   Lindeberg 1998: ``r/√2`` for a uniform disc; ``0.45 r`` measured best for a protein, :class:`BlobConfig`),
   by :func:`scipy.ndimage.gaussian_laplace`; then standardised robustly, ``z = (S − median S) / (1.4826 ·
   MAD S)``, so ``threshold`` is in units of the map's spread (about its noise σ when most of it is ice).
4. **Peaks** (:func:`~cryoscape.methods.pick.peaks.find_peaks`): local maxima of ``z`` above ``threshold``, at
   least ``min_distance_A`` apart (default the radius; cryoSPARC's blob picker uses one diameter), away from the edges,
   refined to sub-pixel by a parabola, then scaled back to the micrograph's pixels.

Polarity: cryoscape's simulator (and RELION's convention, CONVENTIONS.md) writes protein density positive
before the CTF; at the particle's scale the first CTF lobe is positive, so particles are *bright*
(``polarity="bright"``, the default). Micrographs straight from a detector show particles *dark* (fewer
electrons where there is protein): use ``polarity="dark"``.

Cost (measured): a 1024² micrograph of 1.2 Å/px, AdK (diameter 82 Å, working pixel 5.1 Å) took 0.02 s on 2 CPU
threads, up to 0.4–0.9 s while other jobs shared the two cores. Memory: the micrograph's transform and the
working image (whole, not tiled: it is ``(work_apix / apix)²`` times smaller than the micrograph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ...io.errors import InputError
from ...physics.ctf import CTFParams
from ...physics.imaging import apply_ctf
from .peaks import find_peaks

__all__ = ["BlobConfig", "pick_blob", "blob_score_map", "normalise_micrograph", "check_micrograph",
           "POLARITIES", "robust_standardise", "band_pass", "check_picker_options"]

POLARITIES = {"bright": 1.0, "dark": -1.0}


@dataclass
class BlobConfig:
    """Options of the blob picker (module docstring). Lengths in Å.

    Attributes:
        diameter_A: the particle's diameter (required; e.g. ``2 × radius`` of the simulator's particles).
        polarity: ``bright`` (protein positive: cryoscape's simulator, RELION's convention) or ``dark`` (raw
            micrographs from a detector).
        threshold: keep picks whose standardised score exceeds it (robust σ of the map); None: every peak.
            3.5: on two 1024² AdK micrographs at SNR 0.003 (116 particles), thresholds 2 / 3 / 3.5 / 4 gave
            precision 0.72 / 0.98 / 1.0 / 1.0 at recall 0.96 / 0.91 / 0.85 / 0.72; in sparse fields noise
            peaks reached z = 3.7.
        min_distance_A: least distance between picks; None: the radius (as the learned picker and Topaz).
            Measured on benchmarks/picking.py's micrographs (AdK 60 Å apart, junk; 6 of them): template
            matcher AUPRC 0.946 / 0.946 / 0.867 / 0.637 at 0.5 / 0.6 / 0.75 / 0.85 diameters, blob picker
            0.53 / 0.55 / 0.51 / 0.34: a larger distance suppresses one of two close particles. On sparse
            fields (one diameter apart) 0.85 diameters was 1–3 % above one diameter.
        max_picks: at most this many picks (the best); None: no limit.
        edge_A: no picks this close to the micrograph's edges; None: half the radius.
        work_apix: working pixel size; None: ``diameter_A / 16`` (the micrograph's own if that is finer);
            the particle then spans about 16 working pixels.
        highpass_A: Gaussian high-pass at this length (response ½); None: 2 diameters; 0: none.
        lowpass_A: Gaussian low-pass at this length (response ½); None or 0: none (the LoG smooths already).
        sigma_ratio: the LoG's ``σ = sigma_ratio · r`` (step 3). ``1/√2 ≈ 0.71`` is the optimum for a uniform
            disc of radius ``r``, ``√(2/5) ≈ 0.63`` for the projection of a uniform ball (the Gaussian of equal
            second moment); a protein's mass is more concentrated, and the simulator's radius is its farthest
            atom plus 2σ: on AdK (r = 41 Å) the average precision peaked at 0.42–0.49 (measured at SNR 0.003
            and 0.001 over 0.28–0.71), hence 0.45.
        ctf_filter: with the micrograph's CTF given, filter by it first (step 2).
        subpixel: refine the centres by a parabola (peaks.refine_subpixel).
    """

    diameter_A: float | None = None
    polarity: str = "bright"
    threshold: float | None = 3.5
    min_distance_A: float | None = None
    max_picks: int | None = None
    edge_A: float | None = None
    work_apix: float | None = None
    highpass_A: float | None = None
    lowpass_A: float | None = None
    sigma_ratio: float = 0.45
    ctf_filter: bool = True
    subpixel: bool = True

    def check(self) -> None:
        """Raise :class:`InputError` naming the first invalid option."""
        if self.diameter_A is None:
            raise InputError("--diameter", "the particle diameter (Å) is needed by the blob picker")
        if not (isinstance(self.sigma_ratio, (int, float)) and 0 < self.sigma_ratio < 10):
            raise InputError("--sigma-ratio", f"must be a number in (0, 10), got {self.sigma_ratio}")
        check_picker_options(self.diameter_A, self.polarity, self.threshold, self.min_distance_A,
                             self.max_picks, self.edge_A, self.work_apix, self.highpass_A, self.lowpass_A)

    @property
    def radius_A(self) -> float:
        return 0.5 * float(self.diameter_A)


def check_picker_options(diameter_A, polarity, threshold, min_distance_A, max_picks, edge_A, work_apix, highpass_A,
                         lowpass_A) -> None:
    """The checks shared by the blob and template configs: :class:`InputError` (one line) for the first bad one."""
    def finite(v):
        return v is None or (isinstance(v, (int, float)) and math.isfinite(v))

    named = {"--diameter": diameter_A, "--threshold": threshold, "--min-distance": min_distance_A,
             "--edge": edge_A, "--work-apix": work_apix, "--highpass": highpass_A, "--lowpass": lowpass_A}
    for where, v in named.items():
        if not finite(v):
            raise InputError(where, f"must be a finite number, got {v}")
    if not diameter_A > 0:
        raise InputError("--diameter", f"must be > 0 Å, got {diameter_A}")
    if polarity not in POLARITIES:
        raise InputError("--polarity", f"must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    for where in ("--min-distance", "--edge", "--highpass", "--lowpass"):
        if named[where] is not None and named[where] < 0:
            raise InputError(where, f"must be ≥ 0 Å, got {named[where]}")
    if work_apix is not None and work_apix <= 0:
        raise InputError("--work-apix", f"must be > 0 Å, got {work_apix}")
    if max_picks is not None and (int(max_picks) != max_picks or max_picks < 0):
        raise InputError("--max-picks", f"must be an integer ≥ 0, got {max_picks}")


def check_micrograph(micrograph, apix: float, min_size_px: int = 8) -> torch.Tensor:
    """The micrograph as a float ``(H, W)`` tensor (float64 kept, anything else as float32), checked:
    :class:`InputError` for another shape, a side under ``min_size_px``, NaN/inf pixels or a bad ``apix``."""
    m = torch.as_tensor(micrograph)
    if m.dtype != torch.float64:
        m = m.to(torch.float32)
    if m.ndim != 2:
        raise InputError("micrograph", f"must be one (H, W) image, got shape {tuple(m.shape)}")
    if min(m.shape) < min_size_px:
        raise InputError("micrograph", f"{m.shape[0]} × {m.shape[1]} px is smaller than {min_size_px} px")
    if not (isinstance(apix, (int, float)) and math.isfinite(apix) and apix > 0):
        raise InputError("--apix", f"must be a finite number > 0, got {apix}")
    if not bool(torch.isfinite(m).all()):
        raise InputError("micrograph", "holds NaN or infinite pixels")
    return m


def normalise_micrograph(micrograph: torch.Tensor, apix: float, work_apix: float | None = None, *,
                         highpass_A: float | None = None, lowpass_A: float | None = None,
                         polarity: float = 1.0) -> tuple[torch.Tensor, tuple[float, float]]:
    """Fourier-crop, band-pass and standardise a micrograph (module docstring, step 1).

    The ``rfft2`` of ``I − mean(I)`` is cropped to the frequencies of an ``h × w`` grid, ``h = round(H · apix /
    work_apix)`` (likewise ``w``; no cropping when ``work_apix ≤ apix`` or None), its Nyquist row and column
    zeroed (even sizes), multiplied by

        B(s) = [1 − exp(−ln 2 · (s · highpass_A)²)] · exp(−ln 2 · (s · lowpass_A)²)      (s in 1/Å)

    (each factor ½ at ``s = 1/length``; a None or 0 length omits its factor), transformed back, shifted to mean
    0 and scaled to standard deviation 1 (a constant image stays 0), times ``polarity``. The inverse DFT of the
    cropped spectrum samples the band-limited micrograph at original pixel ``(i · H/h, j · W/w)``.

    Args:
        micrograph: ``(H, W)`` real tensor, any device. apix: its pixel size, Å.
    Returns:
        ``image (h, w)`` in the micrograph's float dtype and device, and ``scale = (H/h, W/w)``: an ``(x, y)``
        position in working pixels is ``(x · W/w, y · H/h)`` in the micrograph.
    """
    x = micrograph if micrograph.dtype in (torch.float32, torch.float64) else micrograph.to(torch.float32)
    H, W = x.shape
    h, w = H, W
    if work_apix is not None and work_apix > apix:
        h, w = max(8, int(round(H * apix / work_apix))), max(8, int(round(W * apix / work_apix)))
    f = torch.fft.rfft2(x - x.mean())
    if (h, w) != (H, W):
        f = torch.cat([f[:h - h // 2, :w // 2 + 1], f[H - h // 2:, :w // 2 + 1]], 0)
        if h % 2 == 0:
            f[h // 2] = 0
        if w % 2 == 0:
            f[:, w // 2] = 0
    band = band_pass(h, w, apix * H / h, apix * W / w, highpass_A, lowpass_A, dtype=x.dtype, device=x.device)
    out = torch.fft.irfft2(f * band, s=(h, w))
    out = out - out.mean()
    sd = out.std()
    if float(sd) > 0:
        out = out / sd
    return out * float(polarity), (H / h, W / w)


def band_pass(h: int, w: int, apix_y: float, apix_x: float, highpass_A: float | None, lowpass_A: float | None,
              dtype=torch.float32, device=None) -> torch.Tensor:
    """The band-pass of :func:`normalise_micrograph` on the ``rfft2`` half plane of an ``h × w`` image (DC at
    ``[0, 0]``), ``(h, w//2 + 1)``:

        B(s) = [1 − exp(−ln 2 (s · highpass_A)²)] · exp(−ln 2 (s · lowpass_A)²),

    ``s`` in 1/Å from the pixel sizes along y and x; a None or 0 length omits its factor. Real and even, so it
    commutes with shifts (the layout of the image's origin does not matter)."""
    ky = torch.fft.fftfreq(h, d=apix_y, dtype=dtype, device=device)
    kx = torch.fft.rfftfreq(w, d=apix_x, dtype=dtype, device=device)
    s2 = ky[:, None] ** 2 + kx[None, :] ** 2
    band = torch.ones_like(s2)
    if highpass_A:
        band = band * (1 - torch.exp(-math.log(2) * s2 * highpass_A ** 2))
    if lowpass_A:
        band = band * torch.exp(-math.log(2) * s2 * lowpass_A ** 2)
    return band


def robust_standardise(score: np.ndarray) -> np.ndarray:
    """``(S − median S) / (1.4826 · MAD S)`` over the finite pixels (the MAD scaled to σ for Gaussian
    values); a map with MAD 0 is divided by its standard deviation instead (by 1 when that is 0 too)."""
    finite = score[np.isfinite(score)]
    if finite.size == 0:
        return score
    med = float(np.median(finite))
    mad = 1.4826 * float(np.median(np.abs(finite - med)))
    if not mad > 0:
        mad = float(finite.std()) or 1.0
    return (score - med) / mad


def blob_score_map(micrograph, apix: float, cfg: BlobConfig, *, ctf: CTFParams | None = None
                   ) -> tuple[np.ndarray, tuple[float, float], float]:
    """Steps 1–3 of the module docstring: the standardised LoG score map on the working grid.

    Returns ``score (h, w)`` float64, ``scale (H/h, W/w)`` (working → micrograph pixels) and the working pixel
    size (Å, the mean over the two axes)."""
    cfg.check()
    m = check_micrograph(micrograph, apix)
    work = cfg.work_apix if cfg.work_apix is not None else cfg.diameter_A / 16
    highpass = 2 * cfg.diameter_A if cfg.highpass_A is None else cfg.highpass_A
    img, scale = normalise_micrograph(m, apix, work, highpass_A=highpass, lowpass_A=cfg.lowpass_A,
                                      polarity=POLARITIES[cfg.polarity])
    a = apix * 0.5 * (scale[0] + scale[1])
    if ctf is not None and cfg.ctf_filter:
        if len(ctf) != 1:
            raise InputError("ctf", f"one micrograph needs one CTF entry, got {len(ctf)}")
        img = apply_ctf(img[None], ctf, a, pad=2)[0]
    sigma = cfg.sigma_ratio * cfg.radius_A / a
    x = img.detach().to("cpu", torch.float64).numpy()
    log = ndimage.gaussian_laplace(x, sigma=sigma, mode="reflect")
    return robust_standardise(-sigma ** 2 * log), scale, a


def pick_blob(micrograph, apix: float, cfg: BlobConfig, *, ctf: CTFParams | None = None,
              progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Pick the particles of one micrograph with the blob detector (module docstring).

    Args:
        micrograph: ``(H, W)`` float tensor or array (any device). apix: Å per pixel.
        cfg: :class:`BlobConfig` (``diameter_A`` required). ctf: the micrograph's CTF (one entry) for the
            matched filter, or None. progress: optional ``.advance(1)`` when the micrograph is done.
    Returns:
        ``xy (n, 2)`` float64 ``(x, y)`` centres in micrograph pixels (0-based pixel centres, ``x`` the column)
        and ``score (n,)`` float64 (the standardised LoG response), best first.
    """
    score, scale, a = blob_score_map(micrograph, apix, cfg, ctf=ctf)
    xy, values = picks_from_z_map(score, a, scale, cfg)
    if progress is not None:
        progress.advance(1)
    return xy, values


def picks_from_z_map(z: np.ndarray, work_apix: float, scale, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a standardised score map at the working pixel size ``work_apix`` (Å) → picks in micrograph
    pixels (``scale = (sy, sx)``: micrograph pixels per working pixel), with a config's ``min_distance_A``
    (None: the radius), ``edge_A`` (None: half the radius), ``threshold``, ``max_picks`` and ``subpixel``
    (shared by the blob picker and the template matcher)."""
    sy, sx = scale
    dmin = (0.5 * cfg.diameter_A if cfg.min_distance_A is None else cfg.min_distance_A) / work_apix
    edge = (0.5 * cfg.radius_A if cfg.edge_A is None else cfg.edge_A) / work_apix
    xy, values = find_peaks(z, dmin, threshold=cfg.threshold, max_picks=cfg.max_picks,
                            edge_px=int(math.ceil(edge - 1e-9)) if edge > 0 else 0, subpixel=cfg.subpixel)
    return xy * np.array([sx, sy]), values
