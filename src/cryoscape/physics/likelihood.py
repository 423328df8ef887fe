"""Scores of predicted images against data, on Fourier points: every method's likelihood lives here.

Inputs are per-image Fourier values, complex ``(N, ...)`` or real pairs ``(N, ..., 2)`` (real, imaginary),
typically the disc points of an :class:`~cryoscape.physics.imaging.ImagingGrid` (``(N, P)``) or its whole
half plane (``(N, Dp, W)``). ``weight`` (broadcast to the points) holds the Friedel weights (2 where the
point stands for itself and its mirror, 1 otherwise), optionally times a mask; sums over the half plane
with these weights equal sums over the whole plane.

- Squared error:   ``E_n = Σ_k w_k |p_nk − y_nk|² / Σ_k w_k``
- Gaussian NLL:    ``L_n = Σ_k w_k |p_nk − y_nk|² / (2 σ²(k))``, ``σ²(k)`` a per-point noise variance, e.g. a
  per-shell spectrum on a grid's points: ``noise_spectrum(y − p, grid.point_shells, grid.n_shells)[grid.point_shells]``;
  constants dropped.
- Correlation:     ``ρ_n = Re Σ_k w_k p_nk ȳ_nk / sqrt(Σ_k w_k |p_nk|² · Σ_k w_k |y_nk|²)``
- In-plane Gaussian log-likelihood over every rotation (2-D classes, on a polar grid, see
  :mod:`cryoscape.physics.polar`): ``ℓ(t) = Σ_{r,l} a_r [Re(x h c̄_t) − ½ h² |c_t|²] / σ²_r`` with
  ``c_t(r, l) = c(r, l + t)``; this is ``−Σ a_r |x − h c_t|² / (2σ²_r)`` up to the term ``Σ a_r |x|²/(2σ²_r)``
  that no class or rotation changes.
- Shell correlation (the core of FSC and FRC): ``FSC(r) = Re Σ_{k∈r} w a b̄ / sqrt(Σ_{k∈r} w |a|² Σ_{k∈r} w |b|²)``.
"""

from __future__ import annotations

import torch

__all__ = ["squared_error", "gaussian_nll", "correlation", "shell_correlation", "noise_spectrum", "power",
           "inplane_loglik"]


def _pairs(x: torch.Tensor) -> torch.Tensor:
    """Complex → real pairs ``(..., 2)``; real pairs pass through."""
    return torch.view_as_real(x) if x.is_complex() else x


def power(x: torch.Tensor) -> torch.Tensor:
    """``|x|²`` per point: ``(N, ...)`` real, from complex or real pairs."""
    return _pairs(x).square().sum(-1)


