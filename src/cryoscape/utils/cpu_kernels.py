"""Compiled CPU loops (numba) for the two steps of simulation that torch does slowly on a CPU.

- :func:`add_normal_noise`: ``images += σ · N(0, 1)`` from a counter-based generator. torch's CPU normal
  generator draws from one serial Mersenne twister (about 4 ns per value here); this one hashes a counter
  and runs vectorised on all cores (about 0.25 ns per value with 2 threads), and its values depend only
  on ``(seed, image index, pixel)``, so any chunking or thread count gives the same bits.
- :func:`splat_cubic_bspline`: adds each atom's 4 × 4 cubic B-spline weights to a periodic grid
  (the scatter of :func:`cryoscape.physics.gaussian.splat_atoms`, which is the reference and the
  differentiable, device-agnostic version; the two agree to float32 round-off).

Random numbers. The pair counter ``c = image · ⌈P/2⌉ + j`` (``P`` pixels per image) goes through
SplitMix64 (Steele, Lea & Flood 2014): ``x = mix(key + (c + 1)·γ)``, ``γ = 0x9E3779B97F4A7C15``.
The high 32 bits ``y`` give ``a = y / 2³²`` (``y`` made odd, so ``a > 0``); the low bits give an angle
``θ`` uniform on the circle (2 bits of quadrant, 24 bits within it). Box–Muller then gives two
independent normals ``sqrt(−2 ln a) · (cos θ, sin θ)``. ``ln a`` is computed as
``(e + 1 − 32)·ln 2 + ln m`` with ``y = m·2^e``, ``m ∈ [1, 2)`` (``e`` from the leading-zero count) and
``ln m = 2 artanh((m−1)/(m+1))`` by its series to the 11th power (error < 1e-7); sin and cos of the
angle within its quadrant (``|φ| ≤ π/4``) by Taylor series to the 9th/10th power (error < 4e-9). The
largest value it can draw is ``sqrt(64 ln 2) ≈ 6.66``. Tests compare it with the exact formula in
float64 and with the normal distribution.
"""

from __future__ import annotations

import math

import numpy as np

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


_kernels = None


