"""Ablation sweep of Johnston et al. 2018's hidden-state priming x diffusion, over several training seeds.

For every cell (k priming steps, d diffusion steps) of the grid and every seed this script trains the recurrent
coder (or resumes, or skips a model whose results exist), evaluates it on real files at several iteration
counts, and writes one results table (CSV + JSON) with the mean and spread over seeds, BD-rates against the
(k=0, d=0) cell (computed per seed pair, then mean +- std over seeds), a summary that flags differences that
are within the seed noise, and an RD plot with +-1 std bands.

    python experiments/sweep_priming_diffusion.py --out runs/sweep            # tiny config, 4 x 3 grid, 1 seed
    python experiments/sweep_priming_diffusion.py --seeds 3 --max-images 6 --out runs/sweep-3seeds
    python experiments/sweep_priming_diffusion.py --config johnston2018 --steps 200000 --seeds 3 --out runs/sweep-paper
    python experiments/sweep_priming_diffusion.py --priming 0,3 --diffusion 0 --seeds 3 --images ../shared/data/kodak
    python experiments/sweep_priming_diffusion.py --checkpoints --out runs/sweep    # evaluate existing workdirs only

Models live in `<out>/k<k>_d<d>/s<seed>/` (`workdir/` with checkpoints, `eval/` with per-image records); seed
`s` sets both `train.seed` (parameter init and the per-step random key) and `data.seed` (the order and crops of
the training batches). A (cell, seed) with an `eval/rd_by_setting.csv` computed on the same images is finished
and skipped; a killed run resumes from its last checkpoint.

Evaluation images: `--images FOLDER`; otherwise Kodak when its folder exists (`--kodak`, default
`lcomp.data.kodak_dir()`: `$LCOMP_KODAK` or `../shared/data/kodak` next to the repository), else the embedded
eval photographs. `--max-images M` keeps the first M images in sorted name order (CPU cost).

Outputs in `--out`: `results.csv` (per cell and iteration count: mean, sample std, min and max over seeds of
bpp, PSNR and MS-SSIM dB), `results_per_seed.csv` (every model's rows), `results.json` (both, the per-cell
BD-rates and flags, the image source), `summary.md` and `rd.png`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

METRICS = ("bpp", "psnr", "ms_ssim_db")
QUALITY_METRICS = ("psnr", "ms_ssim_db")
ONE_SEED = "1 seed: spread unknown"


def _grid(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="johnston2018:tiny", help="config NAME[:variant] every cell starts from")
    parser.add_argument("--priming", type=_grid, default=[0, 1, 2, 3], help="priming steps k, comma-separated")
    parser.add_argument("--diffusion", type=_grid, default=[0, 1, 2], help="diffusion steps d, comma-separated")
    parser.add_argument("--steps", type=int, help="training steps per model (default: the config's)")
    parser.add_argument("--seeds", type=_positive, default=None,
                        help="models per cell, seeds 0..N-1 (default 1; with --checkpoints: every s<seed> folder found)")
    parser.add_argument("--iterations", type=_grid, default=[1, 2, 4, 8, 16], help="iteration counts evaluated")
    parser.add_argument("--images", help="evaluation images (folder); default: Kodak if present, else the embedded "
                                         "eval photographs")
    parser.add_argument("--kodak", default=None,
                        help="where to look for Kodak when --images is not given (default: lcomp.data.kodak_dir(), "
                             "i.e. $LCOMP_KODAK or ../shared/data/kodak next to the repository)")
    parser.add_argument("--max-images", type=_positive, default=None,
                        help="evaluate only the first M images (sorted by name)")
    parser.add_argument("--out", required=True, help="sweep folder (one subfolder per cell, one per seed inside)")
    parser.add_argument("--checkpoints", action="store_true", help="only evaluate models that have a workdir")
    parser.epilog = (parser.epilog or "") + "\nAny --config.a.b=value argument overrides that config key in every cell."
    # `--config.a.b=value` overrides are collected apart from argparse, which would reject them as unknown options.
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    args.overrides = [a for a in argv if a.startswith("--config.")]
    return args


def cell_name(k: int, d: int) -> str:
    return f"k{k}_d{d}"


def seed_name(seed: int) -> str:
    return f"s{seed}"


# --- statistics ------------------------------------------------------------------------------------------------


def spread(values) -> dict:
    """Mean, sample standard deviation (ddof=1; None with fewer than 2 values), min, max and n of `values`.

    All statistics are None when a value is missing (None or NaN), e.g. MS-SSIM of images too small for it.
    """
    values = list(values)
    n = len(values)
    if not values or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return {"mean": None, "std": None, "min": None, "max": None, "n": n}
    values = [float(v) for v in values]
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def within_noise(diff, spreads) -> bool | None:
    """Is a difference within the seed noise? True when |diff| < the largest of `spreads`, False when it is not
    (the difference is distinguishable from the noise), None when that cannot be told: the difference or a
    spread is unknown (None/NaN, e.g. one seed only).

    BD-rate of a cell vs the anchor: `within_noise(mean, [std])`; PSNR at one iteration count:
    `within_noise(mean_cell - mean_anchor, [std_cell, std_anchor])`.
    """
    spreads = list(spreads)
    if diff is None or not spreads or any(s is None for s in spreads):
        return None
    if math.isnan(diff) or any(math.isnan(s) for s in spreads):
        return None
    return abs(diff) < max(spreads)


def noise_flag(flag: bool | None, n_seeds: int) -> str:
    """The summary's text for a `within_noise` result."""
    if flag is None:
        return ONE_SEED if n_seeds < 2 else "n/a"
    return "within noise" if flag else "distinguishable"


