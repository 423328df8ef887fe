"""``cryoscape demo``: the main job on the embedded AdK trajectory, end to end.

1. Simulate 1,000 (``n_images``) particles of 64 px, each frame of the closed→open trajectory equally often,
   SNR 0.1, defocus 1.5–2.5 µm with astigmatism, offsets up to 5 Å → ``OUT/simulate``.
2. Reconstruct the consensus map with half maps and FSC (the command's defaults) → ``OUT/backproject``.
3. Recover a Cα model per particle with the spectral method (the command's defaults, the best measured:
   docs/benchmarks.md); the graph comes from the images, the truth only scores the result → ``OUT/spectral``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["run_demo", "DEMO_SIMULATION"]

#: the demo's simulation options (SimulationConfig keyword arguments)
DEMO_SIMULATION = dict(box=64, snr=0.1, sigma=3.0, defocus_min_um=1.5, defocus_max_um=2.5, astigmatism_um=0.05,
                       shift_max_A=5.0, sampling="balanced", seed=0)


def run_demo(out: Path, n_images: int = 1000, overwrite: bool = True, show_progress: bool = True,
             echo: Callable[[str], None] = print) -> dict:
    """Run the three steps into ``out`` (module docstring); ``echo`` receives one summary line per step and
    where its files are. Returns ``{"simulate": …, "backproject": …, "spectral": …}`` summaries."""
    from ..data.particles import load_particles
    from ..data.simulate import SimulationConfig
    from ..methods.reconstruct import BackprojectConfig
    from ..methods.spectral.run import SpectralConfig
    from .reconstruct import backproject_to_folder
    from .simulate import load_source, simulate_to_folder
    from .spectral import spectral_to_folder

    out = Path(out)
    cfg = SimulationConfig(n_images=n_images, **DEMO_SIMULATION)
    source, frame_ids, conf, info = load_source(None, None, "ca", None, 1, cfg.sigma, None)
    sim = simulate_to_folder(out / "simulate", source, cfg, source_info=info, frame_ids=frame_ids,
                             truth_models=conf, overwrite=overwrite, show_progress=show_progress)
    echo(json.dumps(sim))
    echo(f"demo: dataset in {out}/simulate (particles.star, particles.mrcs, truth/, previews/*.png)")

    data = load_particles(out / "simulate" / "particles.star")
    cfg_bp = BackprojectConfig()
    bp = backproject_to_folder(data, out / "backproject", cfg_bp, {"command": "demo backproject", **cfg_bp.__dict__},
                               overwrite=overwrite, progress=show_progress, command="demo backproject")
    echo(json.dumps({k: bp[k] for k in ("n_images", "resolution_fsc0.143_A", "resolution_fsc0.5_A")}))
    echo(f"demo: consensus map in {out}/backproject (map.mrc, half maps, fsc.png)")

    lookup = {int(f): i for i, f in enumerate(np.asarray(frame_ids))}
    conf_ids = np.load(out / "simulate" / "truth" / "conformation.npy")
    truth = conf.coords[[lookup[int(c)] for c in conf_ids]]
    sp = spectral_to_folder(out / "spectral", data, conf.coords[0], conf, SpectralConfig(), truth=truth,
                            color=conf_ids, command="demo spectral", overwrite=overwrite,
                            show_progress=show_progress)
    m = sp["metrics"]
    echo(json.dumps({stage: {k: round(m[f"{stage}_{k}"], 3) for k in ("avg_error_A", "max_error_A")}
                     for stage in ("test_initial", "test_trained")}))
    echo(f"demo: per-particle Cα models in {out}/spectral (models.pdb, embedding.png, metrics.json)")
    return {"simulate": sim, "backproject": bp, "spectral": sp}
