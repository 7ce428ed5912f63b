"""RD plots and BD-rate tables from evaluation folders and published curves.

A *source* is either an evaluation folder written by ``lcomp eval`` / ``evaluate_codec`` or a published curve
(``ref:<name>``, or just ``<name>`` when no folder of that name exists; see ``lcomp.reference``). Every curve
label states the codec (with chroma format and versions, as the codec labels do), the rate kind (real,
estimated, raw or published), the aggregation rule, the data set and RGB/Y, so curves that are not comparable
cannot pass as comparable.

Commands (wired into ``lcomp.cli``): ``lcomp plot`` (``add_plot_arguments`` / ``run_plot``) writes PNGs;
``lcomp bdrate`` (``add_bdrate_arguments`` / ``run_bdrate``) writes a BD table as CSV and Markdown. From
Python: ``load_source`` -> ``plot_rd`` / ``bd_rows`` (which notes curves that are not directly comparable).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lcomp.bdrate import VARIANTS, BDRow, bd_table, format_bd_markdown, write_bd_csv, write_bd_markdown
from lcomp.errors import LcompError
from lcomp.reference import COLOURS, DATASETS, list_curves, load_curve

PLOT_METRICS = ("psnr", "ms_ssim_db")

_SOURCES_HELP = """\
A SOURCE is an evaluation folder written by `lcomp eval`, or a published curve: ref:NAME or just NAME
(e.g. jpeg420, bpg444, johnston-2017-cvpr, mentzer-2018-cvpr; see lcomp/reference_data/)."""

PLOT_DESCRIPTION = f"""\
Draws rate-distortion curves (bpp on x; PSNR and/or MS-SSIM in dB on y) as PNG. Our curves are solid
with markers, published ones dashed; every label states codec, rate kind, aggregation rule, data set and
RGB/Y.

{_SOURCES_HELP}

With one --metric the plot goes to --out; otherwise one PNG per metric, named OUT_<metric>.png.

example:
  lcomp plot runs/jpeg420 runs/webp bpg444 johnston-2017-cvpr --out runs/rd.png
"""

BDRATE_DESCRIPTION = f"""\
Bjontegaard delta rate (percent; negative = fewer bits than the anchor at equal quality) and delta
quality of every SOURCE against --anchor, with the fitting variant, the overlap of the quality ranges and
the point counts next to each number. Prints a Markdown table; --out STEM also writes STEM.csv and STEM.md.

{_SOURCES_HELP}

example:
  lcomp bdrate runs/jpeg420 --anchor jpeg420 --metric psnr        # ours vs the published JPEG curve