def _iterations(setting: str) -> int | None:
    for part in str(setting).split(","):
        key, _, value = part.partition("=")
        if key.strip() == "iterations":
            return int(value)
    return None


def aggregate_rows(per_seed_rows: list[dict]) -> list[dict]:
    """One row per (cell, setting): mean/std/min/max over the cell's seeds of bpp, PSNR and MS-SSIM dB."""
    groups: dict[tuple, list[dict]] = {}
    for row in per_seed_rows:
        groups.setdefault((row["priming"], row["diffusion"], row["setting"]), []).append(row)
    out = []
    for (k, d, setting), group in groups.items():
        entry = {"priming": k, "diffusion": d, "setting": setting, "iterations": _iterations(setting),
                 "n_seeds": len(group), "seeds": [r["seed"] for r in group], "n_images": group[0].get("n_images")}
        for metric in METRICS:
            stats = spread(r.get(metric) for r in group)
            for stat in ("mean", "std", "min", "max"):
                entry[f"{metric}_{stat}"] = stats[stat]
        out.append(entry)
    return out


# --- images ------------------------------------------------------------------------------------------------------


def select_images(args):
    """The evaluation images and a description of them: `(source, info)`.

    `--images` when given; else Kodak when its folder exists (`--kodak` or `lcomp.data.kodak_dir()`), else the
    embedded eval photographs. With `--max-images M` the source keeps its first M images in sorted name order.
    """
    from lcomp import data

    if args.images:
        source, kind, where = data.FolderSource(args.images), "folder", str(pathlib.Path(args.images))
    else:
        kodak = pathlib.Path(args.kodak) if args.kodak else data.kodak_dir()
        if kodak.is_dir():
            source, kind, where = data.kodak_source(kodak), "kodak", str(kodak)
        else:
            source = data.EmbeddedSource(split="eval")
            kind, where = "embedded-eval", str(source.root)
    total = len(source)
    order = sorted(range(total), key=lambda i: source.names[i])
    if args.max_images is not None or order != list(range(total)):
        source = subset(source, order[: args.max_images])
    info = {"kind": kind, "path": where, "n_images": len(source), "n_available": total,
            "max_images": args.max_images, "names": list(source.names)}
    return source, info


def subset(base, indices):
    """The images `indices` of `base`, in that order, as an ImageSource (keeps `paths` for checksums)."""
    from lcomp.data import ImageSource

    class Subset(ImageSource):
        """Some images of another source, in the given order (keeps `paths` for checksums and metadata)."""

        def __init__(self, base, indices):
            self.base, self.indices = base, list(indices)
            base_paths = getattr(base, "paths", None)
            if base_paths:
                self.paths = [base_paths[i] for i in self.indices]
                self.root = pathlib.Path(self.paths[0]).parent
            super().__init__([base.names[i] for i in self.indices], cache=False)

        def _load(self, index):
            return self.base[self.indices[index]]

        def __repr__(self):
            return f"{type(self).__name__}({self.base!r}, {len(self)} images)"

    return Subset(base, indices)


def describe_images(info: dict) -> str:
    label = {"kodak": "Kodak", "folder": "image folder", "embedded-eval": "embedded eval photographs"}[info["kind"]]
    first = f", first {info['n_images']} of {info['n_available']} by name" if info["n_images"] < info["n_available"] else ""
    return f"{info['n_images']} images: {label} ({info['path']}{first})"


# --- one model --------------------------------------------------------------------------------------------------


