"""Images on a polar Fourier grid, where an in-plane rotation is a cyclic shift of the angle.

An image ``x`` (``D × D``, origin at pixel ``D // 2``) has the transform
``X(k) = Σ_p x(p) exp(−2πi k·(p − c) / D)`` (``k`` in cycles per box, the project's unnormalised
convention). :class:`PolarGrid` evaluates it exactly (a DFT, not an interpolation) at the points
``k = r (cos θ_l, sin θ_l)``, rings ``r = 0, 1, …, r_max`` and ``L`` angles ``θ_l = 2π l / L``.

Why polar: rotating the image content, ``x'(p) = x(Q(ψ) p)`` (:func:`cryoscape.physics.transform2d.rotate_images`,
``Q`` the counter-clockwise rotation of ``(x, y)``), gives ``X'(k) = X(Q(ψ) k)``, i.e. ``X'(r, θ) = X(r, θ + ψ)``:
with ``ψ = 2π t / L`` a rotation is the roll ``X'[..., l] = X[..., l + t]``. Correlations over all ``L``
rotations are then products of angular Fourier series (:meth:`PolarGrid.spectrum`).

Real images have ``X(r, θ + π) = conj X(r, θ)``. For such *Hermitian-in-angle* functions the angular spectrum
``F(m) = Σ_l f(l) exp(−2πi m l / L)`` obeys ``F(L − m) = (−1)^m conj F(m)``, so the half
``m = 0 … L/2`` holds everything: that is what :meth:`spectrum` returns and :meth:`from_spectrum` takes.

Shifts and the CTF are diagonal here: :meth:`phase_ramp` and :meth:`ctf` evaluate them at the polar points.
:meth:`to_images` goes back by quadrature, ``x(p) ≈ D⁻² Σ_{r,l} a_r X(r, θ_l) exp(+2πi k·(p − c)/D)`` with the
ring areas ``a_r = 2π r / L`` (``a_0 = π/4 / L``): a low-pass to ``r_max`` of the image.
"""

from __future__ import annotations

import math

import torch

from .ctf import CTFParams, ctf_from_params

__all__ = ["PolarGrid", "angle_count", "soft_disc_mask"]


def angle_count(r_max: int) -> int:
    """The number of angles for rings up to ``r_max``: the multiple of 8 at or above ``2π r_max`` (at least
    16), so the outer ring is sampled at ≤ 1 pixel of frequency."""
    return max(16, 8 * math.ceil(2 * math.pi * r_max / 8))


def soft_disc_mask(D: int, radius_px: float, edge_px: float = 3.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(D, D)`` mask: 1 within ``radius_px`` of pixel ``D // 2``, a raised-cosine edge ``edge_px`` wide, 0 beyond."""
    i = torch.arange(D, dtype=dtype, device=device) - D // 2
    r = torch.sqrt(i[:, None] ** 2 + i[None, :] ** 2)
    t = ((r - radius_px) / max(edge_px, 1e-6)).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * t))


