"""Networks of the VAE: the image encoder and the Fourier-domain coordinate decoder (cryoDRGN-class).

Decoder. A volume is represented by its 3-D Fourier transform ``V̂(q | z)``, a function of the frequency
``q`` (units of ``1/(D apix)``, ``|q| ≤ D/2``) and the latent ``z``:

    V̂(q | z) = MLP([γ(q / D), z])

with a positional encoding ``γ``:

- ``"geom"``: ``γ(c) = [sin(ω_j c_a), cos(ω_j c_a)]`` for each axis ``a`` of ``c = q / D ∈ [−½, ½]`` and
  ``pe_dim`` geometric frequencies ``ω_j = (D/2)^(j/(pe_dim−1))``, ``j = 0 .. pe_dim − 1`` (1 to ``D/2``
  radians per unit, as cryoDRGN's ``geom_lowf``);
- ``"gaussian"``: random Fourier features ``[sin(c·b_j), cos(c·b_j)]`` for ``3 · pe_dim`` vectors ``b_j ∈ R³``
  drawn once from ``N(0, (pe_sigma · D/2)²)`` per component (radians per unit of ``c``; the scale of
  cryoDRGN's gaussian features; fixed, stored in the state dict).

Outputs. A real volume has ``V̂(−q) = conj V̂(q)``. With ``output="complex"`` the network gives
``(Re, Im)`` on the half space ``q_z ≥ 0`` and the other half is its conjugate (``q → −q``, ``Im → −Im``):
symmetric by construction, one evaluation per point. With ``output="hartley"`` the network gives the
Hartley transform ``H(q) = Re V̂(q) − Im V̂(q)``, any real function, and
``V̂(q) = ½[H(q) + H(−q)] − ½ i [H(q) − H(−q)]`` (two evaluations per point).

Encoder. ``z ~ N(μ, diag σ²)`` from an MLP (or a small CNN) on the centred, masked, normalised image;
it returns ``(μ, log σ²)``, each ``(B, zdim)``.

MLPs have residual hidden layers (see :class:`MLP`), the layout cryoDRGN uses, so sizes compare one to one.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "PositionalEncoding", "FourierDecoder", "MLPEncoder", "CNNEncoder", "make_encoder"]


class MLP(nn.Module):
    """``in → h`` (ReLU), then ``layers`` residual blocks ``x ← x + ReLU(W x + b)`` (``h → h``), then ``h → out``.

    ``layers`` counts the residual ``h → h`` layers, as cryoDRGN's ``--enc-layers``/``--dec-layers`` do
    (its ``ResidLinearMLP``), so equal options give networks of equal size: ``layers + 2`` linear maps.
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, out_dim: int):
        super().__init__()
        if layers < 0:
            raise ValueError("layers must be ≥ 0")
        self.first = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.last = nn.Linear(hidden, out_dim)

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Everything after the first layer's pre-activation ``h``."""
        h = torch.relu(h)
        for block in self.blocks:
            h = h + torch.relu(block(h))
        return self.last(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.first(x))


class PositionalEncoding(nn.Module):
    """``γ(c)`` for ``c (…, 3)`` in ``[−½, ½]`` → ``(…, 6 · pe_dim)`` (see the module docstring)."""

    def __init__(self, D: int, pe_dim: int, kind: str = "geom", sigma: float = 0.5, seed: int = 0):
        super().__init__()
        if kind == "geom":
            j = torch.arange(pe_dim, dtype=torch.float64)
            w = (D / 2) ** (j / max(pe_dim - 1, 1))
            freqs = torch.zeros(3, 3 * pe_dim, dtype=torch.float64)
            for a in range(3):  # block-diagonal: axis a, frequencies ω_j
                freqs[a, a * pe_dim:(a + 1) * pe_dim] = w
        elif kind == "gaussian":
            g = torch.Generator().manual_seed(seed)
            freqs = (sigma * D / 2) * torch.randn(3, 3 * pe_dim, generator=g, dtype=torch.float64)
        else:
            raise ValueError(f"unknown positional encoding {kind!r} (geom or gaussian)")
        self.kind, self.out_dim = kind, 6 * pe_dim
        self.register_buffer("freqs", freqs.to(torch.float32))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = c @ self.freqs
        return torch.cat([torch.sin(arg), torch.cos(arg)], -1)