def _finished(eval_dir: pathlib.Path, info: dict) -> bool:
    from lcomp import evaluate

    if not (eval_dir / evaluate.BY_SETTING_FILE).exists():
        return False
    try:
        results = evaluate.load_results(eval_dir)
    except Exception:  # noqa: BLE001 - an unreadable evaluation is redone
        return False
    names = list(dict.fromkeys(r["image"] for r in results.records))
    return names == info["names"]


def run_model(args, k: int, d: int, seed: int, images, info: dict) -> list[dict] | None:
    from lcomp import configs, evaluate, models, train

    label = f"{cell_name(k, d)}/{seed_name(seed)}"
    folder = pathlib.Path(args.out) / cell_name(k, d) / seed_name(seed)
    workdir = folder / "workdir"
    if _finished(folder / "eval", info):
        print(f"{label}: finished earlier, skipped")
    else:
        if (folder / "eval" / evaluate.BY_SETTING_FILE).exists():
            print(f"{label}: evaluated earlier on other images, evaluating again")
        if args.checkpoints:
            if not (workdir / train.CONFIG_FILE).exists():
                print(f"{label}: no workdir, skipped")
                return None
        elif not (folder / "eval" / evaluate.BY_SETTING_FILE).exists() or not (workdir / train.CONFIG_FILE).exists():
            overrides = [*args.overrides, f"--config.model.network.priming_steps={k}",
                         f"--config.model.network.diffusion_steps={d}",
                         f"--config.train.seed={seed}", f"--config.data.seed={seed}"]
            config = configs.load_config(args.config, overrides)
            if args.steps is not None:
                config.train.num_steps = args.steps
            print(f"{label}: training {config.codec} (seed {seed}) for {config.train.num_steps} steps in {workdir}")
            train.train(config, workdir)
        model = models.load_model(workdir)
        model.description = f"{model.codec.name} k={k} d={d} seed={seed}"  # the model's label in its results
        settings = [{"iterations": t} for t in args.iterations if t <= model.codec.iterations]
        evaluate.evaluate_codec(model, images, folder / "eval", settings=settings, progress=True)
    rows = evaluate.load_results(folder / "eval").by_setting  # typed values; None where a metric is missing
    steps = None
    if (workdir / train.CONFIG_FILE).exists():
        steps = json.loads((workdir / train.CONFIG_FILE).read_text()).get("train", {}).get("num_steps")
    return [{"priming": k, "diffusion": d, "seed": seed, "num_steps": steps, **row} for row in rows]


def seeds_for(args, k: int, d: int) -> list[int]:
    if args.seeds is not None or not args.checkpoints:
        return list(range(args.seeds or 1))
    cell = pathlib.Path(args.out) / cell_name(k, d)
    found = sorted(int(p.name[1:]) for p in cell.glob("s*") if p.name[1:].isdigit() and (p / "workdir").is_dir())
    return found or [0]


# --- BD-rates and the summary ------------------------------------------------------------------------------------


def _curve(rows: list[dict], metric: str):
    import numpy as np

    bpp = np.array([r["bpp"] for r in rows], dtype=float)
    quality = np.array([np.nan if r[metric] is None else r[metric] for r in rows], dtype=float)
    return bpp, quality


def bd_rate_one(anchor_rows: list[dict], rows: list[dict], metric: str):
    """BD-rate (%) of one model's curve against one anchor model's: a float or an "n/a (why)" string."""
    import numpy as np

    from lcomp import bdrate
    from lcomp.errors import LcompError

    anchor, curve = _curve(anchor_rows, metric), _curve(rows, metric)
    if len(curve[0]) < 4 or len(anchor[0]) < 4:
        return "n/a (fewer than 4 points)"
    if np.isnan(curve[1]).any() or np.isnan(anchor[1]).any():
        # lcomp.evaluate leaves MS-SSIM empty for images too small for its five scales.
        return f"n/a ({metric} missing for some setting)"
    try:
        return round(float(bdrate.bd_rate(*anchor, *curve, quality_axis=metric).value), 4)
    except LcompError as exc:  # e.g. a model whose curve does not overlap the anchor's
        return f"n/a ({exc})"


