"""Patch-dictionary denoisers: the data-driven tight frame (DDTF, seed 004) and K-SVD-class sparse coding.

Both cut the images into ``p × p`` patches (columns of ``G``, ``p²`` values each), replace each patch by a
sparse approximation in a dictionary learned from the noisy patches themselves, and average the overlapping
patch estimates back into images (``torch.nn.functional.unfold`` / ``fold``: the im2col / col2im pair, batched
over images, in bands of rows for large micrographs: :func:`overlap_average`; the average divides by the
number of patches covering each pixel).

**DDTF** (Cai, Ji, Shen & Ye 2014, "Data-driven tight frame construction and image denoising", ACHA 37:89):
an orthogonal dictionary ``W = [A, D]`` (``p² × p²``) with ``A = 1/p`` the constant (DC) atom, ``DᵀD = I`` and
``AᵀD = 0``, learned by alternating minimisation of

    min_{V, D} ‖G − W V‖²_F + λ² ‖V‖₀

(i) ``V = H_λ(Wᵀ G)``: hard thresholding, ``H_λ(c) = c · [|c| > λ]`` (the DC row is never thresholded);
(ii) ``D = Q U Xᵀ`` with ``Q`` an orthonormal basis of ``A``'s complement and ``U Σ Xᵀ = Qᵀ G V_Dᵀ`` (SVD):
the orthogonal Procrustes solution restricted to ``A^⊥``. Starts from the 2-D DCT-II basis (its first atom is
``A``) or a random orthonormal ``D``. Denoising: ``Ĝ = W H_λ(Wᵀ G)`` on every patch, patches averaged.
With ``λ = 0`` the frame is the identity (exact reconstruction).

**K-SVD class** (Elad & Aharon 2006): an overcomplete dictionary learned by scikit-learn's
``MiniBatchDictionaryLearning`` (Mairal et al. 2009) on a bounded random subset of mean-removed patches scaled
by ``1/σ``; each patch coded by orthogonal matching pursuit (``sklearn.linear_model.orthogonal_mp_gram``),
either with ``n_nonzero_coefs`` atoms or, by default, until ``‖residual‖² ≤ p² (gain · σ)²``; patch means are
kept.

The noise std ``σ`` is estimated per image from the data (:func:`.classical.estimate_noise_sigma`) unless the
config gives it; thresholds are multiples of ``σ``. Both estimate the CTF-AFFECTED clean image
(``REMOVES_CTF = False``); the CTF is accepted and ignored.

Defaults measured on simulated AdK particles (64 px, CTF 1–2.5 µm), mean PSNR over SNR 0.8–0.01: DDTF patch
8/10/12 × threshold 3/3.5/4 σ: 10 px, 3.5σ (25.6 dB; 12 px +0.1 dB at 2.4× the time); the learned frame
gains only 0.02–0.25 dB over its DCT start on these images (and recovers most of it from a random start).
K-SVD: OMP gain 1.0–1.4 (1.2), stride 2/3/4 (2), ℓ1 weight 0.3/1/3 (3, and 8× faster than 0.3);
fixed sparsity (2 atoms a patch) is 6 dB worse than the σ-tied tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from ...io.errors import InputError
from .classical import check_images, estimate_noise_sigma

__all__ = ["DDTFConfig", "KSVDConfig", "denoise_ddtf", "denoise_ksvd", "learn_ddtf", "dct_basis",
           "overcomplete_dct", "overlap_average", "REMOVES_CTF"]

REMOVES_CTF = False


# ---------------------------------------------------------------------------------------------- patches

def _pad_for_stride(x: torch.Tensor, p: int, stride: int) -> torch.Tensor:
    """``(B, 1, H, W)`` reflect-padded at the bottom/right so that patches of ``p`` at ``stride`` cover it."""
    H, W = x.shape[-2:]
    ph, pw = (-(H - p)) % stride, (-(W - p)) % stride
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < H and pw < W else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def overlap_average(x: torch.Tensor, p: int, stride: int, estimate, progress=None, budget: int = 2 ** 22
                    ) -> torch.Tensor:
    """Replace every ``p × p`` patch of ``x`` ``(N, H, W)`` at ``stride`` by ``estimate``'s version of it and
    average the overlapping estimates pixel by pixel, ``(N, H, W)``.

    The images are reflect-padded at the bottom/right so the patches cover every pixel. ``estimate(band)``
    gets ``(B, h, w)`` images with ``(h − p)`` and ``(w − p)`` multiples of ``stride`` and returns
    ``(B, p², L)`` patch estimates in ``F.unfold`` order (row-major pixels, patches row by row). At most
    about ``budget`` patch values exist at a time: small images go in batches, a large micrograph in bands
    of patch rows, so memory is bounded for any image size. The sums and counts of
    ``F.fold`` (col2im) give the average.
    """
    N, H, W = x.shape
    xp = _pad_for_stride(x[:, None], p, stride)[:, 0]
    Hp, Wp = xp.shape[-2:]
    rows, cols = (Hp - p) // stride + 1, (Wp - p) // stride + 1
    per_row = cols * p * p
    out = torch.empty_like(x)
    if rows * per_row <= budget:                        # whole images, several at a time
        step = max(1, budget // (rows * per_row))
        for i in range(0, N, step):
            est = estimate(xp[i:i + step])
            s = F.fold(est, (Hp, Wp), p, stride=stride)
            n = F.fold(torch.ones_like(est[:1]), (Hp, Wp), p, stride=stride)
            out[i:i + step] = (s / n)[:, 0, :H, :W]
            if progress is not None:
                progress.advance(est.shape[0])
        return out
    k = max(1, budget // per_row)                        # one image in bands of k patch rows
    for i in range(N):
        acc, cnt = torch.zeros(Hp, Wp), torch.zeros(Hp, Wp)
        for r0 in range(0, rows, k):
            top, h = r0 * stride, (min(rows, r0 + k) - 1 - r0) * stride + p
            est = estimate(xp[i:i + 1, top:top + h])
            acc[top:top + h] += F.fold(est, (h, Wp), p, stride=stride)[0, 0]
            cnt[top:top + h] += F.fold(torch.ones_like(est), (h, Wp), p, stride=stride)[0, 0]
        out[i] = (acc / cnt)[:H, :W]
        if progress is not None:
            progress.advance(1)
    return out


def _sigmas(x: torch.Tensor, sigma: float | None) -> np.ndarray:
    return np.full(len(x), float(sigma)) if sigma is not None else estimate_noise_sigma(x)


def _in_sigma_units(x: torch.Tensor, sig: np.ndarray, fn, progress=None) -> torch.Tensor:
    """``σ · fn(x / σ)`` image by image; images with ``σ = 0`` (noiseless) come back unchanged."""
    noisy = sig > 0
    out = x.clone()
    if progress is not None and not noisy.all():
        progress.advance(int((~noisy).sum()))
    if noisy.any():
        idx = torch.from_numpy(np.flatnonzero(noisy))
        s = torch.as_tensor(sig[noisy], dtype=torch.float32)[:, None, None]
        out[idx] = fn(x[idx] / s) * s
    return out


def _learning_patches(x: torch.Tensor, p: int, max_patches: int, seed: int, scale: np.ndarray | None = None
                      ) -> np.ndarray:
    """At most ``max_patches`` patches ``(p², m)`` float64 drawn uniformly (without replacement) from all
    stride-1 patch positions of all images, each divided by ``scale[image]`` when given."""
    N, H, W = x.shape
    per = (H - p + 1) * (W - p + 1)
    rng = np.random.default_rng(seed)
    total = N * per
    idx = np.sort(rng.choice(total, size=min(max_patches, total), replace=False))
    img, pos = idx // per, idx % per
    r, c = pos // (W - p + 1), pos % (W - p + 1)
    win = np.lib.stride_tricks.sliding_window_view(x.numpy(), (p, p), axis=(1, 2))  # (N, H-p+1, W-p+1, p, p)
    G = win[img, r, c].reshape(len(idx), p * p).astype(np.float64)
    if scale is not None:
        G = G / scale[img][:, None]
    return G.T


# ---------------------------------------------------------------------------------------------- DDTF

def dct_basis(p: int) -> np.ndarray:
    """The orthonormal 2-D DCT-II basis of ``p × p`` patches, ``(p², p²)`` float64, one atom per column
    (row-major pixels); atom 0 is the constant ``1/p``."""
    from scipy.fft import dct
    C = dct(np.eye(p), type=2, norm="ortho", axis=0).T  # columns: 1-D atoms, C[:, 0] = 1/sqrt(p)
    return np.kron(C, C)


@dataclass
class DDTFConfig:
    """Options of :func:`denoise_ddtf`.

    Attributes:
        patch: patch side ``p`` in pixels (atoms of ``p²`` pixels).
        stride: step between denoised patches (1: every position, best; larger: faster).
        threshold: denoising threshold ``λ = threshold · σ`` (per image ``σ``).
        learn_threshold: threshold of the learning (``λ = learn_threshold · median σ``); None: ``threshold``.
        iterations: alternations of thresholding and the Procrustes update.
        max_patches: patches drawn at random from all images to learn from.
        init: ``dct`` (the 2-D DCT-II) or ``random`` (a random orthonormal ``D ⊥ A``).
        sigma: noise std in image units (None: estimated per image from the data).
        seed: random seed (patch subset, random init).
    """

    patch: int = 10
    stride: int = 1
    threshold: float = 3.5
    learn_threshold: float | None = None
    iterations: int = 10
    max_patches: int = 10000
    init: str = "dct"
    sigma: float | None = None
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`InputError` naming the first invalid option."""
        checks = [(self.patch >= 2, "patch", "must be ≥ 2"), (self.stride >= 1, "stride", "must be ≥ 1"),
                  (self.stride <= self.patch, "stride", "must be ≤ patch (every pixel covered)"),
                  (math.isfinite(self.threshold) and self.threshold >= 0, "threshold", "must be ≥ 0"),
                  (self.learn_threshold is None or (math.isfinite(self.learn_threshold) and self.learn_threshold >= 0),
                   "learn_threshold", "must be ≥ 0"),
                  (self.iterations >= 0, "iterations", "must be ≥ 0"),
                  (self.max_patches >= 1, "max_patches", "must be ≥ 1"),
                  (self.init in ("dct", "random"), "init", "must be dct or random"),
                  (self.sigma is None or (math.isfinite(self.sigma) and self.sigma >= 0), "sigma", "must be ≥ 0"),
                  (self.seed >= 0, "seed", "must be ≥ 0")]
        for ok, where, problem in checks:
            if not ok:
                raise InputError(where, f"{problem}, got {getattr(self, where)}")


