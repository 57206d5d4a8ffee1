"""Bjøntegaard delta rate and delta PSNR (VCEG-M33) between two rate–distortion curves.

Method (G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves", VCEG-M33, 2001):
each curve is fitted with a cubic polynomial, log10(rate) as a function of PSNR for BD-rate and PSNR as a
function of log10(rate) for BD-PSNR; the difference of the two fits is averaged over the interval where
both curves have points (their overlap). The fit and the integral are the ``bjontegaard`` package's
``method="cubic"`` (a least-squares cubic, ``numpy.polyfit``), which is VCEG-M33's.

VCEG-M33 fits four points per curve. Our curves have 5 to 11, spanning more than the overlap, and one
cubic over a wide range fits the overlap poorly, so each curve is fitted with its points inside the overlap
plus its nearest point on either side (extended to the nearest four points where fewer remain). Which
points were used is part of the result (``BD.points``). Nothing is extrapolated: curves whose intervals do
not intersect give ``note="no overlap"`` and no number.

Signs: BD-rate is the test's average rate change at equal PSNR (%; negative = the test needs fewer bits);
BD-PSNR is the test's average PSNR change at equal rate (dB; positive = the test is better).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from bjontegaard import bd_psnr, bd_rate

MIN_POINTS = 4  # a cubic needs four


@dataclass(frozen=True)
class Curve:
    """One method's operating points: rate (bits per pixel, > 0), PSNR (dB) and the setting of each point."""

    rate: tuple[float, ...]
    psnr: tuple[float, ...]
    setting: tuple = ()  # e.g. the quality of each point; defaults to the point's index

    def __post_init__(self) -> None:
        if len(self.rate) != len(self.psnr):
            raise ValueError(f"{len(self.rate)} rates but {len(self.psnr)} PSNR values")
        if not self.setting:
            object.__setattr__(self, "setting", tuple(range(len(self.rate))))
        if len(self.setting) != len(self.rate):
            raise ValueError("one setting per point")


@dataclass
class BD:
    """A Bjøntegaard delta of ``test`` against ``anchor`` in one domain (None where it cannot be computed)."""

    value: float | None  # BD-rate in %, or BD-PSNR in dB
    overlap: tuple[float, float] | None  # the integration interval: PSNR (dB) for BD-rate, rate (bpp) for BD-PSNR
    points: dict[str, list] = field(default_factory=dict)  # {"anchor": settings used, "test": settings used}
    note: str = ""  # "no overlap", "too few points: ..." or "" when a value was computed


def _usable(c: Curve) -> tuple[np.ndarray, np.ndarray, list]:
    keep = [i for i in range(len(c.rate)) if c.rate[i] > 0 and math.isfinite(c.rate[i]) and math.isfinite(c.psnr[i])]
    return np.array([c.rate[i] for i in keep], float), np.array([c.psnr[i] for i in keep], float), [c.setting[i] for i in keep]


