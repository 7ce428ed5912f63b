"""Bjøntegaard delta rate and delta quality between two rate-distortion curves.

Definition (evaluation spec, section 5): fit ``ln R`` as a function of the quality ``D`` for each curve,
integrate both fits over the overlapping quality interval, and turn the mean log-rate difference into a
percentage: ``BD-rate = (exp(mean(ln R_test - ln R_anchor)) - 1) * 100``. Negative means the test codec needs
fewer bits at equal quality. BD-quality swaps the axes (quality as a function of ``ln R``, mean difference
over the overlapping log-rate interval, in the quality's own unit).

Two named fitting variants, always reported next to the number:

* ``cubic`` (default, VCEG-M33): a least-squares cubic polynomial over all points as given (it interpolates
  when a curve has exactly 4 points), integrated exactly.
* ``pchip``: each curve is first reduced to its Pareto front (so that rate and quality both increase
  strictly), then a monotone piecewise cubic Hermite interpolant is integrated piecewise.

The fits and integrals come from the maintained ``bjontegaard`` package, which implements both variants
this way (it uses log10 instead of ln; a mean difference of logs converts exactly). This module adds what
the package leaves to its caller: sorting, the Pareto cleaning, the >= 4 point rule, a hard error on an empty
overlap, and a result that carries the variant, quality axis, overlap and point counts.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import bjontegaard
import numpy as np

from lcomp.errors import LcompError

VARIANTS = ("cubic", "pchip")
MIN_POINTS = 4
#: An overlap narrower than this fraction of either curve's range gets a warning.
MIN_OVERLAP_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class BDResult:
    """One Bjøntegaard delta with everything needed to reproduce or judge it."""

    value: float  # percent for BD-rate, the quality's unit (e.g. dB) for BD-quality
    kind: str  # "rate" or "quality"
    variant: str  # "cubic" or "pchip"
    quality_axis: str  # e.g. "psnr", "ms_ssim_db"
    overlap: tuple[float, float]  # integration interval: quality for BD-rate, bpp for BD-quality
    points: tuple[int, int]  # points used per curve (anchor, test), after Pareto cleaning for pchip
    warning: str | None = None

    def __str__(self) -> str:
        lo, hi = self.overlap
        if self.kind == "rate":
            head = f"BD-rate {self.value:+.2f} % on {self.quality_axis}"
            interval = f"overlap {self.quality_axis} [{lo:.4g}, {hi:.4g}]"
        else:
            head = f"BD-{self.quality_axis} {self.value:+.3f}"
            interval = f"overlap bpp [{lo:.4g}, {hi:.4g}]"
        text = f"{head} ({self.variant}; {interval}; points anchor {self.points[0]}, test {self.points[1]})"
        return f"{text} WARNING: {self.warning}" if self.warning else text


def pareto_front(rate, quality) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats (at least the same quality at no higher rate), sorted by rate.

    Duplicates keep one copy. On the result both rate and quality increase strictly.
    """
    rate, quality = _as_curve(rate, quality, "curve")
    order = np.lexsort((-quality, rate))  # by rate, best quality first among equal rates
    keep = []
    best = -np.inf
    for i in order:
        if quality[i] > best:
            keep.append(i)
            best = quality[i]
    return rate[keep], quality[keep]


def _as_curve(rate, quality, role: str) -> tuple[np.ndarray, np.ndarray]:
    rate = np.asarray(rate, dtype=np.float64).ravel()
    quality = np.asarray(quality, dtype=np.float64).ravel()
    if rate.shape != quality.shape:
        raise LcompError(f"{role} curve: {rate.size} rates but {quality.size} quality values")
    if not (np.all(np.isfinite(rate)) and np.all(np.isfinite(quality))):
        raise LcompError(f"{role} curve contains non-finite values (infinite PSNR of a lossless point?)")
    if np.any(rate <= 0):
        raise LcompError(f"{role} curve: rates must be positive to take logarithms")
    return rate, quality


