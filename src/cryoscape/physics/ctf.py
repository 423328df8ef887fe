"""Contrast transfer function of the microscope (RELION's sign and formula; CONVENTIONS.md).

- Relativistic electron wavelength: ``λ = 12.2643247 / sqrt(V + 0.978466e-6 V²)`` Å, ``V`` in volts.
- Defocus at azimuth ``α`` of the frequency vector (counter-clockwise from +x):
  ``Δf(α) = (ΔfU + ΔfV)/2 + (ΔfU − ΔfV)/2 · cos(2(α − α_ast))``; positive = underfocus, Å.
- Phase: ``χ(s) = π λ Δf s² − (π/2) Cs λ³ s⁴ + φ``, ``Cs`` in Å, ``φ`` the phase-plate shift (radians).
- ``CTF(s) = [sqrt(1 − w²) sin χ + w cos χ] · exp(−B s² / 4)``: ``CTF(0) = +w`` (for ``φ = 0``) and the
  first lobe is positive, so protein stays white at low resolution.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["electron_wavelength", "ctf_2d", "ctf_from_params", "CTFParams", "ctf_phase_basis", "ctf_phase_coefficients",
           "ctf_from_basis"]


def electron_wavelength(voltage_kv: float | torch.Tensor) -> float | torch.Tensor:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = voltage_kv * 1e3
    if isinstance(v, torch.Tensor):
        return 12.2643247 / torch.sqrt(v + 0.978466e-6 * v * v)
    return 12.2643247 / math.sqrt(v + 0.978466e-6 * v * v)


def ctf_2d(kx: torch.Tensor, ky: torch.Tensor, defocus_u: torch.Tensor, defocus_v: torch.Tensor,
           angle_ast: torch.Tensor, voltage_kv: torch.Tensor | float, cs_mm: torch.Tensor | float,
           amp_contrast: torch.Tensor | float, phase_shift: torch.Tensor | float = 0.0,
           bfactor: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Evaluate the CTF on a frequency grid for a batch of micrographs.

    Args:
        kx, ky: frequency grids in 1/Å, shape ``(H, W)`` (any layout, e.g. from ``rfreq_grid_2d``).
        defocus_u, defocus_v: ``(N,)`` defoci in Å (positive underfocus).
        angle_ast: ``(N,)`` astigmatism azimuth ``α_ast`` in radians (direction of ``ΔfU``).
        voltage_kv, cs_mm, amp_contrast: scalars or ``(N,)``: kV, mm, fraction ``w``.
        phase_shift: scalar or ``(N,)`` in radians. bfactor: scalar or ``(N,)`` in Å².
    Returns:
        ``(N, H, W)`` real CTF values.
    """
    coef = ctf_phase_coefficients(defocus_u, defocus_v, angle_ast, voltage_kv, cs_mm, amp_contrast, phase_shift,
                                  dtype=kx.dtype, device=kx.device)
    b = torch.as_tensor(bfactor, dtype=kx.dtype, device=kx.device).reshape(-1)
    return ctf_from_basis(coef, ctf_phase_basis(kx, ky), b if bool((b != 0).any()) else None)


# Δf(α) s² = ½(Δf_U + Δf_V) s² + ½(Δf_U − Δf_V) [cos 2α_ast (kx² − ky²) + sin 2α_ast · 2 kx ky], because
# s² cos 2(α − α_ast) = (kx² − ky²) cos 2α_ast + 2 kx ky sin 2α_ast. So χ + asin w is a per-image linear
# combination of four fixed grids (s², kx² − ky², 2 kx ky, s⁴) plus a constant, one matrix product:
#   χ = π λ Δf(α) s² − ½ π Cs λ³ s⁴ + φ,     CTF = sqrt(1 − w²) sin χ + w cos χ = sin(χ + asin w).

