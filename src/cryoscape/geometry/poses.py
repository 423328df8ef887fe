"""Particle poses with one sign convention, and the conversions at the file boundary.

A pose is a rotation ``R`` (3×3, RELION's ``A = Rz(psi) Ry(tilt) Rz(rot)``: it rotates the reference into
the particle's view) and an in-plane shift ``shift_A = (tx, ty)`` in Å: where the particle's centre sits in
the image, measured from the box centre (pixel ``D // 2``). The forward model moves the projection by
``+shift_A``:

    image(x, y) = ∫ V(Rᵀ ((x, y) − shift_A, z)) dz

Files use other conventions, converted here and nowhere else:

- RELION ``rlnOriginXAngst/YAngst`` is the shift that, applied to the image, brings the particle to the box
  centre: ``origin_A = −shift_A``.
- cryoDRGN ``trans`` is RELION's origin as a fraction of the box: ``trans = origin_A / (D · apix)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Poses"]


@dataclass(frozen=True)
class Poses:
    """``R (N, 3, 3)`` and ``shift_A (N, 2)`` as tensors of one dtype and device (module docstring)."""

    R: torch.Tensor
    shift_A: torch.Tensor

    def __post_init__(self):
        R = torch.as_tensor(self.R)
        if not R.is_floating_point():
            R = R.to(torch.float64)
        if R.ndim != 3 or R.shape[1:] != (3, 3):
            raise ValueError(f"R must be (N, 3, 3), got {tuple(R.shape)}")
        t = torch.as_tensor(self.shift_A, dtype=R.dtype, device=R.device)
        if t.shape != (R.shape[0], 2):
            raise ValueError(f"shift_A must be ({R.shape[0]}, 2), got {tuple(t.shape)}")
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "shift_A", t)

    def __len__(self) -> int:
        return self.R.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.R.dtype

    @property
    def device(self) -> torch.device:
        return self.R.device

    def subset(self, index) -> "Poses":
        """The poses at ``index`` (slice, integer array or tensor, boolean mask), in that order."""
        if isinstance(index, np.ndarray):
            index = torch.as_tensor(index)
        if isinstance(index, torch.Tensor):
            index = index.to(self.R.device)
        return Poses(self.R[index].reshape(-1, 3, 3), self.shift_A[index].reshape(-1, 2))

    def to(self, device=None, dtype=None) -> "Poses":
        """The same poses on ``device`` and/or in floating ``dtype``."""
        return Poses(self.R.to(device=device, dtype=dtype), self.shift_A.to(device=device, dtype=dtype))

    @classmethod
    def identity(cls, n: int, dtype=torch.float64, device=None) -> "Poses":
        """``n`` unrotated, centred poses."""
        return cls(torch.eye(3, dtype=dtype, device=device).expand(n, 3, 3).clone(),
                   torch.zeros(n, 2, dtype=dtype, device=device))

    # -- RELION ------------------------------------------------------------------------------------------
    @classmethod
    def from_relion(cls, R, origin_A) -> "Poses":
        """From pose matrices and RELION origins ``(N, 2)`` Å (``rlnOriginXAngst``, ``rlnOriginYAngst``)."""
        R = torch.as_tensor(np.asarray(R) if not isinstance(R, torch.Tensor) else R)
        return cls(R, -torch.as_tensor(np.asarray(origin_A) if not isinstance(origin_A, torch.Tensor)
                                        else origin_A, dtype=R.dtype))

    def relion_origin_A(self) -> torch.Tensor:
        """RELION ``(rlnOriginXAngst, rlnOriginYAngst)``: ``−shift_A``, ``(N, 2)``."""
        return -self.shift_A

    # -- cryoDRGN ----------------------------------------------------------------------------------------
    @classmethod
    def from_cryodrgn(cls, rot, trans, D: int, apix: float) -> "Poses":
        """From cryoDRGN's ``rot (N, 3, 3)`` and ``trans (N, 2)`` (RELION origin / box length; None: 0)."""
        R = torch.as_tensor(np.array(rot, dtype=np.float64))
        origin = np.zeros((len(R), 2)) if trans is None else np.asarray(trans, dtype=np.float64) * D * apix
        return cls.from_relion(R, origin)

    def to_cryodrgn(self, D: int, apix: float) -> tuple[np.ndarray, np.ndarray]:
        """cryoDRGN ``(rot (N, 3, 3), trans (N, 2))`` float64 arrays."""
        R = self.R.detach().cpu().to(torch.float64).numpy()
        return R, self.relion_origin_A().detach().cpu().to(torch.float64).numpy() / (D * apix)