def _prepared(rate, quality, variant: str, role: str, sort_by: str) -> tuple[np.ndarray, np.ndarray]:
    if variant not in VARIANTS:
        raise LcompError(f"unknown BD variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    rate, quality = _as_curve(rate, quality, role)
    if variant == "pchip":
        rate, quality = pareto_front(rate, quality)
    if rate.size < MIN_POINTS:
        cleaned = " after Pareto cleaning" if variant == "pchip" else ""
        raise LcompError(f"{role} curve has {rate.size} points{cleaned}; a BD fit needs at least {MIN_POINTS}")
    # The package expects its x values in increasing order (it only flips reversed input).
    order = np.lexsort((rate, quality)) if sort_by == "quality" else np.lexsort((quality, rate))
    return rate[order], quality[order]


def _overlap(a: np.ndarray, b: np.ndarray, axis: str) -> tuple[tuple[float, float], str | None]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise LcompError(
            f"the curves do not overlap on {axis}: anchor [{a.min():.4g}, {a.max():.4g}], "
            f"test [{b.min():.4g}, {b.max():.4g}]"
        )
    short = [
        role
        for role, v in (("anchor", a), ("test", b))
        if hi - lo < MIN_OVERLAP_FRACTION * (v.max() - v.min())
    ]
    warning = None
    if short:
        warning = (
            f"the overlap [{lo:.4g}, {hi:.4g}] covers less than {MIN_OVERLAP_FRACTION:.0%} of the "
            f"{' and '.join(short)} curve's {axis} range"
        )
    return (float(lo), float(hi)), warning


def _call_package(fn, *args, variant: str) -> float:
    with warnings.catch_warnings():
        # The package warns about overlap by its own rule; this module reports overlap itself.
        warnings.simplefilter("ignore")
        try:
            value = fn(*args, method=variant, require_matching_points=False, min_overlap=0)
        except (ValueError, AssertionError, np.linalg.LinAlgError) as exc:
            raise LcompError(f"BD fit ({variant}) failed: {exc}") from exc
    if not math.isfinite(value):
        raise LcompError(f"BD fit ({variant}) gave a non-finite value")
    return float(value)


def bd_rate(
    anchor_rate,
    anchor_quality,
    test_rate,
    test_quality,
    *,
    variant: str = "cubic",
    quality_axis: str = "quality",
) -> BDResult:
    """BD-rate in percent of the test curve against the anchor (negative = test needs fewer bits)."""
    ra, qa = _prepared(anchor_rate, anchor_quality, variant, "anchor", sort_by="quality")
    rt, qt = _prepared(test_rate, test_quality, variant, "test", sort_by="quality")
    overlap, warning = _overlap(qa, qt, quality_axis)
    value = _call_package(bjontegaard.bd_rate, ra, qa, rt, qt, variant=variant)
    return BDResult(value, "rate", variant, quality_axis, overlap, (ra.size, rt.size), warning)


def bd_quality(
    anchor_rate,
    anchor_quality,
    test_rate,
    test_quality,
    *,
    variant: str = "cubic",
    quality_axis: str = "quality",
) -> BDResult:
    """BD-quality (e.g. BD-PSNR in dB): mean quality gain of the test curve over the common log-rate range."""
    ra, qa = _prepared(anchor_rate, anchor_quality, variant, "anchor", sort_by="rate")
    rt, qt = _prepared(test_rate, test_quality, variant, "test", sort_by="rate")
    (lo, hi), warning = _overlap(np.log(ra), np.log(rt), "log-rate")
    value = _call_package(bjontegaard.bd_psnr, ra, qa, rt, qt, variant=variant)
    return BDResult(value, "quality", variant, quality_axis, (math.exp(lo), math.exp(hi)), (ra.size, rt.size), warning)


def point_rate_difference(
    anchor_rate,
    anchor_quality,
    test_rate,
    test_quality,
    *,
    variant: str = "cubic",
    quality_axis: str = "quality",
) -> tuple[BDResult, BDResult]:
    """Rate and quality difference of a test curve too short for a BD fit (1 to 3 points, e.g. one trained
    model) against a full anchor curve: (rate result in percent, quality result in the quality's unit).

    The anchor is fitted as for BD-rate (``cubic``: ln R as a cubic in quality; ``pchip``: monotone
    interpolation of its Pareto front) and evaluated at the test points' qualities; the rate difference is
    ``exp(mean(ln R_test - ln R_anchor(D_test))) - 1``, which is what BD-rate tends to when the overlap
    shrinks to the test points. The quality difference is the same at the test points' rates. No
    extrapolation: the rate difference needs the test qualities inside the anchor's quality range, the quality
    difference the test rates inside its rate range; the one that cannot be computed is None (a model below the
    lowest rate the anchor reaches still gets its rate difference), and both out of range is an error."""
    ra, qa = _prepared(anchor_rate, anchor_quality, variant, "anchor", sort_by="quality")
    rt, qt = _as_curve(test_rate, test_quality, "test")
    if rt.size == 0:
        raise LcompError("test curve has no points")
    outside = {}
    for name, values, lo, hi in (("quality", qt, qa.min(), qa.max()), ("rate", rt, ra.min(), ra.max())):
        if values.min() < lo or values.max() > hi:
            outside[name] = (
                f"test point(s) outside the anchor's {name} range [{lo:.4g}, {hi:.4g}]: {np.round(values, 4).tolist()}"
            )
    if len(outside) == 2:
        raise LcompError("; ".join(outside.values()))
    rate_ok = "quality" not in outside  # the rate difference is read at the test qualities
    quality_ok = "rate" not in outside  # the quality difference at the test rates
    if variant == "cubic":
        log_rate_at = np.poly1d(np.polyfit(qa, np.log(ra), 3))
        quality_at = np.poly1d(np.polyfit(np.log(ra), qa, 3))
    else:
        from scipy.interpolate import PchipInterpolator

        log_rate_at = PchipInterpolator(qa, np.log(ra))
        order = np.argsort(ra)
        quality_at = PchipInterpolator(np.log(ra[order]), qa[order])
    note = (
        f"test has {rt.size} point(s): rate difference at equal quality against the anchor's {variant} fit, "
        "not a BD integral"
    )
    for name, reason in outside.items():
        note += f"; {'quality' if name == 'rate' else 'rate'} difference not computed: {reason}"
    points = (ra.size, rt.size)
    rate_result = quality_result = None
    if rate_ok:
        rate_value = (math.exp(float(np.mean(np.log(rt) - log_rate_at(qt)))) - 1.0) * 100.0
        rate_result = BDResult(rate_value, "rate", variant, quality_axis, (float(qt.min()), float(qt.max())),
                               points, note)
    if quality_ok:
        quality_value = float(np.mean(qt - quality_at(np.log(rt))))
        quality_result = BDResult(quality_value, "quality", variant, quality_axis, (float(rt.min()), float(rt.max())),
                                  points, note)
    return rate_result, quality_result


# --- tables --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BDRow:
    """One line of a BD table: a test curve against the anchor with one variant."""

    test: str
    anchor: str
    quality_axis: str
    variant: str
    bd_rate: float | None  # percent; None when it could not be computed (see `note`)
    bd_quality: float | None
    overlap_lo: float | None  # quality interval of the BD-rate integral
    overlap_hi: float | None
    points_anchor: int | None
    points_test: int | None
    note: str = ""


BD_COLUMNS = tuple(f.name for f in dataclasses.fields(BDRow))


def bd_table(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    anchor: str,
    *,
    variants: Sequence[str] = VARIANTS,
    quality_axis: str = "quality",
) -> list[BDRow]:
    """BD-rate and BD-quality of every curve against ``curves[anchor]``, one row per (curve, variant).

    ``curves`` maps a name to ``(rate, quality)``. A test curve of 1 to 3 points (one trained model) gets
    `point_rate_difference` instead, said in its note. A pair that cannot be computed (no overlap, a point
    outside the anchor's range) gets a row with empty values and the reason in ``note`` instead of stopping
    the table.
    """
    if anchor not in curves:
        raise LcompError(f"anchor {anchor!r} is not among the curves: {', '.join(curves)}")
    rate_a, quality_a = curves[anchor]
    rows = []
    for name, (rate_t, quality_t) in curves.items():
        if name == anchor:
            continue
        for variant in variants:
            args = (rate_a, quality_a, rate_t, quality_t)
            try:
                if 0 < np.size(rate_t) < MIN_POINTS:
                    rate_result, quality_result = point_rate_difference(*args, variant=variant,
                                                                        quality_axis=quality_axis)
                else:
                    rate_result = bd_rate(*args, variant=variant, quality_axis=quality_axis)
                    quality_result = bd_quality(*args, variant=variant, quality_axis=quality_axis)
            except LcompError as exc:
                rows.append(BDRow(name, anchor, quality_axis, variant, None, None, None, None, None, None, str(exc)))
                continue
            first = rate_result or quality_result
            rows.append(
                BDRow(
                    name,
                    anchor,
                    quality_axis,
                    variant,
                    rate_result.value if rate_result else None,
                    quality_result.value if quality_result else None,
                    *(rate_result.overlap if rate_result else (None, None)),
                    *first.points,
                    first.warning or "",
                )
            )
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_bd_csv(rows: Sequence[BDRow], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(BD_COLUMNS)
        for row in rows:
            writer.writerow(_cell(getattr(row, c)) for c in BD_COLUMNS)
    return path


def format_bd_markdown(rows: Sequence[BDRow]) -> str:
    """A Markdown table; the variant, axis, overlap and point counts stay next to every number."""
    lines = [
        "| Test | Anchor | Quality axis | Variant | BD-rate | BD-quality | Overlap (quality) | Points (anchor/test) | Note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.bd_rate is None and r.bd_quality is None:
            numbers = "| – | – | – | – "
        else:
            rate = "–" if r.bd_rate is None else f"{r.bd_rate:+.2f} %"
            quality = "–" if r.bd_quality is None else f"{r.bd_quality:+.3f}"
            overlap = "–" if r.overlap_lo is None else f"[{r.overlap_lo:.4g}, {r.overlap_hi:.4g}]"
            numbers = f"| {rate} | {quality} | {overlap} | {r.points_anchor}/{r.points_test} "
        lines.append(f"| {r.test} | {r.anchor} | {r.quality_axis} | {r.variant} {numbers}| {r.note} |")
    return "\n".join(lines) + "\n"


def write_bd_markdown(rows: Sequence[BDRow], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(format_bd_markdown(rows))
    return path
