"""Per-iteration PSNR against training steps, from every checkpoint a training workdir kept.

    python experiments/rnn_quality/learning_curve.py /work/runs/j18_v2 --out experiments/results/rnn_quality/j18_v2

Train with ``--config.train.keep_checkpoints=1000`` so that every ``checkpoint_every`` step stays. For each
kept step (already-measured steps are cached in ``<out>/learning_curve.json``) it measures the deterministic
reconstructions at every iteration on the held-out and training crops of ``ablate.py`` (the two embedded eval
photographs and four Kodak images; six crops of the training photographs), then writes ``learning_curve.md``
(PSNR at iterations 1, 2, 4, 8, 16 per step, gains, and a log-linear extrapolation of PSNR@16 over steps)
and ``learning_curve.png``.

A run that continues another (``train.init_from``, e.g. ``continue_shipped.sh``) counts its steps from 0: give
``--step-offset N`` (the steps the starting model was trained) and ``--before DIR`` (that model's own
learning-curve folder) to see both runs on one step axis; a least-squares slope per 1000 steps over this run (from
the starting model, when ``--before`` measured it) then replaces the log-step extrapolation.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from ablate import heldout_and_train_crops, per_iteration_psnr, summarise  # noqa: E402

from lcomp import configs  # noqa: E402
from lcomp.codecs import registry  # noqa: E402


def restore_params(workdir: pathlib.Path, step: int, codec, config):
    """Autoencoder params of one kept step (the orbax partial restore of lcomp.models, at a given step)."""
    import orbax.checkpoint as ocp

    from lcomp.train import CHECKPOINT_DIR, abstract_variables

    manager = ocp.CheckpointManager((workdir / CHECKPOINT_DIR).resolve())
    target = abstract_variables(codec, config, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    restore = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
    )
    restored = manager.restore(step, args=ocp.args.Composite(state=restore))["state"]
    return jax.device_get(restored["params"]["autoencoder"])


def kept_steps(workdir: pathlib.Path) -> list[int]:
    import orbax.checkpoint as ocp

    from lcomp.train import CHECKPOINT_DIR

    return sorted(ocp.CheckpointManager((workdir / CHECKPOINT_DIR).resolve()).all_steps())


def extrapolate(steps, values, to_steps):
    """Least-squares fit of value = a + b log(step) over the later half of the points; predictions."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    keep = steps >= np.median(steps)
    if keep.sum() < 2:
        return None
    b, a = np.polyfit(np.log(steps[keep]), values[keep], 1)
    return {"slope_db_per_doubling": float(b * np.log(2)), **{str(s): float(a + b * np.log(s)) for s in to_steps}}


