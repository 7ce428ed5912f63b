"""Encode/decode seconds of li2018 on a 768x512 image, split into network, context models and range coder.

    python experiments/bench_li2018.py                  # paper-size network (n = 64, L = 16), random weights
    python experiments/bench_li2018.py --shipped        # the shipped model as well
    python experiments/bench_li2018.py --json out.json --md out.md

For each model (each in its own subprocess, so its peak memory is its own):

* encode: the encoder network (+ binarizer and map level), the context models' ONE dense pass each (map
  bit-planes and code) with their integer tables, the range coder (the schedule walker over the fronts);
* decode: the wavefronts (one cached jitted step per front) of the map and of the code, the range decoder
  (host, per front), the stream checks (re-encode), the decoder network, each timed on its own (parts measured
  apart need not add up to the whole exactly on a shared machine);
* the fp32 matmul rate measured in the same process (the machine may be shared: read the seconds with it).

Random weights make p about 0.5 everywhere, so about half the code channels are kept (the table says how
many): the decode cost of the code wavefront depends on the volume's shape, not on how many bits are kept.
A benchmark script, not a test: it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

KODAK_SHAPE = (512, 768)


def _median(fn, repeats):
    from lcomp.bench import _timed  # median of `repeats` calls after one warm-up: the library's bench timer

    return _timed(fn, repeats)


def measure(which: str, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lcomp import configs, container, data, models
    from lcomp.bench import _peak_rss_mb, bench_matmul
    from lcomp.codecs import registry
    from lcomp.codecs.li2018 import importance
    from lcomp.codecs.li2018.codec import UNSENT, VALUES
    from lcomp.entropy import schedules
    from lcomp.entropy.context3d import Wavefront, front_range

    if which == "shipped":
        model = models.load_shipped("li2018")
        codec, v = model.codec, model.variables
    else:
        cfg = configs.load_config("li2018")
        codec = registry.create(cfg.codec, cfg.model)
        v = jax.jit(lambda k: codec.init(k, {"image": np.zeros((1, 32, 32, 3), np.uint8)}))(jax.random.key(0))
        v = jax.tree.map(np.asarray, v)
    h, w = KODAK_SHAPE
    photo = data.EmbeddedSource(split="eval")[0]
    pads = ((0, max(h - photo.shape[0], 0)), (0, max(w - photo.shape[1], 0)), (0, 0))
    image = np.ascontiguousarray(np.pad(photo, pads, mode="reflect")[:h, :w])
    ae, cm = v["params"]["autoencoder"], v["params"]["context_model"]
    out = {"model": which, "gflops_matmul": bench_matmul(quick=True)["matmul_gflops"]}

    blob = codec.compress(v, image).data
    codec.decompress(v, blob)
    out["encode_seconds"] = _median(lambda: codec.compress(v, image), repeats)
    out["decode_seconds"] = _median(lambda: codec.decompress(v, blob), repeats)
    box = container.unpack(blob)
    out["bytes"] = len(blob)
    out["map_bytes"] = len(box.part("map"))
    out["code_bytes"] = len(box.part("code"))
    out["bpp"] = 8 * len(blob) / (h * w)

    # --- encode, part by part ---
    x = jnp.asarray(image)[None]
    out["enc_network"] = _median(lambda: jax.block_until_ready(codec._analyse(ae, x)), repeats)
    bits, q, kept = codec.analyse(v, image)
    planes = importance.to_planes(q, codec.levels)
    all_sent = np.ones(planes.shape, bool)
    volumes = (("map", codec.map_model, cm["map"], planes, all_sent), ("code", codec.code_model, cm["code"], bits, kept))
    out["enc_context_model"] = sum(
        _median(lambda: vol.dense_tables(params, sent)(b), repeats) for _, vol, params, b, sent in volumes)
    dense = {name: vol.dense_tables(params, sent)(b) for name, vol, params, b, sent in volumes}

    def range_code():
        for name, vol, _, b, sent in volumes:
            schedules.encode(vol.schedule(b.shape, name), b, dense_tables=lambda s, d=dense[name]: d, sent=sent,
                             precision=16)

    out["enc_range_coder"] = _median(range_code, repeats)

    # --- decode, part by part ---
    def wavefronts():
        for _, vol, params, b, sent in volumes:
            wave = Wavefront(vol.model, params, VALUES, b.shape, unsent_value=0.0, pad=0.0)
            for t in range(wave.first, wave.last + 1):
                d, hh, ww = wave.positions(t - 1)
                wave.step(t, np.where(sent[d, hh, ww], b[d, hh, ww], UNSENT))

    out["dec_context_model"] = _median(wavefronts, repeats)
    out["dec_fronts"] = sum(front_range(*b.shape)[1] - front_range(*b.shape)[0] + 1 for _, _, _, b, _ in volumes)

    def range_decode():
        for name, vol, _, b, sent in volumes:
            table = dense[name]
            schedules.decode(vol.schedule(b.shape, name), {name: box.part(name)},
                             lambda _s, _p, where, t=table: t[where], sent=sent, precision=16)

    out["dec_range_coder"] = _median(range_decode, repeats)
    # The stream check re-encodes the decoded bits with the recorded tables: the cost of the encoder's coder.
    out["dec_check"] = out["enc_range_coder"]
    code = jnp.asarray(np.moveaxis(bits, 0, -1), jnp.float32)[None]
    out["dec_network"] = _median(lambda: jax.block_until_ready(codec._synthesise(ae, code)), repeats)
    out["code_shape"] = list(bits.shape)
    out["kept_fraction"] = float(kept.mean())
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _run(which: str, repeats: int) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, __file__, "--worker", which, "--repeats", str(repeats)], env=env,
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    raise RuntimeError(proc.stderr[-3000:])


def table(rows) -> str:
    lines = [
        "| model | code (n, h, w), kept | bpp (map + code bytes) | matmul GFLOP/s | encode s | = network + context models + range coder | decode s | = wavefronts (fronts) + range decoder + check + network | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {tuple(r['code_shape'])}, {r['kept_fraction']:.0%} | {r['bpp']:.3f} ({r['map_bytes']} + {r['code_bytes']}) "
            f"| {r['gflops_matmul']:.0f} | {r['encode_seconds']:.2f} "
            f"| {r['enc_network']:.2f} + {r['enc_context_model']:.2f} + {r['enc_range_coder']:.2f} "
            f"| {r['decode_seconds']:.2f} | {r['dec_context_model']:.2f} ({r['dec_fronts']}) + {r['dec_range_coder']:.2f} "
            f"+ {r['dec_check']:.2f} + {r['dec_network']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shipped", action="store_true", help="also time the shipped model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("BENCH " + json.dumps(measure(args.worker, args.repeats)))
        return 0
    rows = [_run("paper", args.repeats)]
    if args.shipped:
        rows.append(_run("shipped", args.repeats))
    text = table(rows)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