def _compile():
    """Build the numba kernels on first use (cached on disk by numba after the first compilation)."""
    global _kernels
    if _kernels is not None:
        return _kernels
    from numba import njit, prange
    from numba.cpython.unsafe.numbers import leading_zeros

    u64, f32 = np.uint64, np.float32
    gamma = u64(_GAMMA)
    ln2 = f32(math.log(2.0))
    half_pi = f32(math.pi / 2)

    @njit(inline="always")
    def mix(z):
        z = (z ^ (z >> u64(30))) * u64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> u64(27))) * u64(0x94D049BB133111EB)
        return z ^ (z >> u64(31))

    @njit(inline="always", fastmath=True)
    def normal_pair(x):
        """Two independent N(0, 1) values from 64 random bits (Box–Muller, see the module docstring)."""
        y = (x >> u64(32)) | u64(1)
        z = leading_zeros(y)                                       # 32..63
        m = f32(y << z) * f32(2.0 ** -63)                          # y = m·2^(63−z), m ∈ [1, 2]
        s = (m - f32(1)) / (m + f32(1))
        s2 = s * s
        ln_m = f32(2) * s * (f32(1) + s2 * (f32(1 / 3) + s2 * (f32(1 / 5) + s2 * (
            f32(1 / 7) + s2 * (f32(1 / 9) + s2 * f32(1 / 11))))))
        r = math.sqrt(f32(2) * (f32(z - u64(31)) * ln2 - ln_m))   # sqrt(−2 ln(y / 2³²))
        lo = x & u64(0xFFFFFFFF)
        q = lo >> u64(30)                                          # quadrant 0..3: θ = φ + q·π/2
        phi = (f32(lo & u64(0xFFFFFF)) * f32(2.0 ** -24) - f32(0.5)) * half_pi
        p2 = phi * phi
        sn = phi * (f32(1) - p2 * (f32(1 / 6) - p2 * (f32(1 / 120) - p2 * (
            f32(1 / 5040) - p2 * f32(1 / 362880)))))
        cs = f32(1) - p2 * (f32(0.5) - p2 * (f32(1 / 24) - p2 * (f32(1 / 720) - p2 * (
            f32(1 / 40320) - p2 * f32(1 / 3628800)))))
        odd = (q & u64(1)) != 0
        sign = f32(-1) if q >= u64(2) else f32(1)
        c_q = -sn if odd else cs
        s_q = cs if odd else sn
        return r * sign * c_q, r * sign * s_q

    @njit(parallel=True, fastmath=True, cache=True)
    def add_noise_kernel(out, sigma, key, first):  # out: (N, P) float32, modified in place
        n, p = out.shape
        half = (p + 1) // 2
        for i in prange(n):
            base = key + u64(first + i) * u64(half) * gamma
            for j in range(p // 2):
                a, b = normal_pair(mix(base + u64(j + 1) * gamma))
                out[i, 2 * j] += sigma * a
                out[i, 2 * j + 1] += sigma * b
            if p % 2:
                a, b = normal_pair(mix(base + u64(half) * gamma))
                out[i, p - 1] += sigma * a

    @njit(inline="always")
    def bspline3(t):
        """Cubic B-spline weights of the nodes −1, 0, 1, 2 for a point at fraction t ∈ [0, 1)."""
        s = 1.0 - t
        t2 = t * t
        t3 = t2 * t
        return s * s * s / 6, (3 * t3 - 6 * t2 + 4) / 6, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6, t3 / 6

    @njit(parallel=True, cache=True)
    def splat_kernel(coords, conf, R, shifts, inv_apix, w, out):
        # coords (F, A, 3) Å; conf (N,) frame of each image; R (N, 3, 3); shifts (N, 2) Å; w (A,);
        # out (N, D, D) zeroed. Atom a of image i lands at x = ((R_i x_a)_x + t_x)/apix pixels (same for y).
        n, D = out.shape[0], out.shape[1]
        a_count = coords.shape[1]
        for i in prange(n):
            img = out[i]
            xyz = coords[conf[i]]
            r00, r01, r02 = R[i, 0, 0], R[i, 0, 1], R[i, 0, 2]
            r10, r11, r12 = R[i, 1, 0], R[i, 1, 1], R[i, 1, 2]
            tx, ty = shifts[i, 0], shifts[i, 1]
            for k in range(a_count):
                x = (r00 * xyz[k, 0] + r01 * xyz[k, 1] + r02 * xyz[k, 2] + tx) * inv_apix
                y = (r10 * xyz[k, 0] + r11 * xyz[k, 1] + r12 * xyz[k, 2] + ty) * inv_apix
                fx, fy = math.floor(x), math.floor(y)
                x0, x1, x2, x3 = bspline3(x - fx)
                y0, y1, y2, y3 = bspline3(y - fy)
                ix, iy = int(fx) - 1, int(fy) - 1
                wk = w[k]
                if 0 <= ix and ix + 3 < D and 0 <= iy and iy + 3 < D:   # inside: no wrapping
                    for r, wr in ((0, y0), (1, y1), (2, y2), (3, y3)):
                        row = img[iy + r]
                        wr = wr * wk
                        row[ix] += wr * x0
                        row[ix + 1] += wr * x1
                        row[ix + 2] += wr * x2
                        row[ix + 3] += wr * x3
                else:
                    c0, c1, c2, c3 = ix % D, (ix + 1) % D, (ix + 2) % D, (ix + 3) % D
                    for r, wr in ((0, y0), (1, y1), (2, y2), (3, y3)):
                        row = img[(iy + r) % D]
                        wr = wr * wk
                        row[c0] += wr * x0
                        row[c1] += wr * x1
                        row[c2] += wr * x2
                        row[c3] += wr * x3

    _kernels = (add_noise_kernel, splat_kernel)
    return _kernels


def add_normal_noise(images: np.ndarray, sigma: float, key: int, first_image: int) -> None:
    """In place: ``images[i] += σ · n(key, first_image + i)``, white normal noise of each image.

    Args:
        images: ``(N, ...)`` C-contiguous float32 array (e.g. ``(N, D, D)``); modified in place.
        sigma: noise standard deviation (the images' units).
        key: generator key from :func:`noise_key`.
        first_image: global index of ``images[0]`` in the dataset (so chunks draw disjoint noise).
    """
    if images.dtype != np.float32 or not images.flags.c_contiguous or not images.flags.writeable:
        raise ValueError("add_normal_noise needs a writeable C-contiguous float32 array")
    if images.size == 0:
        return
    add_noise_kernel, _ = _compile()
    add_noise_kernel(images.reshape(images.shape[0], -1), np.float32(sigma), np.uint64(key), int(first_image))


def normal_noise(shape: tuple[int, ...], key: int, first_image: int = 0) -> np.ndarray:
    """Standard normal values ``(N, ...)`` float32 from the same generator as :func:`add_normal_noise`."""
    out = np.zeros(shape, dtype=np.float32)
    add_normal_noise(out, 1.0, key, first_image)
    return out


def splat_cubic_bspline(coords: np.ndarray, conf: np.ndarray, R: np.ndarray, shifts: np.ndarray, apix: float,
                        weights: np.ndarray | None, D: int) -> np.ndarray:
    """Project and splat atoms: ``grid[i, r, c] = Σ_a w_a β(r − y_ia) β(c − x_ia)`` (indices mod D), with
    ``(x_ia, y_ia) = ((R_i x_a)_{x,y} + t_i) / apix`` in pixels from grid index 0.

    Args:
        coords: ``(F, A, 3)`` atom positions of every conformation, Å. conf: ``(N,)`` conformation of
            each image. R: ``(N, 3, 3)`` poses. shifts: ``(N, 2)`` in-plane shifts, Å. apix: Å/pixel.
        weights: ``(A,)`` atom weights, or None for 1. D: grid size.
    Returns:
        ``(N, D, D)`` float32; β is the centred cubic B-spline (support ±2 pixels, unit integral).
    """
    _, splat_kernel = _compile()
    f32 = np.float32
    coords = np.ascontiguousarray(coords, dtype=f32)
    w = np.ones(coords.shape[1], f32) if weights is None else np.ascontiguousarray(weights, f32)
    out = np.zeros((len(conf), D, D), dtype=f32)
    splat_kernel(coords, np.ascontiguousarray(conf, dtype=np.int64), np.ascontiguousarray(R, dtype=f32),
                 np.ascontiguousarray(shifts, dtype=f32), f32(1 / apix), w, out)
    return out
