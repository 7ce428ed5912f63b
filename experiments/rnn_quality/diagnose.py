"""Why do the recurrent coder's later iterations add so little?  Per-iteration diagnostics of one model.

    python experiments/rnn_quality/diagnose.py --checkpoint shipped            # lcomp/zoo/johnston2018
    python experiments/rnn_quality/diagnose.py --checkpoint /work/runs/j18_v2 --out DIR

For held-out images (the two embedded eval photographs and, when present, a few Kodak images; centre crops
so it runs in a minute on one core) and for one training batch, per iteration t = 1..T:

* PSNR of the deterministic (test-time) reconstruction, and its gain over iteration t-1;
* the binarizer pre-activation u in training mode: mean |u|, the fraction with |u| < 0.1 and < 0.3, and
  the expected fraction of bits whose stochastic training value differs from sign(u), mean (1 - |u|) / 2
  (0.5 = every bit a coin flip);
* the RMS of the encoder's input (the residual r_{t-1}, in 8-bit units);
* open loop: how many dB the final (T-iteration) PSNR loses when only iteration t's bits are set to 0 (the
  neutral value) before decoding: ~0 means the decoder ignores that iteration's bits;
* on the training batch: the weight the training loss gives iteration t (the mean SSIM weight
  (1 - SSIM) / S_bar when the loss is SSIM-weighted, 1 for plain L1) and the norm of the gradient of
  iteration t's loss term with respect to the autoencoder's parameters (how much iteration t trains).

Writes ``diagnose.json`` and ``diagnose.md`` to ``--out`` (default: print only).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lcomp import data, losses, metrics, models
from lcomp.codecs.rnn.codec import to_float, to_u8
from lcomp.quantize import binarize


def load(checkpoint: str):
    if checkpoint == "shipped":
        return models.load_shipped("johnston2018")
    return models.load_model(checkpoint)


def heldout_images(crop: int, kodak_count: int):
    out = []
    for name, image in data.eval_images(data.EmbeddedSource(split="eval")):
        out.append((name, image))
    if kodak_count:
        try:
            kodak = data.kodak_source()
            stride = max(1, len(kodak) // kodak_count)  # spread over the set: kodim01, 07, 13, 19 of 24
            for index in range(0, min(kodak_count * stride, len(kodak)), stride):
                out.append((f"kodim{index + 1:02d}", kodak[index]))
        except Exception as error:  # Kodak absent: the embedded eval photographs only
            print(f"diagnose: no Kodak images ({error})", file=sys.stderr)
    crops = []
    for name, image in out:
        h, w = image.shape[:2]
        s = min(crop, h - h % 16, w - w % 16)
        top, left = (h - s) // 2, (w - s) // 2
        crops.append((name, np.ascontiguousarray(image[top : top + s, left : left + s])))
    return crops


def instrumented(net, params, x, key, train: bool):
    """The joint scan of ``run_iterations`` with the binarizer's ``u`` and the encoder input returned too."""
    n, h, w, _ = x.shape
    states = net.initial_state(n, h, w)
    previous, gain = net._initial_carry(n, h, w)
    enc, dec = states["encoder"], states["decoder"]
    us, recons, rms = [], [], []
    for t in range(net.config.iterations):
        extra = net._extra_steps(t)
        encoder_input = net._encoder_input(x, previous, gain)
        rms.append(jnp.sqrt(jnp.mean(encoder_input**2)) * 255.0)
        enc, u = net.encoder_iteration(params, enc, encoder_input, extra)
        bits = binarize(u, jax.random.fold_in(key, t) if train else None, stochastic=train)
        dec, decoded = net.decoder_iteration(params, dec, bits, extra)
        previous, gain = net._reconstruct(params, previous, gain, decoded)
        us.append(u)
        recons.append(previous)
    return jnp.stack(us), jnp.stack(recons), jnp.stack(rms)


def image_stats(net, params, image, key):
    x = to_float(image[None])
    u_det, rec_det, rms = jax.jit(lambda p, x: instrumented(net, p, x, key, False))(params, x)
    u_tr, rec_tr, _ = jax.jit(lambda p, x: instrumented(net, p, x, key, True))(params, x)
    psnr = [float(metrics.psnr(image, to_u8(r[0]))) for r in rec_det]
    psnr_train = [float(metrics.psnr(image, to_u8(r[0]))) for r in rec_tr]
    a = np.abs(np.asarray(u_tr)).reshape(len(psnr), -1)
    # Open loop: how much does the final image rely on iteration t's bits?  Zero them, decode all T.
    bits = jnp.where(u_det >= 0, 1.0, -1.0)
    decode_last = jax.jit(lambda p, b: net.decode_iterations(p, b)[-1])
    drop = []
    for t in range(len(psnr)):
        zeroed = bits.at[t].set(0.0)
        drop.append(psnr[-1] - float(metrics.psnr(image, to_u8(decode_last(params, zeroed)[0]))))
    return {
        "psnr": psnr,
        "psnr_train_mode": psnr_train,
        "mean_abs_u": a.mean(1).tolist(),
        "frac_abs_u_lt_0.1": (a < 0.1).mean(1).tolist(),
        "frac_abs_u_lt_0.3": (a < 0.3).mean(1).tolist(),
        "expected_flip_fraction": ((1 - a) / 2).mean(1).tolist(),
        "encoder_input_rms": np.asarray(rms).tolist(),
        "psnr_drop_if_zeroed": drop,
    }


