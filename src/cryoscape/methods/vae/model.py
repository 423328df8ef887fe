"""The heterogeneous VAE: encoder, decoder, the loss through the one forward model, and map decoding.

The decoder is a :class:`~cryoscape.physics.imaging.FourierField`: ``V̂(q | z)`` evaluated at
``q = Rᵀ (kx, ky, 0)`` for the disc points ``k`` of the :class:`~cryoscape.physics.imaging.ImagingGrid`, and
:func:`~cryoscape.physics.imaging.forward_points` multiplies by each image's CTF (computed once per image by
the data side, :mod:`.data`). The data are centred, so the poses carry no shift.

Loss of one image (``Y`` its normalised centred transform, ``C`` its CTF, ``w`` the grid's Friedel weights
at the points, :func:`~cryoscape.physics.likelihood.squared_error`):

    L = Σ_k w_k |C(k) V̂(Rᵀ k | z) − Y(k)|² / Σ_k w_k  +  β · KL(N(μ, σ²) ‖ N(0, 1)) / Σ_k w_k,
    KL = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²),   z = μ + σ ε,  ε ~ N(0, 1)

(the Gaussian log-likelihood up to constants and the noise variance, per frequency; ``β`` weighs the
prior). A map at latent ``z`` is the inverse 3-D DFT of ``V̂(q | z)`` on the centred grid inside the ball
``|q| ≤ D/2`` (the grid's Nyquist convention in 3-D), zero outside.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from ...geometry.poses import Poses
from ...physics.fourier import ifft3_centered, nyquist_disc
from ...physics.imaging import FourierField, ImagingGrid, forward_points
from ...physics.likelihood import squared_error
from .networks import FourierDecoder, make_encoder

__all__ = ["HetVAE", "decode_volumes", "volume_points"]


class HetVAE(nn.Module):
    """Encoder + Fourier decoder for box ``D`` (sizes: see :class:`~cryoscape.methods.vae.train.VAEConfig`)."""

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

    def projector(self, z: torch.Tensor) -> FourierField:
        """The maps at latents ``z (B, zdim)`` as a :class:`FourierField` (image ``n`` sees map ``n``)."""
        return FourierField(lambda q: self.decoder(q, z))

    def slices(self, R: torch.Tensor, z: torch.Tensor, grid: ImagingGrid,
               ctf_values: torch.Tensor | None = None) -> torch.Tensor:
        """``C(k) V̂(Rᵀ k | z)`` at the grid's disc points for poses ``R (B, 3, 3)``: ``(B, P)`` complex
        (:func:`forward_points`; no CTF when ``ctf_values`` is None)."""
        poses = Poses(R, torch.zeros(R.shape[0], 2, dtype=R.dtype, device=R.device))
        return forward_points(self.projector(z), poses, grid, ctf_values=ctf_values)

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor, batch, generator: torch.Generator | None):
        """``z = μ + σ ε``. ``ε`` is drawn on the CPU from ``generator`` for the whole global batch
        (``batch.total`` rows) and this part's rows (from ``batch.offset``) are kept, so every ``torchrun``
        rank uses the values one process would draw."""
        if not self.zdim:
            return mu
        total, offset = getattr(batch, "total", len(mu)), getattr(batch, "offset", 0)
        eps = torch.randn((total, self.zdim), generator=generator, dtype=mu.dtype)[offset:offset + len(mu)]
        return mu + eps.to(mu.device) * torch.exp(0.5 * logvar)

    def loss(self, batch, grid: ImagingGrid, beta: float, generator: torch.Generator | None = None,
             autocast=None):
        """``(loss, mse, kl)`` of a :class:`~cryoscape.methods.vae.data.VAEBatch` (means over the batch;
        ``mse`` and ``kl`` detached floats). ``grid`` on the batch's device; ``autocast``: a callable giving
        the reduced-precision context for the projection (e.g. the training loop's ``ctx.autocast``)."""
        mu, logvar = self.encode(batch.x)
        z = self.sample(mu, logvar, batch, generator)
        with (autocast() if autocast is not None else contextlib.nullcontext()):
            pred = self.slices(batch.R, z, grid, batch.ctf)
        weight = grid.at_points(grid.friedel)
        n_eff = weight.sum()
        mse = squared_error(pred, batch.y, weight)  # (B,)
        kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(-1)  # (B,)
        loss = mse.mean() + beta * kl.mean() / n_eff
        return loss, float(mse.detach().mean()), float(kl.detach().mean())


def volume_points(D: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred grid frequencies ``q (M, 3)`` = (qx, qy, qz) inside the ball ``|q| ≤ D/2``
    (:func:`~cryoscape.physics.fourier.nyquist_disc`, the grid's convention) and their flat indices
    into the ``[kz, ky, kx]`` grid of :func:`cryoscape.physics.fourier.fft3_centered`."""
    r = torch.arange(D, dtype=torch.float64, device=device) - D // 2
    qz, qy, qx = torch.meshgrid(r, r, r, indexing="ij")
    inside = nyquist_disc(torch.sqrt(qx ** 2 + qy ** 2 + qz ** 2), D).reshape(-1)
    flat = torch.nonzero(inside).reshape(-1)
    q = torch.stack([qx.reshape(-1)[flat], qy.reshape(-1)[flat], qz.reshape(-1)[flat]], -1)
    return q.to(torch.float32), flat


@torch.no_grad()
def decode_volumes(model: HetVAE, z: np.ndarray | torch.Tensor, points_per_pass: int = 65536) -> np.ndarray:
    """Maps at latents ``z (k, zdim)`` → ``(k, D, D, D)`` float32, indexed ``[z, y, x]``, origin at voxel
    ``D // 2`` (the frame of the poses). Scale: that of the normalised images (arbitrary units). Runs on
    the model's device."""
    D = model.D
    device = next(model.decoder.parameters()).device
    z = np.asarray(z, dtype=np.float32)
    z = torch.as_tensor(z.reshape(len(z) if z.ndim == 2 else 1, model.zdim), device=device)
    q, flat = volume_points(D, device)
    out = np.empty((z.shape[0], D, D, D), dtype=np.float32)
    for i in range(z.shape[0]):
        F = torch.zeros(D ** 3, dtype=torch.complex64, device=device)
        for s in range(0, q.shape[0], points_per_pass):
            v = model.decoder(q[None, s:s + points_per_pass], z[i:i + 1])[0].float()
            F[flat[s:s + points_per_pass]] = torch.complex(v[:, 0], v[:, 1])
        out[i] = ifft3_centered(F.reshape(D, D, D)).real.cpu().numpy()
    return out
