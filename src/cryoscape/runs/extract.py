"""``extract``: particle boxes cut from micrographs at picked coordinates, written as one run folder that
``backproject``, ``class2d``, ``abinit`` and ``train-vae`` read directly.

Inputs (never changed):

- micrographs ``.mrc`` (any ``H × W``, one section each; the pixel size from their headers, ``apix`` when
  none states one);
- one or more coordinate files (:func:`cryoscape.io.coords.read_coordinates`: RELION coordinate STAR per
  micrograph or one STAR for all, EMAN ``.box``, Topaz text, crYOLO ``.cbox``). A coordinate's micrograph is
  found by name (:func:`match_micrograph`: equal file names without folder and extension, else the longest
  micrograph name that prefixes it followed by ``_``, as RELION's ``<micrograph>_autopick.star``). With one
  micrograph, a file that does not name its micrograph (so :mod:`~cryoscape.io.coords` names it by the file's
  stem) holds that micrograph's coordinates;
- optionally a RELION micrographs STAR with each micrograph's CTF (``micrographs_ctf.star``,
  :func:`cryoscape.io.star.read_micrographs_star`), matched by equal stems.

The folder holds (besides ``config.yaml``, ``versions.txt``, ``run.log``, ``metrics.json``):

- ``particles.mrcs``: ``(N, B/k, B/k)`` float32, pixel size ``k · apix`` (:func:`~cryoscape.methods.pick.
  extract.extract_particles`: sub-pixel centred, optionally phase-flipped and inverted, binned by ``k``,
  normalised; conventions in that module);
- ``particles.star``: RELION 3.1 (:func:`~cryoscape.io.star.write_star`): ``rlnImageName`` ``k@particles.mrcs``,
  ``rlnMicrographName``, ``rlnCoordinateX/Y`` (RELION's 0-based pixel index, which is our ``(x, y)``
  unchanged, as :mod:`cryoscape.io.coords` documents; the fraction is kept), ``rlnOriginXAngst/YAngst`` (0
  when sub-pixel centred, else ``−δ · apix`` Å with ``δ = c − round(c)`` in micrograph pixels: RELION's shift
  that centres the particle), and with a CTF file each particle's micrograph CTF
  (``rlnDefocusU/V``, ``rlnDefocusAngle``, ``rlnPhaseShift``, ``rlnCtfBfactor``) and one optics group per
  (voltage, Cs, amplitude contrast); phase-flipped particles are marked ``rlnCtfDataArePhaseFlipped 1``.

Particles whose box leaves their micrograph are skipped and counted (``n_skipped_edge``), or with ``pad``
kept with the micrograph's mean beyond the edge (``n_padded``). Every check that can fail on the input runs
before the folder is made: the options, every micrograph (readable, finite, at least the box, one pixel
size), every coordinate (a known micrograph, inside it), the CTF file (every micrograph listed, the same
pixel size). The micrographs are read twice (checked, then extracted one at a time), so memory stays at one
micrograph plus one batch of boxes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..io.errors import InputError
from .folder import RunFolder

__all__ = ["ExtractConfig", "extract_run", "match_micrograph"]

APIX_RTOL = 1e-3  # pixel sizes that differ by more than this fraction are "mismatched"


@dataclass
class ExtractConfig:
    """Options of ``extract`` (units in the names; the method's conventions in
    :mod:`cryoscape.methods.pick.extract`).

    Attributes:
        box: window in micrograph pixels. bin: output box ``box / bin`` by Fourier cropping.
        radius_A: background radius of the normalisation, Å (None: ``0.375 × box × apix``, RELION's default).
        subpixel: centre each particle to a fraction of a pixel. normalize: background mean 0, std 1.
        ramp: subtract the background's plane, not just its mean. phase_flip: flip phases by the micrograph's
            CTF (needs a CTF file). invert: multiply by −1 (dark particles to white).
        pad: keep boxes that leave the micrograph, filled with its mean (else they are skipped).
        batch: boxes per batch. device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    """

    box: int = 128
    bin: int = 1
    radius_A: float | None = None
    subpixel: bool = True
    normalize: bool = True
    ramp: bool = True
    phase_flip: bool = False
    invert: bool = False
    pad: bool = False
    batch: int = 256
    device: str = "cpu"

    def check(self) -> None:
        """:class:`InputError` naming the first invalid option."""
        if self.box < 2:
            raise InputError("--box", f"must be ≥ 2 pixels, got {self.box}")
        if self.bin < 1 or self.box % self.bin or self.box // self.bin < 2:
            raise InputError("--bin", f"must divide the box ({self.box} px) and leave ≥ 2 px, got {self.bin}")
        if self.radius_A is not None and not (self.radius_A > 0 and math.isfinite(self.radius_A)):
            raise InputError("--radius-A", f"must be a positive number of Å, got {self.radius_A}")
        if self.batch < 1:
            raise InputError("--batch", f"must be ≥ 1, got {self.batch}")


def match_micrograph(name, stems: list[str]) -> int | None:
    """Index of the micrograph that ``name`` refers to, among micrographs known by ``stems``
    (:func:`~cryoscape.io.coords.micrograph_key`: file name without folders and extension): the one whose key
    equals ``name``'s, else the longest ``s`` with ``name``'s key starting with ``s + "_"`` (RELION's
    ``<micrograph>_autopick.star``); None when there is none."""
    from ..io.coords import micrograph_key

    key = micrograph_key(name)
    if key in stems:
        return stems.index(key)
    cands = [i for i, s in enumerate(stems) if key.startswith(s + "_")]
    return max(cands, key=lambda i: len(stems[i])) if cands else None


@dataclass
class _Micrograph:
    path: Path
    name: str
    shape: tuple
    xy: np.ndarray
    keep: np.ndarray
    ctf_row: int | None = None


def _check_micrographs(paths, box: int, apix_opt: float | None):
    """Read every micrograph once (io checks: readable, one section, finite), check its size against the box
    and the pixel sizes against each other; ``(shapes, apix from the headers or None)``."""
    from ..io.mrc import read_micrograph

    shapes, apixes = [], []
    for p in paths:
        if p.suffix.lower() != ".mrc":
            raise InputError(p, f"expected a micrograph .mrc, got {p.suffix or '(no suffix)'!r}")
        img, a = read_micrograph(p)
        H, W = img.shape
        if min(H, W) < box:
            raise InputError(p, f"the micrograph ({H} × {W} px) is smaller than the {box}-px box")
        shapes.append((H, W))
        if a > 0:
            apixes.append((p, a))
        del img
    for p, a in apixes[1:]:
        if abs(a - apixes[0][1]) > APIX_RTOL * apixes[0][1]:
            raise InputError(p, f"pixel size {a:.4g} Å differs from {apixes[0][0].name}'s {apixes[0][1]:.4g} Å "
                                "(extract micrographs of one pixel size together)")
    header = apixes[0][1] if apixes else None
    if apix_opt is not None:
        if not (apix_opt > 0 and math.isfinite(apix_opt)):
            raise InputError("--apix", f"must be a positive number, got {apix_opt}")
        if header is not None and abs(apix_opt - header) > APIX_RTOL * header:
            raise InputError("--apix", f"{apix_opt:.4g} Å differs from the micrographs' headers ({header:.4g} Å)")
        return shapes, float(apix_opt)
    return shapes, header


def _read_coords(coord_files, fmt, mic_paths, stems):
    """Every coordinate file through :func:`read_coordinates`; ``(xy per micrograph, n read)``."""
    from ..io.coords import read_coordinates

    per = [[] for _ in mic_paths]
    n = 0
    for cf in coord_files:
        cf = Path(cf)
        c = read_coordinates(cf, fmt)
        names = np.asarray(c.micrograph).astype(str)
        unnamed = len(names) and (names == cf.stem).all() and match_micrograph(cf.stem, stems) is None
        if len(mic_paths) == 1 and unnamed:
            names = np.full(len(names), mic_paths[0].name)  # a file without micrograph names, one micrograph
        for name in dict.fromkeys(names.tolist()):
            i = match_micrograph(name, stems)
            if i is None:
                given = ", ".join(p.name for p in mic_paths[:3]) + (", …" if len(mic_paths) > 3 else "")
                raise InputError(cf, f"names micrograph {name!r}, which is not among the {len(mic_paths)} given "
                                     f"({given})")
            per[i].append(np.asarray(c.xy, dtype=np.float64)[names == name])
        n += len(names)
    return [np.concatenate(x) if x else np.empty((0, 2)) for x in per], n


def _read_ctf(ctf_star, stems, apix):
    """The micrographs STAR: ``(row of every micrograph, CTF columns, names in the file, apix)``."""
    from ..io.coords import micrograph_key
    from ..io.star import read_micrographs_star

    names, ctf, star_apix = read_micrographs_star(ctf_star)
    rows = {}
    for j, name in enumerate(names):
        key = micrograph_key(name)
        if key in stems:
            rows.setdefault(stems.index(key), j)
    missing = [stems[i] for i in range(len(stems)) if i not in rows]
    if missing:
        raise InputError(ctf_star, f"has no CTF for micrograph {missing[0]}"
                                   + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    star_apix = float(star_apix) if star_apix is not None else 0.0
    if apix is not None and star_apix > 0 and abs(star_apix - apix) > APIX_RTOL * apix:
        raise InputError(ctf_star, f"pixel size {star_apix:.4g} Å differs from the micrographs' {apix:.4g} Å")
    return [rows[i] for i in range(len(stems))], ctf, names, (star_apix if star_apix > 0 else None)


def _star_tables(mics, cols, origins_A, apix_out, d, ctf_names, flipped) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The particle and optics tables of ``particles.star`` (module docstring)."""
    n = sum(int(m.keep.sum()) for m in mics)
    mic_names, xy = [], []
    ctf_idx = []
    for m in mics:
        k = int(m.keep.sum())
        mic_names += [m.name] * k
        xy.append(m.xy[m.keep])
        ctf_idx += [m.ctf_row] * k
    xy = np.concatenate(xy) if xy else np.empty((0, 2))
    rel = xy  # RELION's rlnCoordinateX/Y is our (x, y) unchanged (io/coords.py: the 0-based pixel index)
    parts = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(n)],
                          "rlnMicrographName": mic_names,
                          "rlnCoordinateX": rel[:, 0], "rlnCoordinateY": rel[:, 1],
                          "rlnOriginXAngst": origins_A[:, 0], "rlnOriginYAngst": origins_A[:, 1]})
    optics = {"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"]}
    if cols is not None:
        idx = np.asarray(ctf_idx, dtype=np.int64)
        parts["rlnDefocusU"] = cols["defocus_u"][idx]
        parts["rlnDefocusV"] = cols["defocus_v"][idx]
        parts["rlnDefocusAngle"] = np.rad2deg(cols["angle_ast"][idx])
        parts["rlnPhaseShift"] = np.rad2deg(cols.get("phase_shift", np.zeros(len(ctf_names)))[idx])
        bfac = cols.get("bfactor", np.zeros(len(ctf_names)))[idx]
        if (bfac != 0).any():
            parts["rlnCtfBfactor"] = bfac
        scope = np.stack([cols["voltage_kv"][idx], cols["cs_mm"][idx], cols["amp_contrast"][idx]], 1)
        groups, inverse = np.unique(scope, axis=0, return_inverse=True)
        parts["rlnOpticsGroup"] = inverse.reshape(-1).astype(np.int64) + 1
        optics = {"rlnOpticsGroup": np.arange(1, len(groups) + 1),
                  "rlnOpticsGroupName": [f"opticsGroup{g}" for g in range(1, len(groups) + 1)],
                  "rlnVoltage": groups[:, 0], "rlnSphericalAberration": groups[:, 1],
                  "rlnAmplitudeContrast": groups[:, 2]}
        G = len(groups)
    else:
        parts["rlnOpticsGroup"] = np.ones(n, dtype=np.int64)
        G = 1
    optics = pd.DataFrame(optics)
    optics["rlnImagePixelSize"] = np.full(G, float(apix_out))
    optics["rlnImageSize"] = np.full(G, int(d), dtype=np.int64)
    optics["rlnImageDimensionality"] = np.full(G, 2, dtype=np.int64)
    if flipped:
        optics["rlnCtfDataArePhaseFlipped"] = np.ones(G, dtype=np.int64)
    return parts, optics


