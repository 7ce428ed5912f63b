"""How the recurrent coder's decoder states evolve over iterations (conv-GRU cells only).

    python experiments/rnn_quality/decoder_state.py --checkpoint shipped --out experiments/results/rnn_quality/decoder_state_shipped

For held-out crops (the embedded eval photographs; 256x256 centre crops) and each iteration t, per decoder RNN
layer: the mean update gate z (h' = h + z (candidate - h): z ~ 0 freezes the layer), the relative change of
its state ||h_t - h_{t-1}|| / ||h_{t-1}||, the fraction of saturated state entries (|h| > 0.95), and, for the
image, the RMS change of the reconstruction against the RMS of what is still wrong (8-bit units). Later
iterations that change the image without shrinking the residual add noise, not detail.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from diagnose import heldout_images, load  # noqa: E402

from lcomp.codecs.rnn.codec import to_float  # noqa: E402
from lcomp.codecs.rnn.network import RNNDecoder  # noqa: E402
from lcomp.quantize import binarize  # noqa: E402


def probe(model, image):
    net = model.codec.net
    if net.config.cell != "gru":
        raise SystemExit("decoder_state.py reads conv-GRU gates; this model has cell=" + net.config.cell)
    p = model.variables["params"]["autoencoder"]
    x = to_float(image[None])
    n, h, w, _ = x.shape
    st = net.initial_state(n, h, w)
    enc, dec = st["encoder"], st["decoder"]
    prev, gain = net._initial_carry(n, h, w)

    @jax.jit
    def dec_step(dstates, bits):
        feats = net.decoder.apply({"params": p["decoder"]}, bits, method=RNNDecoder.embed)
        (new, top), inter = net.decoder.apply({"params": p["decoder"]}, dstates, feats, method=RNNDecoder.step,
                                              capture_intermediates=True, mutable=["intermediates"])
        zs = []
        for i in range(len(new)):
            c = inter["intermediates"][f"rnn_{i}"]
            xg, hg = c["input_conv"]["__call__"][0], c["hidden_gate_conv"]["__call__"][0]
            k = xg.shape[-1] // 3
            zs.append(jnp.mean(jax.nn.sigmoid(xg[..., :k] + hg[..., :k])))
        return new, top, jnp.stack(zs)

    rows = []
    for t in range(net.config.iterations):
        extra = net._extra_steps(t)
        enc, u = net.encoder_iteration(p, enc, net._encoder_input(x, prev, gain), extra)
        b = binarize(u, stochastic=False)
        for _ in range(extra):
            dec, _, _ = dec_step(dec, b)
        before = dec
        dec, top, z = dec_step(dec, b)
        decoded = net.decoder.apply({"params": p["decoder"]}, top, method=RNNDecoder.to_image)
        new_prev, gain = net._reconstruct(p, prev, gain, decoded)
        rows.append({
            "z": np.asarray(z).tolist(),
            "relative_state_change": [float(jnp.linalg.norm(a - c) / (jnp.linalg.norm(c) + 1e-9)) for a, c in zip(dec, before)],
            "saturated": [float(jnp.mean(jnp.abs(a) > 0.95)) for a in dec],
            "image_change_rms": float(jnp.sqrt(jnp.mean((new_prev - prev) ** 2)) * 255),
            "residual_rms": float(jnp.sqrt(jnp.mean((x - new_prev) ** 2)) * 255),
        })
        prev = new_prev
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="shipped")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    model = load(args.checkpoint)
    per_image = {name: probe(model, image) for name, image in heldout_images(256, 0)}
    T = len(next(iter(per_image.values())))
    mean = lambda key, t: np.mean([rows[t][key] for rows in per_image.values()], axis=0)
    layers = len(next(iter(per_image.values()))[0]["z"])
    head = " | ".join(f"z D{i + 1}" for i in range(layers)) + " | " + " | ".join(
        f"dh/h D{i + 1}" for i in range(layers)) + " | " + " | ".join(f"sat D{i + 1}" for i in range(layers))
    lines = [f"Decoder states of `{args.checkpoint}` ({model.source}, model {model.fingerprint.hex()}); mean over {', '.join(per_image)} "
             "(256x256 centre crops).", "",
             f"| t | {head} | image change RMS | residual RMS |", "|" + "---|" * (3 * layers + 3)]
    for t in range(T):
        cells = [f"{v:.3f}" for v in mean("z", t)] + [f"{v:.3f}" for v in mean("relative_state_change", t)] + [
            f"{v:.3f}" for v in mean("saturated", t)]
        lines.append(f"| {t + 1} | " + " | ".join(cells) + f" | {mean('image_change_rms', t):.2f} | "
                     f"{mean('residual_rms', t):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "decoder_state.json").write_text(json.dumps({"checkpoint": args.checkpoint, "per_image": per_image}, indent=1))
        (out / "decoder_state.md").write_text(text)


if __name__ == "__main__":
    main()
