"""The heterogeneous VAE: encoder, decoder and the loss on Fourier slices, and map decoding.

Loss of one image (known pose ``R``, CTF ``C``; ``Y`` its normalised centred transform, ``w`` Friedel
weights over the ``P`` frequencies ``k`` of the half plane, ``q = Rᵀ (kx, ky, 0)``):

    L = Σ_k w_k |C(k) V̂(q | z) − Y(k)|² / Σ_k w_k  +  β · KL(N(μ, σ²) ‖ N(0, 1)) / Σ_k w_k,
    KL = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²),   z = μ + σ ε,  ε ~ N(0, 1)

(the Gaussian log-likelihood up to constants and the noise variance, per frequency; ``β`` weighs the
prior). A map at latent ``z`` is the inverse 3-D DFT of ``V̂(q | z)`` on the centred grid, ``|q| < D/2``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...physics.fourier import ifft3_centered
from .networks import FourierDecoder, make_encoder

__all__ = ["HetVAE", "decode_volumes"]


class HetVAE(nn.Module):
    """Encoder + Fourier decoder for box ``D``; ``arch`` holds the sizes (see :class:`VAEConfig`)."""

    def __init__(self, D: int, n_pixels: int, zdim: int, enc_dim: int, enc_layers: int, dec_dim: int,
                 dec_layers: int, encoder: str = "mlp", pe_type: str = "geom", pe_dim: int | None = None,
                 pe_sigma: float = 0.5, output: str = "complex", seed: int = 0):
        super().__init__()
        self.D, self.zdim = D, zdim
        self.encoder = make_encoder(encoder, D, n_pixels, enc_dim, enc_layers, zdim) if zdim else None
        self.decoder = FourierDecoder(D, zdim, dec_dim, dec_layers, pe_dim, pe_type, pe_sigma, output, seed)

    def encode(self, x: torch.Tensor):
        """Encoder inputs → ``(μ, log σ²)``, each ``(B, zdim)`` (empty when ``zdim`` is 0)."""
        if self.encoder is None:
            empty = x.new_zeros(x.shape[0], 0)
            return empty, empty
        return self.encoder(x)

    def slices(self, R: torch.Tensor, z: torch.Tensor, plane: torch.Tensor) -> torch.Tensor:
        """``V̂(Rᵀ k | z)`` at the plane's frequencies ``(P, 3)`` for poses ``(B, 3, 3)`` → ``(B, P, 2)``."""
        return self.decoder(torch.matmul(plane, R), z)

    def loss(self, batch, plane: torch.Tensor, weight: torch.Tensor, beta: float,
             generator: torch.Generator | None = None, autocast: bool = False):
        """``(loss, mse, kl)`` of a :class:`VAEBatch` (means over the batch; ``mse`` and ``kl`` detached)."""
        mu, logvar = self.encode(batch.x)
        if self.zdim:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
            z = mu + eps * torch.exp(0.5 * logvar)
        else:
            z = mu
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            pred = self.slices(batch.R, z, plane)
        pred = pred.float() * batch.ctf[..., None]
        n_eff = weight.sum()
        mse = ((pred - batch.y) ** 2).sum(-1) @ weight / n_eff  # (B,)
        kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(-1)  # (B,)
        loss = mse.mean() + beta * kl.mean() / n_eff
        return loss, float(mse.detach().mean()), float(kl.detach().mean())


def _volume_points(D: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred grid frequencies ``q (M, 3)`` = (qx, qy, qz) with ``|q| < D/2`` and their flat indices
    into the ``[kz, ky, kx]`` grid of :func:`cryoscape.physics.fourier.fft3_centered`."""
    r = torch.arange(D, dtype=torch.float32) - D // 2
    qz, qy, qx = torch.meshgrid(r, r, r, indexing="ij")
    inside = (qx ** 2 + qy ** 2 + qz ** 2 < (D / 2) ** 2).reshape(-1)
    flat = torch.nonzero(inside).reshape(-1)
    q = torch.stack([qx.reshape(-1)[flat], qy.reshape(-1)[flat], qz.reshape(-1)[flat]], -1)
    return q, flat


@torch.no_grad()
def decode_volumes(model: HetVAE, z: np.ndarray | torch.Tensor, points_per_pass: int = 65536) -> np.ndarray:
    """Maps at latents ``z (k, zdim)`` → ``(k, D, D, D)`` float32, indexed ``[z, y, x]``, origin at voxel
    ``D // 2`` (the frame of the poses). Scale: that of the normalised images (arbitrary units)."""
    D = model.D
    z = np.asarray(z, dtype=np.float32)
    z = torch.as_tensor(z.reshape(len(z) if z.ndim == 2 else 1, model.zdim))
    q, flat = _volume_points(D)
    out = np.empty((z.shape[0], D, D, D), dtype=np.float32)
    for i in range(z.shape[0]):
        F = torch.zeros(D ** 3, dtype=torch.complex64)
        for s in range(0, q.shape[0], points_per_pass):
            v = model.decoder(q[None, s:s + points_per_pass], z[i:i + 1])[0]
            F[flat[s:s + points_per_pass]] = torch.complex(v[:, 0], v[:, 1])
        out[i] = ifft3_centered(F.reshape(D, D, D)).real.numpy()
    return out
