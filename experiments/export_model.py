"""Exports the latest checkpoint of a training workdir as a model folder (the form lcomp/zoo ships).

    python experiments/export_model.py runs/j18-small lcomp/zoo/johnston2018

The folder gets model.json (codec, full config, fingerprint, SHA-256 of the parameters) and
variables.msgpack (parameters and non-trained state only; optimizer states are dropped).
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from lcomp import models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", help="training workdir (config.json + checkpoints)")
    parser.add_argument("out", help="model folder to write")
    args = parser.parse_args(argv)
    model = models.load_model(args.workdir)
    path = models.save_model(args.out, model.config, model.variables)
    reloaded = models.load_model(path)
    assert reloaded.fingerprint == model.fingerprint
    print(f"exported {model.source} -> {path} (codec {model.codec.name}, model {model.fingerprint.hex()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
