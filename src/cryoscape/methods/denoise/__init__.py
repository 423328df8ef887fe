"""Denoising of particle stacks and micrographs: one registry of methods with one calling convention.

Every method is ``fn(images, ctf=None, apix=1.0, cfg=None, progress=None) -> torch.Tensor``: ``images``
``(N, H, W)`` float32 (a stack or N micrographs), ``ctf`` a :class:`~cryoscape.physics.ctf.CTFParams` of N
entries or None, ``cfg`` the method's config dataclass (None: its defaults, the best measured settings).
It returns a new float32 ``(N, H, W)`` tensor on the CPU and never changes its input.

``removes_ctf`` says which clean image a method estimates: True — the CTF-free projection (the CTF-Wiener
filter and CWF divide the CTF out); False — the CTF-affected clean image (every other method only removes
noise). Metrics compare each method with its own target.

The methods are imported when first used (:func:`get`), so a user of one does not pay for the others.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ...io.errors import InputError

__all__ = ["Method", "METHODS", "get", "method_names"]


@dataclass(frozen=True)
class Method:
    """A registry entry: the function ``module.function``, its config class ``module.config`` (built with
    ``config_kwargs``), whether its output is the CTF-free image (``removes_ctf``), whether it needs a
    stack of square images of one size (``stack_only``: CWF), and one line for ``--help``."""

    name: str
    module: str
    function: str
    config: str
    removes_ctf: bool
    stack_only: bool
    summary: str
    config_kwargs: tuple = ()

    def load(self):
        """``(function, config class)``, imported now."""
        mod = importlib.import_module(f"{__name__}.{self.module}")
        return getattr(mod, self.function), getattr(mod, self.config)

    def make_config(self, **overrides):
        """The config with this entry's fixed settings and ``overrides`` (``None`` values are ignored)."""
        _, config_cls = self.load()
        kwargs = dict(self.config_kwargs)
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        cfg = config_cls(**kwargs)
        cfg.check()
        return cfg

    def __call__(self, images, ctf=None, apix: float = 1.0, cfg=None, progress=None, **kwargs):
        fn, _ = self.load()
        return fn(images, ctf, apix, cfg if cfg is not None else self.make_config(), progress, **kwargs)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("wiener", "wiener", "denoise_wiener", "WienerConfig", True, False,
           "CTF-Wiener filter per image, spectral SNR estimated from the data"),
    Method("cwf", "cwf", "denoise_cwf", "CWFConfig", True, True,
           "covariance Wiener filter in the steerable Fourier-Bessel basis (Bhamre et al. 2016)"),
    Method("ddtf", "dictionary", "denoise_ddtf", "DDTFConfig", False, False,
           "data-driven tight frame learned from patches (seed 004; Cai et al. 2014)"),
    Method("ksvd", "dictionary", "denoise_ksvd", "KSVDConfig", False, False,
           "sparse patch dictionary (scikit-learn dictionary learning + OMP)"),
    Method("tv", "classical", "denoise_classical", "ClassicalConfig", False, False,
           "total variation (Chambolle; scikit-image)", (("method", "tv"),)),
    Method("bilateral", "classical", "denoise_classical", "ClassicalConfig", False, False,
           "bilateral filter (scikit-image)", (("method", "bilateral"),)),
    Method("wavelet", "classical", "denoise_classical", "ClassicalConfig", False, False,
           "wavelet shrinkage, BayesShrink (scikit-image)", (("method", "wavelet"),)),
    Method("nlmeans", "classical", "denoise_classical", "ClassicalConfig", False, False,
           "non-local means (scikit-image)", (("method", "nlmeans"),)),
    Method("unet", "learned", "denoise_unet", "UNetConfig", False, False,
           "small U-Net trained on the data itself: noise2noise on frame pairs, Neighbor2Neighbor otherwise"),
)}


def method_names() -> list[str]:
    """The registered names, in table order."""
    return list(METHODS)


def get(name: str) -> Method:
    """The registry entry of ``name``; :class:`InputError` naming the known methods otherwise."""
    if name not in METHODS:
        raise InputError("--method", f"unknown denoising method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