def extract_run(micrographs, coords, out: str | Path, cfg: ExtractConfig | None = None, *, coords_format=None,
                ctf_star=None, apix: float | None = None, overwrite: bool = False, threads: int | None = None,
                progress: bool = True, echo=print) -> dict:
    """``cryoscape extract`` (module docstring): check everything, then write the run folder ``out``.
    Returns the ``metrics.json`` payload."""
    from ..io.atomic import check_can_write
    from ..io.coords import micrograph_key
    from ..io.mrc import StackWriter, read_micrograph
    from ..io.star import write_star
    from ..methods.pick.extract import box_inside, extract_particles, subpixel_residual
    from ..physics.ctf import CTFParams
    from ..utils import devices
    from ..utils.progress import progress_bar

    cfg = cfg or ExtractConfig()
    cfg.check()
    out = Path(out)
    check_can_write(out, overwrite)
    paths = [Path(p) for p in micrographs]
    coord_files = [Path(c) for c in ([coords] if isinstance(coords, (str, Path)) else coords)]
    if not paths:
        raise InputError("micrographs", "give one or more micrograph .mrc files")
    if not coord_files:
        raise InputError("--coords", "give a coordinate file")
    stems = [micrograph_key(p.name) for p in paths]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise InputError("micrographs", f"two micrographs are named {dup!r}; coordinates could not tell them apart")
    if cfg.phase_flip and ctf_star is None:
        raise InputError("--phase-flip", "needs the micrographs' CTF (--ctf micrographs_ctf.star)")
    device = devices.resolve_device(cfg.device)
    shapes, mic_apix = _check_micrographs(paths, cfg.box, apix)
    ctf_rows, cols, ctf_names = None, None, None
    if ctf_star is not None:
        ctf_rows, ctf, ctf_names, star_apix = _read_ctf(Path(ctf_star), stems, mic_apix)
        cols = {k: np.asarray(v, dtype=np.float64) for k, v in ctf.items()}
        mic_apix = mic_apix or star_apix
    if not mic_apix:
        raise InputError(paths[0], "no pixel size in the micrographs' headers: give --apix")
    per_mic, n_read = _read_coords(coord_files, coords_format, paths, stems)

    mics = []
    for i, (p, shape, xy) in enumerate(zip(paths, shapes, per_mic)):
        H, W = shape
        out_of = (xy[:, 0] < -0.5) | (xy[:, 0] >= W - 0.5) | (xy[:, 1] < -0.5) | (xy[:, 1] >= H - 0.5)
        if out_of.any():
            j = int(np.nonzero(out_of)[0][0])
            raise InputError(p, f"coordinate (x, y) = ({xy[j, 0]:.1f}, {xy[j, 1]:.1f}) px lies outside the "
                                f"{W} × {H} (W × H) micrograph")
        inside = box_inside(xy, cfg.box, shape)
        keep = np.ones(len(xy), dtype=bool) if cfg.pad else inside
        name = str(ctf_names[ctf_rows[i]]) if ctf_rows is not None else str(p)
        mics.append(_Micrograph(p, name, shape, xy, keep, None if ctf_rows is None else ctf_rows[i]))
    n = sum(int(m.keep.sum()) for m in mics)
    n_edge = sum(int((~box_inside(m.xy, cfg.box, m.shape)).sum()) for m in mics)
    if n == 0:
        raise InputError(coord_files[0], f"none of the {n_read} coordinates has a whole {cfg.box}-px box inside "
                                         "its micrograph (pass --pad to keep boxes cut by the edge)")
    d = cfg.box // cfg.bin
    apix_out = mic_apix * cfg.bin
    radius_px = None if cfg.radius_A is None else cfg.radius_A / apix_out
    if radius_px is not None and radius_px >= d / math.sqrt(2):
        raise InputError("--radius-A", f"{cfg.radius_A} Å ({radius_px:.1f} px) leaves no background in a "
                                       f"{d}-px box of {apix_out:.4g} Å pixels")
    n_threads = devices.set_threads(threads)
    config = {"command": "extract", "micrographs": [str(p) for p in paths], "coords": [str(c) for c in coord_files],
              "coords_format": coords_format, "ctf": None if ctf_star is None else str(ctf_star), "apix": mic_apix,
              "threads": n_threads, **asdict(cfg)}
    inputs_doc = {"micrographs": [str(p) for p in paths], "coords": [str(c) for c in coord_files],
                  "ctf": None if ctf_star is None else str(ctf_star), "n_micrographs": len(paths),
                  "n_coordinates": n_read, "apix_A": mic_apix}
    with RunFolder(out, "extract", config, overwrite=overwrite, inputs=inputs_doc) as run:
        run.log.info("%d coordinates on %d micrographs: %d boxes of %d px (%d leave their micrograph: %s), "
                     "output %d px of %.4g Å", n_read, len(paths), n, cfg.box, n_edge,
                     "padded" if cfg.pad else "skipped", d, apix_out)
        deltas = []
        t0 = time.perf_counter()
        with StackWriter(run.file("particles.mrcs"), n, d, apix_out) as writer, \
                progress_bar(n, "extract", progress) as bar:
            for m in mics:
                xy = m.xy[m.keep]
                if len(xy) == 0:
                    continue
                img, _ = read_micrograph(m.path)
                mic = torch.from_numpy(img).to(device)
                flip = None
                if cfg.phase_flip:
                    flip = CTFParams(**{k: v[m.ctf_row:m.ctf_row + 1] for k, v in cols.items()})
                for s in range(0, len(xy), cfg.batch):
                    part = xy[s:s + cfg.batch]
                    boxes = extract_particles(mic, part, cfg.box, mic_apix, subpixel=cfg.subpixel,
                                              normalize=cfg.normalize, phase_flip_ctf=flip, invert=cfg.invert,
                                              bin=cfg.bin, bg_radius_px=radius_px, ramp=cfg.ramp,
                                              edge="pad" if cfg.pad else "raise", batch=cfg.batch)
                    writer.write(boxes.cpu().numpy())
                    bar.advance(len(part))
                deltas.append(np.zeros_like(xy) if cfg.subpixel else subpixel_residual(xy))
                run.log.info("%s: %d boxes", m.path.name, len(xy))
                del mic, img
        wall = time.perf_counter() - t0
        origins = -np.concatenate(deltas) * mic_apix  # RELION's origin: the shift (Å) that centres the particle
        parts, optics = _star_tables(mics, cols, origins, apix_out, d, ctf_names, cfg.phase_flip)
        write_star(run.file("particles.star"), parts, optics)
        run.metrics.update({"n_micrographs": len(paths), "n_coordinates": n_read, "n_particles": n,
                            "n_skipped_edge": 0 if cfg.pad else n_edge, "n_padded": n_edge if cfg.pad else 0,
                            "box_px": d, "apix_A": apix_out, "extract_wall_s": round(wall, 3),
                            "particles_per_s": n / max(wall, 1e-9)})
    echo(f"extracted {n} particles from {len(paths)} micrographs"
         + (f" ({n_edge} skipped at the edges)" if n_edge and not cfg.pad else ""))
    return run.summary
