"""In-plane transforms of particle images: rotation, CTF phase flipping, and 2-D class averaging.

Conventions (CONVENTIONS.md): images ``(N, D, D)`` indexed ``[y, x]``, coordinates ``(x, y)`` in pixels from
the centre pixel ``D // 2`` (the same for odd and even ``D``), angles in radians.

**Rotation.** :func:`rotate_images` returns ``out(p) = img(Q(ψ) p)`` with ``Q(a) = [[cos a, −sin a],
[sin a, cos a]]`` acting on ``p = (x, y)``. Since RELION's ``Rz(ψ)ᵀ`` acts on ``(x, y)`` as ``Q(ψ)``, the
projection of a map at pose ``Rz(ψ) · A`` equals ``rotate_images(projection at A, ψ)``. In Fourier space
the transform of ``img ∘ Q`` is ``F[img](Q k)``.

It is computed as an exact quarter turn ``k · 90°`` (a permutation of pixels), then a residual
rotation ``r = ψ − k · 90° ∈ [−45°, 45°]`` by three shears (Unser, Thévenaz & Yaroslavsky 1995; Larkin,
Oldfield & Klemm 1997):

    Q(r) = Sx(a) · Sy(b) · Sx(a),   Sx(a) = [[1, a], [0, 1]],  Sy(b) = [[1, 0], [b, 1]],
    a = −tan(r/2),  b = sin r,

each shear ``f(x, y) ↦ f(x + a y, y)`` a sub-pixel shift of every row (or column) by the Fourier phase
ramp ``exp(2πi κ a y / P)`` (``κ`` the integer frequency along the row, ``P`` its length), so the
rotation is band-limited (sinc) interpolation, batched and differentiable in the images and in ``ψ``.
The images are first zero-padded to ``P = pad · D`` pixels (``pad = 2`` by default): with ``|r| ≤ 45°`` no
pixel of the ``D`` box leaves the canvas in any pass (the two-shear intermediate stretches by at most
1.23), so there is no wrap-around and the result is that of the image extended by zeros outside its box;
content rotated out of the box is lost, and what comes in is zero. On the canvas's Nyquist frequency
(even ``P``) a shift by ``d`` multiplies the (real) coefficient by ``cos(π d)``: the exact shift of the
symmetric band-limited interpolant sampled on the grid; so rotations are exactly invertible only for
images without Nyquist content (a smooth image is nearly so: ψ then −ψ returns a σ = 2 px Gaussian to
1e-8 of its peak; at σ = 1.5 px the sheared spectrum nears Nyquist and the error is 1e-5).

Quarter turns are exact on the pixel grid for odd and even ``D``. For the canvas of side ``P`` about its
centre ``P // 2`` the map ``(x, y) → Q(k·90°) (x, y)`` sends integer pixels to integer pixels, except that
for even ``P`` the coordinate ``−P/2`` has its image ``+P/2`` outside; it is taken periodically (``+P/2 ≡
−P/2``). With ``pad ≥ 2`` that first row and column of the canvas are padding zeros, so the quarter turn of
an even ``D`` image is the zero-extended one: out pixel ``(x, y)`` takes ``img(Q (x, y))``, and the output's
first row and column (coordinate ``−D/2``), whose source lies at ``+D/2`` outside the box, are 0. With
``pad = 1`` everything is periodic on the ``D`` torus (the first row/column wraps, and content beyond
the inscribed disc may wrap in the shears). For odd ``D``, ``rotate_images(img, k·π/2) =
torch.rot90(img, k, dims=(−2, −1))``; for even ``D`` the same rolled by one pixel along the axis that
``rot90`` turns about the half-pixel centre ``(D − 1)/2`` (and the wrapped row/column zeroed).

**Class averaging.** :class:`Averager2D` is the 2-D counterpart of the inserter of
:mod:`cryoscape.physics.insert`. For the image model

    x_i = CTF_i ⊛ shift_{s_i}(rotate(c_k, ψ_i)) + noise,    X_i(k) = C_i(k) e^{−2πi k·s_i} ĉ_k(Q_i k) + N_i(k),

the (weighted) least-squares estimate of ``ĉ_k(q)``, with ``k = Q_iᵀ q``, is

    ĉ_k(q) = Σ_i w_i C_i(Q_iᵀ q) Z_i(q) / Σ_i w_i C_i(Q_iᵀ q)²,   Z_i(q) = e^{+2πi k·s_i} X_i(k), k = Q_iᵀ q,

and ``Z_i`` is the transform of ``z_i = rotate(shift_{−s_i} x_i, −ψ_i)``: the image moved back to the
centre, then turned into the class frame (by :func:`rotate_images`, the only interpolation). The CTF at
rotated frequencies is computed exactly: the azimuth of ``Qᵀ q`` is ``angle(q) − ψ``, so ``C(Q(ψ)ᵀ q)`` is
the CTF of astigmatism azimuth ``α_ast + ψ`` (defoci unchanged; :func:`rotated_ctf_params`). Equivalently,
for any image ``z``, ``rotate(CTF_α ⊛ z, φ) = CTF_{α−φ} ⊛ rotate(z, φ)``. Rotating the image before the CTF
is applied (rather than the CTF-filtered image ``C ⊛ x``) keeps the rotated object as compact as the
data allow: every CTF filtering spreads the signal further beyond the box (by ``λ Δf |k|``).
"""