def _weighted_sum(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``Σ_k w_k v_nk`` over every axis but the first: ``(N,)``. A 1-D weight over the last axis uses a
    matrix-vector product."""
    if weight is None:
        return values.reshape(values.shape[0], -1).sum(-1)
    if weight.ndim == 1 and values.ndim == 2:
        return values @ weight.to(values.dtype)
    return (values * weight).reshape(values.shape[0], -1).sum(-1)


def _total_weight(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return torch.tensor(float(values[0].numel()), dtype=values.dtype, device=values.device)
    return torch.broadcast_to(weight, values.shape[1:]).sum().to(values.dtype)


def squared_error(pred: torch.Tensor, data: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean squared error per image, ``(N,)`` (module docstring)."""
    d = power(_pairs(pred) - _pairs(data))
    return _weighted_sum(d, weight) / _total_weight(d, weight)


def gaussian_nll(pred: torch.Tensor, data: torch.Tensor, noise_var: torch.Tensor | float,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian negative log-likelihood per image up to a constant, ``(N,)``: ``Σ w |p − y|² / (2σ²)``.

    ``noise_var``: a scalar or per-point variances broadcastable to the points (must be > 0)."""
    d = power(_pairs(pred) - _pairs(data)) / (2 * torch.as_tensor(noise_var, dtype=pred.real.dtype,
                                                                    device=pred.device))
    return _weighted_sum(d, weight)


def correlation(pred: torch.Tensor, data: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised cross-correlation per image, ``(N,)``, in ``[−1, 1]`` (module docstring)."""
    p, y = _pairs(pred), _pairs(data)
    cross = (p * y).sum(-1)
    num = _weighted_sum(cross, weight)
    den = torch.sqrt(_weighted_sum(power(p), weight) * _weighted_sum(power(y), weight))
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


def shell_correlation(a: torch.Tensor, b: torch.Tensor, shell: torch.Tensor, n_shells: int,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Correlation of two transforms shell by shell, ``(n_shells,)`` float64: the FSC (3-D) or FRC (2-D).

    Args:
        a, b: complex transforms of the same shape (any layout: full grid, half plane, points).
        shell: int64 shell index of every point (same shape); points with ``shell ≥ n_shells`` or < 0 are
            ignored. weight: optional per-point weights (e.g. Friedel weights on a half plane).
    """
    a, b = a.reshape(-1).to(torch.complex128), b.reshape(-1).to(torch.complex128)
    s = shell.reshape(-1).to(a.device)
    keep = (s >= 0) & (s < n_shells)
    w = None if weight is None else torch.broadcast_to(weight, shell.shape).reshape(-1).to(torch.float64)[keep]
    s, a, b = s[keep], a[keep], b[keep]

    def bins(v):
        return torch.bincount(s, v if w is None else v * w, minlength=n_shells)

    cross = bins((a * b.conj()).real)
    pa, pb = bins(a.abs() ** 2), bins(b.abs() ** 2)
    return cross / torch.sqrt((pa * pb).clamp_min(1e-300))


def noise_spectrum(residual: torch.Tensor, shell: torch.Tensor, n_shells: int,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``|r|²`` per shell over images and points, ``(n_shells,)`` float64 (the noise power spectrum of
    residuals ``r = y − p``, ``(N, ...)`` complex with ``shell`` of shape ``(...)``)."""
    p = power(residual).to(torch.float64)
    s = shell.reshape(-1).to(p.device)
    keep = (s >= 0) & (s < n_shells)
    w = torch.ones_like(s, dtype=torch.float64) if weight is None else \
        torch.broadcast_to(weight, shell.shape).reshape(-1).to(torch.float64)
    total = torch.bincount(s[keep], (p.reshape(p.shape[0], -1).sum(0) * w)[keep], minlength=n_shells)
    count = torch.bincount(s[keep], w[keep], minlength=n_shells) * p.shape[0]
    return total / count.clamp_min(1e-300)


def inplane_loglik(data_spectrum: torch.Tensor, ctf2_spectrum: torch.Tensor, class_spectrum: torch.Tensor,
                   class_power_spectrum: torch.Tensor, grid) -> torch.Tensor:
    """Gaussian log-likelihood of images against classes at every in-plane rotation (module docstring).

    Args (angular spectra in ``grid.spectrum_major`` layout ``(M, ·, R)``, for a
    :class:`~cryoscape.physics.polar.PolarGrid` ``grid``):
        data_spectrum: ``(M, N, R)`` of ``x h / σ²`` (the data, shifted back by the caller when a shift is
            tried: ``x · conj(ramp_s)``). ctf2_spectrum: ``(M, N', R)`` with ``N = N' · S`` (image-major: the
            ``S`` shifts of one image share it) of ``h² / σ²``.
        class_spectrum: ``(M, K, R)`` of the class samples ``c``. class_power_spectrum: ``(M, K, R)`` of ``|c|²``.
    Returns:
        ``(N', S, K, L)``: ``ℓ[n, s, k, t]``, the rotation ``ψ_t = 2π t / L`` meaning ``x ≈ h · rotate(c_k, ψ_t)``.
    """
    cross = grid.correlate(data_spectrum, class_spectrum, grid.ring_area)  # (N'·S, K, L)
    norm = grid.correlate(ctf2_spectrum, class_power_spectrum, grid.ring_area)  # (N', K, L)
    n, K, L = norm.shape
    return cross.reshape(n, -1, K, L) - 0.5 * norm[:, None]