def learn_ddtf(G: np.ndarray, lam: float, iterations: int = 30, init: str = "dct", seed: int = 0) -> np.ndarray:
    """Learn the DDTF ``W = [A, D]`` ``(p², p²)`` from patches ``G`` ``(p², m)`` with threshold ``λ = lam``.

    Alternates ``V = H_λ(Wᵀ G)`` (DC row kept) and ``D = Q U Xᵀ``, ``U Σ Xᵀ = svd(Qᵀ G V_Dᵀ)``, with ``Q`` the
    non-constant DCT atoms (an orthonormal basis of ``A^⊥``). Each step lowers ``‖G − W V‖² + λ²‖V‖₀``.
    Returns ``W`` with orthonormal columns, ``W[:, 0] = 1/p``.
    """
    r = G.shape[0]
    p = int(round(math.sqrt(r)))
    B = dct_basis(p)
    Q = B[:, 1:]
    if init == "random":
        E, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((r - 1, r - 1)))
    else:
        E = np.eye(r - 1)
    W = np.concatenate([B[:, :1], Q @ E], axis=1)
    G32 = torch.from_numpy(np.ascontiguousarray(G, dtype=np.float32))  # the big products in float32
    # These products are small (~0.1 GFlop): one thread does them at full speed, while intra-op threads on a
    # busy CPU make them (and the 100 × 100 SVD) 10–100× slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            for _ in range(iterations):
                V = torch.from_numpy(W.astype(np.float32)).T @ G32
                V = V[1:] * (V[1:].abs() > lam)
                U, _, Xt = np.linalg.svd(Q.T @ (G32 @ V.T).double().numpy())   # (r−1, r−1), in float64
                W[:, 1:] = Q @ (U @ Xt)
    finally:
        torch.set_num_threads(threads)
    return W


