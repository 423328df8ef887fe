"""The spectral model of conformations and its fit to particle images with known poses.

For particle ``n`` with spectral coordinates ``v_n ∈ R^k`` (:mod:`.graph`):

    ψ_n = ψ⁰ + Γ_ψ v_n (+ β_ψ),      θ_n = θ⁰ + Γ_θ v_n (+ β_θ)

with ``(ψ⁰, θ⁰)``, the bond lengths and the reference frame taken from the given model and ``Γ`` (and the
optional bias ``β``) initialised at zero, so training starts from the given model. The chain is rebuilt
(:func:`cryoscape.structure.internal_to_chain`), seen at the particle's known pose and offset, rendered as
Gaussian atoms with its CTF by the one forward model (:mod:`cryoscape.physics.imaging`, exact Gaussian
projection), and compared with the image by the mean squared error over pixels, divided by the images' mean
square (so learning rates do not depend on units). The error is computed on the transforms
(:func:`cryoscape.physics.likelihood.squared_error` with the Friedel weights of the half plane, which by
Parseval's theorem is ``D²`` times the pixel mean; the ``D²`` cancels in the ratio):

    loss = Σ_n Σ_k w_k |Ŝ_n(k) − Ŷ_n(k)|²  /  Σ_n Σ_k w_k |Ŷ_n(k)|²   (over a batch, n; the denominator over
                                                                      all training images, per image)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ...geometry.poses import Poses
from ...physics.ctf import CTFParams
from ...physics.imaging import GaussianAtoms, ImagingGrid, forward, forward_images
from ...physics.likelihood import squared_error
from ...structure.chain import ChainCoordinates, internal_to_chain

__all__ = ["LinearAngleModel", "SegmentedAngleModel", "CartesianModel", "refine_cartesian", "FitConfig",
           "render_particles", "render_fourier", "image_error", "mean_power", "fit_model", "chain_dct_basis",
           "segment_modes", "segment_dct_basis", "rotation_modes", "bond_mask"]


class LinearAngleModel(nn.Module):
    """Angles linear in the spectral coordinates, around a reference chain.

    Args:
        reference: :class:`ChainCoordinates` of one chain (batch 1): ``ψ⁰, θ⁰``, bonds and reference frame.
        k: number of spectral coordinates. bias: learn a constant offset of the angles too.
    """

    def __init__(self, reference: ChainCoordinates, k: int, bias: bool = False):
        super().__init__()
        m = reference.psi.shape[-1]
        dt = reference.psi.dtype
        # the reference as buffers, so that .to(device) moves it with the parameters
        self.register_buffer("psi0", reference.psi.detach().clone())
        self.register_buffer("theta0", reference.theta.detach().clone())
        self.register_buffer("bonds0", reference.bonds.detach().clone())
        self.register_buffer("ref_pos0", reference.ref_pos.detach().clone())
        self.register_buffer("ref_frame0", reference.ref_frame.detach().clone())
        self.ref_index = int(reference.ref)
        self.gamma_psi = nn.Parameter(torch.zeros(m, k, dtype=dt))
        self.gamma_theta = nn.Parameter(torch.zeros(m, k, dtype=dt))
        self.bias_psi = nn.Parameter(torch.zeros(m, dtype=dt)) if bias else None
        self.bias_theta = nn.Parameter(torch.zeros(m, dtype=dt)) if bias else None

    @property
    def ref(self) -> ChainCoordinates:
        """The reference chain (batch 1)."""
        return ChainCoordinates(self.psi0, self.theta0, self.bonds0, self.ref_index, self.ref_pos0, self.ref_frame0)

    def angles(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``v (n, k)`` → ``ψ, θ`` each ``(n, L−2)``."""
        psi = self.psi0 + v @ self.gamma_psi.T
        theta = self.theta0 + v @ self.gamma_theta.T
        if self.bias_psi is not None:
            psi, theta = psi + self.bias_psi, theta + self.bias_theta
        return psi, theta

    def forward(self, v: torch.Tensor, ref_pos: torch.Tensor | None = None,
                ref_frame: torch.Tensor | None = None) -> torch.Tensor:
        """``v (n, k)`` → Cα positions ``(n, L, 3)`` (Å), anchored at the reference's atom and frame, or at
        per-particle ``ref_pos (n, 3)`` and ``ref_frame (n, 3, 3)`` when given (the paper's protocol gives
        the model each particle's true anchor)."""
        psi, theta = self.angles(v)
        n = v.shape[0]
        pos = self.ref_pos0.expand(n, -1) if ref_pos is None else ref_pos
        frame = self.ref_frame0.expand(n, -1, -1) if ref_frame is None else ref_frame
        c = ChainCoordinates(psi, theta, self.bonds0.expand(n, -1), self.ref_index, pos, frame)
        return internal_to_chain(c)