def cell_summary(per_model: dict, anchor_key=(0, 0)) -> list[dict]:
    """Per cell: BD-rate vs the anchor per seed pair (mean, std, per seed, flag) and PSNR at the largest
    iteration count (mean, std, difference vs the anchor, flag). `per_model` maps (k, d) -> {seed: rows}."""
    anchor = per_model.get(anchor_key)
    summary = []
    for (k, d), by_seed in per_model.items():
        entry = {"priming": k, "diffusion": d, "seeds": sorted(by_seed), "n_seeds": len(by_seed)}
        is_anchor = (k, d) == anchor_key
        for metric in QUALITY_METRICS:
            key = f"bd_rate_{metric}_vs_k0_d0"
            entry.update({key: None, f"{key}_std": None, f"{key}_n_seeds": 0, f"{key}_per_seed": {},
                          f"{key}_within_noise": None})
            if anchor is None or is_anchor:
                continue
            pairs = sorted(set(by_seed) & set(anchor))
            if not pairs:
                entry[key] = "n/a (no seed in common with the k=0, d=0 cell)"
                continue
            per_seed = {s: bd_rate_one(anchor[s], by_seed[s], metric) for s in pairs}
            numbers = [v for v in per_seed.values() if isinstance(v, float)]
            entry[f"{key}_per_seed"] = {str(s): v for s, v in per_seed.items()}
            if not numbers:
                entry[key] = next(iter(per_seed.values()))
                continue
            stats = spread(numbers)
            entry[key], entry[f"{key}_std"], entry[f"{key}_n_seeds"] = round(stats["mean"], 2), (
                None if stats["std"] is None else round(stats["std"], 2)), stats["n"]
            entry[f"{key}_within_noise"] = within_noise(stats["mean"], [stats["std"]])
        # PSNR at the largest iteration count this cell was evaluated at.
        iterations = [_iterations(r["setting"]) for rows in by_seed.values() for r in rows]
        top = max((t for t in iterations if t is not None), default=None)
        entry["top_iterations"] = top

        def at_top(rows_by_seed):
            return [r["psnr"] for rows in rows_by_seed.values() for r in rows if _iterations(r["setting"]) == top]

        stats = spread(at_top(by_seed))
        entry.update({"psnr_at_top_mean": stats["mean"], "psnr_at_top_std": stats["std"],
                      "psnr_at_top_n_seeds": stats["n"], "psnr_at_top_diff_vs_k0_d0": None,
                      "psnr_at_top_within_noise": None, "psnr_at_top_compared_seeds": 0})
        if anchor is not None and not is_anchor and top is not None:
            anchor_stats = spread(at_top(anchor))
            if anchor_stats["n"] and stats["mean"] is not None and anchor_stats["mean"] is not None:
                diff = stats["mean"] - anchor_stats["mean"]
                entry["psnr_at_top_diff_vs_k0_d0"] = diff
                entry["psnr_at_top_within_noise"] = within_noise(diff, [stats["std"], anchor_stats["std"]])
                entry["psnr_at_top_compared_seeds"] = min(stats["n"], anchor_stats["n"])
        summary.append(entry)
    return summary


def _pm(mean, std, unit="", digits=2, signed=False) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return f"{text}{unit} ± {'n/a' if std is None else f'{std:.{digits}f}'}{unit}"


