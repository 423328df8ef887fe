"""THE forward model of cryoscape: pose ▸ projection ▸ shift ▸ CTF, and its adjoint.

For particle ``n`` with pose ``R_n``, in-plane shift ``t_n`` (Å, :class:`~cryoscape.geometry.poses.Poses`)
and CTF ``C_n``, on the ``rfft2`` half plane of the image (DC at ``[0, 0]``, image origin at pixel ``D//2``):

    Î_n(k) = C_n(k) · exp(−2πi k·t_n) · P̂_n(k),      P̂_n(k) = apix⁻² · ρ̂_n(R_nᵀ (kx, ky, 0))

``P̂`` is the transform of the projection ``∫ ρ(Rᵀ r) dz`` sampled on the pixel grid, computed by a
*projector* (Gaussian atoms, a voxel map by Fourier slice, or a neural field ``V̂(q)``). Every method and
the simulator call these functions; nothing else composes projection, shift and CTF.

Grid conventions (one each, here):

- :class:`ImagingGrid` ``(D, apix, pad)``: the image is ``D`` pixels of ``apix`` Å; the CTF acts on a
  canvas of ``Dp = pad · D`` pixels (the image zero-padded around its centre), so ``pad > 1`` lets
  delocalised signal leave the box (simulation) or samples the transform finely (backprojection).
- The Nyquist disc: frequencies with ``|k| ≤ D/2`` in pixels of ``1/(D apix)`` (the circle through the
  Nyquist frequency included; the corners of the square beyond it are left out). The Fourier-slice
  projector, the inserter of backprojection (:mod:`cryoscape.physics.insert`) and the VAE use this disc.
- Shells: ``round(|k|)`` in the same pixels, ``0 .. D//2 − 1`` inside the disc (CONVENTIONS.md, FSC).
- Friedel weights on the half plane: 2 where the point stands for itself and its mirror ``−k``, 1 on the
  columns that are their own mirror (``kx = 0``, and ``kx = Dp/2`` for an even canvas), so a weighted sum
  over the half plane equals the sum over the whole plane.

:func:`apply_ctf` applies the same CTF to whole images of any size ``H × W`` (micrographs), on a canvas of
``pad × (H, W)`` pixels.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import numpy as np
import torch

from ..geometry.poses import Poses
from .ctf import CTFParams, ctf_from_basis, ctf_phase_basis
from .fourier import (half_box_shift_sign, irfft2_centered, nyquist_disc, rfft2_centered, rfft_radius_px,
                      rfreq_grid_2d)
from .gaussian import project_atoms_real, projected_xy, splat_atoms, splat_filter
from .shift import phase_ramp
from .slice import FourierSliceProjector

__all__ = ["ImagingGrid", "Projector", "GaussianAtoms", "VoxelMap", "FourierField", "forward", "forward_points",
           "forward_images", "centre", "adjoint", "shell_index_3d", "apply_ctf", "SPLAT_MIN_SIGMA_PX"]

SPLAT_MIN_SIGMA_PX = 1.5  # "auto" splats atoms when σ ≥ this many pixels (relative error ≲ 5e-4, measured)


class ImagingGrid:
    """The Fourier grid of a ``D``-pixel image of pixel size ``apix`` Å, its CTF on a ``pad``-times canvas.

    Cached (computed on first use, on ``device`` in ``dtype``), all on the canvas's half plane
    ``(Dp, Dp//2 + 1)`` with ``Dp = pad · D``:

    - ``ky``, ``kx``: frequencies in 1/Å; ``radius_px``: ``|k| · D · apix`` (pixels of image frequency);
    - ``disc``: ``radius_px ≤ D/2`` (bool); ``shell``: ``round(radius_px)`` (int64); ``friedel``: 2 or 1;
    - ``points (P,)``: flat indices of the disc; ``plane (P, 3)``: ``(kx, ky, 0)`` there, in pixels of
      image frequency (the coordinates a neural field or a Fourier-slice lookup takes);
    - ``ctf_basis``: the five phase grids of :func:`~cryoscape.physics.ctf.ctf_phase_basis`.
    """

    def __init__(self, D: int, apix: float, pad: int = 1, dtype: torch.dtype = torch.float32, device=None):
        if D < 2 or pad < 1:
            raise ValueError(f"need D ≥ 2 and pad ≥ 1, got D={D}, pad={pad}")
        if not (apix > 0 and math.isfinite(apix)):
            raise ValueError(f"pixel size must be > 0, got {apix}")
        self.D, self.apix, self.pad = int(D), float(apix), int(pad)
        self.Dp = self.pad * self.D
        self.dtype, self.device = dtype, torch.device(device) if device is not None else torch.device("cpu")
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"ImagingGrid(D={self.D}, apix={self.apix}, pad={self.pad}, dtype={self.dtype}, device={self.device})"

    def to(self, device=None, dtype=None) -> "ImagingGrid":
        """The same grid on another device and/or dtype (its caches are recomputed there)."""
        return ImagingGrid(self.D, self.apix, self.pad, dtype or self.dtype, device or self.device)

    def _cached(self, name: str, make):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    # -- frequencies ---------------------------------------------------------------------------------------
    @property
    def W(self) -> int:
        """Width of the canvas's half plane, ``Dp // 2 + 1``."""
        return self.Dp // 2 + 1

    @property
    def ky(self) -> torch.Tensor:
        return self._freqs()[0]

    @property
    def kx(self) -> torch.Tensor:
        return self._freqs()[1]

    def _freqs(self):
        return self._cached("k", lambda: rfreq_grid_2d(self.Dp, self.apix, dtype=self.dtype, device=self.device))

    @property
    def radius_px(self) -> torch.Tensor:
        """``|k|`` in pixels of ``1/(D apix)``, ``(Dp, W)`` (float64 for exact comparisons)."""
        return self._cached("radius", lambda: rfft_radius_px(self.D, self.pad, self.device))

    @property
    def disc(self) -> torch.Tensor:
        """The Nyquist disc ``|k| ≤ D/2`` (module docstring), ``(Dp, W)`` bool."""
        return self._cached("disc", lambda: nyquist_disc(self.radius_px, self.D))

    @property
    def shell(self) -> torch.Tensor:
        """Shell index ``round(|k|)`` in pixels of image frequency, ``(Dp, W)`` int64."""
        return self._cached("shell", lambda: torch.round(self.radius_px).to(torch.int64))

    @property
    def n_shells(self) -> int:
        """Shells of the FSC (CONVENTIONS.md): ``0 .. D//2 − 1``, so ``D // 2`` of them."""
        return self.D // 2

    @property
    def point_shells(self) -> torch.Tensor:
        """Shell of every disc point, ``(P,)`` int64, for per-shell spectra of :attr:`n_shells` values: the
        disc's outer half-ring (``D/2 − ½ ≤ |k| ≤ D/2``, which rounds to ``D//2``) joins the last shell, so
        ``spectrum[grid.point_shells]`` maps a spectrum onto the points."""
        return self._cached("point_shells", lambda: self.at_points(self.shell).clamp_max(self.n_shells - 1))

    @property
    def friedel(self) -> torch.Tensor:
        """Half-plane weights, ``(Dp, W)`` in ``dtype``: 1 on the ``kx = 0`` column and, for an even canvas, on
        the ``kx = Dp/2`` column (each is its own mirror there), 2 elsewhere."""
        def make():
            col = torch.arange(self.W, device=self.device)
            two = (col > 0) & ~((self.Dp % 2 == 0) & (col == self.Dp // 2))
            return torch.where(two, 2.0, 1.0).to(self.dtype).expand(self.Dp, self.W)
        return self._cached("friedel", make)

    @property
    def points(self) -> torch.Tensor:
        """Flat indices ``(P,)`` into ``(Dp, W)`` of the points inside the disc."""
        return self._cached("points", lambda: torch.nonzero(self.disc.reshape(-1)).reshape(-1))

    @property
    def plane(self) -> torch.Tensor:
        """``(kx, ky, 0)`` at :attr:`points` in pixels of image frequency, ``(P, 3)`` in ``dtype``."""
        def make():
            scale = self.D * self.apix
            kx = self.kx.reshape(-1)[self.points] * scale
            ky = self.ky.reshape(-1)[self.points] * scale
            return torch.stack([kx, ky, torch.zeros_like(kx)], -1)
        return self._cached("plane", make)

    def at_points(self, f: torch.Tensor) -> torch.Tensor:
        """Values of ``(..., Dp, W)`` arrays at the disc points → ``(..., P)``."""
        return f.reshape(*f.shape[:-2], -1)[..., self.points]

    # -- CTF and shifts ------------------------------------------------------------------------------------
    @property
    def ctf_basis(self) -> torch.Tensor:
        """:func:`~cryoscape.physics.ctf.ctf_phase_basis` of the canvas, ``(5, Dp, W)``."""
        return self._cached("ctf_basis", lambda: ctf_phase_basis(self.kx, self.ky))

    def _ctf_basis_shifted(self) -> torch.Tensor:
        """The CTF basis plus a sixth grid, phase π where ``i + j`` is odd: with weight 1 it multiplies the
        CTF by ``(−1)^(i+j)``, which is the ``fftshift`` after an inverse FFT of an even box (free per image)."""
        def make():
            sign = half_box_shift_sign(self.Dp, device=self.device) < 0
            return torch.cat([self.ctf_basis, math.pi * sign.to(self.dtype)[None]])
        return self._cached("ctf_basis_shifted", make)

    def ctf(self, params: CTFParams, with_shift_sign: bool = False) -> torch.Tensor:
        """CTF of every particle of ``params`` on the canvas, ``(N, Dp, W)`` in ``dtype`` (RELION's sign).

        ``with_shift_sign``: times ``(−1)^(i+j)`` (even ``Dp`` only; see :meth:`_ctf_basis_shifted`)."""
        coef = params.phase_coefficients(dtype=self.dtype, device=self.device)
        bfactor = params.bfactor_or_none()
        bfactor = None if bfactor is None else bfactor.to(device=self.device)
        if with_shift_sign:
            coef = torch.cat([coef, torch.ones(len(coef), 1, dtype=coef.dtype, device=coef.device)], dim=1)
            return ctf_from_basis(coef, self._ctf_basis_shifted(), bfactor)
        return ctf_from_basis(coef, self.ctf_basis, bfactor)

    def ctf_points(self, params: CTFParams) -> torch.Tensor:
        """CTF at the disc points, ``(N, P)``."""
        return self.at_points(self.ctf(params))

    def phase_ramp(self, shift_A: torch.Tensor) -> torch.Tensor:
        """``exp(−2πi k·t)`` for shifts ``(N, 2)`` Å on the canvas, ``(N, Dp, W)``: moves content by ``+t``."""
        return phase_ramp(self.kx, self.ky, shift_A.to(device=self.device, dtype=self.dtype))

    # -- real space ----------------------------------------------------------------------------------------
    def pad_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, D, D)`` → ``(N, Dp, Dp)``, the image centred (pixel ``D//2`` → ``Dp//2``), zeros around."""
        if self.pad == 1:
            return images
        out = images.new_zeros(images.shape[0], self.Dp, self.Dp)
        lo = self.Dp // 2 - self.D // 2
        out[:, lo:lo + self.D, lo:lo + self.D] = images
        return out

    def crop_images(self, canvas: torch.Tensor) -> torch.Tensor:
        """``(N, Dp, Dp)`` → the central ``(N, D, D)`` box (inverse of :meth:`pad_images`)."""
        if self.pad == 1:
            return canvas
        lo = self.Dp // 2 - self.D // 2
        return canvas[:, lo:lo + self.D, lo:lo + self.D]

    def to_images(self, f: torch.Tensor) -> torch.Tensor:
        """Canvas transforms ``(N, Dp, W)`` → real images ``(N, D, D)`` (inverse FFT, then the central box)."""
        return self.crop_images(irfft2_centered(f, self.Dp))

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """Real images ``(N, D, D)`` → canvas transforms ``(N, Dp, W)`` (zero-padded, then the FFT)."""
        return rfft2_centered(self.pad_images(images))


def shell_index_3d(D: int, size: int | None = None, device=None, rfft: bool = False) -> torch.Tensor:
    """The 3-D counterpart of :attr:`ImagingGrid.shell`: shell ``round(|q| · D / size)`` of every voxel of the
    transform of a ``D``-voxel map on a ``size``-voxel grid, in pixels of ``1/(D apix)``, int64. ``size``
    defaults to ``D`` (a map's own transform); a transform padded to ``size > D`` (backprojection) keeps the
    same shells. FSC shells are ``0 .. D//2 − 1``.

    Layout: centred ``(size,)*3`` (DC at index ``size // 2``, as :func:`~cryoscape.physics.fourier.fft3_centered`
    gives), or with ``rfft`` the ``(size, size, size//2 + 1)`` half space of ``torch.fft.rfftn`` (DC at 0)."""
    n = D if size is None else int(size)
    i = torch.arange(n, dtype=torch.float64, device=device)
    q = torch.where(i < (n + 1) // 2, i, i - n) if rfft else i - n // 2
    qx = i[: n // 2 + 1] if rfft else q
    rr = torch.sqrt(q[:, None, None] ** 2 + q[None, :, None] ** 2 + qx[None, None, :] ** 2) * (D / n)
    return torch.round(rr).to(torch.int64)


# ------------------------------------------------------------------------------------------------------------
# Projectors
# ------------------------------------------------------------------------------------------------------------

class Projector(Protocol):
    """What the forward model needs from a density: the transforms of its shifted projections.

    ``project_fourier(poses, grid, index)`` → ``(N, D, D//2 + 1)`` complex on the *image* grid (not the
    canvas): the DFT of the projection at ``poses.R`` sampled on the pixel grid, moved by ``poses.shift_A``.
    ``index`` selects, per image, one of several conformations (None: one density, or one per image).
    """

    def project_fourier(self, poses: Poses, grid: ImagingGrid, index: torch.Tensor | None = None) -> torch.Tensor:
        ...


class GaussianAtoms:
    """Gaussian atoms of width ``sigma`` Å and masses ``weights`` (default 1), projected analytically.

    Args:
        coords: ``(A, 3)`` one model, or ``(F, A, 3)`` models (``index`` picks one per image; without
            ``index`` there must be one model per image), Å, ``(x, y, z)`` from the box centre. Any dtype
            and device; gradients flow to ``coords`` (and ``weights``) unless the numba CPU kernel is used.
        method: ``exact`` samples each atom's Gaussian at the pixel centres
            (:func:`~cryoscape.physics.gaussian.project_atoms_real`); ``splat`` spreads each atom with a cubic
            B-spline and applies the Gaussian in Fourier space (:func:`~cryoscape.physics.gaussian.splat_atoms`;
            relative error ~3e-4 at σ = 1.5 px, periodic in the box); ``auto`` splats when σ ≥ 1.5 pixels.
    """

    METHODS = ("auto", "splat", "exact")

    def __init__(self, coords: torch.Tensor, sigma: float, weights: torch.Tensor | None = None,
                 method: str = "auto"):
        if method not in self.METHODS:
            raise ValueError(f"projection must be one of {self.METHODS}, got {method!r}")
        self.coords = coords
        self.sigma = float(sigma)
        self.weights = weights
        self.method = method
        self._filters: dict = {}
        self._buffer = None

    def uses_splat(self, apix: float) -> bool:
        """Whether images at this pixel size are formed by splatting."""
        return self.method == "splat" or (self.method == "auto" and self.sigma >= SPLAT_MIN_SIGMA_PX * apix)

    def _models(self, index):
        c = self.coords
        if c.ndim == 2 or index is None:
            return c
        return c[index.to(c.device)]

    def project_fourier(self, poses: Poses, grid: ImagingGrid, index: torch.Tensor | None = None) -> torch.Tensor:
        D, apix = grid.D, grid.apix
        dtype = self.coords.dtype
        R, t = poses.R.to(dtype), poses.shift_A.to(dtype)
        w = None if self.weights is None else self.weights.to(dtype)
        if not self.uses_splat(apix):
            return rfft2_centered(project_atoms_real(self._models(index), R, self.sigma, D, apix, t, w))
        needs_grad = self.coords.requires_grad or (w is not None and w.requires_grad)
        if R.device.type == "cpu" and dtype == torch.float32 and not needs_grad:
            return self._splat_cpu(R, t, w, index, D, apix)
        px, py = projected_xy(self._models(index), R, t)
        # Positions in pixels from the image origin: splatting at p/apix mod D puts the origin at index 0,
        # the layout rfft2_centered makes by ifftshift, so no shift is needed.
        g = splat_atoms(px / apix, py / apix, D, w)
        return torch.fft.rfft2(g) * self._filter(D, apix, dtype, g.device)

    def _splat_cpu(self, R, t, w, index, D, apix) -> torch.Tensor:
        """The numba kernel of :mod:`cryoscape.utils.cpu_kernels` (float32, no gradients): atoms are splatted
        with the origin at ``D//2`` (no wrap-around away from the edges); the ``ifftshift`` to the origin-at-0
        layout is a sign folded into the filter (even ``D``) or a roll (odd ``D``)."""
        from ..utils.cpu_kernels import splat_cubic_bspline
        coords = self.coords if self.coords.ndim == 3 else self.coords[None]
        n = R.shape[0]
        if index is None:
            index = torch.zeros(n, dtype=torch.int64) if self.coords.ndim == 2 else torch.arange(n)
        if self._buffer is None or self._buffer.shape != (n, D, D):
            self._buffer = np.empty((n, D, D), dtype=np.float32)  # reused: no fresh pages per batch
        g = torch.from_numpy(splat_cubic_bspline(
            coords.detach().numpy(), index.numpy(), R.numpy(), t.numpy(), apix,
            None if w is None else w.detach().numpy(), D, origin=D // 2, out=self._buffer))
        if D % 2:
            return torch.fft.rfft2(torch.fft.ifftshift(g, dim=(-2, -1))).mul_(self._filter(D, apix, torch.float32))
        return torch.fft.rfft2(g).mul_(self._filter(D, apix, torch.float32, centred=True))

    def _filter(self, D: int, apix: float, dtype, device=None, centred: bool = False) -> torch.Tensor:
        """The splat's Fourier filter (cached), times the half-box shift sign when ``centred``."""
        key = (D, apix, dtype, str(device), centred)
        if key not in self._filters:
            f = splat_filter(D, apix, self.sigma, dtype=torch.float32, device=device)
            f = f * half_box_shift_sign(D, device=device) if centred else f
            self._filters[key] = f.to(dtype)
        return self._filters[key]


class VoxelMap:
    """One voxel map ``(D, D, D)`` of voxel size ``apix`` Å, projected by Fourier slice
    (:class:`~cryoscape.physics.slice.FourierSliceProjector`, Fourier grid padded ``pad`` times), then shifted
    by a phase ramp."""

    def __init__(self, volume: torch.Tensor, apix: float, pad: int = 2):
        self.volume, self.apix, self.pad = volume, float(apix), int(pad)
        self._slicer = None

    @property
    def slicer(self) -> FourierSliceProjector:
        if self._slicer is None:
            self._slicer = FourierSliceProjector(self.volume, self.apix, pad=self.pad)
        return self._slicer

    def project_fourier(self, poses: Poses, grid: ImagingGrid, index: torch.Tensor | None = None) -> torch.Tensor:
        if grid.D != self.volume.shape[-1]:
            raise ValueError(f"map of {self.volume.shape[-1]} voxels projected on a {grid.D}-pixel grid")
        f = self.slicer.project_fourier(poses.R.to(self.volume.dtype), grid.points if grid.pad == 1 else None)
        ky, kx = rfreq_grid_2d(grid.D, grid.apix, dtype=self.volume.dtype, device=f.device)
        return f * phase_ramp(kx, ky, poses.shift_A.to(self.volume.dtype))


class FourierField:
    """A density given by its 3-D transform ``V̂(q)`` as a function (a neural decoder, say).

    ``fn(q)`` takes ``q (N, P, 3)`` in pixels of image frequency (``q = Rᵀ k``) and returns ``(N, P)``
    complex or ``(N, P, 2)`` (real, imaginary) values of ``V̂``, scaled as DFT samples of the projection. Only
    the disc points of the grid are evaluated (:func:`forward_points`); :meth:`project_fourier` fills the
    half plane with zeros outside the disc.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn

    def project_points(self, poses: Poses, grid: ImagingGrid) -> torch.Tensor:
        """``V̂(Rᵀ k)`` at the disc points, shifted, ``(N, P)`` complex (or ``(N, P, 2)`` as ``fn`` returns)."""
        plane = grid.plane
        v = self.fn(torch.matmul(plane.to(poses.R.dtype), poses.R).to(plane.dtype))
        if bool(torch.count_nonzero(poses.shift_A)):
            ramp = grid.at_points(phase_ramp(*_image_freqs(grid), poses.shift_A.to(grid.dtype)))
            v = _as_complex(v) * ramp
        return v

    def project_fourier(self, poses: Poses, grid: ImagingGrid, index: torch.Tensor | None = None) -> torch.Tensor:
        if grid.pad != 1:
            raise ValueError("a FourierField is evaluated on an unpadded grid")
        v = self.project_points(poses, grid)
        v = _as_complex(v)
        out = torch.zeros(len(poses), grid.D * grid.W, dtype=v.dtype, device=v.device)
        out[:, grid.points] = v
        return out.reshape(len(poses), grid.D, grid.W)


def _as_complex(v: torch.Tensor) -> torch.Tensor:
    """Real pairs ``(..., 2)`` → complex (half precision raised to float32, float64 kept); complex passes."""
    if v.is_complex():
        return v
    if v.dtype not in (torch.float32, torch.float64):
        v = v.float()
    return torch.view_as_complex(v.contiguous())


def _on_grid(poses: Poses, grid: ImagingGrid) -> Poses:
    """The poses on the grid's device (a no-op when they are there already)."""
    return poses if poses.device == grid.device else poses.to(device=grid.device)


def _image_freqs(grid: ImagingGrid):
    """``(kx, ky)`` of the image grid (= the canvas when ``pad`` is 1)."""
    if grid.pad == 1:
        return grid.kx, grid.ky
    ky, kx = rfreq_grid_2d(grid.D, grid.apix, dtype=grid.dtype, device=grid.device)
    return kx, ky


# ------------------------------------------------------------------------------------------------------------
# The operators
# ------------------------------------------------------------------------------------------------------------

def forward(projector: Projector, poses: Poses, grid: ImagingGrid, ctf: CTFParams | None = None,
            index: torch.Tensor | None = None) -> torch.Tensor:
    """``C · exp(−2πi k·t) · P̂`` on the canvas, ``(N, Dp, Dp//2 + 1)`` complex (no CTF when ``ctf`` is None).

    With ``pad > 1`` the shifted projection is placed on the zero-padded canvas before the CTF acts."""
    f = projector.project_fourier(_on_grid(poses, grid), grid, index)
    if grid.pad > 1:
        f = grid.transform(irfft2_centered(f, grid.D))
    return f if ctf is None else f * grid.ctf(ctf).to(f.device)


def forward_points(projector, poses: Poses, grid: ImagingGrid, ctf: CTFParams | None = None,
                   index: torch.Tensor | None = None, ctf_values: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`forward` at the disc points only, ``(N, P)`` complex (``pad`` must be 1).

    ``ctf_values``: the CTF at the points ``(N, P)`` when the caller has it already (data loaders compute it
    once per image); otherwise it is computed from ``ctf``. A :class:`FourierField` evaluates its function at
    the points alone; any other projector is evaluated on the plane and sampled."""
    if grid.pad != 1:
        raise ValueError("forward_points needs an unpadded grid")
    poses = _on_grid(poses, grid)
    if isinstance(projector, FourierField):
        f = projector.project_points(poses, grid)
        f = _as_complex(f)
    else:
        f = grid.at_points(projector.project_fourier(poses, grid, index))
    if ctf_values is None and ctf is not None:
        ctf_values = grid.ctf_points(ctf)
    return f if ctf_values is None else f * ctf_values


def forward_images(projector: Projector, poses: Poses, grid: ImagingGrid, ctf: CTFParams | None = None,
                   index: torch.Tensor | None = None) -> torch.Tensor:
    """The noiseless particle images, real ``(N, D, D)`` (origin at pixel ``D//2``).

    Without a canvas and for an even box, the ``fftshift`` after the inverse FFT rides on the CTF as a sixth
    phase grid (:meth:`ImagingGrid.ctf` ``with_shift_sign``), so it costs nothing per image."""
    f = projector.project_fourier(_on_grid(poses, grid), grid, index)
    D = grid.D
    if ctf is None:
        return irfft2_centered(f, D)
    if grid.pad > 1:
        canvas = grid.transform(irfft2_centered(f, D))
        return grid.crop_images(irfft2_centered(canvas * grid.ctf(ctf).to(f.device), grid.Dp))
    if D % 2:
        return irfft2_centered(f * grid.ctf(ctf).to(f.device), D)
    c = grid.ctf(ctf, with_shift_sign=True).to(f.device)
    f = f * c if f.requires_grad or c.requires_grad else f.mul_(c)  # f is the projector's own output
    return torch.fft.irfft2(f, s=(D, D))


def centre(images: torch.Tensor, poses: Poses, grid: ImagingGrid) -> torch.Tensor:
    """Transforms of the images with their particles moved to the box centre, on the canvas:
    ``FFT[pad(I)](k) · exp(+2πi k·t)``, ``(N, Dp, Dp//2 + 1)`` complex (``images`` ``(N, D, D)`` real)."""
    f = grid.transform(images.to(device=grid.device, dtype=grid.dtype))
    return f * grid.phase_ramp(poses.relion_origin_A())


def adjoint(f: torch.Tensor, poses: Poses, grid: ImagingGrid, ctf: CTFParams | None, inserter) -> None:
    """The adjoint of projection and CTF: insert centred transforms ``f`` ``(N, Dp, Dp//2 + 1)`` (from
    :func:`centre`), each times its CTF, at its central slice ``Rᵀ (kx, ky, 0)`` into ``inserter`` (a
    :class:`~cryoscape.physics.insert.FourierInserter` made on the same grid), and the CTF² into
    its weights. ``inserter.grids()`` then holds the numerator and weights of the Wiener estimate."""
    c = None if ctf is None else grid.ctf(ctf)
    inserter.insert(f, c, poses.R.to(device=f.device, dtype=grid.dtype), grid.apix)


# ------------------------------------------------------------------------------------------------------------
# The CTF of a whole field (micrographs of any size)
# ------------------------------------------------------------------------------------------------------------

def apply_ctf(images: torch.Tensor, ctf: CTFParams, apix: float, pad: int = 1) -> torch.Tensor:
    """The CTF of each image applied to the whole image: real ``(N, H, W)`` → real ``(N, H, W)``, any ``H × W``
    (micrographs as well as particle boxes), in ``images``' dtype and device; ``images`` is left unchanged.

    On a canvas of ``(Hp, Wp) = (pad · H, pad · W)`` pixels with the image at its centre (pixel ``H//2, W//2``
    at ``Hp//2, Wp//2``), zeros around:

        I'_n = crop( F⁻¹[ CTF_n(k) · F[pad(I_n)](k) ] ),   k = (fftfreq(Wp, apix), fftfreq(Hp, apix)) in 1/Å

    on the ``rfft2`` half plane, with ``CTF_n`` RELION's (:mod:`~cryoscape.physics.ctf`) evaluated by the same
    phase basis and coefficients as :meth:`ImagingGrid.ctf` (for a square image and the same ``pad`` the values
    are those of ``ImagingGrid(H, apix, pad).ctf(ctf)``, so a centred particle gets exactly the CTF of
    :func:`forward_images`). ``pad = 1``: circular (signal the CTF delocalises past one edge re-enters at the
    other); ``pad ≥ 2``: it leaves the field, as from a crop of a larger exposure.

    Args:
        images: ``(N, H, W)`` real. ctf: :class:`~cryoscape.physics.ctf.CTFParams` with ``N`` entries.
        apix: pixel size in Å. pad: canvas factor ≥ 1.
    """
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got {tuple(images.shape)}")
    if len(ctf) != images.shape[0]:
        raise ValueError(f"{len(ctf)} CTF entries for {images.shape[0]} images")
    if pad < 1 or not (apix > 0 and math.isfinite(apix)):
        raise ValueError(f"need pad ≥ 1 and apix > 0, got pad={pad}, apix={apix}")
    N, H, W = images.shape
    Hp, Wp = pad * H, pad * W
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    ky = torch.fft.fftfreq(Hp, d=apix, dtype=dtype, device=images.device)
    kx = torch.fft.rfftfreq(Wp, d=apix, dtype=dtype, device=images.device)
    basis = ctf_phase_basis(*torch.meshgrid(ky, kx, indexing="ij")[::-1])
    ly, lx = Hp // 2 - H // 2, Wp // 2 - W // 2
    out = torch.empty(N, H, W, dtype=dtype, device=images.device)
    for n in range(N):  # one image at a time: memory stays at one canvas
        one = ctf.subset(slice(n, n + 1))
        bfactor = one.bfactor_or_none()
        c = ctf_from_basis(one.phase_coefficients(dtype=dtype, device=images.device), basis,
                           None if bfactor is None else bfactor.to(images.device))[0]
        canvas = images.new_zeros(Hp, Wp, dtype=dtype)
        canvas[ly:ly + H, lx:lx + W] = images[n]
        f = torch.fft.rfft2(torch.fft.ifftshift(canvas)) * c
        field = torch.fft.fftshift(torch.fft.irfft2(f, s=(Hp, Wp)))
        out[n] = field[ly:ly + H, lx:lx + W]
    return out
