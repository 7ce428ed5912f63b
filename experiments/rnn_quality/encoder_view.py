"""What part of the residual can the recurrent coder's encoder perceive at each iteration?

    python experiments/rnn_quality/encoder_view.py --checkpoint shipped --out experiments/results/rnn_quality/encoder_view_shipped
    python experiments/rnn_quality/encoder_view.py --checkpoint /work/runs/rnn_quality/johnston2018_tiny_baseline

Hypothesis: every iteration the encoder reads its input (the residual r_{t-1}) only through its first layers,
E-Conv (a linear 3x3 stride-2 convolution, no bias, no activation) and E-RNN#1 (a conv-GRU whose new state has
``encoder_rnn_features[0]`` channels at H/4). For a small residual the GRU responds almost linearly, so per
iteration the encoder perceives the residual through the Jacobian J_t of E-RNN#1's new state (at that
iteration's state) with respect to its input image. When J_t has fewer rows per position than the residual has
values (E-Conv: 12 values per H/2 position; E-RNN#1: 48 per H/4 position), part of the residual is in J_t's
null space: it can never be coded, and the iterations converge to a floor set by that part.

For each iteration t it solves ``min ||r - J^T y||`` (conjugate gradients on ``J J^T``, with jvp/vjp) and
reports the fraction of the residual's energy OUTSIDE the row space of

* ``econv``: E-Conv alone (exact: it is linear), and
* ``rnn1``: E-Conv + E-RNN#1, linearised at iteration t's state and input;

with the same fractions for white noise of the same size (the dimension-counting baseline), on 128x128 crops.
An invisible fraction that grows with t towards 1 means the residual left over is what the encoder cannot see.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from diagnose import heldout_images, load  # noqa: E402

from lcomp.codecs.rnn.codec import to_float  # noqa: E402
from lcomp.codecs.rnn.network import RNNEncoder  # noqa: E402
from lcomp.quantize import binarize  # noqa: E402


def invisible_fraction(f, x0, r, iters: int = 300):
    """Fraction of ||r||^2 outside the row space of J = df/dx at x0 (least squares via CG on J J^T)."""
    y0, vjp = jax.vjp(f, x0)
    jt = lambda y: vjp(y)[0]
    # J v as the vjp of the linear map y -> J^T y (the convolutions have custom VJPs, so no forward mode)
    _, jt_vjp = jax.vjp(jt, jnp.zeros_like(y0))
    jvp = lambda v: jt_vjp(v)[0]
    b = jvp(r)
    scale = jnp.sqrt(jnp.mean(b**2)) + 1e-12
    y, _ = cg(lambda y: jvp(jt(y)) + 1e-6 * scale * y, b, maxiter=iters, tol=1e-6)
    visible = jt(y)
    # The projection of r onto the row space is the visible part; the rest is invisible.
    return jnp.sum((r - visible) ** 2) / jnp.sum(r**2)


def run(checkpoint: str, crop: int = 128, kodak: int = 2):
    model = load(checkpoint)
    net = model.codec.net
    params = model.variables["params"]["autoencoder"]

    def embed(p, v):
        return net.encoder.apply({"params": p["encoder"]}, v, method=RNNEncoder.embed)

    def rnn1(p, s0, v):
        return net.encoder.apply({"params": p["encoder"]}, s0, embed(p, v), method=lambda m, s, f: m.cells[0](s, f)[0])

    @jax.jit
    def fractions(p, s0, r, noise):
        out = []
        for f in (lambda v: embed(p, v), lambda v: rnn1(p, s0, v)):
            out += [invisible_fraction(f, r, r), invisible_fraction(f, r, noise)]
        return jnp.stack(out)

    @jax.jit
    def advance(p, enc_states, dec_states, previous, gain, x, t_is_first):
        r = net._encoder_input(x, previous, gain)
        extra = net.config.priming_steps if t_is_first else net.config.diffusion_steps
        enc_states, u = net.encoder_iteration(p, enc_states, r, extra)
        dec_states, decoded = net.decoder_iteration(p, dec_states, binarize(u, stochastic=False), extra)
        previous, gain = net._reconstruct(p, previous, gain, decoded)
        return enc_states, dec_states, previous, gain

    advance_first = jax.jit(lambda *a: advance.__wrapped__(*a, True))
    advance_later = jax.jit(lambda *a: advance.__wrapped__(*a, False))
    rows = {"econv": [], "econv_noise": [], "rnn1": [], "rnn1_noise": []}
    images = heldout_images(crop, kodak)
    key = jax.random.key(0)
    for name, image in images:
        x = to_float(image[None])
        n, h, w, _ = x.shape
        states = net.initial_state(n, h, w)
        enc_states, dec_states = states["encoder"], states["decoder"]
        previous, gain = net._initial_carry(n, h, w)
        per = {k: [] for k in rows}
        for t in range(net.config.iterations):
            r = net._encoder_input(x, previous, gain)
            noise = jax.random.normal(jax.random.fold_in(key, t), r.shape) * jnp.std(r)
            values = np.asarray(fractions(params, enc_states[0], r, noise))
            for k, v in zip(rows, values):
                per[k].append(float(v))
            step = advance_first if t == 0 else advance_later
            enc_states, dec_states, previous, gain = step(params, enc_states, dec_states, previous, gain, x)
            print(f"  {name} t={t + 1}: invisible econv {values[0]:.3f} (noise {values[1]:.3f})"
                  f"  rnn1 {values[2]:.3f} (noise {values[3]:.3f})", flush=True)
        for k in rows:
            rows[k].append(per[k])
    mean = {k: np.mean(v, axis=0).tolist() for k, v in rows.items()}
    return {"checkpoint": checkpoint, "source": model.source, "fingerprint": model.fingerprint.hex(), "crop": crop, "images": [n for n, _ in images],
            "network": {k: getattr(net.config, k) for k in ("encoder_conv_features", "encoder_rnn_features")},
            "per_image": rows, "mean": mean}


def markdown(result) -> str:
    m = result["mean"]
    lines = [
        f"Encoder view of `{result['checkpoint']}` ({result['source']}, model {result['fingerprint']}; E-Conv "
        f"{result['network']['encoder_conv_features']} features, E-RNN "
        f"{list(result['network']['encoder_rnn_features'])}); {result['crop']}px crops: {', '.join(result['images'])}.",
        "Fraction of the encoder input's energy (the residual r_{t-1}) outside the row space of the Jacobian of "
        "E-Conv / of E-Conv + E-RNN#1 (linearised at iteration t); 'noise' = the same for white noise.",
        "",
        "| t | invisible to E-Conv | white noise | invisible to E-RNN#1 | white noise |",
        "|---|---|---|---|---|",
    ]
    for t in range(len(m["econv"])):
        lines.append(f"| {t + 1} | {m['econv'][t]:.3f} | {m['econv_noise'][t]:.3f} | {m['rnn1'][t]:.3f} | "
                     f"{m['rnn1_noise'][t]:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="shipped")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--kodak", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = run(args.checkpoint, args.crop, args.kodak)
    text = markdown(result)
    print(text)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "encoder_view.json").write_text(json.dumps(result, indent=1))
        (out / "encoder_view.md").write_text(text)


if __name__ == "__main__":
    main()