from __future__ import annotations

import math

import torch

from .ctf import CTFParams
from .fourier import irfft2_centered, rfft2_centered
from .imaging import ImagingGrid
from .likelihood import shell_correlation

__all__ = ["rotate_images", "quarter_turn", "phase_flip", "rotated_ctf_params", "Averager2D",
           "DEFAULT_REGULARISER", "mirror_images"]

DEFAULT_REGULARISER = 1e-4
"""``tau2=None`` in :class:`Averager2D`: ``1/τ² = DEFAULT_REGULARISER × mean(den over the Nyquist disc)`` of
each class (and half set). It scales frequency ``q`` of the least-squares estimate by ``den/(den + 1/τ²)``,
i.e. by ``1 − 1e-4 · mean(den)/den(q)``: negligible where the summed CTF² is not near zero, and it keeps an
empty frequency finite. For noisy data pass ``tau2`` (a spectral SNR) instead."""


# ------------------------------------------------------------------------------------------------------------
# Rotation
# ------------------------------------------------------------------------------------------------------------

def _quarter_turn_index(P: int, k: int, device) -> torch.Tensor:
    """Flat source index ``(P·P,)`` of every output pixel for ``out(p) = img(Q(k·π/2) p)`` on a ``P``-canvas
    about pixel ``P // 2`` (coordinates taken modulo ``P``)."""
    c = P // 2
    y, x = torch.meshgrid(torch.arange(P, device=device) - c, torch.arange(P, device=device) - c, indexing="ij")
    cos, sin = [(1, 0), (0, 1), (-1, 0), (0, -1)][k % 4]
    xs, ys = cos * x - sin * y, sin * x + cos * y  # Q(kπ/2) (x, y)
    return (((ys + c) % P) * P + (xs + c) % P).reshape(-1)


