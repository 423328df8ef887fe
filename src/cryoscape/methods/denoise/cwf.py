"""Covariance Wiener filtering (CWF) of a particle stack: Bhamre, Zhang & Singer (2016), "Denoising and
covariance estimation of single particle cryo-EM images", J. Struct. Biol. 195(1), 72–81.

Model, in the steerable Fourier–Bessel basis of :class:`~cryoscape.physics.steerable.FourierBessel` (disc of
radius ``D/2``; coefficients ``a`` grouped in blocks of angular frequency ``m``): image ``i`` of CTF group
``g`` has coefficients

    y_i = H_g x_i + e_i,       E[e e^H] = σ² G,

``x_i`` the coefficients of the CTF-FREE image, ``H_g`` the CTF of the group as an operator in the basis
(:meth:`FourierBessel.filter_blocks` of ``ImagingGrid(D, apix).ctf``: block diagonal in ``m``; for an
astigmatic CTF the operator of its angular average), ``G`` the coefficient covariance of unit white pixel
noise (:meth:`FourierBessel.noise_covariance`, its m-diagonal blocks) and σ² the noise variance per pixel
(estimated from the pixels outside the disc unless given). The in-plane rotations of the particles make the
distribution of ``x`` rotation invariant, so its mean ``μ`` lives in ``m = 0`` and its covariance ``C`` is block
diagonal in ``m``. With ``w_g = n_g / N``:

1. mean (least squares, ``m = 0``): ``(Σ_g w_g H_gᴴ H_g) μ = Σ_g w_g H_gᴴ ȳ_g``;
2. right-hand side ``B = (1/N) Σ_i H_gᴴ r_i r_iᴴ H_g`` with ``r_i = y_i − H_g μ``, whose noise part is
   ``σ² A``, ``A = Σ_g w_g H_gᴴ G H_g``. Per block ``m``, the whitened ``A^{-1/2} B A^{-1/2} / σ²`` is
   diagonalised, its eigenvalues at or below the Marchenko–Pastur edge ``(1 + √γ_m)²`` (``γ_m = p_m / N``)
   set to 0 and those above shrunk (:func:`~cryoscape.physics.steerable.shrink_spikes`, the Frobenius-loss
   shrinker by default: 0.03–0.1 dB better than operator-norm loss at the band limits used, 1 dB at the
   full band, measured), and
   ``B̃ = σ² A^{1/2} V diag(s) Vᴴ A^{1/2}`` — the noise-free right-hand side;
3. covariance: ``Σ_g w_g M_g C M_g = B̃`` with ``M_g = H_gᴴ H_g`` (the normal equations of
   ``min Σ_i ‖r_i r_iᴴ − H_g C H_gᴴ − σ² G‖²_F``), solved per block by preconditioned conjugate gradients
   (preconditioner ``X ↦ M̄⁻¹ X M̄⁻¹``, ``M̄ = Σ_g w_g M_g``), then projected onto the PSD cone;
4. per image, the Wiener (linear MMSE) estimate of the CTF-free coefficients

       x̂_i = μ + C H_gᴴ (H_g C H_gᴴ + σ² G)⁻¹ (y_i − H_g μ),

   evaluated back to pixels (zero outside the disc).

Basis band limit: by default from the data (:func:`auto_bandlimit`): the basis stops where the estimated
spectral SNR of the CTF-free signal falls below ``1/√N``; beyond it covariance estimates are mostly noise.

CTF groups: images with identical CTF parameters form one group; when there are more distinct parameter sets
than ``n_groups``, images are binned by mean defocus into ``n_groups`` bins of equal counts, each represented
by the CTF of its median image. Everything runs in torch (float64/complex128) on ``device``; the per-image
work is batched matrix products; memory holds ``batch`` images, ``(K, M, p_max, p_max)`` matrices and the
stack's coefficients while they fit in ``keep_coeffs_bytes`` (otherwise the images are expanded again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...io.errors import InputError
from ...physics.ctf import CTFParams
from ...physics.imaging import ImagingGrid
from ...physics.steerable import FourierBessel, noise_variance_outside_disc, shrink_spikes
from .wiener import WienerConfig, _check_images, estimate_ssnr

__all__ = ["CWFConfig", "denoise_cwf", "ctf_groups", "auto_bandlimit", "REMOVES_CTF"]

REMOVES_CTF = True  # the output estimates the CTF-free image

SHRINKERS = ("operator", "frobenius", "none")


@dataclass
class CWFConfig:
    """Options of :func:`denoise_cwf`.

    Attributes:
        bandlimit: fraction of Nyquist of the Fourier–Bessel basis (``FourierBessel`` ``bandlimit``); None:
            from the data (:func:`auto_bandlimit`, with ``auto_factor``).
        n_groups: most CTF groups; more distinct CTFs are binned by defocus into this many.
        shrinker: eigenvalue shrinkage of the covariance: ``frobenius`` (default), ``operator`` or ``none``.
        noise_var: noise variance per pixel; None: from the pixels outside the disc of radius ``D/2``.
        device: where the work runs (``cpu``, ``cuda``, ...).
        batch: images expanded / evaluated at a time.
        cg_iterations, cg_tol: conjugate-gradient limits of the covariance solve (relative residual).
        keep_coeffs_bytes: the coefficients of the stack are kept between the two passes when they fit in
            this many bytes, otherwise the images are expanded again.
    """

    bandlimit: float | None = None
    auto_factor: float = 1.0
    n_groups: int = 16
    shrinker: str = "frobenius"
    noise_var: float | None = None
    device: str = "cpu"
    batch: int = 1024
    cg_iterations: int = 200
    cg_tol: float = 1e-8
    keep_coeffs_bytes: int = 2 ** 30

    def check(self) -> None:
        if self.bandlimit is not None and not (0 < self.bandlimit <= 1):
            raise InputError("bandlimit", f"must be in (0, 1], got {self.bandlimit}")
        if self.n_groups < 1:
            raise InputError("n_groups", f"must be ≥ 1, got {self.n_groups}")
        if self.shrinker not in SHRINKERS:
            raise InputError("shrinker", f"must be one of {SHRINKERS}, got {self.shrinker!r}")
        if self.noise_var is not None and not (self.noise_var > 0 and math.isfinite(self.noise_var)):
            raise InputError("noise_var", f"must be a positive number, got {self.noise_var}")
        if self.batch < 1 or self.cg_iterations < 1 or not (self.cg_tol > 0):
            raise InputError("cwf", "batch and cg_iterations must be ≥ 1 and cg_tol > 0")
        try:
            torch.device(self.device)
        except RuntimeError as e:
            raise InputError("device", str(e)) from None


def ctf_groups(ctf: CTFParams, n_groups: int) -> tuple[torch.Tensor, CTFParams]:
    """Group images by CTF: ``(group (N,) int64, representative CTFParams of the K groups)``.

    Identical parameter sets form one group each when there are at most ``n_groups`` of them; otherwise the
    images are sorted by mean defocus ``(ΔfU + ΔfV)/2`` and cut into ``n_groups`` bins of equal counts, each
    represented by the parameters of its median image.
    """
    table = np.stack([getattr(ctf, f).detach().cpu().numpy().astype(np.float64) for f in CTFParams.fields], 1)
    uniq, inverse = np.unique(table, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if len(uniq) <= n_groups:
        rep = uniq
    else:
        order = np.argsort(0.5 * (table[:, 0] + table[:, 1]), kind="stable")
        inverse = np.empty(len(table), dtype=np.int64)
        reps = []
        for g, idx in enumerate(np.array_split(order, n_groups)):
            inverse[idx] = g
            reps.append(table[idx[len(idx) // 2]])
        rep = np.stack(reps)
    return torch.as_tensor(inverse, dtype=torch.int64), CTFParams(*rep.T)


def auto_bandlimit(images: torch.Tensor, ctf: CTFParams | None, apix: float, sigma2: float,
                   factor: float = 1.0, lowest: float = 0.15) -> float:
    """Band limit (fraction of Nyquist) of the basis from the data: up to the first shell ``s ≥ 1`` where the
    per-shell SSNR of the CTF-free signal (:func:`~cryoscape.methods.denoise.wiener.estimate_ssnr`, with the
    noise variance ``sigma2``) falls below ``factor / √N``, i.e. ``s / (D/2)``, clipped to ``[lowest, 1]``.

    Beyond that shell a covariance eigenvalue is below the noise's sampling fluctuation of ``N`` images and
    the estimated directions are mostly noise: measured on 1,000 AdK images of 64 px (7 defoci), this cut
    (0.28 at SNR 0.01, 0.375 at SNR 0.1) was within 0.03 dB of the best fixed band limit (0.25, 0.4), where
    the full band (1.0) lost 2.0 dB and 0.9 dB."""
    N, D, _ = images.shape
    ssnr, _ = estimate_ssnr(images, ctf, apix, WienerConfig(), sigma2=sigma2)
    below = torch.nonzero(ssnr[1:] < factor / math.sqrt(N)).reshape(-1)
    s = int(below[0]) + 1 if below.numel() else len(ssnr)
    return float(min(1.0, max(lowest, s / (D / 2))))


def _herm(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1).conj()


def _pad_eye(mask: torch.Tensor, dtype) -> torch.Tensor:
    """``(M, p, p)`` identity on the padding entries of each block (so padded blocks stay invertible)."""
    return torch.diag_embed((~mask).to(dtype))


def _psd_power(S: torch.Tensor, power: float) -> torch.Tensor:
    """``S^power`` of Hermitian PSD matrices ``(..., p, p)`` (eigenvalues clamped at a tiny positive floor)."""
    ev, V = torch.linalg.eigh(0.5 * (S + _herm(S)))
    ev = ev.clamp_min(ev.amax(-1, keepdim=True).clamp_min(1e-300) * 1e-12)
    return (V * ev[..., None, :].pow(power).to(V.dtype)) @ _herm(V)


def _solve_covariance(M: torch.Tensor, w: torch.Tensor, B: torch.Tensor, pad: torch.Tensor, iterations: int,
                      tol: float) -> torch.Tensor:
    """Solve ``Σ_g w_g M_g C M_g = B`` for Hermitian ``C`` per block by preconditioned CG.

    ``M`` ``(K, Mb, p, p)``, ``w`` ``(K,)``, ``B`` ``(Mb, p, p)``; ``pad`` the identity on padding entries.
    """
    wc = w.to(M.dtype)[:, None, None, None]

    def op(X):
        return (wc * (M @ X[None] @ M)).sum(0)

    Mbar_inv = torch.linalg.inv((wc * M).sum(0) + pad)

    def precond(X):
        return Mbar_inv @ X @ Mbar_inv

    def dot(X, Y):  # Re tr(Xᴴ Y) per block
        return (X.conj() * Y).real.sum((-2, -1))

    X = precond(B)
    Rr = B - op(X)
    Z = precond(Rr)
    P = Z
    rz = dot(Rr, Z)
    bnorm = dot(B, B).sqrt().clamp_min(1e-300)
    for _ in range(iterations):
        if bool((dot(Rr, Rr).sqrt() <= tol * bnorm).all()):
            break
        AP = op(P)
        alpha = rz / dot(P, AP).clamp_min(1e-300)
        X = X + alpha[:, None, None] * P
        Rr = Rr - alpha[:, None, None] * AP
        Z = precond(Rr)
        rz_new = dot(Rr, Z)
        beta = rz_new / rz.clamp_min(1e-300)
        P = Z + beta[:, None, None] * P
        rz = rz_new
    return 0.5 * (X + _herm(X))


def denoise_cwf(images: torch.Tensor, ctf: CTFParams | None = None, apix: float = 1.0,
                cfg: CWFConfig | None = None, progress=None) -> torch.Tensor:
    """CWF estimate of the CTF-free images (module docstring): ``(N, D, D)`` float32 on the CPU.

    Args:
        images: ``(N, D, D)`` real, square, N ≥ 2 (particles centred at pixel ``D//2``).
        ctf: :class:`~cryoscape.physics.ctf.CTFParams` with N entries, or None (no CTF: plain covariance
            Wiener filter).
        apix: pixel size in Å. cfg: :class:`CWFConfig`. progress: optional object with ``advance(n)``.
    Raises:
        InputError: empty stack, non-square images, non-finite pixels, a CTF of the wrong length, bad options.
    """
    cfg = cfg or CWFConfig()
    cfg.check()
    _check_images(images)
    N, D, D2 = images.shape
    if D != D2:
        raise InputError("images", f"CWF needs square images, got {D}×{D2}")
    if D < 8:
        raise InputError("images", f"CWF needs images of at least 8 pixels, got {D}")
    if N < 2:
        raise InputError("images", f"CWF needs at least 2 images, got {N}")
    if ctf is not None and len(ctf) != N:
        raise InputError("ctf", f"{len(ctf)} CTF entries for {N} images")
    if not (apix > 0 and math.isfinite(apix)):
        raise InputError("apix", f"must be > 0, got {apix}")
    dev = torch.device(cfg.device)
    sigma2 = cfg.noise_var if cfg.noise_var is not None else noise_variance_outside_disc(images)
    sigma2 = max(float(sigma2), 1e-30)
    bandlimit = cfg.bandlimit if cfg.bandlimit is not None else auto_bandlimit(images, ctf, apix, sigma2,
                                                                               cfg.auto_factor)
    fb = FourierBessel(D, bandlimit, dtype=torch.float64, device=dev)
    cdt = fb.cdtype
    mask = fb.block_mask
    Mb, p = fb.n_blocks, fb.p_max
    pad = _pad_eye(mask, cdt)

    # CTF groups and their operators
    if ctf is None:
        group = torch.zeros(N, dtype=torch.int64)
        H = torch.diag_embed(mask.to(cdt))[None]  # identity blocks
    else:
        group, reps = ctf_groups(ctf, cfg.n_groups)
        grid = ImagingGrid(D, apix, dtype=torch.float64, device=dev)
        H = fb.filter_blocks(grid.ctf(reps.to(device=dev)))
    K = H.shape[0]
    group = group.to(dev)
    counts = torch.bincount(group, minlength=K).to(torch.float64)
    w = counts / N
    G = fb.block_matrices(fb.noise_covariance()) + pad

    # pass 1: per-group sums of the block coefficients and of their outer products
    sum_y = torch.zeros(K, Mb, p, dtype=cdt, device=dev)
    sum_yy = torch.zeros(K, Mb, p, p, dtype=cdt, device=dev)
    keep = N * fb.n_coeffs * 16 <= cfg.keep_coeffs_bytes
    kept = []
    for s in range(0, N, cfg.batch):
        y = fb.to_blocks(fb.expand(images[s:s + cfg.batch]))
        g = group[s:s + cfg.batch]
        sum_y.index_add_(0, g, y)
        for k in torch.unique(g).tolist():
            yk = y[g == k]
            sum_yy[k] += torch.einsum("nmp,nmq->mpq", yk, yk.conj())
        if keep:
            kept.append(y)

    # 1. mean in m = 0
    Hh = _herm(H)
    wc = w.to(cdt)
    A0 = (wc[:, None, None] * (Hh[:, 0] @ H[:, 0])).sum(0) + pad[0]
    b0 = (Hh[:, 0] @ (sum_y[:, 0] / N)[..., None])[..., 0].sum(0)
    mu = torch.zeros(Mb, p, dtype=cdt, device=dev)
    mu[0] = torch.linalg.solve(A0, b0).real.to(cdt)
    Hmu = (H @ mu[None, ..., None])[..., 0]  # (K, Mb, p)

    # 2. right-hand side with the mean removed, its noise part, shrinkage
    S = (sum_yy - sum_y[..., :, None] * Hmu[..., None, :].conj() - Hmu[..., :, None] * sum_y[..., None, :].conj()
         + counts.to(cdt)[:, None, None, None] * Hmu[..., :, None] * Hmu[..., None, :].conj())
    B = (Hh @ S @ H).sum(0) / N
    A = (wc[:, None, None, None] * (Hh @ G[None] @ H)).sum(0) + pad
    A_ih, A_h = _psd_power(A, -0.5), _psd_power(A, 0.5)
    ell, V = torch.linalg.eigh(0.5 * (A_ih @ B @ A_ih + _herm(A_ih @ B @ A_ih)) / sigma2)
    gamma = (fb.block_sizes.to(torch.float64) / N)[:, None]
    sig = shrink_spikes(ell, gamma, cfg.shrinker)  # padding entries: ℓ = 0, below the edge, so 0
    B_clean = sigma2 * (A_h @ V) @ torch.diag_embed(sig.to(cdt)) @ _herm(A_h @ V)

    # 3. covariance
    C = _solve_covariance(Hh @ H, w, B_clean, pad, cfg.cg_iterations, cfg.cg_tol)
    ev, U = torch.linalg.eigh(C)
    C = (U * ev.clamp_min(0)[..., None, :].to(cdt)) @ _herm(U)

    # 4. Wiener filters per group, then every image
    HC = H @ C[None]
    Wf = _herm(torch.linalg.solve(HC @ Hh + sigma2 * G[None], HC))  # C Hᴴ (H C Hᴴ + σ² G)⁻¹
    out = torch.empty(N, D, D, dtype=torch.float32)
    for bi, s in enumerate(range(0, N, cfg.batch)):
        y = kept[bi] if keep else fb.to_blocks(fb.expand(images[s:s + cfg.batch]))
        g = group[s:s + cfg.batch]
        x = torch.empty_like(y)
        for k in torch.unique(g).tolist():
            sel = g == k
            x[sel] = mu + torch.einsum("mpq,nmq->nmp", Wf[k], y[sel] - Hmu[k])
        x = x * mask.to(cdt)
        out[s:s + y.shape[0]] = fb.evaluate(fb.from_blocks(x)).to(torch.float32).cpu()
        if progress is not None:
            progress.advance(y.shape[0])
    return out
