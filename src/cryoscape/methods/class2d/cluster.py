"""Clustering of images on rotation-invariant features (scikit-learn), and images → features.

``embed`` turns a stack of images into features (``features``), ``cluster_features`` partitions them with
k-means or a Gaussian mixture. Both are deterministic for a given ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from ...io.errors import InputError
from ...physics.steerable import FourierBessel, noise_variance_outside_disc, steerable_pca
from .features import acf_features, bispectrum_features, feature_matrix, nearest_neighbours, power_spectrum_features

__all__ = ["cluster_features", "embed", "image_neighbours"]


def cluster_features(features: torch.Tensor | np.ndarray, n_clusters: int, method: str = "kmeans",
                     seed: int = 0, n_init: int = 10, standardize: bool = False,
                     covariance_type: str = "diag") -> np.ndarray:
    """Cluster labels ``(N,)`` int64 in ``0 .. n_clusters − 1`` for features ``(N, F)``.

    ``standardize``: scale each feature column to unit variance first (constant columns left as they are).
    Off by default: the features of ``features`` are in common units, and after a PCA (bispectrum) scaling
    would inflate the low-variance, noise-dominated components; on 3 rotated templates at SNR 1 (D = 32)
    it took k-means on bispectra from ARI 1.0 to 0.28.
    ``method="kmeans"``: ``KMeans(n_clusters, n_init=n_init, random_state=seed)`` (best of ``n_init``
    k-means++ starts by inertia). ``method="gmm"``: ``GaussianMixture(n_clusters, covariance_type,
    n_init=n_init, random_state=seed)``, labels = most probable component.
    """
    X = feature_matrix(features)
    N = X.shape[0]
    if not (1 <= n_clusters <= N):
        raise InputError("n_clusters", f"must be between 1 and the number of images ({N}), got {n_clusters}")
    if n_init < 1:
        raise InputError("n_init", f"must be ≥ 1, got {n_init}")
    if standardize:
        X = X - X.mean(axis=0)
        sd = X.std(axis=0)
        X = X / np.where(sd > 0, sd, 1.0)
    if method == "kmeans":
        labels = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(X)
    elif method == "gmm":
        labels = GaussianMixture(n_components=n_clusters, covariance_type=covariance_type, n_init=n_init,
                                 random_state=seed).fit(X).predict(X)
    else:
        raise InputError("method", f"must be 'kmeans' or 'gmm', got {method!r}")
    return labels.astype(np.int64)


def embed(images: torch.Tensor, kind: str = "acf", *, n_features: int = 32, noise_var: float | None = None,
          n_components: int = 40, bandlimit: float | None = None, m_max: int = 8, circular: bool = True,
          seed: int = 0) -> torch.Tensor:
    """Rotation-invariant features ``(N, F)`` float64 of images ``(N, D, D)`` (particle inside the disc D/2).

    - ``kind="acf"``: :func:`~.features.acf_features` (``m_max``, ``circular``, ``bandlimit`` default 0.5);
      also invariant to shifts (circular ones exactly, with the default ``circular=True``).
    - ``kind="power"`` / ``"bispectrum"``: the images are expanded in a :class:`FourierBessel` basis
      (``bandlimit`` default 1), a steerable PCA with ``n_components`` is fitted with the noise variance
      ``noise_var`` (σ² per pixel; by default estimated from the pixels outside the disc, and no noise
      shrinkage when that estimate is 0), and the Wiener-filtered sPCA coefficients give
      :func:`~.features.power_spectrum_features` (``cross=True``) or
      :func:`~.features.bispectrum_features` (``n_features`` after PCA).
    """
    if images.ndim != 3 or images.shape[-1] != images.shape[-2]:
        raise InputError("images", f"expected a stack (N, D, D) of square images, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise InputError("images", "images contain NaN or inf")
    if kind == "acf":
        return acf_features(images, m_max=m_max, bandlimit=0.5 if bandlimit is None else bandlimit, circular=circular)
    if kind not in ("power", "bispectrum"):
        raise InputError("kind", f"must be 'acf', 'power' or 'bispectrum', got {kind!r}")
    fb = FourierBessel(images.shape[-1], bandlimit=1.0 if bandlimit is None else bandlimit, device=images.device)
    coeffs = fb.expand(images)
    if noise_var is None:
        est = noise_variance_outside_disc(images)
        noise_var = est if est > 1e-12 * float(images.to(torch.float64).var()) else None
    spca = steerable_pca(coeffs, fb, n_components=n_components, noise_var=noise_var)
    if kind == "power":
        return power_spectrum_features(spca.wiener(), spca, cross=True)
    return bispectrum_features(spca.wiener(), spca, n_features=n_features, seed=seed)


def image_neighbours(images: torch.Tensor, k: int, kind: str = "bispectrum", mirror: bool = True, seed: int = 0,
                     n_features: int = 200, n_components: int = 120, **embed_options) -> np.ndarray:
    """The ``k`` nearest neighbours ``(N, k)`` of each image in rotation-invariant features (:func:`embed`);
    with ``mirror`` the mirrored images are embedded alongside and a neighbour counts in either hand
    (:func:`~cryoscape.methods.class2d.features.nearest_neighbours` ``mirrored=``).

    Defaults measured on 1,000 phase-flipped AdK images of 32 px at SNR 1 (share of the 9 neighbours within
    10° of the view, ``benchmarks/class2d_vs_aspire.py --part neighbours``): bispectrum with 32 features
    and 40 sPCA components 0.20 (0.26 with mirrors), 128 / 80: 0.26 (0.34), 200 / 120: 0.26 (0.35)."""
    from ...physics.transform2d import mirror_images

    N = images.shape[0]
    both = embed(torch.cat([images, mirror_images(images)]) if mirror else images, kind=kind, seed=seed,
                 n_features=n_features, n_components=n_components, **embed_options)
    return nearest_neighbours(both[:N], k, mirrored=both[N:] if mirror else None)