def denoise_ddtf(images: torch.Tensor, ctf=None, apix: float = 1.0, cfg: DDTFConfig | None = None,
                 progress=None, return_frame: bool = False):
    """Denoise ``images`` with a data-driven tight frame learned from their own patches.

    Args:
        images: ``(N, H, W)`` float32, any value range, ``H, W ≥ patch``; not modified.
        ctf: ignored (the output keeps the CTF). apix: ignored.
        cfg: :class:`DDTFConfig` (None: the defaults). progress: optional ``.advance(n)`` (images denoised).
        return_frame: also return the learned ``W`` ``(p², p²)`` float64.
    Returns:
        ``(N, H, W)`` float32 CPU tensor (the CTF-affected clean estimate), and ``W`` with ``return_frame``.
    """
    cfg = cfg or DDTFConfig()
    cfg.check()
    x = check_images(images, min_size=cfg.patch)
    p = cfg.patch
    sig = _sigmas(x, cfg.sigma)
    lam_learn = (cfg.threshold if cfg.learn_threshold is None else cfg.learn_threshold) * float(np.median(sig))
    G = _learning_patches(x, p, cfg.max_patches, cfg.seed)
    W = learn_ddtf(G, lam_learn, cfg.iterations, cfg.init, cfg.seed)
    Wt = torch.from_numpy(W).to(torch.float32)
    atoms = Wt.T.reshape(p * p, 1, p, p)

    def estimate(band: torch.Tensor) -> torch.Tensor:      # band in units of σ: λ = threshold
        coef = F.conv2d(band[:, None], atoms, stride=cfg.stride).flatten(2)   # (B, p², L) = Wᵀ G
        kept = F.hardshrink(coef, cfg.threshold)                              # H_λ(c) = c · [|c| > λ]
        kept[:, 0] = coef[:, 0]                                               # DC never thresholded
        return Wt @ kept

    out = _in_sigma_units(x, sig, lambda y: overlap_average(y, p, cfg.stride, estimate, progress), progress)
    return (out, W) if return_frame else out


