"""What exactness costs: the exact context model's bits against its float32 twin with the same weights.

    python experiments/mentzer2018_exactness.py --checkpoint runs/m18-small [--images DIR] [--limit N]
    python experiments/mentzer2018_exactness.py --shipped --out experiments/results/mentzer2018/exactness.md

For every image (Kodak by default) the encoder's symbols and mask are computed once; then, over the symbols a
file sends:

* `exact tables`: the ideal code length under the integer tables the range coder uses (= the file's
  estimate; the real stream is within a few words of it),
* `exact softmax`: -log2 softmax of the exact model's rounded logits (the training cross-entropy),
* `float twin`: -log2 softmax of the same layers with the raw float32 weights and inputs, plain ReLUs, no
  grids and no logit rounding (`ContextModel.float_logits`).

The cost of exactness is `exact tables / float twin - 1` (target: under 1 %).
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from lcomp.entropy.context3d import input_values, pad_value


def measure(model, image):
    codec, v = model.codec, model.variables
    ae, cm = v["params"]["autoencoder"], v["params"]["context_model"]
    centers = jnp.asarray(ae["centers"])
    symbols, sent, counts = codec.analyse(v, image)
    zero = codec.zero_symbol(ae["centers"])
    full = jnp.asarray(np.where(sent, symbols, zero))[None]
    index = np.asarray(codec._dense_index(cm, centers, full))[0]
    freqs = codec.context.frequencies(index[sent])
    chosen = freqs[np.arange(freqs.shape[0]), symbols[sent]].astype(np.float64)
    tables = float(np.sum(16.0 - np.log2(chosen)))
    exact_logits = codec.context.logits(cm, input_values(centers, full), pad_value(centers))
    softmax = float(jnp.sum(jnp.where(jnp.asarray(sent)[None], codec.context.bits(exact_logits, full), 0.0)))
    float_logits = codec._float_logits(cm, centers, full)
    log_p = jax.nn.log_softmax(float_logits, axis=-1)
    float_bits = -jnp.take_along_axis(log_p, full[..., None], axis=-1)[..., 0] / np.log(2.0)
    twin = float(jnp.sum(jnp.where(jnp.asarray(sent)[None], float_bits, 0.0)))
    return {"symbols_sent": int(sent.sum()), "exact_tables": tables, "exact_softmax": softmax, "float_twin": twin,
            "pixels": int(image.shape[0] * image.shape[1])}


def main(argv=None) -> int:
    from lcomp import data, models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--shipped", action="store_true")
    parser.add_argument("--images", default=None, help="folder of images (default: Kodak)")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    model = models.load_shipped("mentzer2018") if args.shipped else models.load_model(args.checkpoint)
    folder = pathlib.Path(args.images) if args.images else data.kodak_dir()
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if args.limit:
        paths = paths[: args.limit]
    rows = []
    for path in paths:
        r = measure(model, data.load_image(path))
        r["image"] = path.name
        rows.append(r)
        print(f"{path.name}: tables {r['exact_tables']:.0f}, exact softmax {r['exact_softmax']:.0f}, "
              f"float twin {r['float_twin']:.0f} bits ({100 * (r['exact_tables'] / r['float_twin'] - 1):+.2f} %)")
    total = {k: sum(r[k] for r in rows) for k in ("exact_tables", "exact_softmax", "float_twin", "pixels")}
    text = "\n".join([
        f"model: {model.source}; {len(rows)} images from {folder}",
        "",
        "| | bits | bpp | vs float twin |",
        "|---|---|---|---|",
        *(f"| {name} | {total[key]:.0f} | {total[key] / total['pixels']:.4f} | "
          f"{100 * (total[key] / total['float_twin'] - 1):+.2f} % |"
          for name, key in (("float twin (float32, same weights)", "float_twin"),
                            ("exact model, softmax of rounded logits", "exact_softmax"),
                            ("exact model, the coder's integer tables", "exact_tables"))),
    ])
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