def select(domain: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Indices of the points a curve is fitted with over [lo, hi]: those inside, the nearest one beyond
    each end, then the nearest others until there are ``MIN_POINTS`` (or all there are)."""
    order = np.argsort(domain, kind="stable")
    d = domain[order]
    inside = np.flatnonzero((d >= lo) & (d <= hi))
    first = int(inside[0]) if inside.size else int(np.searchsorted(d, lo))
    last = int(inside[-1]) if inside.size else first - 1
    first, last = max(first - 1, 0), min(last + 1, len(d) - 1)
    while last - first + 1 < min(MIN_POINTS, len(d)):
        below = d[first - 1] if first > 0 else None
        above = d[last + 1] if last + 1 < len(d) else None
        centre = (lo + hi) / 2
        if above is None or (below is not None and centre - below <= above - centre):
            first -= 1
        else:
            last += 1
    return order[first : last + 1]


def _delta(anchor: Curve, test: Curve, kind: str) -> BD:
    (ra, pa, sa), (rt, pt, st) = _usable(anchor), _usable(test)
    if len(ra) < MIN_POINTS or len(rt) < MIN_POINTS:
        return BD(None, None, note=f"too few points for a cubic fit (anchor {len(ra)}, test {len(rt)}; need {MIN_POINTS})")
    # BD-rate integrates over PSNR, BD-PSNR over log10(rate).
    da, dt = (pa, pt) if kind == "rate" else (np.log10(ra), np.log10(rt))
    lo, hi = max(da.min(), dt.min()), min(da.max(), dt.max())
    shown = (float(lo), float(hi)) if kind == "rate" else (float(10**lo), float(10**hi))
    if not hi > lo:
        return BD(None, None, note="no overlap")
    ia, it = select(da, lo, hi), select(dt, lo, hi)
    fn = bd_rate if kind == "rate" else bd_psnr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # polyfit's RankWarning on near-duplicate points; overlap is ours
        value = fn(ra[np.sort(ia)], pa[np.sort(ia)], rt[np.sort(it)], pt[np.sort(it)], method="cubic",
                   require_matching_points=False, min_overlap=0)
    return BD(float(value), shown, {"anchor": [sa[i] for i in sorted(ia)], "test": [st[i] for i in sorted(it)]})


def bd_rate_pct(anchor: Curve, test: Curve) -> BD:
    """BD-rate (%) of ``test`` against ``anchor``: average rate change at equal PSNR over the PSNR overlap."""
    return _delta(anchor, test, "rate")


def bd_psnr_db(anchor: Curve, test: Curve) -> BD:
    """BD-PSNR (dB) of ``test`` against ``anchor``: average PSNR change at equal rate over the rate overlap."""
    return _delta(anchor, test, "psnr")


def _local_fit(x: np.ndarray, y: np.ndarray, at: float) -> float | None:
    """y at ``at`` from a cubic through the (up to) four points of x nearest to it; None outside x's range."""
    if not (x.min() <= at <= x.max()) or len(x) < 2:
        return None
    idx = select(x, at, at)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coef = np.polyfit(x[idx], y[idx], min(3, len(idx) - 1))
    return float(np.polyval(coef, at))


def rate_at_psnr(c: Curve, psnr: float) -> float | None:
    """The rate ``c`` needs for ``psnr`` (cubic in log10 rate through the nearest points); None outside its range."""
    r, p, _ = _usable(c)
    log_r = _local_fit(p, np.log10(r), psnr) if len(r) else None
    return None if log_r is None else float(10**log_r)


def psnr_at_rate(c: Curve, rate: float) -> float | None:
    """The PSNR ``c`` reaches at ``rate`` (cubic in log10 rate through the nearest points); None outside its range."""
    r, p, _ = _usable(c)
    return _local_fit(np.log10(r), p, math.log10(rate)) if len(r) and rate > 0 else None


def wins(anchor: Curve, test: Curve, samples: int = 200) -> list[tuple[float, float]]:
    """Rate intervals (bpp) inside the overlap where ``test`` reaches a higher PSNR than ``anchor`` at equal
    rate, by the same local fits as ``psnr_at_rate``; [] where it never does or the curves do not overlap."""
    (ra, _, _), (rt, _, _) = _usable(anchor), _usable(test)
    if len(ra) < 2 or len(rt) < 2:
        return []
    lo, hi = max(ra.min(), rt.min()), min(ra.max(), rt.max())
    if not hi > lo:
        return []
    grid = np.geomspace(lo, hi, samples)
    better = [(psnr_at_rate(test, x) or -math.inf) > (psnr_at_rate(anchor, x) or math.inf) for x in grid]
    out, start = [], None
    for x, b in zip(grid, better):
        if b and start is None:
            start = x
        if not b and start is not None:
            out.append((float(start), float(prev)))
            start = None
        prev = x
    if start is not None:
        out.append((float(start), float(grid[-1])))
    return out
