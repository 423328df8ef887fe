"""Rendering a plan into images with the one forward model, and the dataset's noise.

For particle ``n`` (CONVENTIONS.md), by :func:`cryoscape.physics.imaging.forward_images`:

    I_n = F⁻¹[ CTF_n · exp(−2πi k·t_n) · P̂_{R_n}[V_{c_n}] ]  (+ ε_n, ε ~ N(0, σ²) by :func:`add_dataset_noise`)

with the CTF applied on a canvas of ``ctf_pad × D`` pixels (:class:`~cryoscape.physics.imaging.ImagingGrid`
``pad``). This module only batches the plan and hands images back; it writes nothing (the run folder is
``cryoscape.runs.simulate``'s).
"""

from __future__ import annotations

import functools

import torch

from ...physics.imaging import ImagingGrid, forward_images
from ...physics.noise import RunningVariance
from .config import SimulationConfig
from .plan import SimulationPlan

__all__ = ["render_images", "render_chunks", "clean_variance", "add_dataset_noise", "imaging_grid", "chunks"]


@functools.lru_cache(maxsize=8)
def imaging_grid(D: int, apix: float, pad: int = 1, device: str = "cpu") -> ImagingGrid:
    """The float32 :class:`~cryoscape.physics.imaging.ImagingGrid` of a ``D``-pixel box (shared, so its CTF
    basis with the ``fftshift`` sign is computed once per process, not per chunk)."""
    return ImagingGrid(D, apix, pad=pad, dtype=torch.float32, device=device)


def render_images(plan: SimulationPlan, source, index: slice, apply_ctf: bool = True,
                  stages: bool = False, batch: int | None = None, ctf_pad: int = 1, device=None):
    """Noiseless images of the particles in ``index`` (a slice), ``(n, D, D)`` float32 on the CPU.

    Each batch is one call of :func:`~cryoscape.physics.imaging.forward_images` with the source's projector
    (``source.projector(device)``), the plan's poses (``shift_A`` = its offsets) and CTF parameters, on an
    :class:`~cryoscape.physics.imaging.ImagingGrid` with ``pad = ctf_pad``. Batches hold about 2¹⁹ pixels
    (128 images of 64 px) by default, so per-call overheads are small and the arrays stay in cache. With
    ``stages`` also returns the projections before the CTF (for previews). With ``ctf_pad`` > 1 the CTF acts
    on a canvas ``ctf_pad`` times the box and the box is cut out afterwards, so signal that the CTF
    delocalises beyond the box leaves it (as in a micrograph) instead of wrapping around.

    The same ``index`` and ``batch`` always give the same bits; another grouping of the same images may
    differ in the last bit (~1e-7 relative: the batched FFTs round differently). ``device``: where the
    images are formed (default CPU, the numba splat kernel; elsewhere torch's splat, other rounding).
    """
    D, apix = plan.box, plan.apix
    batch = batch or max(8, min(256, 2 ** 19 // (D * D)))
    start, stop, _ = index.indices(len(plan.conformation))
    device = torch.device(device or "cpu")
    grid = imaging_grid(D, apix, ctf_pad if apply_ctf else 1, str(device))
    projector = source.projector(device)
    img = torch.empty(max(0, stop - start), D, D)
    projs = []
    for s in range(start, stop, batch):
        sl = slice(s, min(stop, s + batch))
        poses, conf, ctf = plan.batch(sl)
        if device.type != "cpu":
            poses, conf, ctf = poses.to(device), conf.to(device), ctf.to(device)
        if stages:
            projs.append(forward_images(projector, poses, grid, None, conf).cpu())
        img[s - start:sl.stop - start].copy_(forward_images(projector, poses, grid, ctf if apply_ctf else None, conf))
    if stages:
        return img, torch.cat(projs) if projs else torch.zeros(0, D, D)
    return img


def chunks(n: int, size: int):
    """``slice``s of ``size`` consecutive images covering ``0 .. n``."""
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def render_chunks(plan: SimulationPlan, source, cfg: SimulationConfig, first_chunk: int = 0, device=None):
    """Yield ``(chunk number, slice, clean images (n, D, D) float32)`` for the chunks of ``cfg.chunk`` images
    from ``first_chunk`` on (a resumed run skips the chunks it has written)."""
    for ci, sl in enumerate(chunks(cfg.n_images, cfg.chunk)):
        if ci >= first_chunk:
            yield ci, sl, render_images(plan, source, sl, cfg.ctf, ctf_pad=cfg.ctf_pad, device=device)


def clean_variance(plan: SimulationPlan, source, cfg: SimulationConfig, progress=None, device=None) -> float:
    """Variance of every pixel of the whole noiseless dataset (first pass; nothing stored)."""
    rv = RunningVariance()
    for sl in chunks(cfg.n_images, cfg.chunk):
        rv.update(render_images(plan, source, sl, cfg.ctf, ctf_pad=cfg.ctf_pad, device=device))
        if progress is not None:
            progress.advance(sl.stop - sl.start)
    return rv.variance


def add_dataset_noise(images: torch.Tensor, sigma: float, seed: int, first_image: int) -> torch.Tensor:
    """``images + σ·n`` with ``n`` white N(0, 1) noise that depends only on ``(seed, image index, pixel)``:
    any chunking, a resumed run and any thread count give the same bits.

    Args:
        images: ``(n, D, D)`` float32 CPU tensor (left unchanged). sigma: noise std (image units).
        seed: the simulation seed. first_image: dataset index of ``images[0]``.
    """
    from ...utils.cpu_kernels import add_normal_noise, noise_key
    out = images.detach().to(torch.float32).contiguous().clone()
    add_normal_noise(out.numpy(), sigma, noise_key(seed, stream=1), first_image)
    return out
