"""A small 2-D U-Net (Ronneberger et al. 2015) for image denoising: one channel in, one channel out.

Architecture, for ``depth`` levels and ``channels`` ``c``: level ``l`` (0-based) works at ``1/2^l`` of the
input resolution with ``c · 2^l`` channels (capped at ``4c``). Encoder level ``l``: two 3×3 convolutions
with LeakyReLU(0.1); a 2×2 max-pool leads to level ``l + 1``. The bottom level (``l = depth``) has two
convolutions too. Decoder level ``l``: nearest-neighbour ×2 upsampling, concatenation with the encoder's
features of level ``l`` (the skip), two 3×3 convolutions. A final 1×1 convolution gives the output ``g(y)``; with
``residual`` it is added to the input (``f(y) = y + g(y)``, an untrained network is then the identity),
else ``f(y) = g(y)``.

Input size: any ``H × W`` with ``H, W ≥`` :attr:`UNet.min_size` (``2^depth``); an input that is not a
multiple of ``2^depth`` is reflect-padded up to one and the output cropped back, so the output always has
the input's shape. Shapes: ``(B, 1, H, W) → (B, 1, H, W)`` float32.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["UNet"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.1, inplace=True))


class UNet(nn.Module):
    """``UNet(channels, depth, residual)``: see the module docstring. ``min_size`` = ``2^depth`` pixels."""

    def __init__(self, channels: int = 16, depth: int = 2, residual: bool = True):
        super().__init__()
        self.channels, self.depth, self.residual = int(channels), int(depth), bool(residual)
        widths = [min(channels * 2 ** level, 4 * channels) for level in range(depth + 1)]
        self.down = nn.ModuleList()
        c_prev = 1
        for level in range(depth):
            self.down.append(_block(c_prev, widths[level]))
            c_prev = widths[level]
        self.bottom = _block(c_prev, widths[depth])
        self.up = nn.ModuleList()
        c_prev = widths[depth]
        for level in reversed(range(depth)):
            self.up.append(_block(c_prev + widths[level], widths[level]))
            c_prev = widths[level]
        self.out = nn.Conv2d(c_prev, 1, 1)
        # the pixel spacing of the training images (2: Neighbor2Neighbor's half-size sub-images), saved with
        # the weights so that inference applies the network at the sampling it learned
        self.register_buffer("sampling", torch.tensor(1, dtype=torch.int64))

    @property
    def min_size(self) -> int:
        """The smallest input side the network takes (``2^depth`` pixels)."""
        return 2 ** self.depth

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W) → (B, 1, H, W)``: ``y + g(y)`` or ``g(y)``."""
        H, W = y.shape[-2:]
        m = self.min_size
        ph, pw = (-H) % m, (-W) % m
        x = F.pad(y, (0, pw, 0, ph), mode="reflect") if ph or pw else y
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        out = self.out(x)[..., :H, :W].to(y.dtype)
        return y + out if self.residual else out