# ---------------------------------------------------------------------------------------------- K-SVD class

def overcomplete_dct(p: int, k: int) -> np.ndarray:
    """Elad & Aharon's (2006) overcomplete 2-D DCT dictionary without its constant atom: ``(k² − 1, p²)``
    float64, unit-norm rows (row-major pixels); 1-D atoms ``cos(π i j / k)``, ``i < p``, ``j < k``, mean
    removed for ``j > 0``."""
    i, j = np.arange(p)[:, None], np.arange(k)[None, :]
    C = np.cos(np.pi * i * j / k)
    C[:, 1:] -= C[:, 1:].mean(axis=0)
    C /= np.linalg.norm(C, axis=0)
    return np.kron(C, C).T[1:]


@dataclass
class KSVDConfig:
    """Options of :func:`denoise_ksvd`. Patch values are in units of the noise std ``σ``.

    Attributes:
        patch: patch side ``p`` in pixels.
        n_atoms: atoms of the dictionary (overcomplete: > ``p² − 1``); the initial dictionary is the
            overcomplete DCT with ``ceil(sqrt(n_atoms + 1))²`` − 1 atoms, the first ``n_atoms`` kept.
        alpha: ℓ1 weight of the dictionary learning (scikit-learn's ``alpha``, patches in units of ``σ``).
        max_patches: random patches (all images together) to learn from; learn_epochs: passes over them.
        batch_size: mini-batch of the learning.
        n_nonzero_coefs: atoms per patch (None: error-constrained OMP, stop when
            ``‖residual‖² ≤ p² · gain²``, i.e. ``(gain · σ)²`` per pixel).
        gain: the tolerance factor of the error-constrained OMP (Elad & Aharon: 1.15; 1.2 measured best here).
        stride: step between coded patches (OMP costs ~50–200 µs a coded patch: stride 1 is 4× slower than 2).
        sigma: noise std in image units (None: estimated per image). seed: random seed.
    """

    patch: int = 8
    n_atoms: int = 255
    alpha: float = 3.0
    max_patches: int = 2000
    learn_epochs: int = 1
    batch_size: int = 256
    n_nonzero_coefs: int | None = None
    gain: float = 1.2
    stride: int = 2
    sigma: float | None = None
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`InputError` naming the first invalid option."""
        checks = [(self.patch >= 2, "patch", "must be ≥ 2"), (self.stride >= 1, "stride", "must be ≥ 1"),
                  (self.stride <= self.patch, "stride", "must be ≤ patch (every pixel covered)"),
                  (self.n_atoms >= 1, "n_atoms", "must be ≥ 1"),
                  (math.isfinite(self.alpha) and self.alpha > 0, "alpha", "must be > 0"),
                  (self.max_patches >= 1, "max_patches", "must be ≥ 1"),
                  (self.learn_epochs >= 1, "learn_epochs", "must be ≥ 1"),
                  (self.batch_size >= 1, "batch_size", "must be ≥ 1"),
                  (self.n_nonzero_coefs is None or 1 <= self.n_nonzero_coefs <= self.n_atoms, "n_nonzero_coefs",
                   "must be 1 to n_atoms"),
                  (math.isfinite(self.gain) and self.gain > 0, "gain", "must be > 0"),
                  (self.sigma is None or (math.isfinite(self.sigma) and self.sigma >= 0), "sigma", "must be ≥ 0"),
                  (self.seed >= 0, "seed", "must be ≥ 0")]
        for ok, where, problem in checks:
            if not ok:
                raise InputError(where, f"{problem}, got {getattr(self, where)}")


def _learn_dictionary(X: np.ndarray, cfg: KSVDConfig):
    """scikit-learn's ``MiniBatchDictionaryLearning`` fitted to mean-free patches ``X`` ``(m, p²)``."""
    import warnings

    from sklearn.decomposition import MiniBatchDictionaryLearning
    from sklearn.exceptions import ConvergenceWarning
    k = math.ceil(math.sqrt(cfg.n_atoms + 1))
    init = overcomplete_dct(cfg.patch, k)[:cfg.n_atoms]
    model = MiniBatchDictionaryLearning(n_components=cfg.n_atoms, alpha=cfg.alpha, max_iter=cfg.learn_epochs,
                                        batch_size=min(cfg.batch_size, len(X)), fit_algorithm="cd",
                                        dict_init=init, transform_algorithm="omp",
                                        transform_n_nonzero_coefs=cfg.n_nonzero_coefs, random_state=cfg.seed)
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):  # small solves: threads only cost
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


