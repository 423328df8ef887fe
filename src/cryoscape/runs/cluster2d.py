"""``cryoscape cluster2d``: clustering of particle images by conformation on rotation-invariant features,
optionally refined by 2-D EM (seed 004's "clustering problem": one viewing direction, unknown in-plane
rotations and shifts, several conformations).

:func:`cluster2d_run` reads a particle STAR (square box, every image finite, checked before anything is
written), then in a run folder (:class:`~cryoscape.runs.folder.RunFolder`):

1. flips the phases of every image by the sign of its CTF (:func:`cryoscape.physics.transform2d.phase_flip`,
   unless ``phase_flip=False`` or the set has no CTF), so that images of different defocus agree in sign;
2. embeds them (:func:`cryoscape.methods.class2d.cluster.embed`, ``acf``, ``power`` or ``bispectrum``) and
   clusters the features (:func:`~cryoscape.methods.class2d.cluster.cluster_features`, k-means or a
   Gaussian mixture);
3. with ``refine_iterations > 0``, runs the 2-D EM (:func:`cryoscape.methods.class2d.em.fit`) on the
   original images (the EM models the CTF itself) with ``K`` classes started from the clusters
   (``init_labels``), and writes its classes as ``class2d`` does (:func:`cryoscape.runs.class2d.write_class_outputs`).

Files: ``labels.npy`` (``(N,)`` int64, 0-based: the refined labels when refined) and ``labels.txt`` (one per
line); ``labels_features.npy`` (the clusters before refinement, only when refined); ``embedding.npy``
(``(N, F)`` float32 features); ``embedding_pca.npy`` (``(N, 2)`` first two principal components of the
features, scikit-learn PCA, both divided by the standard deviation of the first; usable with
``filter --embedding``) and ``embedding.png`` (those, coloured by
cluster); ``particles.star``: the input particles with ``rlnClassNumber = label + 1`` (and, when refined,
the EM's ``rlnAnglePsi``, origins and ``rlnMaxValueProbDistribution``), image names resolvable from the
folder. When refined, also ``class_averages.mrcs``, ``class_counts.json``, ``frc.npy``, ``gallery.png``,
``history.json`` and ``checkpoint.pt`` (an interrupted refinement resumes when the same command is run
again). When the STAR holds the simulator's ``_cryoscapeConformation`` column, ``metrics.json`` also reports
the adjusted Rand index and Hungarian accuracy of the labels against it (``ari_truth``,
``hungarian_accuracy_truth``; ``…_features`` for the clusters before refinement).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ..io.errors import InputError
from .class2d import CHECKPOINT, load_for_2d, read_images, write_class_outputs, write_class_star
from .folder import RunFolder

__all__ = ["cluster2d_run", "FEATURES", "METHODS", "TRUTH_COLUMN"]

FEATURES = ("acf", "power", "bispectrum")
METHODS = ("kmeans", "gmm")
TRUTH_COLUMN = "cryoscapeConformation"


def _echo(msg: str) -> None:
    import sys
    print(msg, file=sys.stderr, flush=True)


def phase_flipped(images: torch.Tensor, ctf, apix: float, chunk: int = 1024) -> torch.Tensor:
    """``images (N, D, D)`` with every transform multiplied by ``sign(CTF)`` (float32), in chunks."""
    from ..physics.imaging import ImagingGrid
    from ..physics.transform2d import phase_flip

    grid = ImagingGrid(images.shape[-1], apix)
    return torch.cat([phase_flip(images[s:s + chunk], ctf.subset(slice(s, s + chunk)), grid).float()
                      for s in range(0, images.shape[0], chunk)])


def _truth_metrics(table, labels, suffix: str = "") -> dict:
    from ..analysis.classes import adjusted_rand, hungarian_accuracy
    if TRUTH_COLUMN not in table.particles.columns:
        return {}
    truth = table.particles[TRUTH_COLUMN].to_numpy()
    return {f"ari_truth{suffix}": adjusted_rand(labels, truth),
            f"hungarian_accuracy_truth{suffix}": hungarian_accuracy(labels, truth)}


def cluster2d_run(particles: str | Path, out: str | Path, *, n_clusters: int, features: str = "acf",
                  method: str = "kmeans", refine_iterations: int = 0, phase_flip: bool = True, n_features: int = 32,
                  seed: int = 0, refine_cfg=None, datadir=None, overwrite: bool = False, threads: int | None = None,
                  progress: bool = True, echo=_echo) -> dict:
    """``cryoscape cluster2d`` (module docstring). ``n_clusters``: K. ``features``: one of :data:`FEATURES`;
    ``n_features``: bispectrum features kept after its PCA. ``method``: one of :data:`METHODS`. ``refine_cfg``:
    a :class:`~cryoscape.methods.class2d.em.Class2DConfig` for the refinement (its ``n_classes``,
    ``n_iterations`` and ``seed`` are set from ``n_clusters``, ``refine_iterations`` and ``seed``; None: the
    defaults). Every check that can fail on the input runs before anything is created. Returns the
    ``metrics.json`` payload."""
    from sklearn.decomposition import PCA

    from ..io.atomic import check_can_write
    from ..methods.class2d.cluster import cluster_features, embed
    from ..methods.class2d.em import Class2DConfig, fit
    from ..report.latent_plots import latent_scatter
    from ..utils import devices

    out = Path(out)
    if features not in FEATURES:
        raise InputError("--features", f"must be one of {', '.join(FEATURES)}, got {features!r}")
    if method not in METHODS:
        raise InputError("--method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    if n_clusters < 1:
        raise InputError("--clusters", f"must be ≥ 1, got {n_clusters}")
    if refine_iterations < 0:
        raise InputError("--refine-iterations", f"must be ≥ 0, got {refine_iterations}")
    if n_features < 1:
        raise InputError("--n-features", f"must be ≥ 1, got {n_features}")
    check_can_write(out, overwrite)
    cfg = replace(refine_cfg or Class2DConfig(), n_classes=n_clusters, n_iterations=max(refine_iterations, 1),
                  seed=seed)
    cfg.device = str(devices.resolve_device(cfg.device))
    data, table = load_for_2d(particles, datadir)
    N, D = len(data), data.D
    if n_clusters > N:
        raise InputError("--clusters", f"{n_clusters} clusters for {N} images: need at most one cluster per image")
    if refine_iterations > 0:
        cfg.check(N, D)
    n_threads = devices.set_threads(threads)
    flip = phase_flip and data.ctf is not None
    notes = list(data.notes) + (["no CTF: images used as they are (no phase flip)"]
                                if phase_flip and data.ctf is None else [])
    for note in notes:
        echo(f"note: {note}")
    config = {"command": "cluster2d", "particles": particles, "datadir": datadir, "apix": data.apix, "box": D,
              "threads": n_threads, "clusters": n_clusters, "features": features, "method": method,
              "n_features": n_features, "phase_flip": flip, "refine_iterations": refine_iterations, "seed": seed,
              "refine": asdict(cfg) if refine_iterations > 0 else None}
    inputs = {"particles": str(particles), "n_particles": N, "box_px": D, "apix_A": data.apix,
              "ctf_free": data.ctf is None}
    images = read_images(data)
    with RunFolder(out, "cluster2d", config, overwrite=overwrite, resume=True, inputs=inputs) as run:
        run.log.info("%d particles from %s, %d px, %.4g Å/px; %s features, %s, K = %d, %d thread(s)", N,
                     data.source, D, data.apix, features, method, n_clusters, n_threads)
        for note in notes:
            run.log.info("note: %s", note)
        x = phase_flipped(images, data.ctf, data.apix) if flip else images
        feats = embed(x, kind=features, n_features=n_features, seed=seed)
        del x
        labels_f = cluster_features(feats, n_clusters, method=method, seed=seed)
        feats = feats.detach().cpu().numpy()
        np.save(run.file("embedding.npy"), feats.astype(np.float32))
        pca = PCA(n_components=min(2, feats.shape[1], N), random_state=seed)
        pcs = pca.fit_transform(feats)
        if pcs.shape[1] < 2:
            pcs = np.concatenate([pcs, np.zeros((N, 2 - pcs.shape[1]))], axis=1)
        sd = float(pcs[:, 0].std())
        pcs = pcs / sd if sd > 0 else pcs  # units of PC1's standard deviation (features are ~1e-4 in size)
        np.save(run.file("embedding_pca.npy"), pcs.astype(np.float32))
        latent_scatter(run.file("embedding.png"), pcs, clusters=labels_f, xlabel="PC1 of the features (sd units)",
                       ylabel="PC2 (PC1 sd units)", title=f"{features} features, {method}, K = {n_clusters}")
        explained = float(100 * np.nan_to_num(pca.explained_variance_ratio_).sum())  # NaN for one image
        run.metrics.update({"n_clusters": n_clusters, "n_particles": N, "n_features": int(feats.shape[1]),
                            "pca_explained_variance_pct": explained})
        run.metrics.update(_truth_metrics(table, labels_f, "_features" if refine_iterations > 0 else ""))
        labels = labels_f
        if refine_iterations > 0:
            run.log.info("refining by 2D EM, %d iterations", refine_iterations)
            result = fit(images, data.ctf, data.apix, cfg, checkpoint=run.file(CHECKPOINT), progress=progress,
                         init_labels=torch.as_tensor(labels_f))
            labels = result.labels.numpy().astype(np.int64)
            np.save(run.file("labels_features.npy"), labels_f)
            write_class_outputs(run, table, images, data.ctf, data.apix, result, datadir,
                                title=f"{n_clusters} classes (refined), {N} particles", device=cfg.device)
            from ..analysis.classes import adjusted_rand
            run.metrics["ari_refined_vs_features"] = adjusted_rand(labels, labels_f)
            run.metrics.update(_truth_metrics(table, labels))
        else:
            write_class_star(table, run.file("particles.star"), labels, datadir=datadir)
        np.save(run.file("labels.npy"), labels)
        np.savetxt(run.file("labels.txt"), labels, fmt="%d")
        sizes = np.bincount(labels, minlength=n_clusters)
        run.metrics.update({"n_clusters": n_clusters, "smallest_cluster": int(sizes.min()),
                            "largest_cluster": int(sizes.max())})
        run.log.info("cluster sizes: %s", ", ".join(str(int(s)) for s in sizes))
    return run.summary
