"""Neural heterogeneous reconstruction with known poses (a cryoDRGN-class VAE; Zhong et al., Nature
Methods 2021): an image encoder gives a latent ``z`` per particle, a coordinate network gives the map's
Fourier transform at ``(q, z)``, and the loss compares CTF-weighted central slices with the images."""

from .data import FourierPoints, ParticleSource
from .model import HetVAE, decode_volumes
from .train import VAEConfig, VAEResult, encode_all, load_model, train_vae

__all__ = ["FourierPoints", "ParticleSource", "HetVAE", "decode_volumes", "VAEConfig", "VAEResult",
           "encode_all", "load_model", "train_vae"]