def training_signal(model, key, batch_step: int = 0):
    """Per-iteration loss weight and gradient norm of each iteration's loss term, on one training batch."""
    cfg = model.config
    codec = model.codec
    net = codec.net
    source = data.make_source({"source": cfg.data.source, "split": cfg.data.get("split", "train")})
    batches = data.TrainBatches(source, cfg.data.patch_size, cfg.data.batch_size, cfg.data.seed,
                                permute_channels=cfg.data.get("permute_channels", False))
    x = to_float(batches.batch(batch_step)["image"])
    params = model.variables["params"]["autoencoder"]
    state = model.variables["state"]
    ssim_loss = codec.loss_name == "ssim_weighted_l1"
    weighting = codec.config.get("iteration_weighting", "uniform") if hasattr(codec.config, "get") else "uniform"

    def per_iteration_terms(p):
        out = net.run_iterations(p, x, key=key, train=True)
        err = jnp.abs(out.reconstructions - x[None])  # (T, N, H, W, C)
        if ssim_loss:
            _, _, w = losses.ssim_weighted_l1(x, out.reconstructions, state["ssim"],
                                              weight_by=codec.config.get("ssim_weight_by", "dissimilarity"))
            b = 8
            T, N, H, W, C = err.shape
            eb = err.reshape(T, N, H // b, b, W // b, b, C)
            terms = jnp.mean(w[:, :, :, None, :, None, None] * eb, axis=(1, 2, 3, 4, 5, 6))
            weights = jnp.mean(w, axis=(1, 2, 3))
        else:
            terms = jnp.mean(err, axis=(1, 2, 3, 4))
            weights = jnp.ones(err.shape[0])
        return terms, (weights, jnp.mean(err, axis=(1, 2, 3, 4)))

    terms, (weights, l1) = jax.jit(per_iteration_terms)(params)
    jac = jax.jit(jax.jacrev(lambda p: per_iteration_terms(p)[0]))(params)
    leaves = jax.tree_util.tree_leaves(jac)
    grad_norm = jnp.sqrt(sum(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1) for leaf in leaves))
    return {
        "loss_weight": np.asarray(weights).tolist(),
        "loss_term": np.asarray(terms).tolist(),
        "l1_255": (np.asarray(l1) * 255).tolist(),
        "grad_norm": np.asarray(grad_norm).tolist(),
        "weighting": weighting,
    }


def run(checkpoint: str, crop: int = 256, kodak_count: int = 4, seed: int = 0, grad: bool = True):
    model = load(checkpoint)
    net = model.codec.net
    params = model.variables["params"]["autoencoder"]
    key = jax.random.key(seed)
    per_image = {}
    for name, image in heldout_images(crop, kodak_count):
        per_image[name] = image_stats(net, params, image, key)
        print(f"  {name}: PSNR " + " ".join(f"{p:.2f}" for p in per_image[name]["psnr"]), flush=True)
    mean = {k: np.mean([v[k] for v in per_image.values()], axis=0).tolist() for k in next(iter(per_image.values()))}
    result = {"checkpoint": checkpoint, "source": model.source, "fingerprint": model.fingerprint.hex(), "crop": crop, "images": list(per_image),
              "per_image": per_image, "mean": mean}
    if grad:
        result["training_batch"] = training_signal(model, key)
    return result


def markdown(result) -> str:
    m = result["mean"]
    tb = result.get("training_batch")
    T = len(m["psnr"])
    lines = [
        f"Diagnostics of `{result['checkpoint']}` ({result['source']}, model {result['fingerprint']}); held-out {result['crop']}px centre crops: "
        + ", ".join(result["images"]) + ".",
        "",
        "| t | PSNR (dB) | gain | PSNR, train-mode bits | mean abs(u) | abs(u)<0.1 | abs(u)<0.3 | expected flips | "
        "encoder input RMS | PSNR@T drop if bits of t zeroed | loss weight | L1 (8-bit) | grad norm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in range(T):
        gain = m["psnr"][t] - (m["psnr"][t - 1] if t else 0.0)
        row = [str(t + 1), f"{m['psnr'][t]:.2f}", f"{gain:+.2f}" if t else "", f"{m['psnr_train_mode'][t]:.2f}",
               f"{m['mean_abs_u'][t]:.3f}", f"{m['frac_abs_u_lt_0.1'][t]:.3f}", f"{m['frac_abs_u_lt_0.3'][t]:.3f}",
               f"{m['expected_flip_fraction'][t]:.3f}", f"{m['encoder_input_rms'][t]:.2f}",
               f"{m['psnr_drop_if_zeroed'][t]:.3f}" if "psnr_drop_if_zeroed" in m else ""]
        if tb:
            row += [f"{tb['loss_weight'][t]:.3f}", f"{tb['l1_255'][t]:.2f}", f"{tb['grad_norm'][t]:.4f}"]
        else:
            row += ["", "", ""]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"PSNR gain 1->8: {m['psnr'][min(7, T - 1)] - m['psnr'][0]:.2f} dB, 8->16: "
              f"{m['psnr'][-1] - m['psnr'][min(7, T - 1)]:.2f} dB, 1->16: {m['psnr'][-1] - m['psnr'][0]:.2f} dB."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="shipped", help="'shipped', a workdir or an exported model folder")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--kodak", type=int, default=4, help="how many Kodak images to add (0: none)")
    parser.add_argument("--no-grad", action="store_true", help="skip the training-batch gradient analysis")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = run(args.checkpoint, args.crop, args.kodak, grad=not args.no_grad)
    text = markdown(result)
    print(text)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "diagnose.json").write_text(json.dumps(result, indent=1))
        (out / "diagnose.md").write_text(text)


if __name__ == "__main__":
    main()
