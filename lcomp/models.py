"""Trained models: a codec, its config and its variables, saved, loaded and fingerprinted.

Two on-disk forms hold a model:

* a training workdir (`lcomp train --workdir DIR`): `config.json` plus orbax checkpoints; the latest one is used;
* an exported model folder (what `lcomp/zoo/<name>/` ships): `model.json` (codec, config, fingerprint,
  sha256 of the parameter file) and `variables.msgpack` (flax msgpack of params and state).

The fingerprint (8 bytes of a SHA-256 over every parameter and state array, with its path, shape and dtype)
is written into every compressed file, so a decoder refuses a file that another model made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

import lcomp
from lcomp import configs, container
from lcomp.codecs import registry
from lcomp.codecs.base import Codec, Variables
from lcomp.errors import ConfigError, LcompError, ModelMismatchError
from lcomp.fingerprint import fingerprint
from lcomp.interface import Compressed

MODEL_FILE = "model.json"
VARIABLES_FILE = "variables.msgpack"
ZOO_DIR = pathlib.Path(__file__).resolve().parent / "zoo"

@dataclasses.dataclass
class LoadedModel:
    """A codec bound to its trained variables: what `lcomp compress`, `decompress` and `eval` work with.

    It is an `lcomp.interface.RateDistortionCodec`, exactly as every classical baseline is, so evaluation
    sweeps a trained model through the same calls (no adapter): `encode` returns the file together with the
    model's estimate of its bits from that one encode.

    Attributes:
      codec: the codec, built from `config.model`.
      variables: `{"params": {group: pytree}, "state": pytree}` (numpy arrays).
      config: the full training config the model came from.
      source: where the variables came from (a model folder, or a workdir and its step).
      description: replaces the default `label`, e.g. "johnston2018 k=1 d=2" for one cell of a sweep.
    """

    codec: Codec
    variables: Variables
    config: ml_collections.ConfigDict
    source: str
    description: str | None = None

    @property
    def fingerprint(self) -> bytes:
        return fingerprint(self.variables)

    # --- lcomp.interface.RateDistortionCodec ------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def label(self) -> str:
        default = f"{self.codec.name} (lcomp {lcomp.__version__} learned codec, RGB, lcomp container file)"
        return self.description or default

    def settings(self) -> list[dict[str, Any]]:
        """The codec's operating points (e.g. every iteration count of a progressive codec)."""
        return [dict(point) for point in self.codec.operating_points()]

    def encode(self, image: np.ndarray, **setting) -> Compressed:
        """A complete container file with the model's bit estimate (`Codec.compress`)."""
        return self.codec.compress(self.variables, image, **setting)

    def decode(self, data: bytes, **settings) -> np.ndarray:
        """The image in a file this model wrote; decoder settings (e.g. `iterations`) pass through."""
        return self.codec.decompress(self.variables, data, **settings)

    def file_layout(self, data: bytes) -> dict[str, Any]:
        """`header_bytes` (header, part index and CRC) and `part_bytes` of the file, from its container."""
        info = container.describe(data)
        return {"header_bytes": int(info["header_bytes"]), "part_bytes": dict(info["part_bytes"])}


