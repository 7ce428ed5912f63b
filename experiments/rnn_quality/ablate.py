"""Controlled short training runs of the recurrent coder: which setting makes later iterations learn?

    python experiments/rnn_quality/ablate.py --study reconstruction
    python experiments/rnn_quality/ablate.py --study weighting --steps 1500 --eval-every 500
    python experiments/rnn_quality/ablate.py --list

Every variant of a study starts from the same config (``--config``, default ``johnston2018:tiny``), the same
seed and the same data order; only the study's overrides differ. Each trains in its own workdir under
``--runs`` (resumable: a finished variant is only re-evaluated), and at every ``--eval-every`` steps its
deterministic (test-time) reconstructions are measured at every iteration on

* held-out crops: the two embedded eval photographs and, when present, four Kodak images (256x256 centre
  crops; Kodak is only ever used for evaluation);
* training crops: six fixed 256x256 crops of the embedded training photographs (is it learning at all,
  or only not generalising?).

Writes ``<out>/<study>/results.json``, ``results.md`` (PSNR at iterations 1, 2, 4, 8, 16, the gains 1->8 and
8->16 and the smallest per-iteration gain, per variant and evaluation step) and ``psnr_per_iteration.png``
(held-out PSNR against iteration for every variant; and PSNR at 1, 8, 16 iterations against training steps).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from lcomp import configs, data, metrics
from lcomp.codecs.rnn.codec import to_float, to_u8
from lcomp.train import Trainer

STUDIES: dict[str, list[tuple[str, list[str]]]] = {
    # reconstruction mode: T17's three modes (spec 2.2-2.3)
    "reconstruction": [
        ("one_shot", []),
        ("additive", ["model.network.reconstruction=additive"]),
        ("residual_scaling", ["model.network.reconstruction=residual_scaling"]),
    ],
    "bias": [
        ("no_bias", []),
        ("bias", ["model.network.use_bias=True"]),
    ],
    "loss": [
        ("ssim_weighted_l1", []),
        ("ssim_per_iteration", ["model.ssim_per_iteration=True"]),
        ("l1", ["model.loss=l1"]),
    ],
    # the binarizer in training (spec 5): stochastic +-1 with E[b] = u, or the test-time sign (both straight-through)
    "binarizer": [
        ("stochastic", []),
        ("deterministic", ["model.network.train_binarizer=deterministic"]),
    ],
    # how the per-iteration distortions form the objective (codec.weight_iterations)
    "weighting": [
        ("uniform", []),
        ("sum", ["model.iteration_weighting=sum"]),
        ("normalized", ["model.iteration_weighting=normalized"]),
        ("linear", ["model.iteration_weighting=linear"]),
        ("final", ["model.iteration_weighting=final"]),
    ],
    # the recurrent cell: GRU (our default) or LSTM, whose memory cell accumulates additively (c' = f c + i j)
    # where a GRU state is a convex mix of old state and candidate; the 1zb PyTorch port is LSTM + additive
    "cell": [
        ("gru", []),
        ("lstm", ["model.network.cell=lstm"]),
        ("lstm_additive", ["model.network.cell=lstm", "model.network.reconstruction=additive"]),
    ],
    # layer widths at the tiny config's data settings: the small widths (decoder GRUs 64/64/32/16), and the tiny
    # widths with only the last two decoder GRUs widened (16/8 -> 32/32: 2 -> 8 features per output pixel after
    # the final depth_to_space)
    "width": [
        ("tiny_widths", []),
        ("small_widths", ["model.network.encoder_conv_features=16", "model.network.encoder_rnn_features=(32,64,64)",
                          "model.network.decoder_conv_features=64", "model.network.decoder_rnn_features=(64,64,32,16)"]),
        ("wide_last_decoder", ["model.network.decoder_rnn_features=(32,32,32,32)"]),
    ],
    # the schedule over the 1500 steps: constant 2e-3 (tiny default) against a 100-step warmup and a cosine decay
    # to 0 at step 1500, at peaks 2e-3 and 5e-3 (5e-3 collapsed when constant)
    "schedule": [
        ("constant_2e-3", []),
        ("cosine_2e-3", ["optim.autoencoder.schedule=cosine", "optim.autoencoder.warmup_steps=100",
                         "optim.autoencoder.decay_steps=1400"]),
        ("cosine_5e-3", ["optim.autoencoder.schedule=cosine", "optim.autoencoder.warmup_steps=100",
                         "optim.autoencoder.decay_steps=1400", "optim.autoencoder.learning_rate=5e-3"]),
    ],
    # training data: the seven embedded photographs (channel-permuted, flipped), with random 90-degree turns, mixed
    # half and half with procedural dead-leaves images (lcomp.data.dead_leaves), and dead leaves alone
    "data": [
        ("embedded", []),
        ("embedded_rot90", ["data.rotate90=True"]),
        ("dead_leaves_half_rot90", ["data.rotate90=True", "data.dead_leaves_fraction=0.5"]),
        ("dead_leaves_only", ["data.rotate90=True", "data.dead_leaves_fraction=1.0"]),
    ],
    # patch and batch size at the tiny widths (tiny default: 8 patches of 32x32)
    "patch_batch": [
        ("patch32_batch8", []),
        ("patch48_batch8", ["data.patch_size=48"]),
        ("patch32_batch16", ["data.batch_size=16"]),
    ],
    "learning_rate": [
        ("lr_2e-3", []),
        ("lr_5e-4", ["optim.autoencoder.learning_rate=5e-4"]),
        ("lr_5e-3", ["optim.autoencoder.learning_rate=5e-3"]),
    ],
}


def heldout_and_train_crops(crop: int = 256, kodak: int = 4):
    def centre(image):
        h, w = image.shape[:2]
        top, left = (h - crop) // 2, (w - crop) // 2
        return np.ascontiguousarray(image[top : top + crop, left : left + crop])

    held = [centre(im) for _, im in data.eval_images(data.EmbeddedSource(split="eval"))]
    names = [n for n, _ in data.eval_images(data.EmbeddedSource(split="eval"))]
    if kodak:
        try:
            k = data.kodak_source()
            for i in range(0, len(k), max(1, len(k) // kodak))[:kodak]:
                held.append(centre(k[i]))
                names.append(f"kodim{i + 1:02d}")
        except Exception as error:
            print(f"ablate: no Kodak ({error}); held-out = embedded eval photographs only", file=sys.stderr)
    train_source = data.EmbeddedSource(split="train")
    rng = np.random.default_rng(1234)
    train = []
    for i in range(6):
        image = train_source[i % len(train_source)]
        h, w = image.shape[:2]
        top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        train.append(np.ascontiguousarray(image[top : top + crop, left : left + crop]))
    return names, np.stack(held), np.stack(train)


def per_iteration_psnr(net, params, images_u8) -> np.ndarray:
    """Mean PSNR over images at every iteration, deterministic binarizer: shape (T,)."""
    recon = jax.jit(lambda p, x: net.run_iterations(p, x, train=False).reconstructions)(params, to_float(images_u8))
    out = []
    for r in np.asarray(recon):
        out.append(float(np.mean(np.asarray(metrics.psnr(images_u8, to_u8(r))))))
    return np.asarray(out)


def summarise(psnr: np.ndarray) -> dict:
    gains = np.diff(psnr)
    T = len(psnr)
    pick = lambda t: float(psnr[min(t, T) - 1])
    return {
        "psnr_1": pick(1), "psnr_2": pick(2), "psnr_4": pick(4), "psnr_8": pick(8), "psnr_16": pick(16),
        "gain_1_8": pick(8) - pick(1), "gain_8_16": pick(16) - pick(8), "gain_1_16": pick(16) - pick(1),
        "min_gain": float(gains.min()) if len(gains) else 0.0,
    }


def read_train_metrics(workdir: pathlib.Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_variant(base: str, overrides: list[str], workdir: pathlib.Path, steps: int, eval_every: int, crops):
    config = configs.load_config(base, list(overrides) + [f"train.num_steps={steps}", "train.progress=False",
                                                          f"train.checkpoint_every={eval_every}"])
    trainer = Trainer(config, workdir)
    net = trainer.codec.net
    history = []
    done = trainer.checkpoints.latest_step() or 0
    cache = workdir / "eval.json"
    cached = {int(k): v for k, v in json.loads(cache.read_text()).items()} if cache.exists() else {}
    for stop in range(eval_every, steps + 1, eval_every):
        if stop in cached:
            history.append(cached[stop])
            continue
        t0 = time.perf_counter()
        result = trainer.fit(stop) if stop > done else None
        state = result.train_state if result is not None else trainer.restore_or_init()
        if int(jax.device_get(state["step"])) != stop:  # a later checkpoint exists: evaluate only that one
            continue
        params = jax.device_get(state["params"]["autoencoder"])
        entry = {
            "step": stop,
            "held_out": per_iteration_psnr(net, params, crops[1]).tolist(),
            "train": per_iteration_psnr(net, params, crops[2]).tolist(),
            "seconds": time.perf_counter() - t0,
        }
        cached[stop] = entry
        cache.write_text(json.dumps(cached))
        history.append(entry)
        s = summarise(np.asarray(entry["held_out"]))
        print(f"  {workdir.name} step {stop}: held-out PSNR@1 {s['psnr_1']:.2f} @8 {s['psnr_8']:.2f} "
              f"@16 {s['psnr_16']:.2f} (min gain {s['min_gain']:+.3f}); {entry['seconds']:.0f} s", flush=True)
    return history


def markdown(study, base, steps, rows) -> str:
    lines = [
        f"Study `{study}`: `{base}`, {steps} steps, same seed and data order; deterministic reconstructions, "
        "mean PSNR (dB) over held-out 256x256 crops (train = six crops of the training photographs).",
        "",
        "| variant | overrides | step | PSNR@1 | @2 | @4 | @8 | @16 | gain 1->8 | gain 8->16 | min gain/iter | "
        "train PSNR@1 | train @16 | train gain 8->16 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for entry in row["history"]:
            h = summarise(np.asarray(entry["held_out"]))
            t = summarise(np.asarray(entry["train"]))
            lines.append(
                f"| {row['variant']} | `{' '.join(row['overrides']) or '-'}` | {entry['step']} | {h['psnr_1']:.2f} | "
                f"{h['psnr_2']:.2f} | {h['psnr_4']:.2f} | {h['psnr_8']:.2f} | {h['psnr_16']:.2f} | "
                f"{h['gain_1_8']:+.2f} | {h['gain_8_16']:+.2f} | {h['min_gain']:+.3f} | {t['psnr_1']:.2f} | "
                f"{t['psnr_16']:.2f} | {t['gain_8_16']:+.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(study, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, row in enumerate(rows):
        colour = f"C{i}"
        last = row["history"][-1]
        T = len(last["held_out"])
        a.plot(range(1, T + 1), last["held_out"], "-o", ms=3, color=colour, label=f"{row['variant']} held-out")
        a.plot(range(1, T + 1), last["train"], "--", color=colour, alpha=0.6, label=f"{row['variant']} train")
        steps = [e["step"] for e in row["history"]]
        for t, style in ((1, ":"), (8, "--"), (T, "-")):
            b.plot(steps, [e["held_out"][t - 1] for e in row["history"]], style, marker=".", color=colour,
                   label=f"{row['variant']} t={t}")
    a.set_xlabel("iteration")
    a.set_ylabel("PSNR (dB)")
    a.set_title(f"{study}: PSNR per iteration at the last step")
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
    b.set_xlabel("training step")
    b.set_ylabel("held-out PSNR (dB)")
    b.set_title("held-out PSNR at iterations 1, 8, 16 vs training steps")
    b.grid(alpha=0.3)
    b.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=sorted(STUDIES))
    parser.add_argument("--variants", nargs="*", help="only these variants of the study")
    parser.add_argument("--config", default="johnston2018:tiny")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--runs", default="/work/runs/rnn_quality")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parents[1] / "results" / "rnn_quality"))
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--config-override", action="append", default=[], dest="extra",
                        help="a key=value override applied to every variant (repeatable)")
    args = parser.parse_args(argv)
    if args.list or not args.study:
        for name, variants in STUDIES.items():
            print(name + ": " + ", ".join(f"{v} {o}" for v, o in variants))
        return
    crops = heldout_and_train_crops()
    print(f"held-out crops: {', '.join(crops[0])}; {len(crops[2])} training crops", flush=True)
    tag = args.config.replace(":", "_")
    rows = []
    for variant, overrides in STUDIES[args.study]:
        if args.variants and variant not in args.variants:
            continue
        overrides = list(args.extra) + overrides
        # The unchanged config is every study's baseline: one shared run (same seed, same data order).
        workdir = pathlib.Path(args.runs) / (f"{tag}_baseline" if not overrides else f"{tag}_{args.study}/{variant}")
        history = run_variant(args.config, overrides, workdir, args.steps, args.eval_every, crops)
        rows.append({"variant": variant, "overrides": overrides, "history": history,
                     "train_metrics": read_train_metrics(workdir)[-1:] or None})
    out = pathlib.Path(args.out) / args.study
    out.mkdir(parents=True, exist_ok=True)
    result = {"study": args.study, "config": args.config, "steps": args.steps, "held_out": crops[0], "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    text = markdown(args.study, args.config, args.steps, rows)
    (out / "results.md").write_text(text)
    plot(args.study, rows, out / "psnr_per_iteration.png")
    print(text)


if __name__ == "__main__":
    main()
