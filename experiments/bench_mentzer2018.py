"""Encode/decode seconds of mentzer2018 on a 768x512 image, split into parts, and the per-symbol baseline.

    python experiments/bench_mentzer2018.py                       # paper-size model (K = 32, L = 6), random weights
    python experiments/bench_mentzer2018.py --shipped             # the shipped model as well
    python experiments/bench_mentzer2018.py --json out.json --md out.md

For each model (each in its own subprocess, so its peak memory is its own):

* encode: encoder network (+ mask + quantizer), the context model's ONE dense pass, the integer tables
  (`categorical_frequencies`), the range coder (the schedule walker over 346 fronts), the count-map side part;
* decode: the count map, the wavefront (one cached jitted step per front: the context model), the tables,
  the range decoder (host, per front), the stream check (re-encode), the decoder network, each timed on its
  own (parts measured apart need not add up to the whole exactly on a shared machine);
* the official code's way: one context-model call per symbol on its (5, 9, 9) context block (spec 9), timed
  on a sample of calls and extrapolated to every symbol of the image;
* the fp32 matmul rate measured in the same process (the machine may be shared: read the seconds with it).

A benchmark script, not a test: it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

KODAK_SHAPE = (512, 768)


def _median(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _matmul_gflops():
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(jnp.dot)
    seconds = _median(lambda: f(a, a).block_until_ready(), 3)
    return 2 * 2048**3 / seconds / 1e9


def measure(which: str, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lcomp import configs, container, models
    from lcomp.codecs import registry
    from lcomp.entropy.context3d import PAD, input_values, pad_value
    from lcomp.entropy import schedules
    from lcomp.entropy.range_coding import SymbolEncoder
    from lcomp.entropy.side_info import decode_integer_map, encode_integer_map, mask_from_counts

    if which == "shipped":
        model = models.load_shipped("mentzer2018")
        codec, v = model.codec, model.variables
    else:
        cfg = configs.load_config("mentzer2018")
        codec = registry.create(cfg.codec, cfg.model)
        v = jax.jit(lambda k: codec.init(k, {"image": np.zeros((1, 32, 32, 3), np.uint8)}))(jax.random.key(0))
        v = jax.tree.map(np.asarray, v)
    h, w = KODAK_SHAPE
    rng = np.random.default_rng(0)
    image = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    if which == "shipped":  # a photograph: the shipped model's mask then behaves as on real images
        from lcomp import data

        photo = data.EmbeddedSource(split="eval")[0]
        image = np.ascontiguousarray(np.pad(photo, ((0, max(h - photo.shape[0], 0)), (0, max(w - photo.shape[1], 0)), (0, 0)), mode="reflect")[:h, :w])
    ae, stats = v["params"]["autoencoder"], v["state"]["batch_stats"]
    cm = v["params"]["context_model"]
    centers = jnp.asarray(ae["centers"])
    out = {"model": which, "gflops_matmul": _matmul_gflops()}

    blob = codec.compress(v, image).data
    codec.decompress(v, blob)
    out["encode_seconds"] = _median(lambda: codec.compress(v, image), repeats)
    out["decode_seconds"] = _median(lambda: codec.decompress(v, blob), repeats)
    out["bytes"] = len(blob)
    out["bpp"] = 8 * len(blob) / (h * w)

    # --- encode, part by part ---
    x = jnp.asarray(image)[None]
    out["enc_network"] = _median(lambda: jax.block_until_ready(codec._analyse(ae, stats, x)), repeats)
    symbols, sent, counts = codec.analyse(v, image)
    zero = codec.zero_symbol(ae["centers"])
    full = jnp.asarray(np.where(sent, symbols, zero))[None]
    out["enc_context_model"] = _median(lambda: jax.block_until_ready(codec._dense_index(cm, centers, full)), repeats)
    index = np.asarray(codec._dense_index(cm, centers, full))[0]
    out["enc_tables"] = _median(lambda: codec.context.frequencies(index[sent]), repeats)
    dense = codec.dense_tables(v, sent)(symbols)
    schedule = codec.schedule(symbols.shape)
    out["enc_range_coder"] = _median(
        lambda: schedules.encode(schedule, symbols, dense_tables=lambda s: dense, sent=sent, precision=16), repeats)
    out["enc_mask"] = _median(lambda: encode_integer_map(counts, codec.K + 1), repeats)

    # --- decode, part by part ---
    box = container.unpack(blob)
    out["dec_mask"] = _median(lambda: decode_integer_map(box.part("mask"), counts.shape, codec.K + 1), repeats)
    from lcomp.entropy.context3d import Wavefront, front_range

    def wavefront_only():
        wave = Wavefront(codec.context, cm, np.asarray(ae["centers"]), symbols.shape, 0.0)
        for t in range(wave.first, wave.last + 1):
            wave.step(t, symbols[tuple(wave.positions(t - 1))])

    out["dec_context_model"] = _median(wavefront_only, repeats)
    out["dec_fronts"] = front_range(*symbols.shape)[1] - front_range(*symbols.shape)[0] + 1
    volume = np.moveaxis(np.where(sent, symbols, zero), 0, -1)[None]
    out["dec_network"] = _median(lambda: jax.block_until_ready(codec._synthesise(ae, stats, jnp.asarray(volume))),
                                 repeats)
    # The range decoder on its own: the same passes, with every table looked up from the dense pass's (which
    # equal the wavefront's); then the stream check (one re-encode of the decoded symbols).
    streams = {"symbols": box.part("symbols")}
    lookup = lambda _symbols, _pass, where: dense[where]
    out["dec_tables"] = out["enc_tables"]  # the same integer-table function over the same symbols
    out["dec_range_coder"] = _median(lambda: schedules.decode(schedule, streams, lookup, sent=sent, precision=16),
                                     repeats)
    order = [dense[p.where & sent] for p in schedule.passes]
    values = np.concatenate([symbols[p.where & sent] for p in schedule.passes])
    freqs = np.concatenate(order)

    def check():
        enc = SymbolEncoder(16)
        enc.encode(values.astype(np.int32), freqs=freqs)
        return enc.to_bytes()

    out["dec_check"] = _median(check, repeats)
    out["symbols"] = int(symbols.size)
    out["symbols_sent"] = int(sent.sum())
    out["latent_shape"] = list(symbols.shape)

    # --- the official way: one context-model call per symbol on its (5, 9, 9) block ---
    depth, hh, ww = symbols.shape
    padded = np.pad(np.asarray(input_values(centers, jnp.asarray(np.where(sent, symbols, zero)))),
                    PAD, constant_values=float(pad_value(centers)))

    @jax.jit
    def block_logits(p, block):
        # The (5, 9, 9) block of the padded volume around one symbol, through the four VALID layers -> (1, 1, 1).
        from lcomp.entropy import context3d as m

        x = m.exact.exact_input(block[None, ..., None], m.INPUT_BITS, m.INPUT_LIMIT)
        a1 = m.exact.relu_to_grid(m.exact.conv(x, p["conv_a"], padding="VALID", taps=m.TAPS_A))
        a2 = m.exact.relu_to_grid(m.exact.conv(a1, p["res_b1"], padding="VALID", taps=m.TAPS_B))
        a3 = m.exact.conv(a2, p["res_b2"], padding="VALID", taps=m.TAPS_B)
        a3 = m._signed_to_grid(m.exact.add(a3, a1.map(m._crop)))
        return m.exact.conv(a3, p["logits"], padding="VALID", taps=m.TAPS_B).value

    sample = [(int(rng.integers(0, depth)), int(rng.integers(0, hh)), int(rng.integers(0, ww))) for _ in range(300)]
    blocks = [jnp.asarray(padded[d : d + 5, r : r + 9, c : c + 9]) for d, r, c in sample]
    jax.block_until_ready(block_logits(cm, blocks[0]))
    start = time.perf_counter()
    for b in blocks:
        np.asarray(block_logits(cm, b))  # each call's result goes to the host (the coder needs it)
    per_call = (time.perf_counter() - start) / len(blocks)
    out["per_symbol_call_seconds"] = per_call
    out["per_symbol_decode_seconds_extrapolated"] = per_call * symbols.size
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
        "| model | latent (K, h, w), sent | bpp | matmul GFLOP/s | encode s | = network + context model + tables + range coder + mask | decode s | = mask + wavefront (fronts) + tables + range decoder + check + network | one call per symbol (extrapolated) | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {tuple(r['latent_shape'])}, {r['symbols_sent'] / r['symbols']:.0%} | {r['bpp']:.3f} "
            f"| {r['gflops_matmul']:.0f} | {r['encode_seconds']:.2f} "
            f"| {r['enc_network']:.2f} + {r['enc_context_model']:.2f} + {r['enc_tables']:.2f} + {r['enc_range_coder']:.2f} + {r['enc_mask']:.2f} "
            f"| {r['decode_seconds']:.2f} | {r['dec_mask']:.2f} + {r['dec_context_model']:.2f} ({r['dec_fronts']}) + "
            f"{r['dec_tables']:.2f} + {r['dec_range_coder']:.2f} + {r['dec_check']:.2f} + {r['dec_network']:.2f} "
            f"| {r['per_symbol_decode_seconds_extrapolated']:.0f} s ({1e3 * r['per_symbol_call_seconds']:.2f} ms x {r['symbols']}) "
            f"| {r['peak_rss_mb']:.0f} |"
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
