"""Two learning curves of runs that differ in one setting, compared step by step.

    python experiments/rnn_quality/compare_curves.py experiments/results/rnn_quality/j18_additive \
        --baseline experiments/results/rnn_quality/j18_v5 --out experiments/results/rnn_quality/j18_additive

Both folders hold a ``learning_curve.json`` of ``learning_curve.py``. A run made with
``retrain_shipped.sh WORKDIR --config.X=Y`` has the same seed, data order and learning-rate schedule as the
baseline, so at every step both measured, the difference is the setting's effect (plus checkpoint jitter, which
the baseline's own step-to-step changes show). Writes ``comparison.md`` and ``comparison.png`` to ``--out``.

``--bits-ratio K`` compares a variant that sends K times the baseline's bits per iteration (e.g.
``--config.model.network.bits_per_position=128 --config.model.network.iterations=4`` against 32 x 16) at equal
raw rate: the variant's iteration t against the baseline's iteration K*t (rnn_quality/j18_t4b128).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from ablate import summarise  # noqa: E402

COLUMNS = (("psnr_1", "PSNR@1"), ("psnr_8", "PSNR@8"), ("psnr_16", "PSNR@16"), ("gain_8_16", "gain 8->16"),
           ("min_gain", "min gain/iter"))  # fmt: skip


def load(folder: pathlib.Path) -> dict[int, np.ndarray]:
    """Held-out PSNR per iteration at every measured step."""
    steps = json.loads((folder / "learning_curve.json").read_text())["steps"]
    return {int(step): np.asarray(value["held_out"]) for step, value in steps.items()}


def iterations_adding(psnr: np.ndarray, threshold: float = 0.15) -> int:
    """How many of the first iterations each add at least ``threshold`` dB (the first always counts)."""
    below = np.flatnonzero(np.diff(psnr) < threshold)
    return int(below[0]) + 1 if below.size else len(psnr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=pathlib.Path, help="learning-curve folder of the variant")
    parser.add_argument("--baseline", type=pathlib.Path, required=True, help="learning-curve folder of the baseline")
    parser.add_argument("--name", help="the variant's name in the table (default: its folder's name)")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--bits-ratio", type=int, default=1,
                        help="the variant sends this many times the baseline's bits per iteration: compare at equal rate")
    args = parser.parse_args(argv)
    name, base_name = args.name or args.run.name, args.baseline.name
    run_psnr, base_psnr = load(args.run), load(args.baseline)
    common = sorted(set(run_psnr) & set(base_psnr))
    if not common:
        parser.error(f"{args.run} and {args.baseline} share no measured step")
    if args.bits_ratio > 1:
        compare_at_equal_rate(run_psnr, base_psnr, common, args.bits_ratio, name, base_name, args.out)
        return 0
    run = {s: summarise(v) for s, v in run_psnr.items()}
    base = {s: summarise(v) for s, v in base_psnr.items()}
    lines = [f"{name} against {base_name} at the steps both measured (held-out crops, deterministic "
             "reconstructions, PSNR in dB); each cell: variant / baseline (difference).", "",
             "| step | " + " | ".join(label for _, label in COLUMNS) + " | iterations adding >= 0.15 dB |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for step in common:
        cells = [f"{run[step][key]:.2f} / {base[step][key]:.2f} ({run[step][key] - base[step][key]:+.2f})"
                 for key, _ in COLUMNS]
        adding = f"{iterations_adding(run_psnr[step])} / {iterations_adding(base_psnr[step])}"
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {adding} |")
    half = common[len(common) // 2 :]
    lines.append("")
    lines.append(f"Mean difference over the later half of the common steps ({half[0]}-{half[-1]}, {len(half)} points): "
                 + ", ".join(f"{label} {np.mean([run[s][key] - base[s][key] for s in half]):+.2f}"
                             for key, label in COLUMNS) + ".")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.md").write_text(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (key, label) in zip(axes, (("psnr_16", "PSNR@16 (dB)"), ("gain_8_16", "gain 8->16 (dB)"),
                                        ("min_gain", "smallest per-iteration gain (dB)"))):
        ax.plot(common, [base[s][key] for s in common], "o-", ms=3, label=base_name)
        ax.plot(common, [run[s][key] for s in common], "s-", ms=3, label=name)
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{name} against {base_name}: held-out crops, same seed and data order")
    fig.tight_layout()
    fig.savefig(args.out / "comparison.png", dpi=110)
    plt.close(fig)
    return 0


def compare_at_equal_rate(run_psnr, base_psnr, common, ratio, name, base_name, out: pathlib.Path) -> None:
    """Table and plot: the variant's iteration t against the baseline's iteration ratio*t (same raw bits)."""
    T = min(len(run_psnr[common[0]]), len(base_psnr[common[0]]) // ratio)
    base_t = [ratio * t for t in range(1, T + 1)]
    lines = [f"{name} ({ratio} x the bits per iteration) against {base_name} at equal raw rate: the variant's "
             f"iteration t beside the baseline's iteration {ratio}t, at the steps both measured (held-out crops, "
             "deterministic reconstructions, PSNR in dB); each cell: variant / baseline (difference).", "",
             "| step | " + " | ".join(f"{name} @{t} vs {base_name} @{ratio * t}" for t in range(1, T + 1))
             + f" | {base_name} @{base_t[-1]} - @{base_t[-2] if T > 1 else 1} | {name} @{T} - @{max(1, T - 1)} |",
             "|---|" + "---|" * (T + 2)]
    for step in common:
        run, base = run_psnr[step], base_psnr[step]
        cells = [f"{run[t - 1]:.2f} / {base[ratio * t - 1]:.2f} ({run[t - 1] - base[ratio * t - 1]:+.2f})"
                 for t in range(1, T + 1)]
        last_base_gain = base[base_t[-1] - 1] - base[(base_t[-2] if T > 1 else 1) - 1]
        last_run_gain = run[T - 1] - run[max(1, T - 1) - 1]
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {last_base_gain:+.2f} | {last_run_gain:+.2f} |")
    half = common[len(common) // 2 :]
    lines.append("")
    lines.append(f"Mean difference over the later half of the common steps ({half[0]}-{half[-1]}, {len(half)} points): "
                 + ", ".join(f"@{t} vs @{ratio * t} {np.mean([run_psnr[s][t - 1] - base_psnr[s][ratio * t - 1] for s in half]):+.2f}"
                             for t in range(1, T + 1)) + ".")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    last = common[-1]
    bpp_base = [t / 8 for t in range(1, len(base_psnr[last]) + 1)]  # 32 bits per 16x16 block = 1/8 bpp
    a.plot(bpp_base, base_psnr[last], "o-", ms=3, label=f"{base_name} (iterations 1-{len(base_psnr[last])})")
    a.plot([ratio * t / 8 for t in range(1, len(run_psnr[last]) + 1)], run_psnr[last], "s-", ms=4,
           label=f"{name} (iterations 1-{len(run_psnr[last])})")
    a.set_xlabel("raw rate (bpp, before entropy coding)")
    a.set_ylabel("held-out PSNR (dB)")
    a.set_title(f"step {last}")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    for t, style in ((1, "--"), (T, "-")):
        b.plot(common, [base_psnr[s][ratio * t - 1] for s in common], style, marker="o", ms=3,
               label=f"{base_name} @{ratio * t}")
        b.plot(common, [run_psnr[s][t - 1] for s in common], style, marker="s", ms=3, label=f"{name} @{t}")
    b.set_xlabel("training step")
    b.set_ylabel("held-out PSNR (dB)")
    b.set_title("equal raw rate against training steps")
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.suptitle(f"{name} against {base_name} at equal raw rate: held-out crops, same seed and data order")
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
