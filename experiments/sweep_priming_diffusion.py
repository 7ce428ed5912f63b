"""Ablation sweep of Johnston et al. 2018's hidden-state priming x diffusion.

For every cell (k priming steps, d diffusion steps) of the grid this script trains the recurrent coder (or
resumes, or skips a cell whose results exist), evaluates it on real files at several iteration counts, and
writes one results table (CSV + JSON), BD-rates against the (k=0, d=0) cell, and an RD plot.

    python experiments/sweep_priming_diffusion.py --out runs/sweep            # tiny config, 4 x 3 grid
    python experiments/sweep_priming_diffusion.py --config johnston2018 --steps 200000 --out runs/sweep-paper
    python experiments/sweep_priming_diffusion.py --priming 0,3 --diffusion 0 --images ../shared/data/kodak
    python experiments/sweep_priming_diffusion.py --checkpoints runs/sweep    # evaluate existing workdirs only

Cells live in `<out>/k<k>_d<d>/` (`workdir/` with checkpoints, `eval/` with per-image records). A cell with an
`eval/rd_by_setting.csv` is finished and skipped; a killed run resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _grid(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="johnston2018:tiny", help="config NAME[:variant] every cell starts from")
    parser.add_argument("--priming", type=_grid, default=[0, 1, 2, 3], help="priming steps k, comma-separated")
    parser.add_argument("--diffusion", type=_grid, default=[0, 1, 2], help="diffusion steps d, comma-separated")
    parser.add_argument("--steps", type=int, help="training steps per cell (default: the config's)")
    parser.add_argument("--iterations", type=_grid, default=[1, 2, 4, 8, 16], help="iteration counts evaluated")
    parser.add_argument("--images", help="evaluation images (folder); default: the embedded eval photographs")
    parser.add_argument("--out", required=True, help="sweep folder (one subfolder per cell)")
    parser.add_argument("--checkpoints", action="store_true", help="only evaluate cells that have a workdir")
    parser.epilog = (parser.epilog or "") + "\nAny --config.a.b=value argument overrides that config key in every cell."
    # `--config.a.b=value` overrides are collected apart from argparse, which would reject them as unknown options.
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    args.overrides = [a for a in argv if a.startswith("--config.")]
    return args


def cell_name(k: int, d: int) -> str:
    return f"k{k}_d{d}"


def run_cell(args, k: int, d: int, images) -> list[dict] | None:
    from lcomp import configs, evaluate, models, train

    folder = pathlib.Path(args.out) / cell_name(k, d)
    if not (folder / "eval" / evaluate.BY_SETTING_FILE).exists():
        workdir = folder / "workdir"
        if args.checkpoints:
            if not (workdir / train.CONFIG_FILE).exists():
                print(f"{cell_name(k, d)}: no workdir, skipped")
                return None
        else:
            overrides = [*args.overrides, f"--config.model.network.priming_steps={k}",
                         f"--config.model.network.diffusion_steps={d}"]
            config = configs.load_config(args.config, overrides)
            if args.steps is not None:
                config.train.num_steps = args.steps
            print(f"{cell_name(k, d)}: training {config.codec} for {config.train.num_steps} steps in {workdir}")
            train.train(config, workdir)
        model = models.load_model(workdir)
        model.description = f"{model.codec.name} k={k} d={d}"  # the cell's label in its results
        settings = [{"iterations": t} for t in args.iterations if t <= model.codec.iterations]
        evaluate.evaluate_codec(model, images, folder / "eval", settings=settings, progress=True)
    else:
        print(f"{cell_name(k, d)}: finished earlier, skipped")
    rows = evaluate.load_results(folder / "eval").by_setting  # typed values; None where a metric is missing
    return [{"priming": k, "diffusion": d, **row} for row in rows]


def main(argv=None) -> int:
    import numpy as np

    from lcomp import bdrate, data
    from lcomp.errors import LcompError

    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = data.FolderSource(args.images) if args.images else data.EmbeddedSource(split="eval")
    rows, curves = [], {}
    for k in args.priming:
        for d in args.diffusion:
            cell_rows = run_cell(args, k, d, images)
            if not cell_rows:
                continue
            rows += cell_rows
            bpp = np.array([r["bpp"] for r in cell_rows], dtype=float)
            curves[(k, d)] = {m: (bpp, np.array([r[m] for r in cell_rows], dtype=float)) for m in ("psnr", "ms_ssim_db")}
    if not rows:
        print("no cell has results yet")
        return 1

    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = []
    anchor = curves.get((0, 0))
    for (k, d), curve in curves.items():
        entry = {"priming": k, "diffusion": d}
        for metric in ("psnr", "ms_ssim_db"):
            entry[f"bd_rate_{metric}_vs_k0_d0"] = None
            if anchor is not None and (k, d) != (0, 0) and len(curve[metric][0]) >= 4:
                if np.isnan(curve[metric][1]).any() or np.isnan(anchor[metric][1]).any():
                    # lcomp.evaluate leaves MS-SSIM empty for images too small for its five scales.
                    entry[f"bd_rate_{metric}_vs_k0_d0"] = f"n/a ({metric} missing for some setting)"
                    continue
                try:
                    result = bdrate.bd_rate(*anchor[metric], *curve[metric], quality_axis=metric)
                    entry[f"bd_rate_{metric}_vs_k0_d0"] = round(result.value, 2)
                except LcompError as exc:  # e.g. a cell whose curve does not overlap the anchor's
                    entry[f"bd_rate_{metric}_vs_k0_d0"] = f"n/a ({exc})"
        summary.append(entry)
    (out / "results.json").write_text(json.dumps({"cells": summary, "rows": rows}, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Colour says k, line style says d: twelve cells would wrap matplotlib's ten-colour cycle.
    colours = {k: plt.get_cmap("viridis")(i / max(1, len(args.priming) - 1) * 0.9) for i, k in enumerate(args.priming)}
    styles = dict(zip(args.diffusion, ["-", "--", ":", "-."] * len(args.diffusion)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for (k, d), curve in curves.items():
        for ax, metric in zip(axes, ("psnr", "ms_ssim_db")):
            order = np.argsort(curve[metric][0])
            ax.plot(curve[metric][0][order], curve[metric][1][order], marker="o", ms=3, color=colours[k],
                    linestyle=styles[d], label=f"k={k}, d={d}")
    axes[0].set_ylabel("PSNR (dB, RGB)")
    axes[1].set_ylabel("MS-SSIM (dB, RGB)")
    for ax in axes:
        ax.set_xlabel("bpp (real, whole file; mean over images at each iteration count)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"priming x diffusion sweep ({args.config})")
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=110)
    plt.close(fig)

    lines = ["| k | d | BD-rate PSNR vs k0 d0 | BD-rate MS-SSIM dB vs k0 d0 |", "|---|---|---|---|"]
    def shown(e, metric):
        value = e[f"bd_rate_{metric}_vs_k0_d0"]
        if (e["priming"], e["diffusion"]) == (0, 0):
            return "anchor"
        return "n/a (no k=0, d=0 cell or too few points)" if value is None else (
            f"{value:+.2f} %" if isinstance(value, float) else value)

    for e in summary:
        lines.append(f"| {e['priming']} | {e['diffusion']} | {shown(e, 'psnr')} | {shown(e, 'ms_ssim_db')} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results.csv, results.json, summary.md and rd.png in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
