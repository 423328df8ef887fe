"""White Gaussian noise at a target signal-to-noise ratio.

SNR (CONVENTIONS.md) = variance of the noiseless, CTF-applied images over every pixel of the whole dataset
divided by the noise variance, so ``σ_noise = std(clean) / sqrt(SNR)``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["noise_sigma", "add_noise", "RunningVariance"]


def noise_sigma(clean_variance: float, snr: float) -> float:
    """``σ = sqrt(var_clean / SNR)``; SNR must be positive and finite."""
    if not (snr > 0 and math.isfinite(snr)):
        raise ValueError(f"SNR must be > 0, got {snr}")
    return math.sqrt(clean_variance / snr)


def add_noise(images: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images + N(0, σ²)`` per pixel (new tensor)."""
    return images + sigma * torch.randn(images.shape, generator=generator, dtype=images.dtype,
                                        device=images.device)


class RunningVariance:
    """Exact variance of every value seen, accumulated chunk by chunk in float64 (Chan et al. merge)."""

    def __init__(self):
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1).to(torch.float64)
        n_b = x.numel()
        if n_b == 0:
            return
        mean_b = float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    @property
    def variance(self) -> float:
        """Population variance of all values so far."""
        return self.m2 / self.n if self.n else float("nan")
