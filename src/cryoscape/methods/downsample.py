"""Fourier cropping of images and maps to a smaller box.

The centred transform is cropped to the central ``d`` (or ``d³``) frequencies and transformed back, which
low-passes at the new Nyquist without aliasing; the pixel size becomes ``apix · D / d``. Values are kept
as densities (a smooth image keeps its pixel values): the inverse of the cropped transform keeps the sum
of all pixels, so values are multiplied by ``(d/D)²`` (``(d/D)³`` for maps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io.errors import InputError
from ..physics.fourier import fft2_centered, fft3_centered, ifft2_centered, ifft3_centered

__all__ = ["crop_images", "crop_volume", "downsample_stack_file", "downsample_map_file", "downsample_star_file"]


def _check_box(d: int, D: int, where) -> None:
    if not (2 <= d <= D):
        raise InputError("--box", f"new box {d} must be between 2 and the input's {D} px ({where})")


def crop_images(images: torch.Tensor, d: int) -> torch.Tensor:
    """``(N, D, D)`` → ``(N, d, d)`` by cropping the centred 2-D transform."""
    D = images.shape[-1]
    lo = D // 2 - d // 2
    f = fft2_centered(images.to(torch.float64))[..., lo:lo + d, lo:lo + d]
    return ifft2_centered(f).real * (d / D) ** 2


def crop_volume(volume: torch.Tensor, d: int) -> torch.Tensor:
    """``(D, D, D)`` → ``(d, d, d)`` by cropping the centred 3-D transform."""
    D = volume.shape[-1]
    lo = D // 2 - d // 2
    f = fft3_centered(volume.to(torch.float64))[lo:lo + d, lo:lo + d, lo:lo + d]
    return ifft3_centered(f).real * (d / D) ** 3


def _crop_stack_into(writer, stack, d: int, chunk: int, bar, order=None) -> None:
    idx = np.arange(stack.shape[0]) if order is None else order
    for s in range(0, len(idx), chunk):
        block = np.array(stack[idx[s:s + chunk]], dtype=np.float32)
        writer.write(crop_images(torch.from_numpy(block), d).to(torch.float32).numpy())
        bar.advance(len(block))


def downsample_stack_file(path: Path, d: int, out: Path, chunk: int = 1000, progress: bool = True) -> dict:
    """Crop every image of a stack file; writes ``out`` atomically. Returns a summary."""
    from ..io.mrc import StackWriter, read_stack
    from ..utils.progress import progress_bar
    stack, apix = read_stack(path)
    n, D = stack.shape[0], stack.shape[-1]
    _check_box(d, D, path)
    new_apix = apix * D / d if apix else 0.0
    with StackWriter(out, n, d, new_apix) as w, progress_bar(n, "downsampling", progress) as bar:
        _crop_stack_into(w, stack, d, chunk, bar)
    return {"n_images": n, "box_px": d, "apix_A": new_apix, "output": str(out)}


def downsample_map_file(path: Path, d: int, out: Path) -> dict:
    """Crop a map (a non-cubic .mrc is treated as an image stack)."""
    from ..io.mrc import read_map, read_stack_header, write_map
    n, D0, _ = read_stack_header(path)
    if n != D0:
        return downsample_stack_file(path, d, out, progress=False)
    vol, apix = read_map(path)
    D = vol.shape[0]
    _check_box(d, D, path)
    new_apix = apix * D / d if apix else 0.0
    write_map(out, crop_volume(torch.from_numpy(vol), d).to(torch.float32).numpy(), new_apix)
    return {"box_px": d, "apix_A": new_apix, "output": str(out)}


def downsample_star_file(path: Path, d: int, out: Path, datadir=None, chunk: int = 1000,
                         progress: bool = True, overwrite: bool = False) -> dict:
    """Crop the images of a particle STAR into ``<out>.mrcs`` and write ``out`` (.star) referring to it,
    with the optics groups' pixel and box sizes updated (shifts in Å are unchanged)."""
    from ..io.atomic import check_can_write
    from ..io.mrc import StackWriter
    from ..io.star import read_star, write_star
    from ..utils.progress import progress_bar
    if out.suffix.lower() != ".star":
        raise InputError(out, "the output of a STAR input must be a .star file")
    from ..data.particles import load_particles
    table = read_star(path)
    data = load_particles(path, datadir=datadir, need_poses=False)
    D = data.D
    _check_box(d, D, path)
    stack_out = out.with_suffix(".mrcs")
    check_can_write(stack_out, overwrite)
    apix = float(data.apix)
    new_apix = apix * D / d
    n = len(data)
    with StackWriter(stack_out, n, d, new_apix) as w, progress_bar(n, "downsampling", progress) as bar:
        for s in range(0, n, chunk):
            block = data.images(slice(s, min(n, s + chunk)))
            w.write(crop_images(torch.from_numpy(block), d).to(torch.float32).numpy())
            bar.advance(len(block))
    parts = table.particles.copy()
    parts["rlnImageName"] = [f"{i + 1:06d}@{stack_out.name}" for i in range(n)]
    optics = table.optics.copy()
    optics["rlnImagePixelSize"] = optics.get("rlnImagePixelSize", apix) * D / d
    optics["rlnImageSize"] = d
    # pixel-unit and detector columns would still describe the old sampling (shifts stay in Å)
    stale = ("rlnImagePixelSize", "rlnImageSize", "rlnOriginX", "rlnOriginY", "rlnDetectorPixelSize",
             "rlnMagnification")
    parts = parts.drop(columns=[c for c in stale if c in parts])
    optics = optics.drop(columns=[c for c in ("rlnDetectorPixelSize", "rlnMagnification") if c in optics])
    try:
        write_star(out, parts, optics)
    except BaseException:
        stack_out.unlink(missing_ok=True)
        raise
    return {"n_images": n, "box_px": d, "apix_A": new_apix, "output": str(out), "stack": str(stack_out)}
