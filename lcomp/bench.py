"""`lcomp bench`: speed and memory of the recurrent coder (a benchmark that prints a table, not a test).

Measures, for the paper-size model of a config (random parameters: speed does not depend on training):

* the machine's fp32 matrix-multiply GFLOP/s (the yardstick),
* training steps/s on 32x32 patches, batch 32, all iterations unrolled (GRU, and LSTM for comparison with
  PyTorch ports),
* encode and decode seconds of a Kodak-sized image (768x512) at 4, 8 and 16 iterations, split into network
  time and entropy-coding time,
* the achieved GFLOP/s of the encoder and decoder networks (convolution FLOPs counted from the layer table),
* peak memory (resident set) of each workload, each measured in its own subprocess.

    lcomp bench                       # johnston2018 and toderici2017 paper-size models
    lcomp bench --quick --json out.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

KODAK_SHAPE = (512, 768)
WORKLOADS = ("matmul", "train_gru", "train_lstm", "code")


def _timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` (which must block until its result is ready) after one warm-up call."""
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


def _conv_flops(pixels: int, kernel, cin: int, cout: int) -> float:
    return 2.0 * pixels * kernel[0] * kernel[1] * cin * cout


def network_flops(cfg, height: int, width: int, iterations: int) -> tuple[float, float]:
    """Convolution FLOPs (2 x multiply-adds) of encoding and of decoding `iterations` iterations.

    Counted from the layer table rather than XLA's cost analysis, which counts a `scan` body once. Every
    iteration runs each network 1 + extra times (priming on the first, diffusion on the later ones); the
    binarizer and the output convolution run once per emitted iteration."""
    gates = {"gru": 3, "lstm": 4}[cfg.cell]
    hidden_gates = gates  # GRU: update+reset fused (2) + candidate (1); LSTM: 4

    def rnn(pixels, kernel_in, kernel_h, cin, features):
        return _conv_flops(pixels, kernel_in, cin, gates * features) + _conv_flops(
            pixels, kernel_h, features, hidden_gates * features
        )

    # encoder: E-Conv at H/2, then RNNs at H/4, H/8, H/16 (input conv strided from the previous resolution)
    enc_step = _conv_flops(height * width // 4, cfg.encoder_conv_kernel, 3, cfg.encoder_conv_features)
    cin, scale = cfg.encoder_conv_features, 4
    for i, features in enumerate(cfg.encoder_rnn_features):
        pixels = height * width // (scale * scale)
        enc_step += rnn(pixels, cfg.encoder_input_kernels[i], cfg.encoder_hidden_kernels[i], cin, features)
        cin, scale = features, scale * 2
    code_pixels = height * width // (cfg.downsampling**2)
    binarizer = _conv_flops(code_pixels, (1, 1), cin, cfg.bits_per_position)
    # decoder: D-Conv#1 at H/16, RNNs at H/16, H/8, H/4, H/2 (each followed by depth_to_space), D-Conv#2 at H
    dec_step = _conv_flops(code_pixels, (1, 1), cfg.bits_per_position, cfg.decoder_conv_features)
    cin, pixels = cfg.decoder_conv_features, code_pixels
    for i, features in enumerate(cfg.decoder_rnn_features):
        dec_step += rnn(pixels, cfg.decoder_input_kernels[i], cfg.decoder_hidden_kernels[i], cin, features)
        cin, pixels = features // 4, pixels * 4
    to_image = _conv_flops(height * width, (1, 1), cin, 3)
    steps = (1 + cfg.priming_steps) + (iterations - 1) * (1 + cfg.diffusion_steps)
    encode = steps * enc_step + iterations * binarizer + steps * dec_step + iterations * to_image
    decode = steps * dec_step + iterations * to_image
    return encode, decode


def bench_matmul(quick: bool) -> dict:
    import jax
    import jax.numpy as jnp

    best = 0.0
    for n in (1024, 2048) if quick else (1024, 2048, 3072):
        a = jnp.ones((n, n), jnp.float32)
        f = jax.jit(jnp.dot)
        seconds = _timed(lambda: f(a, a).block_until_ready(), 3 if quick else 5)
        best = max(best, 2 * n**3 / seconds / 1e9)
    return {"matmul_gflops": best}


def bench_train(config_name: str, cell: str, quick: bool) -> dict:
    import jax
    import numpy as np

    from lcomp import configs, train

    cfg = configs.load_config(config_name, [f"--config.model.network.cell={cell}"])
    cfg.data.patch_size, cfg.data.batch_size = 32, 32
    cfg.train.progress = False
    trainer = train.Trainer(cfg, "/tmp/lcomp-bench-unused", devices=jax.devices()[:1])
    batch = trainer.batches.batch(0)
    state = trainer.init_state()
    holder = {"state": state}

    def step():
        holder["state"], metrics = trainer.train_step(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    compile_start = time.perf_counter()
    step()
    compile_seconds = time.perf_counter() - compile_start
    seconds = _timed(step, 2 if quick else 4)
    return {
        "train_step_seconds": seconds,
        "train_images_per_second": 32 / seconds,
        "train_compile_seconds": compile_seconds,
        "iterations": trainer.codec.iterations,
        "priming": trainer.codec.net_config.priming_steps,
        "peak_rss_mb": _peak_rss_mb(),
        "params": int(sum(np.size(x) for x in jax.tree.leaves(holder["state"]["params"]))),
    }


def bench_code(config_name: str, quick: bool) -> dict:
    import jax
    import numpy as np

    from lcomp import configs
    from lcomp.codecs import registry
    from lcomp.codecs.rnn.codec import to_float

    cfg = configs.load_config(config_name)
    codec = registry.create(cfg.codec, cfg.model)
    h, w = KODAK_SHAPE
    variables = codec.init(jax.random.key(0), {"image": np.zeros((1, 32, 32, 3), np.uint8)})
    rng = np.random.default_rng(0)
    # A smooth random image (natural-image-like spectrum is irrelevant to speed; content-independent nets).
    image = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    params = variables["params"]["autoencoder"]
    x = to_float(image)[None]
    out = {}
    repeats = 1 if quick else 3
    for t in (4, 8, 16):
        if t > codec.iterations:
            continue
        bits = codec._encode(params, x, t).bits
        encode_net = _timed(lambda: jax.block_until_ready(codec._encode(params, x, t).bits), repeats)
        decode_net = _timed(lambda: jax.block_until_ready(codec._decode(params, bits)), repeats)
        blob = codec.compress(variables, image, iterations=t)
        encode_total = _timed(lambda: codec.compress(variables, image, iterations=t), repeats)
        decode_total = _timed(lambda: codec.decompress(variables, blob), repeats)
        # Encoding runs the decoder too (the encoder needs the reconstruction to form the next residual).
        encode_flops, decode_flops = network_flops(codec.net_config, h, w, t)
        out[str(t)] = {
            "encode_seconds": encode_total,
            "encode_network_seconds": encode_net,
            "decode_seconds": decode_total,
            "decode_network_seconds": decode_net,
            "encode_gflops": encode_flops / encode_net / 1e9,
            "decode_gflops": decode_flops / decode_net / 1e9,
            "decode_gflop": decode_flops / 1e9,
            "bytes": len(blob),
        }
    return {"code": out, "peak_rss_mb": _peak_rss_mb()}


def _worker(argv) -> int:
    workload, config_name, quick = argv[0], argv[1], argv[2] == "1"
    if workload == "matmul":
        result = bench_matmul(quick)
    elif workload.startswith("train_"):
        result = bench_train(config_name, workload.split("_", 1)[1], quick)
    else:
        result = bench_code(config_name, quick)
    print("LCOMP_BENCH " + json.dumps(result))
    return 0


def _run_worker(workload: str, config_name: str, quick: bool) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one real device: no simulated devices splitting the cores
    proc = subprocess.run(
        [sys.executable, "-m", "lcomp.bench", workload, config_name, "1" if quick else "0"],
        env=env, capture_output=True, text=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("LCOMP_BENCH "):
            return json.loads(line[len("LCOMP_BENCH "):])
    raise RuntimeError(f"benchmark worker {workload} failed:\n{proc.stderr[-3000:]}")


def run_bench(args) -> int:
    import jax

    config_name = args.config
    results = {"device": jax.devices()[0].device_kind, "platform": jax.default_backend(), "cpus": os.cpu_count(),
               "config": config_name}
    print(f"lcomp bench on {results['platform']} ({results['device']}, {results['cpus']} CPUs), config {config_name}")
    results["matmul"] = _run_worker("matmul", config_name, args.quick)
    peak = results["matmul"]["matmul_gflops"]
    print(f"fp32 matmul: {peak:.0f} GFLOP/s")
    for cell in ("gru", "lstm"):
        r = _run_worker(f"train_{cell}", config_name, args.quick)
        results[f"train_{cell}"] = r
        print(f"train step ({cell.upper()}, batch 32 of 32x32, {r['iterations']} iterations, priming {r['priming']}): "
              f"{r['train_step_seconds']:.2f} s/step = {r['train_images_per_second']:.1f} images/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB ({r['params'] / 1e6:.1f} M parameters)")
    code = _run_worker("code", config_name, args.quick)
    results["code"] = code
    print(f"\n768x512 image (peak RSS of the coding process {code['peak_rss_mb']:.0f} MB)")
    print("| iterations | encode s (network) | decode s (network) | encoder GFLOP/s (% of matmul) "
          "| decoder GFLOP | decoder GFLOP/s (% of matmul) |")
    print("|---|---|---|---|---|---|")
    for t, r in code["code"].items():
        print(f"| {t} | {r['encode_seconds']:.2f} ({r['encode_network_seconds']:.2f}) | {r['decode_seconds']:.2f} "
              f"({r['decode_network_seconds']:.2f}) | {r['encode_gflops']:.0f} ({100 * r['encode_gflops'] / peak:.0f} %) "
              f"| {r['decode_gflop']:.1f} | {r['decode_gflops']:.0f} ({100 * r['decode_gflops'] / peak:.0f} %) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker(sys.argv[1:]))
