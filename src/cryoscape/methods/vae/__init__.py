"""Neural heterogeneous reconstruction with known poses (a cryoDRGN-class VAE; Zhong et al., Nature
Methods 2021): an image encoder gives a latent ``z`` per particle, a coordinate network gives the map's
Fourier transform at ``(q, z)``, and the loss compares its CTF-weighted central slices (the one forward model,
:mod:`cryoscape.physics.imaging`) with the images (:mod:`cryoscape.physics.likelihood`). Trained on the one
training loop (:mod:`cryoscape.methods.training`). Files are written by :mod:`cryoscape.runs.vae`."""

from .data import ParticleSource, VAEBatch, encoder_mask
from .model import HetVAE, decode_volumes
from .train import VAEConfig, VAEResult, build_model, encode_all, load_model, train_vae

__all__ = ["ParticleSource", "VAEBatch", "encoder_mask", "HetVAE", "decode_volumes", "VAEConfig", "VAEResult",
           "build_model", "encode_all", "load_model", "train_vae"]