class PolarGrid:
    """Polar points of the Fourier plane of ``D × D`` images and the maps to and from them.

    Args:
        D: image size (px). r_max: outermost ring (px of frequency, ≤ D/2). n_angles: ``L`` (even; default
        :func:`angle_count`). apix: pixel size (Å), used by :meth:`ctf` only.
    Attributes: ``radii (R,)``, ``angles (L,)``, ``kx, ky (R, L)`` in cycles per box, ``ring_area (R,)``
    (the quadrature weights ``a_r``), ``M = L // 2 + 1`` (the kept angular frequencies ``m = 0 … L/2``).
    """

    def __init__(self, D: int, r_max: int, n_angles: int | None = None, apix: float = 1.0,
                 dtype: torch.dtype = torch.float32, device=None):
        if not 1 <= r_max <= D // 2:
            raise ValueError(f"r_max must be in [1, {D // 2}], got {r_max}")
        L = angle_count(r_max) if n_angles is None else int(n_angles)
        if L < 4 or L % 2:
            raise ValueError(f"n_angles must be even and ≥ 4, got {L}")
        self.D, self.r_max, self.L, self.M, self.apix = D, int(r_max), L, L // 2 + 1, float(apix)
        self.dtype, self.device = dtype, torch.device(device or "cpu")
        real = torch.float64
        self.radii = torch.arange(r_max + 1, dtype=real)
        self.angles = torch.arange(L, dtype=real) * (2 * math.pi / L)
        kx = self.radii[:, None] * torch.cos(self.angles)[None]
        ky = self.radii[:, None] * torch.sin(self.angles)[None]
        area = 2 * math.pi * self.radii / L
        area[0] = math.pi / 4 / L
        self.kx, self.ky = kx.to(dtype=dtype, device=self.device), ky.to(dtype=dtype, device=self.device)
        self.ring_area = area.to(dtype=dtype, device=self.device)
        # exact DFT on the half circle θ ∈ [0, π): e[p, r, l] = exp(−2πi k·(p − c)/D); the rest by conjugation
        c = torch.arange(D, dtype=real) - D // 2
        phase = -2 * math.pi / D * (c[None, :, None, None] * kx[None, None, :, : L // 2]
                                    + c[:, None, None, None] * ky[None, None, :, : L // 2])
        ctype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self._dft = torch.polar(torch.ones_like(phase), phase).reshape(D * D, -1).to(ctype).to(self.device)
        self._ctype = ctype

    def __repr__(self) -> str:
        return f"PolarGrid(D={self.D}, r_max={self.r_max}, L={self.L})"

    # ---- images ↔ polar samples -------------------------------------------------------------------------
    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, D, D)`` real images → ``(N, R, L)`` complex samples ``X(r, θ_l)`` (exact DFT)."""
        flat = images.reshape(images.shape[0], -1).to(self._ctype)
        half = (flat @ self._dft).reshape(images.shape[0], self.r_max + 1, self.L // 2)
        return torch.cat([half, half.conj()], dim=-1)

    def to_images(self, f: torch.Tensor) -> torch.Tensor:
        """``(N, R, L)`` Hermitian-in-angle samples → ``(N, D, D)`` real images by the ring-area quadrature
        (module docstring); the adjoint of :meth:`transform` weighted by ``a_r / D²``."""
        half = (f[..., : self.L // 2] * self.ring_area[:, None]).reshape(f.shape[0], -1)
        # the other half circle is the conjugate: the sum over both halves is 2 Re of the half-circle sum
        img = 2 * (half @ self._dft.conj().T).real / self.D ** 2
        return img.reshape(f.shape[0], self.D, self.D)

    # ---- angular spectra -----------------------------------------------------------------------------------
    def spectrum(self, f: torch.Tensor) -> torch.Tensor:
        """``(..., R, L)`` → angular spectrum ``F(m) = Σ_l f(l) e^{−2πi m l / L}``, ``m = 0 … L/2``: ``(..., R, M)``."""
        return torch.fft.fft(f, dim=-1)[..., : self.M]

    def from_spectrum(self, F: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`spectrum` for Hermitian-in-angle functions: ``(..., R, M)`` → ``(..., R, L)``,
        filling ``F(L − m) = (−1)^m conj F(m)``."""
        m = torch.arange(1, self.L - self.M + 1, device=F.device)
        sign = torch.where(m % 2 == 0, 1.0, -1.0).to(F.real.dtype)
        tail = (F[..., 1: self.L - self.M + 1].conj() * sign).flip(-1)
        return torch.fft.ifft(torch.cat([F, tail], dim=-1), dim=-1)

    def spectrum_major(self, f: torch.Tensor) -> torch.Tensor:
        """:meth:`spectrum` in the layout the products below want: ``(N, R, L)`` → ``(M, N, R)`` contiguous."""
        return self.spectrum(f).permute(2, 0, 1).contiguous()

    def correlate(self, Y: torch.Tensor, C: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Cyclic correlations over every rotation, from angular spectra in ``(M, ·, R)`` layout.

        ``g[n, k, t] = Re Σ_r w_r Σ_l y_n(r, l) conj c_k(r, l + t)`` for ``Y (M, N, R)`` and ``C (M, K, R)``
        (:meth:`spectrum_major` of Hermitian-in-angle functions) → ``(N, K, L)`` real; ``weight`` ``(R,)``
        (default 1). Computed as ``g = irfft_m(conj P)`` with ``P(m) = Σ_r w_r Y(r, m) conj C(r, m)``: one
        batched complex matrix product over the angular frequencies.
        """
        if weight is not None:
            C = C * weight.to(C.real.dtype)
        P = torch.bmm(Y, C.conj().transpose(1, 2))  # (M, N, K)
        return torch.fft.irfft(P.permute(1, 2, 0).conj(), n=self.L, dim=-1)

    def convolve(self, G: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`correlate` in ``c``: ``h[k, r, j] = Σ_n Σ_t g[n, k, t] z_n(r, j − t)``.

        ``G (N, K, L)`` real weights over rotations, ``Z (M, N, R)`` spectra → ``(M, K, R)`` spectrum of ``h``
        (``Ĥ(m) = Σ_n Ĝ_nk(m) Ẑ_n(m)``, ``Ĝ = rfft_t(g)``). Used to sum images rotated back into class frames.
        """
        Gh = torch.fft.rfft(G, dim=-1).permute(2, 1, 0).contiguous()  # (M, K, N): bmm's fast layout
        return torch.bmm(Gh, Z.to(Gh.dtype))

    # ---- the 2-D forward model on the polar grid: x = h · ramp(s) · rotate(c, ψ_t) ------------------------
    def inplane_model(self, c: torch.Tensor, h: torch.Tensor, ramp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(N, R, L)`` predicted samples ``h · ramp · c(r, l + t)`` of classes ``c (N, R, L)`` rotated by
        ``ψ = 2πt/L``, shifted (``ramp`` from :meth:`phase_ramp`) and CTF-filtered (``h`` from :meth:`ctf`)."""
        return h * ramp * self.roll(c, t)

    def inplane_terms(self, images: torch.Tensor, ctf: CTFParams | None, noise_var: torch.Tensor,
                      centres_px: torch.Tensor, steps_px: torch.Tensor):
        """What :func:`cryoscape.physics.likelihood.inplane_loglik` needs for a batch of ``B`` images tried at
        the shifts ``centres_px (B, 2) + steps_px (S, 2)`` (px): polar samples ``X (B, R, L)``, CTF ``h``
        (ones without a CTF), the ramps ``(B, S, R, L)`` of the shifts, and the spectra ``(M, B·S, R)`` of
        ``x h ramp̄_s / σ²`` and ``(M, B, R)`` of ``h² / σ²`` (``noise_var (R,)``). ``ramp(c + d) = ramp(c)·ramp(d)``:
        one ramp per image and one per step."""
        X = self.transform(images)
        B, S = centres_px.shape[0], steps_px.shape[0]
        h = self.ctf(ctf) if ctf is not None else torch.ones(X.shape, dtype=self.dtype, device=X.device)
        inv = (1.0 / noise_var).to(self.dtype)[:, None]
        per_image, per_step = self.phase_ramp(centres_px), self.phase_ramp(steps_px)
        ramps = per_image[:, None] * per_step[None]  # (B, S, R, L)
        ys = (X * h * inv * per_image.conj())[:, None] * per_step.conj()[None]
        Y = self.spectrum_major(ys.reshape(B * S, *X.shape[1:]))
        A = self.spectrum_major((h * h * inv).to(X.dtype))
        return X, h, ramps, Y, A

    # ---- diagonal operators ---------------------------------------------------------------------------------
    def phase_ramp(self, shift_px: torch.Tensor) -> torch.Tensor:
        """``(S, 2)`` shifts ``(x, y)`` in pixels → ``(S, R, L)`` ``exp(−2πi k·s / D)``: multiplying ``X`` by it
        moves the image content by ``+s`` (as :func:`cryoscape.physics.shift.shift_images`)."""
        s = shift_px.to(self.kx.dtype).to(self.device)
        phase = -2 * math.pi / self.D * (s[:, 0, None, None] * self.kx + s[:, 1, None, None] * self.ky)
        return torch.polar(torch.ones_like(phase), phase)

    def ctf(self, params: CTFParams) -> torch.Tensor:
        """``(N, R, L)`` CTF values at the polar points (frequency ``k / (D · apix)`` in 1/Å)."""
        scale = 1.0 / (self.D * self.apix)
        p = params.to(device=self.device)
        return ctf_from_params(p, self.kx * scale, self.ky * scale).to(self.dtype)

    def roll(self, f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``out[n, r, l] = f[n, r, l + t_n]`` (indices mod ``L``): the samples of ``f_n`` rotated by
        ``ψ = 2π t_n / L`` (module docstring). ``f (N, R, L)``, ``t (N,)`` integer."""
        idx = (torch.arange(self.L, device=f.device)[None] + t.to(f.device)[:, None]) % self.L  # (N, L)
        return torch.gather(f, -1, idx[:, None, :].expand(-1, f.shape[1], -1))
