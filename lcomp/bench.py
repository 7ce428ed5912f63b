"""`lcomp bench`: speed and memory of a codec (a benchmark that prints a table, not a test).

Measures, for the paper-size model of a registered codec's config (random parameters: speed does not depend
on training):

* the machine's fp32 matrix-multiply GFLOP/s (the yardstick),
* training steps/s on 32x32 patches, batch 32 (a recurrent coder: with all iterations unrolled, GRU and LSTM
  cells, for comparison with PyTorch ports),
* encode and decode seconds of a Kodak-sized image (768x512) at three of the codec's operating points (the
  recurrent coder: 4, 8 and 16 iterations),
* for a recurrent coder (`lcomp.codecs.rnn.codec.RecurrentCoder`, whose layer table `network_flops` reads),
  the network part of those seconds and the achieved GFLOP/s of its encoder and decoder networks,
* peak memory (resident set) of each workload, each measured in its own subprocess.

    lcomp bench                                   # johnston2018's paper-size model
    lcomp bench --codec toderici2017 --quick --json out.json
    lcomp bench --config my_codec.py              # a config of one's own (its codec_module registers the codec)

It serves every registered codec whose registered config ships with lcomp, and any codec given by
`--config`; it refuses any other with a ConfigError naming the codecs it serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from lcomp.errors import ConfigError

DEFAULT_CODEC = "johnston2018"
KODAK_SHAPE = (512, 768)
TRAIN_PATCH, TRAIN_BATCH = 32, 32
CELL_KEY = "model.network.cell"  # a recurrent coder's cell switch: bench times both cells


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


def _patch_size(codec) -> int:
    """The training patch (TRAIN_PATCH, or the codec's pad multiple if that is larger)."""
    multiple = int(codec.pad_multiple)
    return max(TRAIN_PATCH, -(-TRAIN_PATCH // multiple) * multiple)


def _load(config_spec: str, overrides):
    from lcomp import configs
    from lcomp.codecs import registry

    cfg = configs.load_config(config_spec, overrides)
    registry.import_codec_module(cfg.get("codec_module", ""))
    return cfg, registry.create(cfg.codec, cfg.model)


def _recurrent(codec) -> bool:
    from lcomp.codecs.rnn.codec import RecurrentCoder

    return isinstance(codec, RecurrentCoder)


def bench_train(config_spec: str, overrides, quick: bool) -> dict:
    import jax
    import numpy as np

    from lcomp import train

    cfg, codec = _load(config_spec, overrides)
    cfg.data.patch_size, cfg.data.batch_size = _patch_size(codec), TRAIN_BATCH
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
    result = {
        "train_step_seconds": seconds,
        "train_images_per_second": TRAIN_BATCH / seconds,
        "train_compile_seconds": compile_seconds,
        "patch_size": cfg.data.patch_size,
        "peak_rss_mb": _peak_rss_mb(),
        "params": int(sum(np.size(x) for x in jax.tree.leaves(holder["state"]["params"]))),
    }
    if _recurrent(trainer.codec):
        result.update(iterations=trainer.codec.iterations, priming=trainer.codec.net_config.priming_steps)
    return result


def timing_points(points: list[dict]) -> list[dict]:
    """Three of a codec's operating points, at a quarter, half and all of its sweep (1..16 -> 4, 8, 16)."""
    n = len(points)
    picks = sorted({max(n // 4 - 1, 0), max(n // 2 - 1, 0), n - 1})
    return [dict(points[i]) for i in picks]


def setting_label(setting: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "default"


def _recurrent_network_timing(codec, variables, image, iterations: int, repeats: int) -> dict:
    """Network-only seconds and GFLOP/s of the recurrent coder (its jitted encoder and decoder)."""
    import jax

    from lcomp.codecs.rnn.codec import to_float

    params = variables["params"]["autoencoder"]
    x = to_float(image)[None]
    h, w = image.shape[:2]
    bits = codec._encode(params, x, iterations).bits
    encode_net = _timed(lambda: jax.block_until_ready(codec._encode(params, x, iterations).bits), repeats)
    decode_net = _timed(lambda: jax.block_until_ready(codec._decode(params, bits)), repeats)
    # Encoding runs the decoder too (the encoder needs the reconstruction to form the next residual).
    encode_flops, decode_flops = network_flops(codec.net_config, h, w, iterations)
    return {
        "encode_network_seconds": encode_net,
        "decode_network_seconds": decode_net,
        "encode_gflops": encode_flops / encode_net / 1e9,
        "decode_gflops": decode_flops / decode_net / 1e9,
        "decode_gflop": decode_flops / 1e9,
    }


def bench_code(config_spec: str, overrides, quick: bool) -> dict:
    import jax
    import numpy as np

    cfg, codec = _load(config_spec, overrides)
    h, w = KODAK_SHAPE
    patch = _patch_size(codec)
    variables = codec.init(jax.random.key(0), {"image": np.zeros((1, patch, patch, 3), np.uint8)})
    rng = np.random.default_rng(0)
    # A smooth random image (natural-image-like spectrum is irrelevant to speed; content-independent nets).
    image = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    recurrent = _recurrent(codec)
    out = {}
    repeats = 1 if quick else 3
    for setting in timing_points(codec.operating_points()):
        blob = codec.compress(variables, image, **setting).data
        row = {
            "setting": setting,
            "encode_seconds": _timed(lambda: codec.compress(variables, image, **setting), repeats),
            "decode_seconds": _timed(lambda: codec.decompress(variables, blob), repeats),
            "bytes": len(blob),
        }
        if recurrent:
            row.update(_recurrent_network_timing(codec, variables, image, setting["iterations"], repeats))
        elif hasattr(codec, "network_timing"):  # a codec that can time its own networks (mentzer2018)
            row.update(codec.network_timing(variables, image, lambda fn: _timed(fn, repeats)))
        out[setting_label(setting)] = row
    return {"code": out, "peak_rss_mb": _peak_rss_mb()}


def _worker(argv) -> int:
    workload, config_spec, quick, overrides = argv[0], argv[1], argv[2] == "1", argv[3:]
    if workload == "matmul":
        result = bench_matmul(quick)
    elif workload == "train":
        result = bench_train(config_spec, overrides, quick)
    else:
        result = bench_code(config_spec, overrides, quick)
    print("LCOMP_BENCH " + json.dumps(result))
    return 0


def _run_worker(workload: str, config_spec: str, quick: bool, overrides=()) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one real device: no simulated devices splitting the cores
    proc = subprocess.run(
        [sys.executable, "-m", "lcomp.bench", workload, config_spec, "1" if quick else "0", *overrides],
        env=env, capture_output=True, text=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("LCOMP_BENCH "):
            return json.loads(line[len("LCOMP_BENCH "):])
    raise RuntimeError(f"benchmark worker {workload} failed:\n{proc.stderr[-3000:]}")


def servable_codecs() -> list[str]:
    """Registered codecs bench can time by name: their registered config ships with lcomp."""
    from lcomp import configs
    from lcomp.codecs import registry

    servable = []
    for name in registry.names():
        try:
            configs.codec_config(name)
        except ConfigError:
            continue
        servable.append(name)
    return servable


def bench_config(codec: str | None, config_spec: str | None, overrides=()):
    """(config spec for the workers, loaded config) of what to time, or a ConfigError saying what bench serves.

    `--config` names the model directly (a shipped name or a file); otherwise the codec's registered config,
    paper size."""
    from lcomp import configs
    from lcomp.codecs import registry

    if config_spec:
        config = configs.load_config(config_spec, overrides)
        registry.import_codec_module(config.get("codec_module", ""))
        registry.get(config.codec)
        if codec and config.codec != codec:
            raise ConfigError(f"--config {config_spec} configures codec {config.codec!r}, not {codec!r}")
        return config_spec, config
    codec = codec or DEFAULT_CODEC
    try:
        config = configs.codec_config(codec)
    except ConfigError as exc:
        raise ConfigError(
            f"bench cannot serve codec {codec!r} ({exc}); by name it times a registered codec's shipped config, "
            f"which these codecs have: {', '.join(servable_codecs()) or 'none'} (or give --config FILE.py)"
        ) from exc
    return registry.get(codec).config, configs.apply_overrides(config, overrides)


def _train_variants(config) -> list[tuple[str, list[str]]]:
    """(label, overrides) per training workload: both cells of a recurrent coder, else the config as is."""
    node = config
    for part in CELL_KEY.split("."):
        if part not in node:
            return [("", [])]
        node = node[part]
    return [(cell.upper(), [f"--config.{CELL_KEY}={cell}"]) for cell in ("gru", "lstm")]


def _print_code_table(code: dict, peak: float) -> None:
    def cell(row, key, fmt):
        return format(row[key], fmt) if key in row else "-"

    print("| setting | bytes | encode s (network) | decode s (network) | encoder GFLOP/s (% of matmul) "
          "| decoder GFLOP | decoder GFLOP/s (% of matmul) |")
    print("|---|---|---|---|---|---|---|")
    for label, r in code.items():
        enc_pct = f" ({100 * r['encode_gflops'] / peak:.0f} %)" if "encode_gflops" in r else ""
        dec_pct = f" ({100 * r['decode_gflops'] / peak:.0f} %)" if "decode_gflops" in r else ""
        print(f"| {label} | {r['bytes']} | {r['encode_seconds']:.2f} ({cell(r, 'encode_network_seconds', '.2f')}) "
              f"| {r['decode_seconds']:.2f} ({cell(r, 'decode_network_seconds', '.2f')}) "
              f"| {cell(r, 'encode_gflops', '.0f')}{enc_pct} | {cell(r, 'decode_gflop', '.1f')} "
              f"| {cell(r, 'decode_gflops', '.0f')}{dec_pct} |")


def run_bench(args, overrides=()) -> int:
    import jax

    overrides = list(overrides)
    config_spec, config = bench_config(getattr(args, "codec", None), args.config, overrides)
    results = {"device": jax.devices()[0].device_kind, "platform": jax.default_backend(), "cpus": os.cpu_count(),
               "codec": config.codec, "config": config_spec, "overrides": overrides}
    print(f"lcomp bench on {results['platform']} ({results['device']}, {results['cpus']} CPUs), "
          f"codec {config.codec}, config {config_spec}")
    results["matmul"] = _run_worker("matmul", config_spec, args.quick)
    peak = results["matmul"]["matmul_gflops"]
    print(f"fp32 matmul: {peak:.0f} GFLOP/s")
    for label, extra in _train_variants(config):
        r = _run_worker("train", config_spec, args.quick, overrides + extra)
        results[f"train_{label.lower()}" if label else "train"] = r
        unrolled = f", {r['iterations']} iterations, priming {r['priming']}" if "iterations" in r else ""
        print(f"train step ({label + ', ' if label else ''}batch {TRAIN_BATCH} of {r['patch_size']}x{r['patch_size']}"
              f"{unrolled}): {r['train_step_seconds']:.2f} s/step = {r['train_images_per_second']:.1f} images/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB ({r['params'] / 1e6:.1f} M parameters)")
    code = _run_worker("code", config_spec, args.quick, overrides)
    results["code"] = code
    print(f"\n768x512 image (peak RSS of the coding process {code['peak_rss_mb']:.0f} MB)")
    _print_code_table(code["code"], peak)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker(sys.argv[1:]))
