"""Compiled CPU loops (numba) for the two steps of simulation that torch does slowly on a CPU.

- :func:`add_normal_noise`: ``images += σ · N(0, 1)`` from a counter-based generator. torch's CPU normal
  generator draws from one serial Mersenne twister (about 4 ns per value here); this one hashes a counter
  and runs vectorised (about 0.5 ns per value on one core), and its values depend only on
  ``(seed, image index, pixel)``, so any chunking gives the same bits.
- :func:`splat_cubic_bspline`: adds each atom's 4 × 4 cubic B-spline weights to a periodic grid
  (the scatter of :func:`cryoscape.physics.gaussian.splat_atoms`, which is the reference and the
  differentiable, device-agnostic version; the two agree to float32 round-off).

Random numbers. The pair counter ``c = image · ⌈P/2⌉ + j`` (``P`` pixels per image) goes through
SplitMix64 (Steele, Lea & Flood 2014): ``x = mix(key + (c + 1)·γ)``, ``γ = 0x9E3779B97F4A7C15``.
The high 32 bits ``y`` give ``a = y / 2³²`` (``y`` made odd, so ``a > 0``); the low bits give an angle
``θ`` uniform on the circle (2 bits of quadrant, 24 bits within it). Box–Muller then gives two
independent normals ``sqrt(−2 ln a) · (cos θ, sin θ)``. ``−ln a`` is a series in ``artanh`` whose
argument is at most 1/3 and is formed without cancellation: from ``1 − a`` (exact in integers) when
``a ≥ ½``, and as ``(e − 32)·ln 2 − ln m`` with ``y = m·2^e``, ``m ∈ [1, 2)`` (``e`` from the leading-zero
count) otherwise. sin and cos of the angle within its quadrant (``|φ| ≤ π/4``) are Taylor series to the
9th/10th power. Every value is within 2e-6 + 2e-6·|value| of the exact formula evaluated in float64 on the
same bits (tested on a million values). The largest value it can draw is ``sqrt(64 ln 2) ≈ 6.66``. The
loops do not use fast-math, so the bits do not depend on which x86 processor runs them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros

__all__ = ["add_normal_noise", "normal_noise", "splat_cubic_bspline", "noise_key"]

_GAMMA = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def _splitmix_py(z: int) -> int:
    z = (z + _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def noise_key(seed: int, stream: int = 0) -> int:
    """64-bit key of the generator for a user seed (and a stream number, for independent uses)."""
    return _splitmix_py(_splitmix_py(int(seed) & _MASK64) ^ (int(stream) & _MASK64))


# Module-level constants are compile-time constants to numba (kernels defined inside a function would be
# closures, which numba's disk cache cannot match from one process to the next).
_u64, _f32 = np.uint64, np.float32
_GAMMA_U64 = _u64(_GAMMA)
_LN2 = _f32(math.log(2.0))
_HALF_PI = _f32(math.pi / 2)


@njit(inline="always", error_model="numpy")
def _mix(z):
    z = (z ^ (z >> _u64(30))) * _u64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _u64(27))) * _u64(0x94D049BB133111EB)
    return z ^ (z >> _u64(31))


@njit(inline="always", error_model="numpy")
def _normal_pair(x):
    """Two independent N(0, 1) values from 64 random bits (Box–Muller, see the module docstring)."""
    y = (x >> _u64(32)) | _u64(1)                             # a = y / 2³² ∈ (0, 1)
    z = leading_zeros(y)                                      # 32..63
    # −ln a = 2 artanh(t) = 2 (t + t³/3 + … + t¹¹/11), t ∈ [0, 1/3], with t chosen so nothing cancels:
    # a ≥ ½ (z = 32): 1 − a = d = (2³² − y)/2³² exactly, −ln a = 2 artanh(d / (2 − d));
    # a < ½: y = m·2^(63−z), m ∈ [1, 2], −ln a = (z − 31) ln 2 − 2 artanh((m − 1)/(m + 1)).
    top = _f32(z == _u64(32))                                 # 1 or 0: blended, not branched (vectorises)
    m = _f32(y << z) * _f32(2.0 ** -63)
    d = _f32((_u64(1) << _u64(32)) - y) * _f32(2.0 ** -32)
    t = (top * d + (_f32(1) - top) * (m - _f32(1))) / (top * (_f32(2) - d) + (_f32(1) - top) * (m + _f32(1)))
    t2 = t * t
    series = _f32(2) * t * (_f32(1) + t2 * (_f32(1 / 3) + t2 * (_f32(1 / 5) + t2 * (
        _f32(1 / 7) + t2 * (_f32(1 / 9) + t2 * _f32(1 / 11))))))
    minus_ln_a = (_f32(1) - top) * _f32(z - _u64(31)) * _LN2 + (_f32(2) * top - _f32(1)) * series
    r = math.sqrt(_f32(2) * minus_ln_a)
    lo = x & _u64(0xFFFFFFFF)
    q = lo >> _u64(30)                                        # quadrant 0..3: θ = φ + q·π/2
    phi = (_f32(lo & _u64(0xFFFFFF)) * _f32(2.0 ** -24) - _f32(0.5)) * _HALF_PI
    p2 = phi * phi
    sn = phi * (_f32(1) - p2 * (_f32(1 / 6) - p2 * (_f32(1 / 120) - p2 * (
        _f32(1 / 5040) - p2 * _f32(1 / 362880)))))
    cs = _f32(1) - p2 * (_f32(0.5) - p2 * (_f32(1 / 24) - p2 * (_f32(1 / 720) - p2 * (
        _f32(1 / 40320) - p2 * _f32(1 / 3628800)))))
    odd = (q & _u64(1)) != 0
    sign = _f32(-1) if q >= _u64(2) else _f32(1)
    c_q = -sn if odd else cs
    s_q = cs if odd else sn
    return r * sign * c_q, r * sign * s_q


@njit(nogil=True, error_model="numpy", cache=True)
def _add_noise_kernel(out, sigma, key, first):  # out: (N, P) float32, += σ·noise in place
    # One array only: with a separate source array numba cannot rule out aliasing, and the loop stops
    # vectorising when the two are the same (10× slower).
    n, p = out.shape
    half = (p + 1) // 2
    for i in range(n):
        base = key + _u64(first + i) * _u64(half) * _GAMMA_U64
        for j in range(p // 2):
            a, b = _normal_pair(_mix(base + _u64(j + 1) * _GAMMA_U64))
            out[i, 2 * j] += sigma * a
            out[i, 2 * j + 1] += sigma * b
        if p % 2:
            a, b = _normal_pair(_mix(base + _u64(half) * _GAMMA_U64))
            out[i, p - 1] += sigma * a


@njit(inline="always", error_model="numpy", fastmath=True)
def _spline4(u):
    """Cubic B-spline weights of the nodes −1, 0, 1, 2 for a point at fraction u ∈ [0, 1)."""
    s = _f32(1) - u
    u2 = u * u
    u3 = u2 * u
    return (s * s * s * _f32(1 / 6), (_f32(3) * u3 - _f32(6) * u2 + _f32(4)) * _f32(1 / 6),
            (_f32(-3) * u3 + _f32(3) * u2 + _f32(3) * u + _f32(1)) * _f32(1 / 6), u3 * _f32(1 / 6))


@njit(nogil=True, error_model="numpy", cache=True, fastmath=True)
def _splat_kernel(coords, conf, R, shifts, inv_apix, origin, w, out):
    # coords (F, A, 3) Å; conf (N,) frame of each image; R (N, 3, 3); shifts (N, 2) Å; w (A,);
    # out (N, D, D) zeroed. Atom k of image i lands at x = ((R_i x_k)_x + t_x)/apix + origin (same for y).
    n, D = out.shape[0], out.shape[1]
    a_count = coords.shape[1]
    flat = out.reshape(n, D * D)
    for i in range(n):
        img = flat[i]
        xyz = coords[conf[i]]
        xs = np.empty(a_count, np.float32)
        ys = np.empty(a_count, np.float32)
        r00, r01, r02, r10, r11, r12 = R[i, 0, 0], R[i, 0, 1], R[i, 0, 2], R[i, 1, 0], R[i, 1, 1], R[i, 1, 2]
        tx, ty = shifts[i, 0] * inv_apix + origin, shifts[i, 1] * inv_apix + origin
        for k in range(a_count):  # positions in pixels: a vectorised loop
            xs[k] = (r00 * xyz[k, 0] + r01 * xyz[k, 1] + r02 * xyz[k, 2]) * inv_apix + tx
            ys[k] = (r10 * xyz[k, 0] + r11 * xyz[k, 1] + r12 * xyz[k, 2]) * inv_apix + ty
        for k in range(a_count):
            fx, fy = math.floor(xs[k]), math.floor(ys[k])
            a0, a1, a2, a3 = _spline4(xs[k] - fx)
            b0, b1, b2, b3 = _spline4(ys[k] - fy)
            wk = w[k]
            x0, y0 = np.int64(fx) - 1, np.int64(fy) - 1
            if 0 <= x0 and x0 + 3 < D and 0 <= y0 and y0 + 3 < D:   # inside: no wrapping
                p = y0 * D + x0
                for wr in (b0 * wk, b1 * wk, b2 * wk, b3 * wk):
                    img[p] += wr * a0
                    img[p + 1] += wr * a1
                    img[p + 2] += wr * a2
                    img[p + 3] += wr * a3
                    p += D
            else:
                c0, c1, c2, c3 = x0 % D, (x0 + 1) % D, (x0 + 2) % D, (x0 + 3) % D
                r = y0
                for wr in (b0 * wk, b1 * wk, b2 * wk, b3 * wk):
                    p = (r % D) * D
                    img[p + c0] += wr * a0
                    img[p + c1] += wr * a1
                    img[p + c2] += wr * a2
                    img[p + c3] += wr * a3
                    r += 1


def add_normal_noise(images: np.ndarray, sigma: float, key: int, first_image: int) -> np.ndarray:
    """In place: ``images[i] += σ · n(key, first_image + i)``, white normal noise of each image.

    Args:
        images: ``(N, ...)`` C-contiguous, writeable float32 array (e.g. ``(N, D, D)``).
        sigma: noise standard deviation (the images' units).
        key: generator key from :func:`noise_key`.
        first_image: global index of ``images[0]`` in the dataset (so chunks draw disjoint noise).
    Returns:
        ``images``.
    """
    if images.dtype != np.float32 or not images.flags.c_contiguous or not images.flags.writeable:
        raise ValueError("add_normal_noise needs a writeable C-contiguous float32 array")
    if images.size:
        _add_noise_kernel(images.reshape(len(images), -1), np.float32(sigma), np.uint64(key), int(first_image))
    return images


def normal_noise(shape: tuple[int, ...], key: int, first_image: int = 0) -> np.ndarray:
    """Standard normal values ``(N, ...)`` float32 from the same generator as :func:`add_normal_noise`."""
    return add_normal_noise(np.zeros(shape, dtype=np.float32), 1.0, key, first_image)


def splat_cubic_bspline(coords: np.ndarray, conf: np.ndarray, R: np.ndarray, shifts: np.ndarray, apix: float,
                        weights: np.ndarray | None, D: int, origin: int = 0,
                        out: np.ndarray | None = None) -> np.ndarray:
    """Project and splat atoms: ``grid[i, r, c] = Σ_a w_a β(r − y_ia) β(c − x_ia)`` (indices mod D), with
    ``(x_ia, y_ia) = ((R_i x_a)_{x,y} + t_i) / apix + origin`` in pixels from grid index 0.

    Args:
        coords: ``(F, A, 3)`` atom positions of every conformation, Å. conf: ``(N,)`` conformation of
            each image. R: ``(N, 3, 3)`` poses. shifts: ``(N, 2)`` in-plane shifts, Å. apix: Å/pixel.
        weights: ``(A,)`` atom weights, or None for 1. D: grid size.
        origin: grid index of the image origin. ``D // 2`` keeps a centred particle away from the edges,
            where the wrap-around is slower; 0 gives the ``ifftshift`` layout directly.
        out: optional ``(N, D, D)`` float32 C-contiguous array to reuse (it is zeroed first).
    Returns:
        ``(N, D, D)`` float32; β is the centred cubic B-spline (support ±2 pixels, unit integral).
    """
    f32 = np.float32
    coords = np.ascontiguousarray(coords, dtype=f32)
    w = np.ones(coords.shape[1], f32) if weights is None else np.ascontiguousarray(weights, f32)
    if out is None:
        out = np.zeros((len(conf), D, D), dtype=f32)
    else:
        if out.shape != (len(conf), D, D) or out.dtype != f32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {(len(conf), D, D)}")
        out.fill(0)
    _splat_kernel(coords, np.ascontiguousarray(conf, dtype=np.int64), np.ascontiguousarray(R, dtype=f32),
                 np.ascontiguousarray(shifts, dtype=f32), f32(1 / apix), f32(origin), w, out)
    return out