def format_summary(summary: list[dict], header: str) -> list[str]:
    lines = [header, "",
             "| k | d | seeds | BD-rate PSNR vs k0 d0 (mean ± std) | PSNR BD noise | BD-rate MS-SSIM dB vs k0 d0 "
             "(mean ± std) | MS-SSIM BD noise | PSNR at top iterations (dB) | Δ PSNR vs k0 d0 (dB) | PSNR noise |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        is_anchor = (e["priming"], e["diffusion"]) == (0, 0)
        cells = [str(e["priming"]), str(e["diffusion"]), str(e["n_seeds"])]
        for metric in QUALITY_METRICS:
            key = f"bd_rate_{metric}_vs_k0_d0"
            value = e[key]
            if is_anchor:
                cells += ["anchor", "anchor"]
            elif value is None:
                cells += ["n/a (no k=0, d=0 cell)", "n/a"]
            elif isinstance(value, str):
                cells += [value, "n/a"]
            else:
                cells += [_pm(value, e[f"{key}_std"], " %", signed=True),
                          noise_flag(e[f"{key}_within_noise"], e[f"{key}_n_seeds"])]
        top = e["top_iterations"]
        cells.append(f"{_pm(e['psnr_at_top_mean'], e['psnr_at_top_std'])} (t={top})")
        if is_anchor:
            cells += ["anchor", "anchor"]
        elif e["psnr_at_top_diff_vs_k0_d0"] is None:
            cells += ["n/a", "n/a"]
        else:
            cells += [f"{e['psnr_at_top_diff_vs_k0_d0']:+.2f}",
                      noise_flag(e["psnr_at_top_within_noise"], e["psnr_at_top_compared_seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# --- main --------------------------------------------------------------------------------------------------------


def _write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(c for r in rows for c in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: (" ".join(map(str, v)) if isinstance(v, list) else v) for c, v in r.items()})


def main(argv=None) -> int:
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, info = select_images(args)
    print(f"evaluation images: {describe_images(info)}")
    per_model: dict[tuple[int, int], dict[int, list[dict]]] = {}
    per_seed_rows = []
    for k in args.priming:
        for d in args.diffusion:
            if (out / cell_name(k, d) / "workdir").is_dir():
                print(f"{cell_name(k, d)}: a workdir of the one-seed layout is in {out / cell_name(k, d) / 'workdir'}; "
                      f"move it to {out / cell_name(k, d) / seed_name(0)}/ to reuse it as seed 0")
            for seed in seeds_for(args, k, d):
                rows = run_model(args, k, d, seed, images, info)
                if rows:
                    per_model.setdefault((k, d), {})[seed] = rows
                    per_seed_rows += rows
    if not per_seed_rows:
        print("no cell has results yet")
        return 1

    rows = aggregate_rows(per_seed_rows)
    summary = cell_summary(per_model)
    seed_counts = sorted({len(v) for v in per_model.values()})
    steps = sorted({r["num_steps"] for r in per_seed_rows if r["num_steps"] is not None})
    _write_csv(out / "results.csv", rows)
    _write_csv(out / "results_per_seed.csv", per_seed_rows)
    (out / "results.json").write_text(json.dumps(
        {"config": args.config, "seeds_per_cell": seed_counts, "num_steps": steps, "images": info,
         "spread": "std: sample standard deviation over seeds (ddof=1); BD-rates per seed pair (same seed)",
         "cells": summary, "rows": rows, "per_seed_rows": per_seed_rows}, indent=2))

    plot(args, out, rows)

    seeds_text = " or ".join(map(str, seed_counts))
    one_seed = seed_counts == [1]
    header = (f"Sweep of {args.config}: {seeds_text} seed{'s' if seed_counts != [1] else ''} per cell, "
              f"{describe_images(info)}, {' or '.join(map(str, steps)) or 'unknown'} training steps per model, "
              f"iteration counts {', '.join(map(str, sorted({r['iterations'] for r in rows if r['iterations']})))}. "
              + (f"{ONE_SEED}: no difference is flagged as distinguishable."
                 if one_seed else
                 "Spreads are sample standard deviations over seeds; a difference is \"within noise\" when |mean "
                 "difference| < the larger spread (BD-rate: |mean| < std over seed pairs; PSNR: |Δ| < "
                 "max(std cell, std anchor))."))
    lines = format_summary(summary, header)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results.csv, results_per_seed.csv, results.json, summary.md and rd.png in {out}")
    return 0


def plot(args, out: pathlib.Path, rows: list[dict]) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(v):
        return np.nan if v is None else float(v)

    # Colour says k, line style says d: twelve cells would wrap matplotlib's ten-colour cycle.
    colours = {k: plt.get_cmap("viridis")(i / max(1, len(args.priming) - 1) * 0.9) for i, k in enumerate(args.priming)}
    styles = dict(zip(args.diffusion, ["-", "--", ":", "-."] * len(args.diffusion)))
    cells = list(dict.fromkeys((r["priming"], r["diffusion"]) for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, d in cells:
        cell_rows = [r for r in rows if (r["priming"], r["diffusion"]) == (k, d)]
        bpp = np.array([value(r["bpp_mean"]) for r in cell_rows])
        bpp_std = np.array([value(r["bpp_std"]) for r in cell_rows])
        order = np.argsort(bpp)
        n_seeds = max(r["n_seeds"] for r in cell_rows)
        for ax, metric in zip(axes, QUALITY_METRICS):
            mean = np.array([value(r[f"{metric}_mean"]) for r in cell_rows])[order]
            std = np.array([value(r[f"{metric}_std"]) for r in cell_rows])[order]
            x = bpp[order]
            ax.plot(x, mean, marker="o", ms=3, color=colours[k], linestyle=styles[d],
                    label=f"k={k}, d={d} ({n_seeds} seed{'s' if n_seeds != 1 else ''})")
            if n_seeds > 1:
                ax.fill_between(x, mean - std, mean + std, color=colours[k], alpha=0.15, linewidth=0)
                ax.errorbar(x, mean, xerr=bpp_std[order], yerr=std, fmt="none", ecolor=colours[k], alpha=0.6,
                            elinewidth=0.8, capsize=2)
    axes[0].set_ylabel("PSNR (dB, RGB)")
    axes[1].set_ylabel("MS-SSIM (dB, RGB)")
    for ax in axes:
        ax.set_xlabel("bpp (real, whole file; mean over images, then over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"priming x diffusion sweep ({args.config}); bands: ±1 std over seeds")
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