class FourierDecoder(nn.Module):
    """``V̂(q | z)``: frequencies ``q (B, P, 3)`` (units ``1/(D apix)``) and ``z (B, zdim)`` → complex
    values as ``(B, P, 2)`` real and imaginary parts (scaled like the normalised images' transforms)."""

    def __init__(self, D: int, zdim: int, hidden: int, layers: int, pe_dim: int | None = None,
                 pe_type: str = "geom", pe_sigma: float = 0.5, output: str = "complex", seed: int = 0):
        super().__init__()
        if output not in ("complex", "hartley"):
            raise ValueError(f"unknown decoder output {output!r} (complex or hartley)")
        self.D, self.zdim, self.output = D, zdim, output
        self.pe = PositionalEncoding(D, pe_dim or D // 2, pe_type, pe_sigma, seed)
        self.mlp = MLP(self.pe.out_dim + zdim, hidden, layers, 2 if output == "complex" else 1)

    def _net(self, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """MLP on ``[γ(q/D), z]`` with the z part of the first layer computed once per image."""
        pe = self.pe(q / self.D)
        w = self.mlp.first.weight
        h = pe @ w[:, : self.pe.out_dim].T
        per_image = self.mlp.first.bias if not self.zdim else z @ w[:, self.pe.out_dim:].T + self.mlp.first.bias
        # In the same dtype as h (bfloat16 under autocast): a float32 term would promote every later
        # elementwise step to float32 and cost a conversion per layer.
        h = h + per_image.to(h.dtype).reshape(-1, 1, h.shape[-1])
        return self.mlp.hidden(h)

    def forward(self, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.output == "complex":
            flip = q[..., 2:3] < 0  # the half space q_z < 0 is the conjugate of q_z > 0
            sign = 1.0 - 2.0 * flip.to(q.dtype)
            out = self._net(q * sign, z)
            return torch.cat([out[..., :1], out[..., 1:] * sign], -1)
        h = self._net(torch.cat([q, -q], 1), z)[..., 0]
        P = q.shape[1]
        hp, hm = h[:, :P], h[:, P:]
        return torch.stack([0.5 * (hp + hm), -0.5 * (hp - hm)], -1)


class MLPEncoder(nn.Module):
    """``(B, n_in)`` masked image pixels → ``(μ, log σ²)``, each ``(B, zdim)``."""

    def __init__(self, n_in: int, hidden: int, layers: int, zdim: int):
        super().__init__()
        self.zdim = zdim
        self.mlp = MLP(n_in, hidden, layers, 2 * zdim)

    def forward(self, x: torch.Tensor):
        out = self.mlp(x)
        return out[:, : self.zdim], out[:, self.zdim:]


class CNNEncoder(nn.Module):
    """A small CNN: four stride-2 3×3 convolutions (``channels`` → 2× each time, ReLU) on the ``(B, D, D)``
    image, then an MLP head (``hidden`` wide, ``layers`` deep) → ``(μ, log σ²)``."""

    def __init__(self, D: int, hidden: int, layers: int, zdim: int, channels: int = 16):
        super().__init__()
        convs, c_in, size = [], 1, D
        for i in range(4):
            c_out = channels * 2 ** i
            convs += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in, size = c_out, (size + 1) // 2
        self.convs = nn.Sequential(*convs)
        self.zdim = zdim
        self.mlp = MLP(c_in * size * size, hidden, layers, 2 * zdim)

    def forward(self, x: torch.Tensor):
        out = self.mlp(self.convs(x[:, None]).flatten(1))
        return out[:, : self.zdim], out[:, self.zdim:]


def make_encoder(kind: str, D: int, n_in: int, hidden: int, layers: int, zdim: int) -> nn.Module:
    """``kind`` "mlp" (on the ``n_in`` pixels inside the mask) or "cnn" (on the whole masked image)."""
    if kind == "mlp":
        return MLPEncoder(n_in, hidden, layers, zdim)
    if kind == "cnn":
        return CNNEncoder(D, hidden, layers, zdim)
    raise ValueError(f"unknown encoder {kind!r} (mlp or cnn)")