def _omp_code(model, X: np.ndarray, cfg: KSVDConfig) -> np.ndarray:
    """Sparse codes ``(n, n_atoms)`` of mean-free patches ``X`` ``(n, p²)`` (units of ``σ``) by OMP."""
    from sklearn.linear_model import orthogonal_mp_gram
    if cfg.n_nonzero_coefs is not None:
        return model.transform(X)
    code = np.zeros((len(X), cfg.n_atoms))
    tol = cfg.patch ** 2 * cfg.gain ** 2
    norms = np.einsum("ij,ij->i", X, X)
    busy = norms > tol            # the others meet the tolerance with no atom: code 0, the patch mean only
    if busy.any():
        D = model.components_
        code[busy] = orthogonal_mp_gram(D @ D.T, D @ X[busy].T, tol=tol, norms_squared=norms[busy]).T
    return code


def denoise_ksvd(images: torch.Tensor, ctf=None, apix: float = 1.0, cfg: KSVDConfig | None = None,
                 progress=None) -> torch.Tensor:
    """Denoise ``images`` by sparse coding of their patches in a dictionary learned from them (scikit-learn).

    Patches (scaled by ``1/σ`` per image, mean removed) are coded by OMP in the learned dictionary, rebuilt
    with their means, scaled back and averaged where they overlap.

    Args:
        images: ``(N, H, W)`` float32, any value range, ``H, W ≥ patch``; not modified.
        ctf: ignored (the output keeps the CTF). apix: ignored.
        cfg: :class:`KSVDConfig` (None: the defaults). progress: optional ``.advance(n)`` (images denoised).
    Returns:
        ``(N, H, W)`` float32 CPU tensor (the CTF-affected clean estimate).
    """
    cfg = cfg or KSVDConfig()
    cfg.check()
    x = check_images(images, min_size=cfg.patch)
    p = cfg.patch
    sig = _sigmas(x, cfg.sigma)
    if not (sig > 0).any():
        return x.clone()
    X = _learning_patches(x, p, cfg.max_patches, cfg.seed, scale=np.where(sig > 0, sig, np.inf)).T
    model = _learn_dictionary(X - X.mean(axis=1, keepdims=True), cfg)

    def estimate(band: torch.Tensor) -> torch.Tensor:      # band in units of σ
        cols = F.unfold(band[:, None], p, stride=cfg.stride)                  # (B, p², L)
        B, r, L = cols.shape
        P = cols.transpose(1, 2).reshape(B * L, r).double().numpy()
        mean = P.mean(axis=1, keepdims=True)
        with threadpool_limits(1, user_api="blas"):  # OMP's many tiny solves: threads only cost time
            rec = _omp_code(model, P - mean, cfg) @ model.components_ + mean
        return torch.from_numpy(rec.astype(np.float32)).reshape(B, L, r).transpose(1, 2)

    out = _in_sigma_units(x, sig, lambda y: overlap_average(y, p, cfg.stride, estimate, progress), progress)
    return out
