"""Files of a VAE run folder, each written atomically.

- ``checkpoint.pt``: model, optimiser, history and configuration (after every epoch; :mod:`.train`);
- ``z.npy`` / ``z_logvar.npy``: ``(N, zdim)`` latent means and log variances, input order;
- ``z.pkl``: the means as cryoDRGN writes them (a pickled ``(N, zdim)`` float32 array), for its tools;
- ``history.json`` and ``loss.png``: per-epoch loss, reconstruction error, KL and images/s;
- ``config.yaml``, ``versions.txt``, ``run.log``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from ...io.atomic import atomic_path
from ...io.rundir import write_config, write_versions

__all__ = ["write_training_outputs", "read_latents"]


def write_training_outputs(out: str | Path, result, config: dict) -> dict:
    """Write the latents, history, loss plot, config and versions of a finished run; return a summary."""
    out = Path(out)
    with atomic_path(out / "z.npy") as tmp:
        np.save(tmp, result.z_mu.astype(np.float32))
    with atomic_path(out / "z_logvar.npy") as tmp:
        np.save(tmp, result.z_logvar.astype(np.float32))
    with atomic_path(out / "z.pkl") as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(result.z_mu.astype(np.float32), f)
    with atomic_path(out / "history.json") as tmp:
        Path(tmp).write_text(json.dumps(result.history, indent=1))
    from ...report.latent_plots import loss_curves
    with atomic_path(out / "loss.png") as tmp:
        loss_curves(tmp, result.history, keys=("loss", "mse", "kl", "images_per_s"))
    with atomic_path(out / "config.yaml") as tmp:
        write_config(tmp.parent, config, tmp.name)
    write_versions(out)
    last = result.history[-1]
    return {"n_images": int(len(result.z_mu)), "zdim": int(result.z_mu.shape[1]), "epochs": int(last["epoch"]),
            "final_loss": last["loss"], "final_mse": last["mse"],
            "images_per_s": float(np.median([h["images_per_s"] for h in result.history]))}


def read_latents(path: str | Path) -> np.ndarray:
    """Latents ``(N, zdim)`` from a run folder (its ``z.npy``), a ``.npy``, a cryoDRGN ``z.pkl`` or a text
    file (one row per particle)."""
    from ...io.errors import InputError
    path = Path(path)
    if path.is_dir():
        path = path / "z.npy"
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        if path.suffix == ".npy":
            z = np.load(path)
        elif path.suffix == ".pkl":
            with open(path, "rb") as f:
                z = np.asarray(pickle.load(f))
        else:
            z = np.loadtxt(path, ndmin=2)
    except Exception as exc:
        raise InputError(path, f"cannot read latents ({type(exc).__name__})") from None
    z = np.asarray(z, dtype=np.float32)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or not np.isfinite(z).all():
        raise InputError(path, "latents must be a finite (N, zdim) array")
    return z
