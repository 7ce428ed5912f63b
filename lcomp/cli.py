"""The `lcomp` command line.

    lcomp train      --config NAME[:variant] --workdir DIR [--config.a.b=value ...]
    lcomp compress   (--codec NAME | --checkpoint DIR) [--iterations N | --target-quality Q | --bpp B] IN OUT
    lcomp decompress [--checkpoint DIR] [--iterations N] IN OUT
    lcomp cut        [--checkpoint DIR] --iterations N IN OUT   (progressive files: a prefix, no re-encoding)
    lcomp info       FILE
    lcomp eval       (--codec NAME | --checkpoint DIR) [--images DIR] --out DIR
    lcomp plot       SOURCE... --out FILE.png          RD curves of eval folders and published curves
    lcomp bdrate     SOURCE... --anchor SOURCE [--label NAME...] [--out STEM]   BD-rate table (Markdown, CSV)
    lcomp demo       [--codec NAME] train a tiny model on the embedded photographs, then compress and plot
    lcomp bench      [--codec NAME | --config SPEC] speed and memory of a codec's paper-size model

Every user-facing failure is an `LcompError`, printed as one line; the exit status is then 2.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from lcomp.errors import ConfigError, LcompError


def _rate_settings(args) -> dict:
    """The rate flags the user gave, as codec settings (the codec rejects the ones it does not support)."""
    settings = {}
    for flag, key in (("iterations", "iterations"), ("target_quality", "target_quality"), ("bpp", "bpp")):
        value = getattr(args, flag, None)
        if value is not None:
            settings[key] = value
    for item in getattr(args, "setting", None) or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise LcompError(f"--setting {item!r} must look like key=value")
        from lcomp.configs import parse_value

        settings[key] = parse_value(raw)
    return settings


def _add_rate_flags(parser, decode: bool = False):
    parser.add_argument("--iterations", type=int, help="number of iterations (progressive codecs)")
    if not decode:
        parser.add_argument("--target-quality", type=float, help="per-block quality target (SABR)")
        parser.add_argument("--bpp", type=float, help="target rate in bits per pixel")
    parser.add_argument("--setting", action="append", metavar="KEY=VALUE", help="any other codec setting")


# --- commands -----------------------------------------------------------------------------------------------


def cmd_train(args, overrides) -> int:
    from lcomp import configs, train

    config = configs.load_config(args.config, overrides)
    if args.steps is not None:
        config.train.num_steps = args.steps
    result = train.train(config, args.workdir)
    step = int(result.train_state["step"])
    summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.last_metrics.items()))
    print(f"trained {config.codec} to step {step} in {args.workdir}: {summary}")
    return 0


def _load_for_compress(args):
    from lcomp import models

    if args.checkpoint:
        return models.load_model(args.checkpoint)
    if args.codec:
        return models.load_shipped(args.codec)
    raise LcompError("give --codec NAME (shipped model) or --checkpoint DIR")


def cmd_compress(args, overrides) -> int:
    from lcomp import container, data

    model = _load_for_compress(args)
    image = data.load_image(args.input)
    settings = _rate_settings(args)
    start = time.perf_counter()
    compressed = model.encode(image, **settings)
    seconds = time.perf_counter() - start
    payload = compressed.data
    pathlib.Path(args.output).write_bytes(payload)
    h, w = image.shape[:2]
    info = container.describe(payload)
    estimated = compressed.estimated_bits
    estimate = "" if estimated is None else f"; model's estimate {estimated / (h * w):.4f} for the payload"
    print(
        f"{args.output}: {len(payload)} bytes, {8 * len(payload) / (h * w):.4f} bpp (real, whole file{estimate}) "
        f"for {w}x{h}; {model.codec.name} {info['fingerprint']}; {info['settings']}; {seconds:.2f} s"
    )
    return 0


def cmd_decompress(args, overrides) -> int:
    from lcomp import data, models

    try:
        payload = pathlib.Path(args.input).read_bytes()
    except OSError as exc:
        raise LcompError(f"cannot read {args.input}: {exc.strerror}") from exc
    model = models.load_for_file(payload, args.checkpoint)
    settings = _rate_settings(args)
    start = time.perf_counter()
    image = model.decode(payload, **settings)
    seconds = time.perf_counter() - start
    data.save_image(args.output, image)
    print(f"{args.output}: {image.shape[1]}x{image.shape[0]} decoded with {model.codec.name} in {seconds:.2f} s")
    return 0


def cmd_cut(args, overrides) -> int:
    from lcomp import container, models

    try:
        payload = pathlib.Path(args.input).read_bytes()
    except OSError as exc:
        raise LcompError(f"cannot read {args.input}: {exc.strerror}") from exc
    header = container.unpack(payload).header
    if args.checkpoint:  # the model also bounds how many iterations its files may record
        shorter = models.load_for_file(payload, args.checkpoint).codec.cut_file(payload, args.iterations)
    else:  # cutting needs only the codec's declared part layout, not its parameters: load no model
        from lcomp.codecs import registry

        layout = registry.get(header.codec).factory.part_layout
        if not layout.progressive:
            raise ConfigError(f"codec {header.codec!r} is not progressive: its files cannot be cut")
        shorter = layout.cut(payload, args.iterations)
    pathlib.Path(args.output).write_bytes(shorter)
    pixels = header.height * header.width
    print(f"{args.output}: first {args.iterations} iteration(s), {len(shorter)} bytes = "
          f"{8 * len(shorter) / pixels:.4f} bpp (was {len(payload)} bytes)")
    return 0


def cmd_info(args, overrides) -> int:
    from lcomp import container

    try:
        payload = pathlib.Path(args.file).read_bytes()
    except OSError as exc:
        raise LcompError(f"cannot read {args.file}: {exc.strerror}") from exc
    info = container.describe(payload)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    pixels = info["height"] * info["width"]
    print(f"file        {args.file}")
    print(f"codec       {info['codec']}")
    print(f"model       {info['fingerprint']}")
    print(f"image       {info['width']}x{info['height']}")
    print(f"settings    {json.dumps(info['settings'], sort_keys=True)}")
    print(f"total       {info['total_bytes']} bytes = {8 * info['total_bytes'] / pixels:.4f} bpp")
    print(f"header      {info['header_bytes']} bytes (incl. CRC)")
    for name, size in info["part_bytes"].items():
        print(f"  part {name:<12} {size:>9} bytes  {8 * size / pixels:.4f} bpp")
    return 0


def cmd_eval(args, overrides) -> int:
    from lcomp import evaluate

    return evaluate.run_eval(args)


def cmd_plot(args, overrides) -> int:
    from lcomp import plots

    return plots.run_plot(args)


def cmd_bdrate(args, overrides) -> int:
    from lcomp import plots

    return plots.run_bdrate(args)


def cmd_demo(args, overrides) -> int:
    from lcomp import demo

    return demo.run_demo(args, overrides)


def cmd_bench(args, overrides) -> int:
    from lcomp import bench

    return bench.run_bench(args, overrides)


# --- parser -------------------------------------------------------------------------------------------------


def _add_evaluation_commands(sub) -> None:
    from lcomp import evaluate, plots

    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "eval",
        help="rate-distortion evaluation on real files over a folder of images",
        description=evaluate.EVAL_DESCRIPTION,
        formatter_class=raw,
    )
    evaluate.add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "plot",
        help="RD curves (ours, classical codecs, published) as PNG",
        description=plots.PLOT_DESCRIPTION,
        formatter_class=raw,
    )
    plots.add_plot_arguments(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "bdrate",
        help="BD-rate tables against an anchor (CSV and Markdown)",
        description=plots.BDRATE_DESCRIPTION,
        formatter_class=raw,
    )
    plots.add_bdrate_arguments(p)
    p.set_defaults(func=cmd_bdrate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcomp", description="Learned image compression in JAX: train, compress, decompress, evaluate."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a codec from a config (resumes from the workdir)")
    p.add_argument("--config", required=True, help="NAME[:variant] of a config shipped with lcomp (experiments/configs/ in the repository), or FILE.py[:variant]")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics and config.json go here")
    p.add_argument("--steps", type=int, help="shortcut for --config.train.num_steps")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compress", help="compress an image into an .lcomp file")
    p.add_argument("--codec", help="a registered codec name (uses its shipped model)")
    p.add_argument("--checkpoint", help="a training workdir or exported model folder")
    _add_rate_flags(p)
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="decompress an .lcomp file into a PNG")
    p.add_argument("--checkpoint", help="the model that made the file (default: the shipped model it names)")
    _add_rate_flags(p, decode=True)
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("cut", help="write a progressive file's first N iterations as a new file (no re-encoding)")
    p.add_argument("--checkpoint", help="the model that made the file (default: the shipped model it names)")
    p.add_argument("--iterations", type=int, required=True)
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_cut)

    p = sub.add_parser("info", help="what a file's header says: codec, model, size, settings, bytes per part")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    _add_evaluation_commands(sub)

    p = sub.add_parser("demo", help="train a codec's tiny config on the embedded photographs and show it work")
    p.add_argument("--out", default="lcomp-demo", help="output folder (files, reconstructions, plot)")
    p.add_argument("--steps", type=int, help="training steps (default: the tiny config's)")
    p.add_argument("--codec", help="registered codec whose shipped tiny config to train (default johnston2018)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="speed and memory benchmark of a codec's paper-size model")
    p.add_argument("--codec", help="registered codec whose shipped config to time (default johnston2018)")
    p.add_argument("--config", help="instead: config NAME[:variant] or FILE.py[:variant] of the model to time")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--json", help="also write the results here")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--config.a.b=value` overrides are collected separately (argparse would see unknown options).
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    parser = build_parser()
    args = parser.parse_args(rest)
    try:
        return int(args.func(args, overrides) or 0)
    except LcompError as exc:
        print(f"lcomp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lcomp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