def quarter_turn(images: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Exact rotation by ``k · 90°`` of ``(N, P, P)`` images about pixel ``P // 2``, periodic: ``out(p) =
    img(Q(k π/2) p)`` with coordinates modulo ``P`` (for even ``P`` the first row and column wrap; module
    docstring). ``k``: int or ``(N,)`` integers (any value; taken mod 4). A gather, so gradients flow."""
    N, P = images.shape[0], images.shape[-1]
    k = torch.as_tensor(k, device=images.device).to(torch.int64).reshape(-1).remainder(4).expand(N)
    table = torch.stack([_quarter_turn_index(P, j, images.device) for j in range(4)])  # (4, P·P)
    return images.reshape(N, P * P).gather(1, table[k]).reshape(N, P, P)


def _shear(images: torch.Tensor, amount: torch.Tensor, along_x: bool) -> torch.Tensor:
    """``f(x, y) ↦ f(x + a y, y)`` (``along_x``) or ``f(x, y) ↦ f(x, y + a x)`` for ``(N, P, P)`` real images,
    ``a = amount (N,)``, by Fourier phase ramps along the rows (columns), coordinates about ``P // 2``."""
    P = images.shape[-1]
    coord = torch.arange(P, dtype=images.dtype, device=images.device) - P // 2
    kappa = torch.arange(P // 2 + 1, dtype=images.dtype, device=images.device)  # integer frequency
    shift = amount[:, None] * coord[None, :]  # (N, P): pixels each line moves by, f(t + shift)
    phase = (2 * math.pi / P) * shift[:, :, None] * kappa[None, None, :]  # (N, line, κ)
    ramp = torch.polar(torch.ones_like(phase), phase)
    if along_x:  # lines are rows (index y), transform along x
        return torch.fft.irfft(torch.fft.rfft(images, dim=-1) * ramp, n=P, dim=-1)
    return torch.fft.irfft(torch.fft.rfft(images, dim=-2) * ramp.transpose(1, 2), n=P, dim=-2)


def rotate_images(images: torch.Tensor, psi: torch.Tensor | float, pad: int = 2) -> torch.Tensor:
    """Rotate images in plane: ``out(p) = img(Q(ψ) p)``, ``Q(ψ) = [[cos ψ, −sin ψ], [sin ψ, cos ψ]]`` on
    ``p = (x, y)`` about pixel ``D // 2`` (module docstring: quarter turn + three Fourier shears).

    Args:
        images: ``(N, D, D)`` real, or one ``(D, D)`` image.
        psi: ``(N,)`` radians, or a scalar (every image by the same angle).
        pad: canvas ``pad · D`` (int ≥ 1): 2 (default) is the zero-extended rotation with no wrap-around;
            1 is periodic on the ``D`` torus (cheaper; exact for content inside the inscribed disc only).
    Returns:
        Rotated images, the shape of ``images``. Projection at pose ``Rz(ψ)·A`` = ``rotate_images(proj at A, ψ)``.
    """
    if pad < 1 or int(pad) != pad:
        raise ValueError(f"pad must be an integer ≥ 1, got {pad}")
    single = images.ndim == 2
    x = images[None] if single else images
    if x.ndim != 3 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"images must be (N, D, D) or (D, D), got {tuple(images.shape)}")
    N, D = x.shape[0], x.shape[-1]
    psi = torch.as_tensor(psi, device=x.device).to(x.dtype)
    if psi.numel() == 1:
        psi = psi.reshape(1).expand(N)
    elif psi.shape != (N,):
        raise ValueError(f"psi must be a scalar or ({N},), got {tuple(psi.shape)}")
    P = int(pad) * D
    lo = P // 2 - D // 2
    if P > D:
        x = torch.nn.functional.pad(x, (lo, P - D - lo, lo, P - D - lo))
    k = torch.round(psi.detach() / (math.pi / 2)).to(torch.int64)
    if bool((k.remainder(4) != 0).any()):
        x = quarter_turn(x, k)
    r = psi - k.to(psi.dtype) * (math.pi / 2)  # residual in [−π/4, π/4], differentiable in psi
    if bool((r != 0).any()) or r.requires_grad:
        a, b = -torch.tan(r / 2), torch.sin(r)
        x = _shear(_shear(_shear(x, a, True), b, False), a, True)
    if P > D:
        x = x[:, lo:lo + D, lo:lo + D]
    return x[0] if single else x


# ------------------------------------------------------------------------------------------------------------
# CTF
# ------------------------------------------------------------------------------------------------------------

def rotated_ctf_params(ctf: CTFParams, psi: torch.Tensor) -> CTFParams:
    """The CTF seen at rotated frequencies: ``C'(q) = C(Q(ψ)ᵀ q)`` is the CTF with astigmatism azimuth
    ``α_ast + ψ`` (the azimuth of ``Q(ψ)ᵀ q`` is ``angle(q) − ψ``). Hence ``rotate_images(CTF ⊛ z, −ψ) =
    CTF' ⊛ rotate_images(z, −ψ)``. ``psi``: ``(N,)`` radians."""
    fields = {f: getattr(ctf, f) for f in CTFParams.fields}
    fields["angle_ast"] = ctf.angle_ast + torch.as_tensor(psi).detach().to(ctf.angle_ast).reshape(-1)
    return CTFParams(**fields)


def phase_flip(images: torch.Tensor, ctf: CTFParams, grid: ImagingGrid) -> torch.Tensor:
    """Multiply each image's transform by ``sign(CTF)`` (on ``grid``'s canvas, ``pad`` included): ``(N, D, D)``
    real in, ``(N, D, D)`` out (in the grid's dtype). ``sign(0) = 0``."""
    f = grid.transform(images.to(device=grid.device, dtype=grid.dtype))
    return grid.to_images(f * torch.sign(grid.ctf(ctf)))


# ------------------------------------------------------------------------------------------------------------
# Class averages
# ------------------------------------------------------------------------------------------------------------

class Averager2D:
    """CTF-weighted Wiener averages of ``n_classes`` 2-D classes from aligned images, with half-set FRC.

    Accumulates per class ``k`` and half set ``h`` (module docstring for the derivation):

        num_hk(q) = Σ_i w_i · C_i(Q_iᵀ q) · F[rotate(shift_{−s_i} x_i, −ψ_i)](q),
        den_hk(q) = Σ_i w_i · C_i(Q_iᵀ q)²   (C_i(Q_iᵀ q): the CTF of azimuth α_ast + ψ_i, evaluated exactly),

    on the ``rfft2`` half plane of the ``D`` grid (DC at [0, 0]; transforms of images centred at ``D//2``).
    Averages ``ĉ = num / (den + 1/τ²)`` on the Nyquist disc ``|k| ≤ D/2`` (zero beyond: rotation brings the
    square's corners in from outside the sampled band).

    Args:
        n_classes: ``K``. D: box (pixels). apix: Å/pixel. device, dtype: of the accumulators (float32/64).
    """

    def __init__(self, n_classes: int, D: int, apix: float, device=None, dtype: torch.dtype = torch.float64):
        if n_classes < 1:
            raise ValueError(f"need at least one class, got {n_classes}")
        self.K, self.D, self.apix = int(n_classes), int(D), float(apix)
        self.dtype = dtype
        self.grid = ImagingGrid(self.D, self.apix, pad=1, dtype=dtype, device=device)
        self.device = self.grid.device
        cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.num = torch.zeros(2, self.K, self.D, self.grid.W, dtype=cdt, device=self.device)
        self.den = torch.zeros(2, self.K, self.D, self.grid.W, dtype=dtype, device=self.device)
        self.counts = torch.zeros(2, self.K, dtype=torch.int64, device=self.device)
        self.n_seen = 0

    def add(self, images: torch.Tensor, ctf: CTFParams | None, classes: torch.Tensor, psi: torch.Tensor,
            shift_A: torch.Tensor, weight: torch.Tensor | None = None, half: torch.Tensor | None = None) -> None:
        """Accumulate ``images (N, D, D)`` of ``classes (N,)`` (int64, ``0 .. K−1``) at in-plane poses ``psi (N,)``
        (radians) and ``shift_A (N, 2)`` (Å, the particle's position from the box centre), with their CTFs
        (None: no CTF), weights ``(N,)`` (None: 1; e.g. class probabilities) and half sets ``(N,)`` 0/1 (None:
        alternating by arrival order over all calls, ``(n_seen + i) mod 2``)."""
        dt, dev, grid = self.dtype, self.device, self.grid
        x = torch.as_tensor(images).to(device=dev, dtype=dt)
        N = x.shape[0]
        if x.shape != (N, self.D, self.D):
            raise ValueError(f"images must be (N, {self.D}, {self.D}), got {tuple(x.shape)}")
        cls = torch.as_tensor(classes, device=dev).to(torch.int64).reshape(-1)
        if cls.shape != (N,) or bool(((cls < 0) | (cls >= self.K)).any()):
            raise ValueError(f"classes must be ({N},) in 0..{self.K - 1}")
        psi = torch.as_tensor(psi).to(device=dev, dtype=dt).reshape(-1).expand(N)
        s = torch.as_tensor(shift_A).to(device=dev, dtype=dt).reshape(N, 2)
        w = torch.ones(N, dtype=dt, device=dev) if weight is None else \
            torch.as_tensor(weight).to(device=dev, dtype=dt).reshape(-1).expand(N)
        h = (self.n_seen + torch.arange(N, device=dev)) % 2 if half is None else \
            torch.as_tensor(half, device=dev).to(torch.int64).reshape(-1).expand(N)
        if bool(((h != 0) & (h != 1)).any()):
            raise ValueError("half must hold 0 or 1")
        centred = irfft2_centered(rfft2_centered(x) * grid.phase_ramp(-s), self.D)  # particle moved to the centre
        z = rfft2_centered(rotate_images(centred, -psi))  # (N, D, W), in the class frame
        if ctf is None:
            num, den = z, torch.ones(N, self.D, grid.W, dtype=dt, device=dev)
        else:
            c = grid.ctf(rotated_ctf_params(ctf, psi))  # C_i(Q_iᵀ q)
            num, den = z * c, c * c
        slot = h * self.K + cls
        self.num.view(2 * self.K, self.D, grid.W).index_add_(0, slot, num * w[:, None, None])
        self.den.view(2 * self.K, self.D, grid.W).index_add_(0, slot, den * w[:, None, None])
        self.counts.view(-1).index_add_(0, slot, torch.ones_like(slot))
        self.n_seen += N

    # -- estimates -----------------------------------------------------------------------------------------
    def _lambda(self, den: torch.Tensor, tau2) -> torch.Tensor:
        """``1/τ²`` on the half plane, broadcastable to ``den (K, D, W)``."""
        disc = self.grid.disc
        if tau2 is None:
            mean = (den * disc).sum((-2, -1)) / disc.sum()
            lam = DEFAULT_REGULARISER * mean
            return torch.where(lam > 0, lam, torch.ones_like(lam))[:, None, None]
        t = torch.as_tensor(tau2, dtype=self.dtype, device=self.device)
        if t.ndim == 0:
            return (1 / t).reshape(1, 1, 1)
        if t.shape[-1] != self.grid.n_shells or t.ndim > 2:
            raise ValueError(f"tau2 must be a scalar, ({self.grid.n_shells},) or (K, {self.grid.n_shells})")
        t = t.reshape(-1, self.grid.n_shells)
        shells = self.grid.shell.clamp_max(self.grid.n_shells - 1)
        return 1 / t[:, shells]

    def _estimate(self, num: torch.Tensor, den: torch.Tensor, tau2) -> torch.Tensor:
        """Transforms ``num / (den + 1/τ²)`` on the disc, ``(K, D, W)`` complex."""
        denom = den + self._lambda(den, tau2)
        return torch.where(self.grid.disc, num / denom, torch.zeros_like(num))

    def averages(self, tau2=None) -> torch.Tensor:
        """The class averages from both halves, real ``(K, D, D)``: ``F⁻¹[(num₀+num₁)/(den₀+den₁ + 1/τ²)]``.

        ``tau2``: per-shell spectral SNR ``E|ĉ|² / E|noise|²`` of one image (per unit weight) as ``(n_shells,)``
        or ``(K, n_shells)`` (shells ``round(|k|)``, the outer half-ring joining the last), or a scalar; None:
        ``1/τ² =`` :data:`DEFAULT_REGULARISER` × the mean of ``den`` over the disc, per class."""
        return irfft2_centered(self._estimate(self.num.sum(0), self.den.sum(0), tau2), self.D)

    def half_averages(self, tau2=None) -> torch.Tensor:
        """The two half-set averages, real ``(2, K, D, D)`` (each regularised as :meth:`averages`)."""
        return torch.stack([irfft2_centered(self._estimate(self.num[h], self.den[h], tau2), self.D)
                            for h in range(2)])

    def frc(self, tau2=None) -> torch.Tensor:
        """Fourier ring correlation of the two half-set averages, ``(K, n_shells)`` float64
        (:func:`~cryoscape.physics.likelihood.shell_correlation`, Friedel-weighted half plane, shells
        ``0 .. D//2 − 1``). An empty class or half gives 0."""
        a = self._estimate(self.num[0], self.den[0], tau2)
        b = self._estimate(self.num[1], self.den[1], tau2)
        g = self.grid
        return torch.stack([shell_correlation(a[k], b[k], g.shell, g.n_shells, g.friedel) for k in range(self.K)])

    def resolution_A(self, threshold: float = 0.143, tau2=None) -> torch.Tensor:
        """Per class, the resolution (Å) where the half-set FRC first drops below ``threshold`` after shell 0,
        linearly interpolated between shells of frequency ``r / (D apix)``; ``2 apix`` (Nyquist) when it never
        does. ``(K,)`` float64."""
        curves = self.frc(tau2).cpu()
        freqs = torch.arange(self.grid.n_shells, dtype=torch.float64) / (self.D * self.apix)
        out = torch.full((self.K,), 2 * self.apix, dtype=torch.float64)
        for k, curve in enumerate(curves):
            below = torch.nonzero(curve[1:] < threshold).reshape(-1)
            if len(below) == 0:
                continue
            i = int(below[0]) + 1
            c0, c1 = float(curve[i - 1]), float(curve[i])
            f0, f1 = float(freqs[i - 1]), float(freqs[i])
            f = f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1) if c0 != c1 else f1
            out[k] = 1.0 / f
        return out


def mirror_images(images: torch.Tensor) -> torch.Tensor:
    """Mirror ``x → −x`` about the centre pixel ``D // 2``: ``out[..., y, x] = img[..., y, (2·(D//2) − x) mod D]``
    (``torch.flip`` on the last axis, then a one-pixel roll for even ``D`` so the centre column stays put).
    The projection along the opposite viewing direction is the mirror image of a view."""
    D = images.shape[-1]
    out = torch.flip(images, dims=(-1,))
    return torch.roll(out, 1, dims=-1) if D % 2 == 0 else out

