"""The particle simulator: atomic models, MD trajectories or maps → noiseless and noisy particle images.

Image formation (CONVENTIONS.md) for particle ``n``, by the one forward model of
:mod:`cryoscape.physics.imaging`:

    Î_n(k) = CTF_n(k) · exp(−2πi k·t_n) · P̂_{R_n}[V_{c_n}](k),   I_n = F⁻¹[Î_n] + ε_n,   ε ~ N(0, σ²)

``V_c`` is conformation ``c`` (Gaussian atoms, projected analytically, or a voxel map, projected by Fourier
slice), ``R_n`` a Haar-uniform pose, ``t_n`` the in-plane offset of the particle from the box centre (the
STAR file gets ``rlnOriginXAngst/YAngst = −t_n``, RELION's meaning), and ``σ² = var(clean) / SNR`` with
the variance taken over every pixel of the whole noiseless dataset (an exact first pass).

Everything random is drawn from the seed, so the same seed and options give bit-identical images, rendered
in chunks so that memory is bounded for any number of images. The pieces:

- :mod:`.config`: :class:`SimulationConfig` (the options);
- :mod:`.sources`: :class:`AtomSource`, :class:`MapSource` (what is imaged; each holds its projector);
- :mod:`.plan`: :class:`SimulationPlan`, :func:`plan_simulation` (every random draw, up front);
- :mod:`.render`: :func:`render_images`, :func:`render_chunks`, :func:`clean_variance`,
  :func:`add_dataset_noise`.

This package writes no files: ``cryoscape.runs.simulate`` writes the run folder (stack, STAR, truth, previews).
"""

from .config import PROJECTIONS, SAMPLING, SimulationConfig
from .plan import SimulationPlan, plan_simulation, simulation_fingerprint
from .render import add_dataset_noise, chunks, clean_variance, imaging_grid, render_chunks, render_images
from .sources import AtomSource, MapSource

__all__ = ["SimulationConfig", "SimulationPlan", "AtomSource", "MapSource", "plan_simulation", "render_images",
           "render_chunks", "clean_variance", "add_dataset_noise", "simulation_fingerprint", "chunks",
           "imaging_grid", "PROJECTIONS", "SAMPLING"]