def _to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def save_model(path: str | pathlib.Path, config: ml_collections.ConfigDict, variables: Variables) -> pathlib.Path:
    """Exports a model folder (the form shipped in lcomp/zoo)."""
    from flax import serialization

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    variables = {"params": _to_numpy(variables["params"]), "state": _to_numpy(variables.get("state", {}))}
    payload = serialization.msgpack_serialize(variables)
    (path / VARIABLES_FILE).write_bytes(payload)
    meta = {
        "format": 1,
        "codec": config.codec,
        "codec_module": config.get("codec_module", ""),
        "fingerprint": fingerprint(variables).hex(),
        "variables_sha256": hashlib.sha256(payload).hexdigest(),
        "config": json.loads(configs.to_json(config)),
    }
    (path / MODEL_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def _load_exported(path: pathlib.Path) -> LoadedModel:
    from flax import serialization

    try:
        meta = json.loads((path / MODEL_FILE).read_text())
        payload = (path / VARIABLES_FILE).read_bytes()
    except (OSError, ValueError) as exc:
        raise LcompError(f"cannot read model folder {path}: {exc}") from exc
    if hashlib.sha256(payload).hexdigest() != meta.get("variables_sha256"):
        raise LcompError(f"{path / VARIABLES_FILE} does not match the checksum in {MODEL_FILE} (corrupt download?)")
    try:
        variables = serialization.msgpack_restore(payload)
    except Exception as exc:  # msgpack errors on a damaged file
        raise LcompError(f"cannot decode {path / VARIABLES_FILE}: {exc}") from exc
    config = ml_collections.ConfigDict(meta["config"])
    registry.import_codec_module(meta.get("codec_module", ""))
    codec = registry.create(meta["codec"], config.model)
    variables = {"params": variables["params"], "state": variables.get("state", {})}
    if fingerprint(variables).hex() != meta.get("fingerprint"):
        raise LcompError(f"model folder {path}: parameters do not match the recorded fingerprint")
    return LoadedModel(codec, variables, config, str(path))


def _load_workdir(path: pathlib.Path) -> LoadedModel:
    """The latest checkpoint's params and codec state, restored without the optimizer states.

    Orbax partial restore reads only the "params" and "state" subtrees, whose structure comes from the codec
    and the `model` config alone: the optimizer sections are never built, so a workdir loads even when they
    changed or are absent (or name an optimizer this version no longer has), and the optimizer states (often
    twice the parameters' size) are not read. Everything lands on this process's first device, whatever mesh
    the run was trained on."""
    import orbax.checkpoint as ocp

    from lcomp.train import CHECKPOINT_DIR, CONFIG_FILE, abstract_variables

    config = configs.from_json((path / CONFIG_FILE).read_text())
    registry.import_codec_module(config.get("codec_module", ""))
    codec = registry.create(config.codec, config.model)
    manager = ocp.CheckpointManager((path / CHECKPOINT_DIR).resolve())
    step = manager.latest_step()
    if step is None:
        raise LcompError(f"{path} has no checkpoint yet (train first, or wait for the first checkpoint)")
    target = abstract_variables(codec, config, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    restore = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
    )
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=restore))["state"]
    except Exception as exc:  # orbax/tensorstore errors: a damaged checkpoint or another model's
        raise LcompError(f"cannot restore checkpoint {step} from {path}: {exc}") from exc
    variables = {"params": _to_numpy(restored["params"]), "state": _to_numpy(restored.get("state", {}))}
    return LoadedModel(codec, variables, config, f"{path} (step {step})")


def load_model(path: str | pathlib.Path) -> LoadedModel:
    """Loads a training workdir (latest checkpoint) or an exported model folder."""
    from lcomp.train import CONFIG_FILE

    path = pathlib.Path(path)
    if (path / MODEL_FILE).is_file():
        return _load_exported(path)
    if (path / CONFIG_FILE).is_file():
        return _load_workdir(path)
    raise LcompError(
        f"{path} is neither a training workdir (with {CONFIG_FILE}) nor a model folder (with {MODEL_FILE})"
    )


def load_shipped(name: str) -> LoadedModel:
    """The model shipped with lcomp for a registered codec."""
    entry = registry.get(name)
    if entry.zoo is None or not (ZOO_DIR / entry.zoo / MODEL_FILE).is_file():
        raise ConfigError(f"no shipped model for codec {name!r}; pass --checkpoint DIR with a trained model")
    return _load_exported(ZOO_DIR / entry.zoo)


def load_for_file(data: bytes, checkpoint: str | pathlib.Path | None = None) -> LoadedModel:
    """The model that can decode `data`: the given checkpoint, or the shipped model the file names."""
    from lcomp import container

    header = container.unpack(data).header
    model = load_model(checkpoint) if checkpoint else load_shipped(header.codec)
    if header.codec != model.codec.name or header.fingerprint != model.fingerprint:
        raise ModelMismatchError(
            f"this file was made by codec {header.codec} with model {header.fingerprint.hex()}, but the loaded "
            f"model ({model.source}) is codec {model.codec.name} with model {model.fingerprint.hex()}"
        )
    return model