"""
_AXIS_LABEL = {"psnr": "PSNR (dB)", "ms_ssim_db": "MS-SSIM (dB) = -10 log10(1 - MS-SSIM)", "ms_ssim": "MS-SSIM"}


@dataclasses.dataclass(frozen=True)
class LabelledCurve:
    """Points of one RD curve plus what a reader must know to compare it."""

    name: str  # short name for tables, e.g. "jpeg420" or "ref:bpg444"
    label: str  # full legend text
    bpp: np.ndarray
    quality: np.ndarray
    aggregation: str  # "A" or "B"
    published: bool
    rate_kind: str  # "real", "estimated", "raw" or "published"


def _is_eval_folder(path: Path) -> bool:
    return (path / "meta.json").is_file()


def load_source(
    source: str,
    metric: str,
    *,
    dataset: str = "kodak",
    colour: str = "rgb",
    rule: str = "A",
    rate: str = "real",
) -> LabelledCurve:
    """Resolves one source string to a labelled curve on ``metric`` ("psnr", "ms_ssim" or "ms_ssim_db")."""
    path = Path(source)
    if not source.startswith("ref:") and _is_eval_folder(path):
        from lcomp.evaluate import load_results  # jax-heavy; only needed for our own folders

        results = load_results(path)
        column = metric
        if colour == "y":
            if metric != "psnr":
                raise LcompError(f"{source}: lcomp evaluations measure {metric} on RGB only; use --colour rgb")
            column = "psnr_y"
        try:
            bpp, quality = results.curve(column, rule=rule, rate=rate)
        except LcompError as exc:
            raise LcompError(f"{source}: {exc}") from exc
        meta = results.meta
        label = (
            f"{meta['label']} [{rate} bpp, rule {rule}, {meta['dataset']} ({meta['n_images']} images), "
            f"{colour.upper()}] (lcomp)"
        )
        return LabelledCurve(meta["codec"], label, bpp, quality, rule, False, rate)
    name = source[len("ref:") :] if source.startswith("ref:") else source
    if not source.startswith("ref:") and name not in list_curves(dataset, metric, colour):
        raise LcompError(
            f"{source!r} is neither an evaluation folder (no meta.json) nor a published curve for "
            f"{dataset}/{metric}/{colour}; published: {', '.join(list_curves(dataset, metric, colour))}"
        )
    curve = load_curve(name, dataset=dataset, metric=metric, colour=colour)
    return LabelledCurve(
        f"ref:{name}", curve.describe(), curve.bpp, curve.quality, curve.aggregation, True,
        "raw" if curve.rate_kind == "raw" else "published",
    )  # fmt: skip


def plot_rd(
    curves: Sequence[LabelledCurve],
    metric: str,
    out_path: str | Path,
    *,
    title: str | None = None,
    max_bpp: float | None = None,
) -> Path:
    """Writes an RD plot (bpp on x, ``metric`` on y) as PNG. Our curves are solid with markers, published dashed."""
    if not curves:
        raise LcompError("nothing to plot")
    figure = Figure(figsize=(9, 6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for curve in curves:
        order = np.argsort(curve.bpp, kind="stable")
        style = dict(linestyle="--", linewidth=1.2) if curve.published else dict(marker="o", markersize=3.5)
        if curve.rate_kind == "estimated":
            style = dict(linestyle=":", marker="x", markersize=3.5)
        axes.plot(curve.bpp[order], curve.quality[order], label=curve.label, **style)
    if max_bpp is None:
        ours = [c.bpp.max() for c in curves if not c.published]
        max_bpp = 1.1 * max(ours) if ours else 2.0
    axes.set_xlim(0, max_bpp)
    visible = np.concatenate([c.quality[c.bpp <= max_bpp] for c in curves])
    if visible.size:
        pad = 0.03 * (visible.max() - visible.min() + 1e-9)
        axes.set_ylim(visible.min() - pad, visible.max() + pad)
    axes.set_xlabel("bits per pixel")
    axes.set_ylabel(_AXIS_LABEL[metric])
    axes.grid(True, alpha=0.3)
    if title:
        axes.set_title(title)
    # Labels are long on purpose (they say what each curve is), so the legend goes below the axes.
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.1), frameon=False)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=150, bbox_inches="tight")
    return out_path


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources", nargs="+", metavar="SOURCE",
        help="evaluation folders and/or published curves ('ref:NAME' or NAME, e.g. bpg444)",
    )
    parser.add_argument("--dataset", default="kodak", choices=DATASETS, help="data set of the published curves")
    parser.add_argument("--colour", default="rgb", choices=COLOURS, help="metric on RGB or on luma (Y)")
    parser.add_argument("--rule", default="A", choices=("A", "B"), help="aggregation rule of evaluation folders")
    parser.add_argument(
        "--label", action="append", metavar="NAME",
        help="a short name for each SOURCE, in order (tables, legends); names two evaluations of one codec apart",
    )  # fmt: skip


def _source_names(args: argparse.Namespace) -> list[str | None]:
    """The `--label` of each SOURCE (None: the source's own name); one per SOURCE or none at all."""
    if not args.label:
        return [None] * len(args.sources)
    if len(args.label) != len(args.sources):
        raise LcompError(
            f"--label given {len(args.label)} times for {len(args.sources)} sources: give one per SOURCE, in order"
        )
    return list(args.label)


def renamed(curve: LabelledCurve, name: str | None) -> LabelledCurve:
    """``curve`` under the short name ``name`` (legends start with it); unchanged for None."""
    if name is None:
        return curve
    return dataclasses.replace(curve, name=name, label=f"{name}: {curve.label}")


def add_plot_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    _add_source_options(parser)
    parser.add_argument(
        "--metric", action="append", choices=PLOT_METRICS, help="y axis; repeat for several (default: both)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE.png", help="PNG path; with several metrics, _<metric> is appended"
    )
    parser.add_argument("--estimated", action="store_true", help="also draw estimated-bpp curves of learned codecs")
    parser.add_argument("--max-bpp", type=float, metavar="BPP", help="x-axis limit (default: 1.1 x our largest rate, else 2)")
    parser.add_argument("--title")
    return parser


def run_plot(args: argparse.Namespace) -> int:
    metrics = args.metric or list(PLOT_METRICS)
    # Every source is loaded for every metric before the first file is written: an error leaves no partial output.
    curves_by_metric = {}
    for metric in metrics:
        curves = []
        for source, name in zip(args.sources, _source_names(args)):
            curve = load_source(source, metric, dataset=args.dataset, colour=args.colour, rule=args.rule)
            curves.append(renamed(curve, name))
            if args.estimated and not curve.published:
                try:
                    estimated = load_source(source, metric, colour=args.colour, rule="A", rate="estimated")
                    curves.append(renamed(estimated, name))
                except LcompError:
                    pass  # classical codecs have no estimate
        curves_by_metric[metric] = curves
    for metric, curves in curves_by_metric.items():
        out = args.out if len(metrics) == 1 else args.out.with_name(f"{args.out.stem}_{metric}.png")
        plot_rd(curves, metric, out, title=args.title, max_bpp=args.max_bpp)
        print(f"wrote {out}")
    return 0


def _comparability_note(test: LabelledCurve, anchor: LabelledCurve) -> str:
    """What makes two curves not directly comparable (spec sections 3 and 4), or ""."""
    notes = []
    if test.aggregation != anchor.aggregation:
        notes.append(f"aggregation differs: test rule {test.aggregation}, anchor rule {anchor.aggregation}")
    # Real file sizes and published rates are both entropy-coded files; raw and estimated rates are not.
    coded = ("real", "published")
    if test.rate_kind != anchor.rate_kind and not (test.rate_kind in coded and anchor.rate_kind in coded):
        notes.append(f"rate kind differs: test {test.rate_kind} bpp, anchor {anchor.rate_kind} bpp")
    return "; ".join(notes)


def bd_rows(
    anchor: LabelledCurve,
    tests: Sequence[LabelledCurve],
    metric: str,
    *,
    colour: str = "rgb",
    variants: Sequence[str] = VARIANTS,
) -> list[BDRow]:
    """BD-rate and BD-quality of every test curve against ``anchor`` on ``metric``, one row per variant.

    Rows that compare curves made differently (aggregation rule, raw or estimated rate) say so in their note.
    """
    curves = {anchor.name: (anchor.bpp, anchor.quality)}
    for curve in tests:
        if curve.name in curves:
            raise LcompError(f"two sources are both called {curve.name!r}; name them apart with --label (and --anchor-label)")
        curves[curve.name] = (curve.bpp, curve.quality)
    rows = bd_table(curves, anchor.name, variants=variants, quality_axis=f"{metric} ({colour.upper()})")
    by_name = {c.name: c for c in tests}
    noted = []
    for row in rows:
        note = _comparability_note(by_name[row.test], anchor)
        if note:
            row = dataclasses.replace(row, note=f"{row.note}; {note}" if row.note else note)
        noted.append(row)
    return noted


def add_bdrate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    _add_source_options(parser)
    parser.add_argument(
        "--anchor", required=True, metavar="SOURCE", help="the reference curve (evaluation folder or published curve)"
    )
    parser.add_argument("--anchor-label", metavar="NAME", help="a short name for the anchor (see --label)")
    parser.add_argument(
        "--metric", default="ms_ssim_db", choices=("psnr", "ms_ssim_db", "ms_ssim"), help="quality axis (default: ms_ssim_db)"
    )
    parser.add_argument(
        "--variant", default="both", choices=(*VARIANTS, "both"),
        help="BD fit: cubic (VCEG-M33), pchip (monotone, Pareto-cleaned) or both (default)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, metavar="STEM", help="also write STEM.csv and STEM.md")
    return parser


def run_bdrate(args: argparse.Namespace) -> int:
    options = dict(dataset=args.dataset, colour=args.colour, rule=args.rule)
    anchor = renamed(load_source(args.anchor, args.metric, **options), args.anchor_label)
    tests = [
        renamed(load_source(source, args.metric, **options), name)
        for source, name in zip(args.sources, _source_names(args))
        if source != args.anchor
    ]
    variants = VARIANTS if args.variant == "both" else (args.variant,)
    rows = bd_rows(anchor, tests, args.metric, colour=args.colour, variants=variants)
    print(f"anchor: {anchor.label}")
    for curve in tests:
        print(f"test:   {curve.name} = {curve.label}")
    print(format_bd_markdown(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        csv_path = write_bd_csv(rows, args.out.with_suffix(".csv"))
        md_path = write_bd_markdown(rows, args.out.with_suffix(".md"))
        print(f"wrote {csv_path} and {md_path}")
    return 0