def ctf_phase_basis(kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """The five fixed grids ``(s², kx² − ky², 2 kx ky, s⁴, 1)`` of the CTF phase: ``(5, H, W)``."""
    s2 = kx * kx + ky * ky
    return torch.stack([s2, kx * kx - ky * ky, 2 * kx * ky, s2 * s2, torch.ones_like(s2)])


def ctf_phase_coefficients(defocus_u, defocus_v, angle_ast, voltage_kv, cs_mm, amp_contrast, phase_shift=0.0,
                           dtype=torch.float32, device=None) -> torch.Tensor:
    """Per-image weights ``(N, 5)`` of :func:`ctf_phase_basis` whose sum is ``χ + asin w`` (units as in
    :func:`ctf_2d`): ``(π λ Δf̄, π λ ΔΔf cos 2α_ast, π λ ΔΔf sin 2α_ast, −½ π Cs λ³, φ + asin w)`` with
    ``Δf̄ = (Δf_U + Δf_V)/2`` and ``ΔΔf = (Δf_U − Δf_V)/2``."""
    def col(x):
        return torch.as_tensor(x, dtype=dtype, device=device).reshape(-1, 1)

    dfu, dfv, ang = col(defocus_u), col(defocus_v), col(angle_ast)
    lam = electron_wavelength(col(voltage_kv))
    mean_df, half_ast = 0.5 * (dfu + dfv), 0.5 * (dfu - dfv)
    columns = (math.pi * lam * mean_df, math.pi * lam * half_ast * torch.cos(2 * ang),
               math.pi * lam * half_ast * torch.sin(2 * ang), -0.5 * math.pi * col(cs_mm) * 1e7 * lam ** 3,
               col(phase_shift) + torch.asin(col(amp_contrast)))
    shape = torch.broadcast_shapes(*(c.shape for c in columns))  # any argument may be per image
    return torch.cat([c.expand(shape) for c in columns], dim=1)


def ctf_from_basis(coef: torch.Tensor, basis: torch.Tensor, bfactor: torch.Tensor | None = None) -> torch.Tensor:
    """``sin(coef · basis) · exp(−B s²/4)``: ``(N, H, W)`` from ``coef (N, K)``, ``basis (K, H, W)`` (``K = 5``
    for :func:`ctf_phase_basis`, whose first grid is ``s²``; callers may append grids of extra phase) and
    ``bfactor`` ``(N,)`` in Å² (None: no envelope). One matrix product and one sine per value."""
    arg = (coef @ basis.reshape(basis.shape[0], -1)).reshape(coef.shape[0], *basis.shape[1:])
    ctf = torch.sin(arg) if arg.requires_grad else arg.sin_()
    if bfactor is not None:
        ctf = ctf * torch.exp(-bfactor.to(ctf.dtype).reshape(-1, 1, 1) * basis[0] / 4)
    return ctf


def _as_numpy(v) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    return np.array(v, dtype=np.float64)


class CTFParams:
    """Per-particle CTF parameters as tensors of shape ``(N,)``; frozen (fields cannot be reassigned).

    Units as in STAR files except angles: defoci Å, ``angle_ast`` radians, kV, Cs mm, ``w`` fraction,
    ``phase_shift`` radians, ``bfactor`` Å². Stored in float64 on the CPU unless moved with :meth:`to`.
    """

    fields = ("defocus_u", "defocus_v", "angle_ast", "voltage_kv", "cs_mm", "amp_contrast",
              "phase_shift", "bfactor")

    def __init__(self, defocus_u, defocus_v, angle_ast, voltage_kv, cs_mm, amp_contrast,
                 phase_shift=0.0, bfactor=0.0):
        n = _as_numpy(defocus_u).size
        vals = dict(defocus_u=defocus_u, defocus_v=defocus_v, angle_ast=angle_ast, voltage_kv=voltage_kv,
                    cs_mm=cs_mm, amp_contrast=amp_contrast, phase_shift=phase_shift, bfactor=bfactor)
        for k, v in vals.items():
            t = torch.as_tensor(_as_numpy(v)).reshape(-1)
            object.__setattr__(self, k, t.expand(n).clone() if t.numel() == 1 else t)
            if getattr(self, k).numel() != n:
                raise ValueError(f"CTF parameter {k} has {t.numel()} values, expected {n}")

    def __setattr__(self, name, value):
        raise AttributeError(f"CTFParams is frozen: cannot set {name!r} (make a new one)")

    def __len__(self) -> int:
        return self.defocus_u.numel()

    @property
    def device(self) -> torch.device:
        return self.defocus_u.device

    def _with(self, fn) -> "CTFParams":
        out = CTFParams.__new__(CTFParams)  # the fields are already checked tensors: no conversion
        for k in self.fields:
            object.__setattr__(out, k, fn(getattr(self, k)))
        return out

    def to(self, device=None, dtype=None) -> "CTFParams":
        """The same parameters on ``device`` and/or in floating ``dtype``."""
        return self._with(lambda t: t.to(device=device, dtype=dtype))

    def phase_coefficients(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """:func:`ctf_phase_coefficients` of every particle, ``(N, 5)``."""
        return ctf_phase_coefficients(self.defocus_u, self.defocus_v, self.angle_ast, self.voltage_kv, self.cs_mm,
                                      self.amp_contrast, self.phase_shift, dtype=dtype, device=device)

    def bfactor_or_none(self) -> torch.Tensor | None:
        """The B-factors ``(N,)``, or None when all are 0 (no envelope to apply)."""
        return self.bfactor if bool((self.bfactor != 0).any()) else None

    def subset(self, index) -> "CTFParams":
        """Parameters of the particles at ``index`` (slice, list, array or tensor)."""
        if isinstance(index, np.ndarray):
            index = torch.as_tensor(index)
        if isinstance(index, torch.Tensor):
            index = index.to(self.device)
        return self._with(lambda t: t[index].reshape(-1))


def ctf_from_params(params: CTFParams, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """:func:`ctf_2d` for a :class:`CTFParams` batch; returns ``(N, H, W)`` in ``kx``'s dtype."""
    return ctf_2d(kx, ky, params.defocus_u, params.defocus_v, params.angle_ast, params.voltage_kv,
                  params.cs_mm, params.amp_contrast, params.phase_shift, params.bfactor)