def linear_slope(steps, values):
    """Least-squares slope of value against step and its standard error."""
    x, y = np.asarray(steps, float), np.asarray(values, float)
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (intercept + slope * x)
    se = np.sqrt(np.sum(residuals**2) / max(1, len(x) - 2) / np.sum((x - x.mean()) ** 2))
    return float(slope), float(se)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--every", type=int, default=1, help="measure every n-th kept step (always the last)")
    parser.add_argument("--step-offset", type=int, default=0, help="steps the starting model had (train.init_from)")
    parser.add_argument("--before", help="learning-curve folder of the run this one continues (shown first)")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(args.workdir)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = configs.from_json((workdir / "config.json").read_text())
    codec = registry.create(config.codec, config.model)
    cache_path = out / "learning_curve.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {"steps": {}}
    crops = heldout_and_train_crops()
    steps = kept_steps(workdir)
    chosen = steps[:: args.every] + ([steps[-1]] if steps and steps[-1] not in steps[:: args.every] else [])
    for step in chosen:
        if str(step) in cache["steps"]:
            continue
        params = restore_params(workdir, step, codec, config)
        cache["steps"][str(step)] = {
            "held_out": per_iteration_psnr(codec.net, params, crops[1]).tolist(),
            "train": per_iteration_psnr(codec.net, params, crops[2]).tolist(),
        }
        cache_path.write_text(json.dumps(cache))
        s = summarise(np.asarray(cache["steps"][str(step)]["held_out"]))
        print(f"step {step}: held-out PSNR@1 {s['psnr_1']:.2f} @8 {s['psnr_8']:.2f} @16 {s['psnr_16']:.2f}", flush=True)
    cache["held_out_images"] = crops[0]
    cache_path.write_text(json.dumps(cache))
    # Points on one step axis: this run's checkpoints after the offset, and the run it continues up to it.
    points = {args.step_offset + int(s): v for s, v in cache["steps"].items()}
    this_run = sorted(points)
    if args.before:
        earlier = json.loads((pathlib.Path(args.before) / "learning_curve.json").read_text())["steps"]
        points = {**{int(s): v for s, v in earlier.items() if int(s) <= args.step_offset}, **points}
    measured = sorted(points)
    continued = f", continuing `{args.before}` from its step {args.step_offset}" if args.before else ""
    lines = [f"Learning curve of `{workdir}` ({config.codec}{continued}); deterministic reconstructions, mean PSNR "
             f"(dB) over held-out 256x256 crops ({', '.join(crops[0])}) and six training crops.", "",
             "| step | run | PSNR@1 | @2 | @4 | @8 | @16 | gain 1->16 | gain 8->16 | min gain/iter | train @1 | train @16 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for step in measured:
        h = summarise(np.asarray(points[step]["held_out"]))
        t = summarise(np.asarray(points[step]["train"]))
        run = "this" if step in this_run else "before"
        lines.append(f"| {step} | {run} | {h['psnr_1']:.2f} | {h['psnr_2']:.2f} | {h['psnr_4']:.2f} | {h['psnr_8']:.2f} | "
                     f"{h['psnr_16']:.2f} | {h['gain_1_16']:+.2f} | {h['gain_8_16']:+.2f} | {h['min_gain']:+.3f} | "
                     f"{t['psnr_1']:.2f} | {t['psnr_16']:.2f} |")
    if args.step_offset and len(this_run) >= 4:
        # A continuation spans too little of log(step) for the fit below: is quality still rising over it?
        # Least-squares slope against steps, with its standard error (checkpoint-to-checkpoint jitter).
        fitted = ([args.step_offset] if args.step_offset in points and args.step_offset not in this_run else []) + this_run
        lines.append("")
        lines.append(f"Over this run (steps {fitted[0]}-{fitted[-1]}), least-squares slope per 1000 steps +- its "
                     "standard error:")
        for key, label in (("psnr_1", "PSNR@1"), ("psnr_8", "PSNR@8"), ("psnr_16", "PSNR@16"),
                           ("gain_8_16", "gain 8->16"), ("min_gain", "min gain/iter")):
            values = [summarise(np.asarray(points[s]["held_out"]))[key] for s in fitted]
            slope, se = linear_slope(fitted, values)
            lines.append(f"- {label}: {1000 * slope:+.3f} +- {1000 * se:.3f} dB"
                         f"{' (rising)' if slope > 2 * se else ' (flat within the jitter)' if abs(slope) <= 2 * se else ' (falling)'}")
    if not args.step_offset and len(this_run) >= 4:
        last = this_run[-1]
        for t_index, label in ((0, "PSNR@1"), (-1, "PSNR@16")):
            fit = extrapolate(this_run, [points[s]["held_out"][t_index] for s in this_run],
                              [2 * last, 10 * last, 100 * last])
            if fit:
                lines.append("")
                lines.append(f"{label} vs log(step), fit on the later half: {fit['slope_db_per_doubling']:+.2f} dB per "
                             f"doubling of steps; extrapolated {fit[str(2 * last)]:.2f} dB at {2 * last} steps, "
                             f"{fit[str(10 * last)]:.2f} at {10 * last}, {fit[str(100 * last)]:.2f} at {100 * last}.")
    text = "\n".join(lines) + "\n"
    (out / "learning_curve.md").write_text(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    cmap = plt.get_cmap("viridis")
    for i, step in enumerate(measured):
        curve = points[step]["held_out"]
        a.plot(range(1, len(curve) + 1), curve, color=cmap(i / max(1, len(measured) - 1)), label=f"step {step}")
    a.set_xlabel("iteration")
    a.set_ylabel("held-out PSNR (dB)")
    a.set_title("PSNR per iteration, one curve per checkpoint")
    a.grid(alpha=0.3)
    a.legend(fontsize=6, ncol=2)
    T = len(points[measured[-1]]["held_out"])
    # Iterations 1, 2, 4, 8 and the last, those the run has (a run of fewer than 16 iterations: rnn_quality/j18_t4b128).
    for t, style in sorted({t: s for t, s in ((1, ":"), (2, "-."), (4, "--"), (8, "-"), (T, "-")) if t <= T}.items()):
        b.plot(measured, [points[s]["held_out"][t - 1] for s in measured], style, marker=".",
               label=f"held-out t={t}")
    b.plot(measured, [points[s]["train"][T - 1] for s in measured], "k--", alpha=0.5,
           label=f"train t={T}")
    if args.step_offset and args.before:
        b.axvline(args.step_offset, color="grey", lw=0.8, alpha=0.6)  # where this run takes over
    b.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ticks = [t for t in (250, 500, 1000, 2000, 4000, 8000, 16000, 32000) if measured[0] <= t <= measured[-1]]
    b.xaxis.set_major_locator(FixedLocator(ticks))  # plain step numbers, no overlapping 10^x minor labels
    b.xaxis.set_major_formatter(ScalarFormatter())
    b.xaxis.set_minor_formatter(NullFormatter())
    b.set_xlabel("training step")
    b.set_ylabel("PSNR (dB)")
    b.set_title("PSNR vs training steps")
    b.grid(alpha=0.3)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
