#!/usr/bin/env python
"""Peer data: a CWF test set made by ASPIRE's own simulator (the setting the CWF figure of issue 14 was measured
on), written in RELION's sign convention so that every denoiser reads it like cryoscape's own data.

Standalone: run with the ASPIRE venv's python, never imports cryoscape.

    .venv-peers/aspire/bin/python benchmarks/peers/aspire_cwf_data.py OUT --snr 0.01 [--n 1000] [--box 64]

ASPIRE 0.14.3 ``Simulation(L=box, n, vols=None)`` (its default: C = 2 random asymmetric Gaussian-blob volumes,
Haar-random views, no shifts, unit amplitudes), ``unique_filters`` = 7 ``RadialCTFFilter`` (defocus 1.5–2.5 µm,
200 kV, Cs 2 mm, w = 0.1: the values of ASPIRE's CWF gallery example; pixel size 5 · 65 / box Å as there),
white noise by ``WhiteNoiseAdder.from_snr(snr)``. Files in OUT: ``noisy.mrcs`` (the noisy images times −1:
ASPIRE's CTF is −1 × RELION's, so −y = H_relion x), ``ctf.csv`` (dfU, dfV (Å), angle (deg), kV, Cs, w, apix: the
table benchmarks/peers/aspire_cwf.py reads) and ``clean_noctf.npy`` (``sim.projections``: the CTF-free clean
images, the target). The last line printed is one JSON object.
"""

import argparse
import json
import os
import tempfile

from _aspire import configure_aspire


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--snr", type=float, required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    configure_aspire(tempfile.mkdtemp(prefix="aspire_cfg_"))
    import mrcfile
    import numpy as np
    from aspire.noise import WhiteNoiseAdder
    from aspire.operators import RadialCTFFilter
    from aspire.source import Simulation

    apix = 5.0 * 65 / a.box
    defoci = np.linspace(1.5e4, 2.5e4, 7)
    filters = [RadialCTFFilter(defocus=d, voltage=200, Cs=2.0, alpha=0.1) for d in defoci]
    sim = Simulation(L=a.box, n=a.n, unique_filters=filters, seed=a.seed, pixel_size=apix,
                     noise_adder=WhiteNoiseAdder.from_snr(a.snr), dtype=np.float64)
    noisy = sim.images[:].asnumpy()
    clean = sim.projections[:].asnumpy()
    os.makedirs(a.out, exist_ok=True)
    with mrcfile.new(os.path.join(a.out, "noisy.mrcs"), overwrite=True) as m:
        m.set_data((-noisy).astype(np.float32))
        m.voxel_size = apix
    np.save(os.path.join(a.out, "clean_noctf.npy"), clean.astype(np.float32))
    df = defoci[np.asarray(sim.filter_indices)]
    table = np.stack([df, df, np.zeros(a.n), np.full(a.n, 200.0), np.full(a.n, 2.0), np.full(a.n, 0.1),
                      np.full(a.n, apix)], 1)
    np.savetxt(os.path.join(a.out, "ctf.csv"), table, delimiter=",")
    print(json.dumps({"n_images": a.n, "box_px": a.box, "apix_A": apix, "snr": a.snr, "n_ctf_groups": 7}))


if __name__ == "__main__":
    main()
