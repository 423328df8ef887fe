"""A small line-plot renderer (Pillow) for the plots of quick commands.

matplotlib costs ~0.4 s to import and ~0.1 s to lay out one figure; for ``cryoscape backproject`` on a
small job that is a tenth of the whole run. This module draws the same kind of figure (axes with ticks
and labels, an optional secondary top axis, dashed reference lines, curves, a legend) directly with
Pillow, which imports in ~0.05 s. It uses matplotlib's own DejaVu Sans font file when it is installed
(located without importing matplotlib) and Pillow's built-in font otherwise.

The figure is drawn at ``SUPERSAMPLE`` times the size and reduced with a Lanczos filter, which
anti-aliases lines and text.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Axis", "Curve", "line_plot_png", "nice_ticks", "COLORS"]

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")  # matplotlib's first six
SUPERSAMPLE = 2


@dataclass
class Axis:
    """One axis: its label, data range ``(lo, hi)`` and tick positions with their labels."""

    label: str
    lo: float
    hi: float
    ticks: list = field(default_factory=list)
    tick_labels: list = field(default_factory=list)


@dataclass
class Curve:
    x: np.ndarray
    y: np.ndarray
    label: str = ""
    color: str | None = None


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick positions (steps 1, 2 or 5 × 10ᵏ) covering ``[lo, hi]``, about ``target`` of them."""
    span = hi - lo
    if not span > 0:
        return [lo]
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _font(size: int):
    from PIL import ImageFont
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        ttf = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if ttf.exists():
            return ImageFont.truetype(str(ttf), size)
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _dashed_hline(draw, x0: float, x1: float, y: float, color, width: int, dash: int) -> None:
    x = x0
    while x < x1:
        draw.line([(x, y), (min(x + dash, x1), y)], fill=color, width=width)
        x += 2 * dash


def line_plot_png(path: str | Path, curves: list[Curve], xaxis: Axis, yaxis: Axis, top: Axis | None = None,
                  hlines: tuple = (), size: tuple[int, int] = (600, 400)) -> Path:
    """Draw ``curves`` on axes ``xaxis`` (bottom), ``yaxis`` (left) and optionally ``top`` (a secondary
    x axis sharing the bottom's data coordinates), dashed grey lines at the ``hlines`` y values, a legend of
    the labelled curves in the upper right; write a PNG of ``size`` pixels (width, height)."""
    from PIL import Image, ImageDraw

    s = SUPERSAMPLE
    W, H = size[0] * s, size[1] * s
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    f_tick, f_label, f_legend = _font(10 * s), _font(12 * s), _font(10 * s)
    left, right = 62 * s, W - 18 * s
    top_px, bottom = (58 if top is not None else 18) * s, H - 48 * s

    def X(v):
        return left + (np.asarray(v, dtype=float) - xaxis.lo) / (xaxis.hi - xaxis.lo) * (right - left)

    def Y(v):
        return bottom - (np.asarray(v, dtype=float) - yaxis.lo) / (yaxis.hi - yaxis.lo) * (bottom - top_px)

    tick = 4 * s
    for v in hlines:
        _dashed_hline(draw, left, right, float(Y(v)), "#808080", max(1, s), 4 * s)
    for v, lab in zip(xaxis.ticks, xaxis.tick_labels):
        x = float(X(v))
        draw.line([(x, bottom), (x, bottom + tick)], fill="black", width=s)
        draw.text((x, bottom + tick + 2 * s), lab, fill="black", font=f_tick, anchor="ma")
    draw.text(((left + right) / 2, H - 6 * s), xaxis.label, fill="black", font=f_label, anchor="md")
    for v, lab in zip(yaxis.ticks, yaxis.tick_labels):
        y = float(Y(v))
        draw.line([(left - tick, y), (left, y)], fill="black", width=s)
        draw.text((left - tick - 3 * s, y), lab, fill="black", font=f_tick, anchor="rm")
    label = Image.new("RGB", (int(draw.textlength(yaxis.label, font=f_label)) + 4 * s, 16 * s), "white")
    ImageDraw.Draw(label).text((2 * s, 0), yaxis.label, fill="black", font=f_label)
    label = label.rotate(90, expand=True)
    img.paste(label, (4 * s, int((top_px + bottom) / 2 - label.size[1] / 2)))
    if top is not None:
        for v, lab in zip(top.ticks, top.tick_labels):
            x = float(X(v))
            draw.line([(x, top_px - tick), (x, top_px)], fill="black", width=s)
            draw.text((x, top_px - tick - 2 * s), lab, fill="black", font=f_tick, anchor="md")
        draw.text(((left + right) / 2, top_px - tick - 18 * s), top.label, fill="black", font=f_label, anchor="md")
    for i, c in enumerate(curves):  # y clipped to the axis range, so a curve never leaves the box
        color = c.color or COLORS[i % len(COLORS)]
        pts = list(zip(X(c.x).tolist(), Y(np.clip(c.y, yaxis.lo, yaxis.hi)).tolist()))
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2 * s, joint="curve")
    draw.rectangle([left, top_px, right, bottom], outline="black", width=s)
    labelled = [(i, c) for i, c in enumerate(curves) if c.label]
    if labelled:
        row = 16 * s
        width = max(draw.textlength(c.label, font=f_legend) for _, c in labelled) + 40 * s
        x0, y0 = right - width - 8 * s, top_px + 8 * s
        draw.rectangle([x0, y0, right - 8 * s, y0 + row * len(labelled) + 6 * s], fill="white",
                       outline="#cccccc", width=s)
        for k, (i, c) in enumerate(labelled):
            y = y0 + 3 * s + row * k + row / 2
            draw.line([(x0 + 6 * s, y), (x0 + 28 * s, y)], fill=c.color or COLORS[i % len(COLORS)], width=2 * s)
            draw.text((x0 + 34 * s, y), c.label, fill="black", font=f_legend, anchor="lm")
    img = img.resize(size, Image.LANCZOS)
    img.save(path, format="PNG")
    return Path(path)
