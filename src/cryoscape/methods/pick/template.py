"""Template matching: CTF-aware, locally normalised FFT cross-correlation over views and in-plane rotations.

Templates ``T_k`` (``K × B × B``, CTF-free, particle at pixel ``B//2``) are projections of a map or an atomic
model at ``K`` viewing directions (:func:`make_templates`: a Fibonacci sphere of directions), or 2-D class
averages. For a micrograph ``I`` (``H × W`` pixels of ``apix`` Å) with CTF ``C``:

1. **Normalise** the micrograph as the blob picker does (:func:`~cryoscape.methods.pick.blob.normalise_micrograph`:
   Fourier crop to the working pixel size ``a``, Gaussian band-pass ``Bp``, mean 0, standard deviation 1,
   polarity), giving ``f`` (``h × w``).
2. **Templates on the same grid**: each ``T_k`` is Fourier-cropped to ``b ≈ B · apix_T / a`` pixels
   (:func:`~cryoscape.methods.downsample.crop_images`; this fixes ``a = apix_T · B / b``), rotated in plane by
   ``ψ_j = j · 2π / J`` (:func:`~cryoscape.physics.transform2d.rotate_images`), given the micrograph's CTF by
   the forward model's grid (:class:`~cryoscape.physics.imaging.ImagingGrid` with ``pad = ctf_pad``: the box
   zero-padded, times ``grid.ctf``, cropped, as :func:`~cryoscape.physics.imaging.forward_images` and
   :func:`~cryoscape.physics.imaging.apply_ctf` do; the rotation comes first, so an astigmatic CTF keeps its
   azimuth), band-passed by ``Bp``, and normalised under the mask ``M`` (a disc of ``n`` pixels):
   ``t = M · (T' − mean_M T') / std_M T'``, so ``Σ t = 0`` and ``Σ t² = n``.
3. **Fast local correlation** (Roseman 2003): for every template ``t`` and micrograph position ``x`` (the
   template's pixel ``b//2`` over pixel ``x``),

        c_t(x) = Σ_r t(r) f(x + r − b//2) / (n σ(x)),
        σ(x)² = (1/n) Σ_r M(r) f(x + r − b//2)² − [(1/n) Σ_r M(r) f(x + r − b//2)]²,

   the Pearson correlation of ``t`` with the micrograph under the mask, in ``[−1, 1]``: the local standard
   deviation ``σ(x)`` of the micrograph under the mask (local-noise normalisation) keeps a bright contaminant
   from outscoring a particle. The three sums are cross-correlations computed by FFT on tiles (below);
   outside the micrograph ``f`` is 0 (its mean).
4. **Score map**: ``c(x) = max_{k, j} c_{kj}(x)`` (and the arg max, a view and an angle), standardised robustly
   as in the blob picker (``z = (c − median c) / (1.4826 · MAD c)``), then
   :func:`~cryoscape.methods.pick.peaks.find_peaks` (one radius apart by default, sub-pixel parabola).

**Tiling (overlap-save).** The micrograph, padded with zeros by ``b//2`` before and ``b − 1 − b//2`` after, is
cut into tiles of ``N × N`` pixels (``tile_px``) overlapping by ``b − 1``: the circular correlation of a tile with
a template (zero-padded to ``N``) is exact for the first ``N − b + 1`` outputs of each axis, which are kept, so
tiles step by ``N − b + 1``. Memory is bounded by the tile and the template batch: ``batch`` spectra of
``N × (N/2 + 1)`` complex values, their product with the tile's and as many real ``N × N`` outputs (with
``N = 512`` and 64 templates, about 200 MB in float32), whatever the micrograph's size. The templates' spectra
are computed once per micrograph when all of them fit in ``cache_mb``, else once per tile. All of it runs in torch on the micrograph's device
(or ``cfg.device``), in its float dtype.

Cost (measured): a 1024² micrograph of 1.2 Å/px with AdK templates at the defaults (8 views × 18 angles, working
pixel 5.1 Å, one 270-px tile) took 0.13 s on 2 CPU threads (0.21 s on one), up to 0.6–4 s while other jobs
shared the two cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.fft import next_fast_len

from ...geometry.poses import Poses
from ...geometry.rotations import euler_to_matrix
from ...io.errors import InputError
from ...physics.ctf import CTFParams
from ...physics.imaging import ImagingGrid, forward_images
from ...physics.transform2d import rotate_images
from ..downsample import crop_images
from .blob import (POLARITIES, band_pass, check_micrograph, check_picker_options, normalise_micrograph,
                   picks_from_z_map, robust_standardise)

__all__ = ["TemplateConfig", "Templates", "pick_template", "template_score_map", "make_templates",
           "templates_from_file", "fibonacci_rotations", "prepare_templates", "local_correlation", "disc_mask"]


@dataclass
class TemplateConfig:
    """Options of the template matcher (module docstring). Lengths in Å, angles in degrees.

    Attributes:
        diameter_A: the particle's diameter (required): the default least distance between picks, the edge
            margin and the mask.
        polarity, min_distance_A, max_picks, edge_A: as :class:`~cryoscape.methods.pick.blob.BlobConfig`
            (the same checks and defaults; the measurements behind the distance are there).
        threshold: as the blob picker's (z units of the score map). 3.5: on two 1024² AdK micrographs at
            SNR 0.003 (116 particles), thresholds 2 / 3 / 3.5 / 4 gave precision 0.57 / 0.93 / 1.0 / 1.0 at
            recall 0.97 / 0.93 / 0.91 / 0.79; in sparse fields noise peaks reached z = 4.0.
        lowpass_A: Gaussian low-pass of micrograph and templates (response ½ at this length).
        highpass_A: Gaussian high-pass (response ½); None: 2 diameters; 0: none.
        work_apix: working pixel size; None: ``lowpass_A / 3`` (never finer than the templates' or the
            micrograph's pixel).
        psi_step_deg: in-plane angular step; None: the angle that moves a point at the particle's radius by
            the low-pass length, ``2 lowpass_A / diameter_A`` radians (21° for AdK at 15 Å; rounded to divide
            360°). Measured on AdK at SNR 0.001: steps of 10.5°, 20° and 30° gave the same average precision
            (0.742, 0.745, 0.745); 8 views gave 0.74, 4 views 0.73.
        mask_radius_A: radius of the disc mask of the templates and the local statistics; None: the radius
            plus the low-pass length (the CTF's fringes around the particle count), at most the template's
            inscribed disc.
        tile_px: tile side ``N`` in working pixels (None: one tile holding the whole micrograph).
        batch: templates per FFT batch.
        cache_mb: keep all template spectra for the whole micrograph when they fit in this many MB.
        ctf_pad: canvas factor of the CTF applied to the templates (2: fringes may leave the box).
        subpixel: refine the centres by a parabola. device: where to compute (None: the micrograph's).
        n_views: viewing directions of the templates made from a map or a model (:func:`templates_from_file`).
        atom_sigma_A: Gaussian atom width of a model's templates (the simulator's default, 3 Å).
    """

    diameter_A: float | None = None
    polarity: str = "bright"
    threshold: float | None = 3.5
    min_distance_A: float | None = None
    max_picks: int | None = None
    edge_A: float | None = None
    lowpass_A: float = 15.0
    highpass_A: float | None = None
    work_apix: float | None = None
    psi_step_deg: float | None = None
    mask_radius_A: float | None = None
    tile_px: int | None = 512
    batch: int = 64
    cache_mb: float = 256.0
    ctf_pad: int = 2
    subpixel: bool = True
    device: str | None = None
    n_views: int = 8
    atom_sigma_A: float = 3.0

    def check(self) -> None:
        """Raise :class:`InputError` naming the first invalid option."""
        if self.diameter_A is None:
            raise InputError("--diameter", "the particle diameter (Å) is needed by the template matcher")
        check_picker_options(self.diameter_A, self.polarity, self.threshold, self.min_distance_A,
                             self.max_picks, self.edge_A, self.work_apix, self.highpass_A, self.lowpass_A)
        checks = [
            (self.lowpass_A is not None and self.lowpass_A > 0, "--lowpass", f"must be > 0 Å, got {self.lowpass_A}"),
            (self.psi_step_deg is None or (math.isfinite(self.psi_step_deg) and 0 < self.psi_step_deg <= 360),
             "--psi-step", f"must be in (0, 360] degrees, got {self.psi_step_deg}"),
            (self.mask_radius_A is None or (math.isfinite(self.mask_radius_A) and self.mask_radius_A > 0),
             "--mask-radius", f"must be > 0 Å, got {self.mask_radius_A}"),
            (self.tile_px is None or (int(self.tile_px) == self.tile_px and self.tile_px >= 16), "--tile",
             f"must be an integer ≥ 16 px, got {self.tile_px}"),
            (int(self.batch) == self.batch and self.batch >= 1, "--batch",
             f"must be an integer ≥ 1, got {self.batch}"),
            (self.cache_mb >= 0, "--cache-mb", f"must be ≥ 0, got {self.cache_mb}"),
            (self.ctf_pad in (1, 2, 3, 4), "--ctf-pad", f"must be 1 to 4, got {self.ctf_pad}"),
            (int(self.n_views) == self.n_views and self.n_views >= 1, "--n-views",
             f"must be an integer ≥ 1, got {self.n_views}"),
            (math.isfinite(self.atom_sigma_A) and self.atom_sigma_A > 0, "--atom-sigma",
             f"must be > 0 Å, got {self.atom_sigma_A}"),
        ]
        for ok, where, problem in checks:
            if not ok:
                raise InputError(where, problem)

    @property
    def radius_A(self) -> float:
        return 0.5 * float(self.diameter_A)

    def n_psi(self) -> int:
        """In-plane angles ``J`` (``ψ_j = j · 360° / J``)."""
        step = self.psi_step_deg if self.psi_step_deg is not None else \
            math.degrees(2 * self.lowpass_A / self.diameter_A)
        return max(1, int(math.ceil(360.0 / step - 1e-9)))


# ------------------------------------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------------------------------------

def fibonacci_rotations(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` pose matrices ``(n, 3, 3)`` whose viewing directions (last rows) are the Fibonacci sphere
    ``z_i = 1 − (2i + 1)/n``, ``φ_i = i · π (3 − √5)`` (near-uniform on the whole sphere), with RELION angles
    ``rot = φ_i``, ``tilt = arccos z_i``, ``psi = 0`` (:func:`~cryoscape.geometry.rotations.euler_to_matrix`)."""
    if n < 1:
        raise InputError("--n-views", f"must be ≥ 1, got {n}")
    i = torch.arange(n, dtype=torch.float64)
    z = 1 - (2 * i + 1) / n
    phi = torch.remainder(i * math.pi * (3 - math.sqrt(5)), 2 * math.pi)
    euler = torch.stack([phi, torch.arccos(z), torch.zeros_like(z)], -1)
    return euler_to_matrix(euler).to(dtype)


def make_templates(source, apix: float, box: int | None = None, n_views: int = 8, *,
                   rotations: torch.Tensor | None = None, conformation: int = 0, device=None) -> torch.Tensor:
    """CTF-free projections of ``source`` as templates, ``(K, B, B)`` float32 (particle centre at pixel ``B//2``).

    Args:
        source: :class:`~cryoscape.data.simulate.AtomSource` (Gaussian atoms; its frame ``conformation``) or
            :class:`~cryoscape.data.simulate.MapSource` (a map, projected at its own voxel size and box).
        apix: template pixel size, Å (a map's own voxel size). box: ``B`` pixels; None: the even size of at
            least 1.5 particle diameters (``3 r / apix``, ``r`` the source's radius), so that the mask of the
            matcher can take in the CTF's fringes around the particle (a map: its own box).
        n_views: ``K`` viewing directions on a Fibonacci sphere (:func:`fibonacci_rotations`; in-plane angles
            are searched by the matcher), unless ``rotations (K, 3, 3)`` are given (pose matrices).
        device: where to render (None: CPU); the templates are returned there.
    Projections by :func:`~cryoscape.physics.imaging.forward_images` with no shift and no CTF (the matcher
    applies each micrograph's CTF).
    """
    from ...data.simulate import AtomSource, MapSource
    if not isinstance(source, (AtomSource, MapSource)):
        raise InputError("source", f"expected an AtomSource or MapSource, got {type(source).__name__}")
    if box is None:
        B = source.D if isinstance(source, MapSource) else 2 * math.ceil(1.5 * source.radius() / apix)
    else:
        B = int(box)
    if isinstance(source, MapSource) and B != source.D:
        raise InputError("--box", f"a map is projected in its own box of {source.D} px, got {B}")
    if B < 4:
        raise InputError("--box", f"must be ≥ 4 px, got {B}")
    if not 0 <= conformation < source.n_conformations:
        raise InputError("--conformation", f"must be in 0..{source.n_conformations - 1}, got {conformation}")
    R = fibonacci_rotations(n_views) if rotations is None else torch.as_tensor(rotations, dtype=torch.float64)
    if R.ndim != 3 or R.shape[1:] != (3, 3):
        raise InputError("rotations", f"must be (K, 3, 3), got {tuple(R.shape)}")
    device = torch.device(device or "cpu")
    grid = ImagingGrid(B, apix, dtype=torch.float32, device=device)
    K = R.shape[0]
    poses = Poses(R.to(device=device, dtype=torch.float32), torch.zeros(K, 2, device=device))
    index = torch.full((K,), int(conformation), dtype=torch.int64, device=device)
    return forward_images(source.projector(device), poses, grid, None, index).to(torch.float32)


@dataclass
class Templates:
    """Templates with their pixel size: ``images (K, B, B)`` CTF-free (particle at pixel ``B//2``), ``apix`` Å.
    :func:`pick_template` takes them (or a bare tensor at the micrograph's pixel size)."""

    images: torch.Tensor
    apix: float


MAP_SUFFIXES = (".mrc", ".map", ".mrcs")


def templates_from_file(path, apix: float, cfg: TemplateConfig) -> Templates:
    """The template matcher's references from a file, CTF-free, :class:`Templates`:

    - a map (``.mrc``/``.map`` holding a cube): Fourier-cropped to the working pixel size when finer
      (:func:`~cryoscape.methods.downsample.crop_volume`, ``cfg.work_apix`` or ``lowpass_A / 3``), then
      projected at ``cfg.n_views`` directions (:func:`make_templates`); its voxel size from the header;
    - class averages (``.mrcs``, or an ``.mrc`` that is not a cube: ``N ≠ D`` images of ``D × D``): the images
      as they are, their pixel size from the header (``apix`` when the header has none);
    - an atomic model (PDB/mmCIF, any file :func:`~cryoscape.io.models.read_structure` reads without a
      topology): its Cα atoms as Gaussians of ``cfg.atom_sigma_A``, the first model, projected at
      ``cfg.n_views`` directions at the micrograph's pixel size ``apix``.

    Raises :class:`InputError` naming the file for anything unreadable, a map without a voxel size, or
    non-finite values."""
    from pathlib import Path

    from ...data.simulate import AtomSource, MapSource
    from ...io.models import read_structure
    from ...io.mrc import read_map, read_stack, read_stack_header
    from ..downsample import crop_volume
    cfg.check()
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.suffix.lower() in MAP_SUFFIXES:
        n, D, _ = read_stack_header(path)
        is_map = path.suffix.lower() != ".mrcs" and n == D
        if not is_map:
            data, file_apix = read_stack(path, mmap=False)
            images = torch.from_numpy(np.array(data, dtype=np.float32))
            if not bool(torch.isfinite(images).all()):
                raise InputError(path, "class averages contain NaN or infinite values")
            return Templates(images, float(file_apix or apix))
        vol, map_apix = read_map(path)
        if not map_apix:
            raise InputError(path, "header has no voxel size")
        D = vol.shape[0]
        target = cfg.work_apix if cfg.work_apix is not None else cfg.lowpass_A / 3
        d = D if target <= map_apix else max(8, 2 * int(round(D * map_apix / target / 2)))
        if d < D:
            vol = crop_volume(torch.from_numpy(vol), d).to(torch.float32).numpy()
            map_apix = map_apix * D / d
        source = MapSource(vol, map_apix)
        return Templates(make_templates(source, map_apix, n_views=cfg.n_views), map_apix)
    conf = read_structure(path, None, "ca")
    source = AtomSource(conf.coords[:1], cfg.atom_sigma_A)
    return Templates(make_templates(source, apix, n_views=cfg.n_views), float(apix))


def disc_mask(b: int, radius_px: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(b, b)`` 0/1 mask of the pixels within ``radius_px`` of pixel ``b//2``."""
    r = torch.arange(b, dtype=torch.float64, device=device) - b // 2
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius_px ** 2).to(dtype)


def prepare_templates(templates: torch.Tensor, mask: torch.Tensor, apix: float, n_psi: int,
                      ctf: CTFParams | None = None, *, highpass_A: float | None = None,
                      lowpass_A: float | None = None, ctf_pad: int = 2) -> torch.Tensor:
    """Step 2 of the module docstring on templates already at the working pixel size ``apix``: rotated by
    ``ψ_j = j · 2π / n_psi`` (rotation ``j`` of template ``k`` is row ``k · n_psi + j``), CTF applied (when
    given), band-passed, and normalised under ``mask`` (``Σ t = 0``, ``Σ t² = n``, zero outside).

    Args:
        templates: ``(K, b, b)`` real. mask: ``(b, b)`` 0/1. ctf: one entry (the micrograph's) or None.
    Returns:
        ``(K · n_psi, b, b)`` in the templates' dtype and device. A template flat under the mask stays 0.
    """
    K, b = templates.shape[0], templates.shape[-1]
    psi = torch.arange(n_psi, dtype=templates.dtype, device=templates.device) * (2 * math.pi / n_psi)
    t = rotate_images(templates.repeat_interleave(n_psi, 0), psi.repeat(K))
    if ctf is not None:
        if len(ctf) != 1:
            raise InputError("ctf", f"one micrograph needs one CTF entry, got {len(ctf)}")
        grid = ImagingGrid(b, apix, pad=ctf_pad, dtype=t.dtype, device=t.device)
        t = grid.to_images(grid.transform(t) * grid.ctf(ctf))  # forward_images' CTF step, one CTF for all
    if highpass_A or lowpass_A:
        band = band_pass(b, b, apix, apix, highpass_A, lowpass_A, dtype=t.dtype, device=t.device)
        t = torch.fft.irfft2(torch.fft.rfft2(t) * band, s=(b, b))
    m = mask.to(t)
    n = float(m.sum())
    mean = (t * m).sum((-2, -1), keepdim=True) / n
    t = (t - mean) * m
    norm = torch.sqrt((t * t).sum((-2, -1), keepdim=True) / n)
    return torch.where(norm > 0, t / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(t))


# ------------------------------------------------------------------------------------------------------------
# Locally normalised correlation, tiled
# ------------------------------------------------------------------------------------------------------------

def _tile_size(h: int, w: int, b: int, tile_px: int | None) -> int:
    """``N``: ``tile_px`` (at least ``b`` + 15), or one fast FFT length holding the whole padded image when that
    is smaller (or ``tile_px`` is None)."""
    whole = next_fast_len(max(h, w) + b - 1, real=True)
    if tile_px is None:
        return whole
    return min(max(int(tile_px), b + 15), whole)


def local_correlation(image: torch.Tensor, templates: torch.Tensor, mask: torch.Tensor, *,
                      tile_px: int | None = 512, batch: int = 64, cache_mb: float = 256.0,
                      eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Roseman's fast local correlation (module docstring, step 3), maximised over templates, tiled.

    Args:
        image: ``(h, w)`` real (normalised micrograph ``f``). templates: ``(M, b, b)`` normalised under ``mask``
            (:func:`prepare_templates`: ``Σ t = 0``, ``Σ t² = n``). mask: ``(b, b)`` 0/1 with ``n`` pixels.
        tile_px: tile side ``N`` (None: one tile). batch: templates per FFT batch. cache_mb: keep all the
            templates' spectra when they fit. eps: ``σ(x)²`` is at least ``eps`` times the image's mean square
            (positions whose masked disc holds no signal then score ~0 instead of dividing by 0).
    Returns:
        ``best (h, w)``: ``max_t c_t(x)``, and ``index (h, w)`` int64: the ``t`` attaining it, on the image's
        device, in its dtype.
    """
    h, w = image.shape
    M, b = templates.shape[0], templates.shape[-1]
    dev, dt = image.device, image.dtype
    templates, mask = templates.to(device=dev, dtype=dt), mask.to(device=dev, dtype=dt)
    n = float(mask.sum())
    N = _tile_size(h, w, b, tile_px)
    S = N - b + 1  # valid outputs per tile and axis
    ny, nx = math.ceil(h / S), math.ceil(w / S)
    c = b // 2
    padded = torch.zeros(ny * S + b - 1, nx * S + b - 1, dtype=dt, device=dev)
    padded[c:c + h, c:c + w] = image
    floor = eps * float((image * image).mean()) if h * w else eps
    if floor <= 0:
        floor = eps

    def spectra(t):  # conj FFT of templates zero-padded to N × N (pixel (0, 0) of the box at (0, 0))
        return torch.conj(torch.fft.rfft2(t, s=(N, N)))

    mask_hat = spectra(mask[None])[0]
    cdt = torch.complex128 if dt == torch.float64 else torch.complex64
    cache_bytes = M * N * (N // 2 + 1) * torch.empty(0, dtype=cdt).element_size()
    cached = [spectra(templates[i:i + batch]) for i in range(0, M, batch)] if cache_bytes <= cache_mb * 2 ** 20 \
        else None
    best = torch.empty((h, w), dtype=dt, device=dev)
    index = torch.empty((h, w), dtype=torch.int64, device=dev)
    for ty in range(ny):
        for tx in range(nx):
            y0, x0 = ty * S, tx * S
            tile = padded[y0:y0 + N, x0:x0 + N]
            if tile.shape != (N, N):
                tile = torch.nn.functional.pad(tile, (0, N - tile.shape[1], 0, N - tile.shape[0]))
            f1, f2 = torch.fft.rfft2(tile), torch.fft.rfft2(tile * tile)
            s1 = torch.fft.irfft2(f1 * mask_hat, s=(N, N))[:S, :S]
            s2 = torch.fft.irfft2(f2 * mask_hat, s=(N, N))[:S, :S]
            var = (s2 / n - (s1 / n) ** 2).clamp_min(floor)
            denom = n * torch.sqrt(var)
            hy, hx = min(S, h - y0), min(S, w - x0)
            # σ(x) > 0 is the same for every template: maximise the numerators, divide once
            top = torch.full((hy, hx), -math.inf, dtype=dt, device=dev)
            arg_top = torch.zeros((hy, hx), dtype=torch.int64, device=dev)
            for j, i in enumerate(range(0, M, batch)):
                spec = cached[j] if cached is not None else spectra(templates[i:i + batch])
                val, arg = torch.fft.irfft2(f1[None] * spec, s=(N, N))[:, :hy, :hx].max(0)
                better = val > top
                top[better] = val[better]
                arg_top[better] = arg[better] + i
            best[y0:y0 + hy, x0:x0 + hx] = top / denom[:hy, :hx]
            index[y0:y0 + hy, x0:x0 + hx] = arg_top
    return best, index


# ------------------------------------------------------------------------------------------------------------
# The picker
# ------------------------------------------------------------------------------------------------------------

def _working_templates(templates, templates_apix: float, work: float) -> tuple[torch.Tensor, float]:
    """Fourier-crop ``(K, B, B)`` templates to ``b = round(B · templates_apix / work)`` pixels (not upsampled);
    returns them and their pixel size ``templates_apix · B / b``."""
    B = templates.shape[-1]
    b = B if work <= templates_apix else max(4, int(round(B * templates_apix / work)))
    if b == B:
        return templates, templates_apix
    return crop_images(templates, b).to(templates.dtype), templates_apix * B / b


def template_score_map(micrograph, apix: float, cfg: TemplateConfig, templates: torch.Tensor | Templates, *,
                       templates_apix: float | None = None, ctf: CTFParams | None = None) -> dict:
    """Steps 1–3 of the module docstring: the locally normalised correlation map on the working grid.

    Args:
        micrograph: ``(H, W)``; apix: its pixel size. templates: ``(K, B, B)`` CTF-free (projections or class
            averages) of pixel size ``templates_apix`` (None: ``apix``), or :class:`Templates` (their own pixel
            size). ctf: the micrograph's (one entry) or None.
    Returns:
        dict with ``score (h, w)`` the correlation ``max_{k,j} c_{kj}`` (torch, the working device and dtype),
        ``view (h, w)`` the template ``k`` and ``psi (h, w)`` the in-plane angle ``ψ_j`` (radians) attaining it,
        ``scale (H/h, W/w)`` (working → micrograph pixels), ``apix`` the working pixel size, ``n_psi``.
    """
    cfg.check()
    m = check_micrograph(micrograph, apix)
    device = torch.device(cfg.device) if cfg.device is not None else m.device
    m = m.to(device)
    if isinstance(templates, Templates):
        templates, templates_apix = templates.images, templates.apix
    t = torch.as_tensor(templates)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[-1] != t.shape[-2] or t.shape[0] < 1:
        raise InputError("templates", f"must be (K, B, B) with K ≥ 1, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise InputError("templates", "hold NaN or infinite pixels")
    t = t.to(device=device, dtype=m.dtype)
    tap = float(apix if templates_apix is None else templates_apix)
    if not (math.isfinite(tap) and tap > 0):
        raise InputError("--templates-apix", f"must be > 0 Å, got {templates_apix}")
    work = cfg.work_apix if cfg.work_apix is not None else cfg.lowpass_A / 3
    t, a = _working_templates(t, tap, max(work, apix))
    b = t.shape[-1]
    img, scale = normalise_micrograph(m, apix, a, highpass_A=_highpass(cfg), lowpass_A=cfg.lowpass_A,
                                      polarity=POLARITIES[cfg.polarity])
    if min(img.shape) < b:
        raise InputError("micrograph", f"{m.shape[0]} × {m.shape[1]} px is smaller than the template box "
                                       f"({b} px at {a:.2f} Å/px)")
    a_img = apix * 0.5 * (scale[0] + scale[1])
    radius = cfg.radius_A + cfg.lowpass_A if cfg.mask_radius_A is None else cfg.mask_radius_A
    mask = disc_mask(b, min(radius / a, (b - 1) / 2), dtype=m.dtype, device=device)
    J = cfg.n_psi()
    ready = prepare_templates(t, mask, a, J, ctf, highpass_A=_highpass(cfg), lowpass_A=cfg.lowpass_A,
                              ctf_pad=cfg.ctf_pad)
    best, index = local_correlation(img, ready, mask, tile_px=cfg.tile_px, batch=cfg.batch, cache_mb=cfg.cache_mb)
    return {"score": best, "view": index // J, "psi": (index % J).to(m.dtype) * (2 * math.pi / J),
            "scale": scale, "apix": a_img, "n_psi": J}


def _highpass(cfg) -> float:
    return 2 * cfg.diameter_A if cfg.highpass_A is None else cfg.highpass_A


def pick_template(micrograph, apix: float, cfg: TemplateConfig, *, templates: torch.Tensor | Templates,
                  templates_apix: float | None = None, ctf: CTFParams | None = None,
                  progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Pick the particles of one micrograph by template matching (module docstring).

    Args:
        micrograph: ``(H, W)`` float tensor or array (any device). apix: Å per pixel. cfg: :class:`TemplateConfig`
            (``diameter_A`` required). templates: ``(K, B, B)`` CTF-free templates (:func:`make_templates`, or
            class averages) of pixel size ``templates_apix`` (None: ``apix``), or :class:`Templates`
            (:func:`templates_from_file`). ctf: the micrograph's CTF (one entry), applied to the templates;
            None: none. progress: optional ``.advance(1)`` when done.
    Returns:
        ``xy (n, 2)`` float64 ``(x, y)`` centres in micrograph pixels (0-based pixel centres, ``x`` the column)
        and ``score (n,)`` float64 (the standardised correlation), best first.
    """
    res = template_score_map(micrograph, apix, cfg, templates, templates_apix=templates_apix, ctf=ctf)
    z = robust_standardise(res["score"].detach().to("cpu", torch.float64).numpy())
    xy, values = picks_from_z_map(z, res["apix"], res["scale"], cfg)
    if progress is not None:
        progress.advance(1)
    return xy, values
