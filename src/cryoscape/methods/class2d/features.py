"""Rotation-invariant image features on the steerable Fourier–Bessel basis, and nearest neighbours.

Rotating an image by ψ (``physics.transform2d.rotate_images``: ``out(p) = img(Q(ψ) p)``) multiplies every
steerable coefficient of angular frequency m — a Fourier–Bessel coefficient ``a_{m,q}`` or a steerable-PCA
coefficient ``b_k`` with frequency ``m_k`` — by ``e^{i m ψ}`` (``physics.steerable``). Any product of
coefficients whose frequencies sum to zero (conjugates counting −m) is therefore unchanged:

- power spectrum: ``a_{m,q1} · conj(a_{m,q2})`` (frequencies m − m = 0);
- bispectrum: ``a_{m1,q1} · a_{m2,q2} · conj(a_{m1+m2,q3})`` (m1 + m2 − (m1 + m2) = 0), which, unlike the
  power spectrum, keeps the relative phases between frequencies (it determines a generic image up to
  rotation; Zhao & Singer 2014, "Rotationally invariant image representation for viewing direction
  classification in cryo-EM");
- autocorrelation (seed 004): the ACF is invariant to translations of the image; its Fourier–Bessel
  power-spectrum invariants make it invariant to rotations as well.

Features are returned as real ``torch`` tensors ``(N, F)`` (float64 unless stated); the neighbour search
and the clustering (``cluster``) take them as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from ...io.errors import InputError
from ...physics.steerable import FourierBessel, SteerablePCA, disc_mask, steerable_pca

__all__ = ["feature_matrix", "power_spectrum_features", "bispectrum_features", "bispectrum_triples", "acf_features",
           "autocorrelation", "nearest_neighbours"]


def _freqs(basis) -> torch.Tensor:
    m = getattr(basis, "m", None)
    if m is None:
        raise InputError("basis", "expected a FourierBessel basis or a SteerablePCA (an object with .m)")
    return torch.as_tensor(m).cpu()


def _check_coeffs(coeffs: torch.Tensor, m: torch.Tensor) -> None:
    if coeffs.ndim != 2 or coeffs.shape[1] != m.numel():
        raise InputError("coeffs", f"expected (N, {m.numel()}) coefficients, got shape {tuple(coeffs.shape)}")
    if not torch.isfinite(torch.view_as_real(coeffs) if coeffs.is_complex() else coeffs).all():
        raise InputError("coeffs", "coefficients contain NaN or inf")


def power_spectrum_features(coeffs: torch.Tensor, basis: FourierBessel | SteerablePCA,
                            cross: bool = False) -> torch.Tensor:
    """Power-spectrum invariants of steerable coefficients ``(N, n)`` complex → ``(N, F)`` real.

    ``basis`` gives the frequency ``m`` of each column (a :class:`FourierBessel` for FB coefficients, a
    :class:`SteerablePCA` for its coefficients).

    - ``cross=False``: ``|a_k|²`` for every coefficient k (``F = n``).
    - ``cross=True``: for every frequency m and every pair ``q1 ≤ q2`` of its coefficients, the real and
      imaginary parts of ``a_{m,q1} conj(a_{m,q2})`` (the imaginary part of the diagonal, always 0, is
      left out): ``F = Σ_m p_m²`` with ``p_m`` the number of coefficients of frequency m. This is the full
      rotation-invariant second-order information of the block m (its Gram matrix).
    """
    m = _freqs(basis)
    _check_coeffs(coeffs, m)
    if not cross:
        return coeffs.abs() ** 2
    out = []
    for mm in torch.unique(m).tolist():
        idx = torch.nonzero(m == mm).squeeze(1).to(coeffs.device)
        x = coeffs[:, idx]
        gram = x[:, :, None] * x.conj()[:, None, :]  # (N, p, p)
        iu = torch.triu_indices(idx.numel(), idx.numel(), device=coeffs.device)
        up = gram[:, iu[0], iu[1]]
        off = iu[0] != iu[1]
        out += [up.real, up.imag[:, off]]
    return torch.cat(out, dim=1)


def bispectrum_triples(m: torch.Tensor, weight: torch.Tensor | None = None,
                       max_triples: int | None = None) -> torch.Tensor:
    """Index triples ``(i, j, l)`` with ``i ≤ j`` and ``m_i + m_j = m_l`` → ``(T, 3)`` long.

    With ``max_triples``, the ``max_triples`` triples of largest ``weight_i · weight_j · weight_l`` are kept
    (ties by index order), e.g. weights = sPCA eigenvalues: the triples with the most signal.
    """
    m = torch.as_tensor(m).cpu().long()
    K = m.numel()
    i, j = torch.triu_indices(K, K)
    target = m[i] + m[j]
    trip = []
    for mm in torch.unique(target).tolist():
        ls = torch.nonzero(m == mm).squeeze(1)
        if ls.numel() == 0:
            continue
        sel = torch.nonzero(target == mm).squeeze(1)
        trip.append(torch.stack([i[sel].repeat_interleave(ls.numel()), j[sel].repeat_interleave(ls.numel()),
                                 ls.repeat(sel.numel())], dim=1))
    t = torch.cat(trip) if trip else torch.zeros(0, 3, dtype=torch.long)
    t = t[torch.argsort(t[:, 0] * K * K + t[:, 1] * K + t[:, 2])]
    if max_triples is not None and t.shape[0] > max_triples:
        w = torch.ones(K, dtype=torch.float64) if weight is None else torch.as_tensor(weight).cpu().double()
        score = w[t[:, 0]] * w[t[:, 1]] * w[t[:, 2]]
        keep = torch.sort(torch.argsort(score, descending=True, stable=True)[:max_triples]).values
        t = t[keep]
    return t


def bispectrum_features(coeffs: torch.Tensor, basis: FourierBessel | SteerablePCA, n_features: int = 32, *,
                        noise_var: float | None = None, n_components: int = 40, max_triples: int = 20000,
                        seed: int = 0) -> torch.Tensor:
    """Bispectrum invariants of steerable coefficients, reduced by PCA → ``(N, n_features)`` float64.

    1. Coefficients: if ``basis`` is a :class:`FourierBessel`, ``coeffs`` are FB coefficients and a steerable
       PCA with ``n_components`` (and ``noise_var``, σ² per pixel, for the noise-aware shrinkage) is fitted
       first; its Wiener-filtered coefficients ``b_k λ_k/(λ_k + noise_k)`` are used, so components dominated
       by noise are damped. If ``basis`` is a :class:`SteerablePCA`, ``coeffs`` are its coefficients
       ``(N, K)`` and are used as given.
    2. Bispectrum ``B_{ijl} = b_i b_j conj(b_l)`` over the triples of :func:`bispectrum_triples` (``i ≤ j``,
       ``m_i + m_j = m_l``; at most ``max_triples``, those of largest ``λ_i λ_j λ_l``).
    3. Normalisation: ``B / |B|^{2/3}`` (the phase kept, the magnitude's cube root: the invariant becomes
       homogeneous of degree 1 in the image, like the coefficients, so that a few large products do not
       dominate the distances), then real and imaginary parts.
    4. PCA (scikit-learn, deterministic ``svd_solver="full"``) to ``n_features``.

    Every step is a function of rotation-invariant numbers, so the output is invariant to in-plane
    rotation of the images (to rounding). The PCA is fitted on the ``N`` images given: compare images
    within one call.
    """
    if isinstance(basis, FourierBessel):
        spca = steerable_pca(coeffs, basis, n_components=n_components, noise_var=noise_var)
        b, lam, m = spca.wiener(), spca.eigenvalues, spca.m
    elif isinstance(basis, SteerablePCA):
        b, lam, m = coeffs, basis.eigenvalues, basis.m
    else:
        raise InputError("basis", "expected a FourierBessel basis or a SteerablePCA")
    _check_coeffs(b, m.cpu())
    b = b.to(torch.complex128)
    t = bispectrum_triples(m, weight=lam.abs(), max_triples=max_triples).to(b.device)
    if t.shape[0] == 0:
        raise InputError("coeffs", "no bispectrum triple (m_i + m_j = m_l) among the components")
    B = b[:, t[:, 0]] * b[:, t[:, 1]] * b[:, t[:, 2]].conj()
    mag = B.abs()
    B = torch.where(mag > 0, B / mag.clamp_min(1e-300) ** (2.0 / 3.0), torch.zeros_like(B))
    X = torch.cat([B.real, B.imag], dim=1).cpu().numpy()
    X = X[:, X.std(axis=0) > 0]  # e.g. the imaginary parts of the all-m = 0 triples
    k = int(min(n_features, X.shape[0], X.shape[1]))
    if k < 1:
        raise InputError("coeffs", "too few images or invariants for a PCA")
    Z = PCA(n_components=k, svd_solver="full", random_state=seed).fit_transform(X)
    return torch.as_tensor(Z, dtype=torch.float64, device=coeffs.device)


def autocorrelation(images: torch.Tensor, circular: bool = True) -> torch.Tensor:
    """Autocorrelation of real images ``(N, D, D)`` → ``(N, D, D)``, zero lag at the centre pixel ``D//2``.

    ``ACF(t) = (1/D²) Σ_p x(p) x(p + t)`` for lags ``|t_x|, |t_y| ≤ D/2``, via ``ifft2(|fft2(x)|²)``.

    - ``circular=True``: periodic sum, ``x`` = the image minus its mean. Unchanged by every circular integer
      shift of the image; rotating the image by 90° about ``D//2`` (periodically) rotates it by 90°. Content
      wider than ``D/2`` wraps around the box, which a rotation by another angle does not commute with.
    - ``circular=False``: the linear (zero-padded to ``2D``) sum, ``x`` = the image minus the mean of its
      pixels outside the disc ``r ≥ D/2`` (the background level, so that no square pedestal is left).
      Unchanged by shifts that keep the particle inside the box, and rotation-covariant at every angle up
      to pixel sampling.
    """
    D = images.shape[-1]
    if circular:
        x = images - images.mean(dim=(-2, -1), keepdim=True)
        F = torch.fft.fft2(x)
        acf = torch.fft.ifft2(F.real ** 2 + F.imag ** 2).real / (D * D)
        return torch.fft.fftshift(acf, dim=(-2, -1))
    outside = ~disc_mask(D, device=images.device)
    x = images - images[:, outside].mean(dim=1)[:, None, None]
    F = torch.fft.fft2(torch.nn.functional.pad(x, (0, D, 0, D)))
    acf = torch.fft.fftshift(torch.fft.ifft2(F.real ** 2 + F.imag ** 2).real / (D * D), dim=(-2, -1))
    s = D - D // 2  # zero lag at index D of the 2D box → D//2 of the crop
    return acf[:, s:s + D, s:s + D]


def acf_features(images: torch.Tensor, m_max: int = 8, bandlimit: float = 0.5,
                 basis: FourierBessel | None = None, circular: bool = True) -> torch.Tensor:
    """Seed 004's autocorrelation embedding, made rotation invariant → ``(N, F)`` float64.

    1. :func:`autocorrelation` (translation invariant; ``circular`` as there).
    2. The zero-lag value — the only one that white noise raises on average (by σ²) — is replaced by the
       mean of its four neighbours.
    3. The ACF is expanded in the Fourier–Bessel basis of the box (``bandlimit`` of Nyquist, disc of radius
       ``D/2`` about the zero lag), coefficients ``c_{m,q}``.
    4. Features: ``c_{0,q}`` (real; the radial profile of the ACF, i.e. the Hankel transform of the radial
       profile of the power spectrum) and the magnitudes ``|c_{m,q}|`` for even ``m = 2, 4, …, m_max``
       (the ACF is point-symmetric, so odd m vanish): the angular-Fourier magnitudes of the ACF per radial
       function. A rotation of the image by ψ multiplies ``c_{m,q}`` by ``e^{imψ}``, which leaves ``c_{0,q}``
       and ``|c_{m,q}|`` unchanged: exactly for multiples of 90° (the disc pixels map onto themselves) and
       to interpolation error otherwise.

    Measured on three 3–4-Gaussian templates (σ 2 px, up to 8 px from the centre, D = 32) rotated
    analytically by 0.4, 1.9 and 3.7 rad: features move by ≤ 0.25 % (linear) / 3.5 % (circular: the ACF
    wraps around the box) of their norm, against ≥ 24 % between templates. Under noise the circular ACF
    is the better embedding (the default): k-means on 3 such templates, 60 randomly rotated images each,
    ARI 1.0 (circular) vs 0.48 (linear) at SNR 1 and 0.92 vs 0.08 at SNR 0.3 (m_max 8).

    Units: (pixel value)² (an ACF). ``basis`` may be passed to reuse one (its ``D`` must match).
    """
    if images.ndim != 3 or images.shape[-1] != images.shape[-2]:
        raise InputError("images", f"expected a stack (N, D, D) of square images, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise InputError("images", "images contain NaN or inf")
    D = images.shape[-1]
    fb = basis if basis is not None else FourierBessel(D, bandlimit=bandlimit, device=images.device)
    if fb.D != D:
        raise InputError("basis", f"basis is for D = {fb.D}, images have D = {D}")
    acf = autocorrelation(images.to(fb.dtype), circular=circular)
    c = D // 2
    acf[:, c, c] = 0.25 * (acf[:, c - 1, c] + acf[:, c + 1, c] + acf[:, c, c - 1] + acf[:, c, c + 1])
    a = fb.expand(acf)
    m = fb.m
    parts = [a[:, m == 0].real]
    for mm in range(2, m_max + 1, 2):
        parts.append(a[:, m == mm].abs())
    return torch.cat(parts, dim=1)


def feature_matrix(features: torch.Tensor | np.ndarray) -> np.ndarray:
    """Features ``(N, F)`` as a float64 numpy array; :class:`InputError` when not 2-D or not finite."""
    X = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError("features", f"expected (N, F), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError("features", "features contain NaN or inf")
    return X


def nearest_neighbours(features: torch.Tensor | np.ndarray, k: int, metric: str = "correlation",
                       mirrored: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """The ``k`` nearest neighbours of every row of ``features`` ``(N, F)``, self excluded → ``(N, k)`` int64.

    ``metric="correlation"``: distance ``1 − corr(f_i, f_j)`` (rows centred and scaled to unit norm, then
    Euclidean, which orders pairs the same way), as used for bispectra in RIR; ``"euclidean"``: plain.
    ``mirrored``: the features ``(N, F)`` of the mirrored images in the same embedding; image ``j`` is then a
    candidate in both hands and counts at the nearer one (a view and its opposite project to mirror images,
    RIR's reflection check), each neighbour once. Neighbours are ordered nearest first (scikit-learn
    ``NearestNeighbors``, exact search).
    """
    X = feature_matrix(features)
    N = X.shape[0]
    if not (1 <= k < N):
        raise InputError("k", f"must be in [1, N − 1] = [1, {N - 1}], got {k}")
    if metric not in ("correlation", "euclidean"):
        raise InputError("metric", f"must be 'correlation' or 'euclidean', got {metric!r}")
    pool = X if mirrored is None else np.concatenate([X, feature_matrix(mirrored)])
    if pool.shape != (N * (1 if mirrored is None else 2), X.shape[1]):
        raise InputError("mirrored", f"need the same shape as the features {X.shape}")
    if metric == "correlation":
        pool = pool - pool.mean(axis=1, keepdims=True)
        pool = pool / np.maximum(np.linalg.norm(pool, axis=1, keepdims=True), 1e-300)
    hands = pool.shape[0] // N
    n_query = min(pool.shape[0], hands * (k + 1))
    _, idx = NearestNeighbors(n_neighbors=n_query, algorithm="brute").fit(pool).kneighbors(pool[:N])
    out = np.empty((N, k), dtype=np.int64)
    for i in range(N):
        row = [j for j in dict.fromkeys((idx[i] % N).tolist()) if j != i]
        out[i] = row[:k]
    return out