LINK_SHIFT_UNIT_A = 10.0  # Å per unit of a segment link's shift coefficients


def _skew(w: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` → ``(..., 3, 3)`` cross-product matrices ``[w]ₓ``."""
    z = torch.zeros_like(w[..., 0])
    return torch.stack([z, -w[..., 2], w[..., 1], w[..., 2], z, -w[..., 0], -w[..., 1], w[..., 0], z],
                       -1).reshape(*w.shape, 3)


class SegmentedAngleModel(nn.Module):
    """The angle model of a model cut into segments (several chains, missing loops): bend and torsion angles
    linear in the spectral coordinates *within* each segment, and a rigid link per segment that places it
    relative to the primary segment (the longest); no bond, angle or torsion spans a gap.

    For segment ``s`` with reference internal coordinates ``(ψ⁰_s, θ⁰_s, d_s)`` (:mod:`cryoscape.structure.chain`)
    and the primary segment ``p`` anchored at atom ``x_p`` with frame ``F_p`` (rows n, b, t):

        ψ_s = ψ⁰_s + Γ_ψ,s v,   θ_s = θ⁰_s + Γ_θ,s v                         (as :class:`LinearAngleModel`)
        F_s = exp([Ω_s u]ₓ) M⁰_s F_p,   x_s = x_p + F_pᵀ (c⁰_s + 10 Å · C_s u),      u = v / v_rms

    with ``M⁰_s = F⁰_s F⁰_pᵀ`` and ``c⁰_s = F⁰_p (x⁰_s − x⁰_p)`` the reference's relative placement (both
    invariant under a rotation of the whole model), ``Ω_s`` (radians) and ``C_s`` (units of 10 Å, so that an
    optimiser step moves a segment's end about as far as it turns it) ``(3, k)`` zero-initialised.
    With zero coefficients the reference is rebuilt exactly. A single segment is :class:`LinearAngleModel`.

    Args:
        reference: ``(L, 3)`` Cα positions (Å). segments: :class:`~cryoscape.structure.segments.Segment` list
            covering them (each ≥ 3 atoms). k: spectral coordinates. v_rms: their root mean square.
        bias: learn constant angle offsets too. constant_bonds: each segment's bonds set to its mean length.
    """

    def __init__(self, reference: torch.Tensor, segments, k: int, v_rms: float, bias: bool = False,
                 constant_bonds: bool = False):
        super().__init__()
        from ...structure.chain import chain_to_internal
        x = torch.as_tensor(reference)
        dt = x.dtype
        self.segments = list(segments)
        self.primary = max(range(len(self.segments)), key=lambda i: len(self.segments[i]))
        self.v_rms = float(v_rms)
        internal = [chain_to_internal(x[s.atoms][None]) for s in self.segments]
        if constant_bonds:
            for c in internal:
                c.bonds = torch.full_like(c.bonds, float(c.bonds.mean()))
        self.ref_index = [c.ref for c in internal]
        self.n_angles = [c.psi.shape[1] for c in internal]
        self.register_buffer("psi0", torch.cat([c.psi for c in internal], 1))
        self.register_buffer("theta0", torch.cat([c.theta for c in internal], 1))
        self.register_buffer("bonds0", torch.cat([c.bonds for c in internal], 1))
        p = internal[self.primary]
        self.register_buffer("ref_pos0", p.ref_pos.clone())
        self.register_buffer("ref_frame0", p.ref_frame.clone())
        others = [i for i in range(len(self.segments)) if i != self.primary]
        self.others = others
        Fp, xp = p.ref_frame[0], p.ref_pos[0]
        M0 = [internal[i].ref_frame[0] @ Fp.T for i in others]
        c0 = [Fp @ (internal[i].ref_pos[0] - xp) for i in others]
        S = len(others)
        self.register_buffer("link_rot0", torch.stack(M0) if S else torch.zeros(0, 3, 3, dtype=dt))
        self.register_buffer("link_pos0", torch.stack(c0) if S else torch.zeros(0, 3, dtype=dt))
        m = self.psi0.shape[1]
        self.gamma_psi = nn.Parameter(torch.zeros(m, k, dtype=dt))
        self.gamma_theta = nn.Parameter(torch.zeros(m, k, dtype=dt))
        self.link_omega = nn.Parameter(torch.zeros(S, 3, k, dtype=dt))
        self.link_shift = nn.Parameter(torch.zeros(S, 3, k, dtype=dt))
        self.bias_psi = nn.Parameter(torch.zeros(m, dtype=dt)) if bias else None
        self.bias_theta = nn.Parameter(torch.zeros(m, dtype=dt)) if bias else None

    def forward(self, v: torch.Tensor, ref_pos: torch.Tensor | None = None,
                ref_frame: torch.Tensor | None = None) -> torch.Tensor:
        """``v (n, k)`` → Cα positions ``(n, L, 3)`` (Å); the primary segment anchored at ``ref_pos (n, 3)``,
        ``ref_frame (n, 3, 3)`` when given (the paper's protocol), else at the reference's anchor."""
        from ...structure.chain import ChainCoordinates, internal_to_chain
        n = v.shape[0]
        psi = self.psi0 + v @ self.gamma_psi.T
        theta = self.theta0 + v @ self.gamma_theta.T
        if self.bias_psi is not None:
            psi, theta = psi + self.bias_psi, theta + self.bias_theta
        xp = self.ref_pos0.expand(n, -1) if ref_pos is None else ref_pos
        Fp = self.ref_frame0.expand(n, -1, -1) if ref_frame is None else ref_frame
        u = v / self.v_rms
        anchors = {self.primary: (xp, Fp)}
        for j, i in enumerate(self.others):
            rot = torch.linalg.matrix_exp(_skew(u @ self.link_omega[j].T))  # (n, 3, 3)
            frame = rot @ self.link_rot0[j] @ Fp
            shift = self.link_pos0[j] + LINK_SHIFT_UNIT_A * (u @ self.link_shift[j].T)
            pos = xp + (Fp.transpose(-1, -2) @ shift[..., None])[..., 0]
            anchors[i] = (pos, frame)
        out, a = [], 0
        for i, seg in enumerate(self.segments):
            b = a + self.n_angles[i]
            bonds = self.bonds0[:, a + i:b + i + 1]  # a segment of L_s atoms has L_s − 2 angles, L_s − 1 bonds
            c = ChainCoordinates(psi[:, a:b], theta[:, a:b], bonds.expand(n, -1), self.ref_index[i], *anchors[i])
            out.append(internal_to_chain(c))
            a = b
        return torch.cat(out, 1)


def chain_dct_basis(L: int, m: int, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal ``(3L, 3m)`` basis of displacements that vary smoothly along a chain of ``L`` atoms: the
    first ``m`` cosines ``cos(π (i + ½) j / L)`` of the atom index ``i``, for each axis (row ``3i + a``).

    Measured on the AdK trajectory, the displacements of all 102 frames from frame 0 lie within 0.93 Å
    (mean over atoms) of the span of 40 cosines, and within 0.59 Å of 80.
    """
    i = torch.arange(L, dtype=torch.float64)
    C = torch.stack([torch.cos(math.pi * (i + 0.5) * j / L) for j in range(m)], 1)
    C = C / C.norm(dim=0)
    return torch.kron(C, torch.eye(3, dtype=torch.float64)).to(dtype)


def segment_modes(segments, m: int) -> list[int]:
    """Cosines per segment: each chain gets about ``m``, shared among its segments by length,
    ``m_s = clip(⌊m · L_s / L_chain⌋, 1, L_s)`` (at least the segment's translation; never more than its
    atoms). The rule is monotone in ``m``, so a finer basis always contains the coarser one.

    Args:
        segments: :class:`~cryoscape.structure.segments.Segment` list covering the model (None: one segment
            of ``m`` cosines, handled by the caller).
    """
    from ...structure.segments import segments_by_chain
    chain_len = {c: sum(len(s) for s in segs) for c, segs in segments_by_chain(segments).items()}
    return [max(1, min(len(s), (m * len(s)) // chain_len[s.chain])) for s in segments]


def rotation_modes(x: torch.Tensor) -> torch.Tensor:
    """``(3L, 3)`` displacements of a small rotation of the atoms ``x (L, 3)`` about their centroid ``c``:
    column ``a`` is ``e_a × (x_i − c)`` (row ``3i + b``), the first-order motion of a turn about axis ``a``."""
    r = x - x.mean(0)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    return torch.stack([torch.cross(eye[a].expand_as(r), r, dim=-1).reshape(-1) for a in range(3)], 1)


def segment_dct_basis(segments, m: int, dtype=torch.float64, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Block-diagonal ``(3L, 3M + …)`` orthonormal basis: each segment's own :func:`chain_dct_basis` with
    :func:`segment_modes` cosines, so no displacement pattern spans a gap or two chains. With ``reference``
    ``(L, 3)`` each block also spans the segment's three :func:`rotation_modes` (orthonormalised after the
    cosines, which come first; dropped where the cosines already span everything), so a segment can turn as a
    body: as a function of the residue index those displacements are rough, and a few cosines miss them."""
    L = segments[-1].stop
    blocks = []
    for s, ms in zip(segments, segment_modes(segments, m)):
        C = chain_dct_basis(len(s), ms, torch.float64)
        if reference is not None:
            rot = rotation_modes(torch.as_tensor(reference, dtype=torch.float64)[s.atoms])
            rot = rot - C @ (C.T @ rot)
            Q, Rr = torch.linalg.qr(rot)
            keep = Rr.diagonal().abs() > 1e-8 * max(1.0, float(rot.norm()))
            C = torch.cat([C, Q[:, keep]], 1)
        blocks.append(C.to(dtype))
    B = torch.zeros(3 * L, sum(b.shape[1] for b in blocks), dtype=dtype)
    col = 0
    for s, b in zip(segments, blocks):
        B[3 * s.start:3 * s.stop, col:col + b.shape[1]] = b
        col += b.shape[1]
    return B


def bond_mask(segments, L: int) -> torch.Tensor:
    """``(L − 1,)`` bool: True where atoms ``i`` and ``i + 1`` are bonded (in one segment); None: all."""
    mask = torch.zeros(max(L - 1, 0), dtype=torch.bool)
    for s in segments or []:
        mask[s.start:s.stop - 1] = True
    if segments is None:
        mask[:] = True
    return mask


class CartesianModel(nn.Module):
    """Atom positions linear in the spectral coordinates (plus an optional small MLP), around a reference chain:

        x_n = x⁰ + B [Γ u_n + Λ tanh(W u_n + b)],   u_n = v_n / s
        (B: (3L, 3m) smooth basis along the chain; Γ: (3m, k) and Λ: (3m, h) zero-initialised;
         W: (h, k), b: (h,) random; h = ``hidden``, 0 for the linear model)

    with ``x⁰`` the given model (in the particles' model frame), ``s`` the root mean square of the spectral
    coordinates (so ``Γ`` is in Å) and ``B`` the first ``m`` cosines along the chain per axis
    (:func:`chain_dct_basis`; ``m`` = None: every atom free, ``B`` = identity). Measured on the seed
    protocol's oracle graph, least squares of the true positions on 10 eigenvectors leaves 0.35 Å, while the
    angle model's Cα positions follow a chain of rotations whose errors add up along the chain. The smooth
    basis is the regulariser: with every atom free, the fit to noisy images wanders (measured: worse than
    the given model after 30 epochs). Bond lengths are not built in; ``bond_weight`` adds
    ``w · mean((|x_{i+1} − x_i| − d_i)²)`` (Å², ``d`` the given model's bonds) to the loss.

    Args:
        reference: ``(L, 3)`` Å. k: number of spectral coordinates. v_rms: their root mean square ``s``.
        smooth_modes: ``m`` (None: no basis). bond_weight: weight of the bond-length penalty (0: none).
        hidden: units ``h`` of the MLP term (0: none); seed: seed of its random first layer.
    """

    def __init__(self, reference: torch.Tensor, k: int, v_rms: float, smooth_modes: int | None = 40,
                 bond_weight: float = 0.0, hidden: int = 0, seed: int = 0, segments=None):
        super().__init__()
        ref = torch.as_tensor(reference)
        L = ref.shape[0]
        self.register_buffer("x0", ref)
        self.register_buffer("bonds", (ref[1:] - ref[:-1]).norm(dim=-1))
        self.segments = None if segments is None or len(segments) <= 1 else list(segments)
        self.register_buffer("bonded", bond_mask(self.segments, L), persistent=False)
        self.smooth_modes = smooth_modes
        # the basis is a function of (segments, m): not saved in checkpoints (its 3L × 3m values would dominate)
        if smooth_modes is None:
            basis, width = None, 3 * L
        elif self.segments is None:
            basis = chain_dct_basis(L, min(int(smooth_modes), L), ref.dtype)
            width = basis.shape[1]
        else:
            basis = segment_dct_basis(self.segments, int(smooth_modes), ref.dtype, ref)
            width = basis.shape[1]
        self.register_buffer("basis", basis, persistent=False)
        self.v_rms, self.bond_weight = float(v_rms), float(bond_weight)
        self.gamma = nn.Parameter(torch.zeros(width, k, dtype=ref.dtype))
        self.hidden, self.seed = int(hidden), int(seed)
        if self.hidden > 0:
            g = torch.Generator().manual_seed(self.seed)
            self.w_in = nn.Parameter(torch.randn(self.hidden, k, generator=g, dtype=ref.dtype))
            self.b_in = nn.Parameter(torch.randn(self.hidden, generator=g, dtype=ref.dtype))
            self.lam = nn.Parameter(torch.zeros(width, self.hidden, dtype=ref.dtype))

    def forward(self, v: torch.Tensor, ref_pos=None, ref_frame=None) -> torch.Tensor:
        """``v (n, k)`` → positions ``(n, L, 3)`` Å (anchors are not used: positions are absolute)."""
        u = v / self.v_rms
        d = u @ self.gamma.T  # (n, 3m)
        if self.hidden > 0:
            d = d + torch.tanh(u @ self.w_in.T + self.b_in) @ self.lam.T
        if self.basis is not None:
            d = d @ self.basis.T
        return self.x0 + d.reshape(v.shape[0], *self.x0.shape)

    def regulariser(self, coords: torch.Tensor) -> torch.Tensor:
        """Bond-length penalty of ``coords (n, L, 3)`` (0 when ``bond_weight`` is 0)."""
        if self.bond_weight == 0:
            return coords.new_zeros(())
        d = (coords[:, 1:] - coords[:, :-1]).norm(dim=-1)[:, self.bonded]  # never across a gap or chain
        return self.bond_weight * ((d - self.bonds[self.bonded]) ** 2).mean()


def refine_cartesian(model: CartesianModel, smooth_modes: int) -> CartesianModel:
    """A model with ``smooth_modes`` cosines (more than ``model``'s) that starts where ``model`` is: the
    cosine bases are nested (per segment, :func:`segment_modes` is monotone), so the coarse displacement
    ``B_c Γ_c`` is exactly ``B_f Γ_f`` with ``Γ_f = B_fᵀ B_c Γ_c`` (both bases orthonormal). Coarse first, then
    fine: measured on AdK from the images alone, 20 then 60 cosines reach 1.66 Å where 40 from the start
    wander to 3.9 Å."""
    fine = CartesianModel(model.x0, model.gamma.shape[1], model.v_rms, smooth_modes, model.bond_weight,
                          model.hidden, model.seed, model.segments)
    if model.basis is None or fine.basis is None:
        raise ValueError("refining needs a cosine basis in both models")
    coarse_modes = [model.basis.shape[1]] if model.segments is None else segment_modes(model.segments,
                                                                                       model.smooth_modes)
    fine_modes = [fine.basis.shape[1]] if fine.segments is None else segment_modes(fine.segments, smooth_modes)
    if any(f < c for f, c in zip(fine_modes, coarse_modes)):
        raise ValueError("the refined model needs at least as many cosines as the coarse one")
    carry = fine.basis.T @ model.basis  # (3M_f, 3M_c): a selection matrix when the bases are nested
    with torch.no_grad():
        fine.gamma.copy_(carry @ model.gamma)
        if model.hidden > 0:
            fine.w_in.copy_(model.w_in)
            fine.b_in.copy_(model.b_in)
            fine.lam.copy_(carry @ model.lam)
    return fine


def _poses(R: torch.Tensor, offsets: torch.Tensor, dtype: torch.dtype) -> Poses:
    return Poses(R.to(dtype), offsets.to(device=R.device, dtype=dtype))


def render_particles(coords: torch.Tensor, R: torch.Tensor, offsets: torch.Tensor, ctf: CTFParams | None,
                     sigma: float, D: int, apix: float, grid: ImagingGrid | None = None) -> torch.Tensor:
    """Gaussian-atom images of ``coords (n, A, 3)`` at poses ``R (n, 3, 3)`` and offsets ``(n, 2)`` Å (the
    particle's displacement from the box centre, :class:`~cryoscape.geometry.poses.Poses` ``shift_A``), with
    the CTF (None: none) → ``(n, D, D)``: :func:`cryoscape.physics.imaging.forward_images` of
    :class:`~cryoscape.physics.imaging.GaussianAtoms` (``method="exact"``), differentiable in ``coords``.
    ``grid``: an :class:`ImagingGrid` ``(D, apix)`` to reuse (its CTF basis is cached)."""
    grid = grid if grid is not None else ImagingGrid(D, apix, dtype=coords.dtype, device=coords.device)
    return forward_images(GaussianAtoms(coords, sigma, method="exact"), _poses(R, offsets, coords.dtype), grid, ctf)


def render_fourier(coords: torch.Tensor, R: torch.Tensor, offsets: torch.Tensor, ctf: CTFParams | None,
                   sigma: float, grid: ImagingGrid) -> torch.Tensor:
    """The transforms of :func:`render_particles`' images on the ``rfft2`` half plane, ``(n, D, D//2 + 1)``
    complex (:func:`cryoscape.physics.imaging.forward`; no inverse FFT)."""
    return forward(GaussianAtoms(coords, sigma, method="exact"), _poses(R, offsets, coords.dtype), grid, ctf)


def image_error(pred_f: torch.Tensor | None, images: torch.Tensor, grid: ImagingGrid) -> torch.Tensor:
    """Per-image squared error ``Σ_k w_k |p̂(k) − ŷ(k)|² / Σ_k w_k`` ``(n,)`` between predicted transforms
    ``(n, D, W)`` and real images ``(n, D, D)`` (transformed here), with the half plane's Friedel weights
    (:func:`cryoscape.physics.likelihood.squared_error`). By Parseval's theorem this is the sum of squared
    pixel differences, ``D²`` times their mean. ``pred_f`` None: the images' own power ``Σ_k w_k |ŷ(k)|² / Σ_k w_k``."""
    data = grid.transform(images.to(device=grid.device, dtype=grid.dtype))
    return squared_error(torch.zeros_like(data) if pred_f is None else pred_f, data, grid.friedel)


def mean_power(images: torch.Tensor, grid: ImagingGrid, chunk: int = 1024) -> float:
    """The images' mean :func:`image_error` against zero, ``(1/N) Σ_n Σ_k w_k |ŷ_n(k)|² / Σ_k w_k`` (= ``D²``
    times their mean square pixel), computed ``chunk`` images at a time."""
    total = sum(float(image_error(None, images[s:s + chunk], grid).sum()) for s in range(0, len(images), chunk))
    return total / len(images)


@dataclass
class FitConfig:
    """Training options: ``optimizer`` "sgd" (with ``momentum``, as in the paper) or "adam"; ``schedule``
    "constant" or "cosine" (the step of epoch ``e`` of ``E`` is ``lr · ½(1 + cos(π (e − 1) / E))``: large
    steps first, small ones at the end, which keeps long runs at a large ``lr`` from wandering); ``device``
    "auto" (a GPU when torch sees one), "cpu", "cuda" or "cuda:N".

    ``checkpoint``: a file written (atomically) after every epoch with the model, the optimiser, the
    shuffling generator and the history; when it exists at the start, training resumes from it and ends
    with the same parameters as an uninterrupted run.
    """

    epochs: int = 30
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    optimizer: str = "sgd"
    schedule: str = "constant"
    sigma: float = 3.0
    seed: int = 0
    checkpoint: str | None = None
    device: str = "auto"
    history: list = field(default_factory=list)


def fit_model(model: nn.Module, v: torch.Tensor, images: torch.Tensor, R: torch.Tensor,
              offsets: torch.Tensor, ctf: CTFParams | None, D: int, apix: float, cfg: FitConfig,
              progress=None, anchors: tuple[torch.Tensor, torch.Tensor] | None = None,
              on_epoch=None, log=None) -> list[dict]:
    """Minimise the mean squared image error (module docstring) over the model's parameters, with the one
    training loop (:class:`cryoscape.methods.training.Trainer`): the model and the data on ``cfg.device``,
    one CPU generator seeded ``cfg.seed`` drawing every epoch's order (``torch.randperm``; ``rng="continuous"``),
    a checkpoint after every epoch, and under ``torchrun`` each rank fitting its part of every global batch
    of ``cfg.batch_size`` (DistributedDataParallel averages the gradients).

    Args:
        model: a :class:`LinearAngleModel` or :class:`CartesianModel` (moved to the device in place).
        v: ``(N, k)`` spectral coordinates of the training particles; images ``(N, D, D)``; R, offsets,
        ctf: their known poses, offsets (Å, the particle's displacement from the box centre) and CTF.
        progress: object with ``advance(n)``, advanced by the images of every batch.
        anchors: optional per-particle ``(ref_pos (N, 3), ref_frame (N, 3, 3))`` (see ``forward``).
        on_epoch: optional callback ``f(epoch, model)`` after every epoch (e.g. to record test errors).
        log: a logger for one line per epoch (rank 0).
    Returns:
        The per-epoch history: ``{"epoch", "lr", "loss", "wall_s", "images_per_s"}`` (loss relative to the
        images' mean square; ``wall_s`` of the epoch).
    """
    from ...data.loader import shuffled_batches
    from ..training import TrainConfig, Trainer
    from ...utils.devices import to_device

    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    if cfg.schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    N = v.shape[0]
    train_cfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule=cfg.schedule, seed=cfg.seed, rng="continuous",
                            device=cfg.device, precision="fp32", checkpoint=cfg.checkpoint)
    signature = {"method": "spectral", "n_train": N, "optimizer": cfg.optimizer, "lr": cfg.lr,
                 "momentum": cfg.momentum if cfg.optimizer == "sgd" else None, "schedule": cfg.schedule,
                 "batch_size": cfg.batch_size, "sigma": cfg.sigma}
    trainer = Trainer(model, opt, train_cfg, signature, log)
    dev = trainer.device
    v, images, R, offsets, anchors = to_device((v, images, R, offsets, anchors), dev)
    ctf = None if ctf is None else ctf.to(dev)
    grid = ImagingGrid(D, apix, dtype=torch.float64, device=dev)
    scale = 1.0 / mean_power(images, grid)
    regulariser = getattr(model, "regulariser", None)

    def step(idx, ctx):
        if len(idx) == 0:  # this rank's empty part of a last batch (the trainer zeroes it)
            return images.new_zeros(()), 0
        coords = model(v[idx]) if anchors is None else model(v[idx], anchors[0][idx], anchors[1][idx])
        pred = render_fourier(coords, R[idx], offsets[idx], None if ctf is None else ctf.subset(idx), cfg.sigma,
                              grid)
        loss = image_error(pred, images[idx], grid).mean() * scale
        if regulariser is not None:
            loss = loss + regulariser(coords)
        return loss, len(idx)

    return trainer.fit(step, lambda epoch, gen: shuffled_batches(N, cfg.batch_size, gen), progress=progress,
                       on_epoch=on_epoch)
