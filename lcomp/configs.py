"""Experiment configs: `get_config(variant)` files and `--config.a.b=value` overrides.

A config is an `ml_collections.ConfigDict` with these sections (see `base_config`):

    codec         registered codec name, e.g. "johnston2018"
    codec_module  optional module to import first (registers a codec defined outside lcomp)
    model         the codec's own settings (widths, iterations, switches); handed to the codec
    data          training data: source, patch size, batch size, seed
    optim         one optimizer section per parameter group ("autoencoder", "context_model", ...)
    train         steps, logging, checkpointing, NaN guard
    distributed   multi-host initialisation

Config files live in `experiments/configs/<name>.py` (big_vision style): `get_config(variant="")` returns
paper-size defaults, `get_config("tiny")` a CPU-sized variant. They are named on the command line as
`johnston2018`, `johnston2018:tiny` or a path `path/to/file.py:tiny`.

A name resolves through the installed package `lcomp.experiment_configs`, which the build maps onto
`experiments/configs/` (see setup.py): editable and plain installs import the same modules, and no path
relative to a checkout is involved. A path names a user's own file, executed as it stands; it can reuse the
shipped pieces with `from lcomp.experiment_configs._rnn_common import rnn_config`.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import json
import operator
import pathlib
import pkgutil
from types import ModuleType
from typing import Any, Iterable

import ml_collections

from lcomp.errors import ConfigError

#: The installed package holding the shipped config files (experiments/configs/ in the repository).
CONFIG_PACKAGE = "lcomp.experiment_configs"


def optimizer_config(learning_rate: float = 1e-4, **overrides) -> ml_collections.ConfigDict:
    """One parameter group's optimizer: Adam with an optional warmup and decay schedule."""
    cfg = ml_collections.ConfigDict(
        dict(
            optimizer="adam",  # adam | adamw | sgd
            learning_rate=learning_rate,
            schedule="constant",  # constant | cosine | step | exponential
            warmup_steps=0,
            decay_steps=0,  # cosine: length of the decay; exponential: steps per decay
            decay_rate=0.5,  # step / exponential: multiplier
            boundaries=(),  # step: the steps at which the rate is multiplied by decay_rate
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            grad_clip_norm=0.0,  # 0 disables clipping
            # Training window: the group is updated at steps train_from_step <= step < train_until_step
            # (0 = no end); outside it its parameters and optimizer state stay as they are (frozen), and its
            # schedule counts only the steps it trained. Li et al. 2018 train in stages with this.
            train_from_step=0,
            train_until_step=0,
        )
    )
    cfg.update(overrides)
    return cfg


def base_config() -> ml_collections.ConfigDict:
    """Sections every experiment config shares; experiment files fill `codec`, `model` and `optim`."""
    cfg = ml_collections.ConfigDict()
    cfg.codec = ""
    cfg.codec_module = ""
    cfg.model = ml_collections.ConfigDict()
    cfg.data = ml_collections.ConfigDict(
        dict(
            source="embedded",  # embedded | folder | tfds
            path="",  # folder source
            name="",  # tfds dataset name
            split="train",
            data_dir="",  # tfds data_dir
            patch_size=32,
            batch_size=32,  # global batch, split over all devices and processes
            seed=0,
            prefetch=2,
            permute_channels=False,  # shuffle R, G, B per training example (augmentation)
            rotate90=False,  # turn each example by a random multiple of 90 degrees (augmentation)
            # Procedural dead-leaves images mixed into the batches (lcomp.data.dead_leaves): the fraction of
            # examples drawn from them (0: none), how many distinct images and their side.
            dead_leaves_fraction=0.0,
            dead_leaves_count=2000,
            dead_leaves_size=128,
        )
    )
    cfg.optim = ml_collections.ConfigDict({"autoencoder": optimizer_config()})
    cfg.train = ml_collections.ConfigDict(
        dict(
            num_steps=1000,
            seed=0,
            log_every=50,
            checkpoint_every=500,
            keep_checkpoints=3,
            check_finite_every=1,  # host check of the loss every N steps (0: only at checkpoints)
            debug_nans=False,  # jax_debug_nans: slow, pinpoints the op that made a NaN
            progress=True,
            init_from="",  # a workdir or exported model whose parameters start a fresh run (fine-tuning, stages)
        )
    )
    cfg.distributed = ml_collections.ConfigDict(
        dict(enabled=False, coordinator_address="", num_processes=0, process_id=-1)
    )
    return cfg


def shipped_config_names() -> list[str]:
    """Names of the configs that ship with lcomp (the modules of `lcomp.experiment_configs`)."""
    try:
        package = importlib.import_module(CONFIG_PACKAGE)
    except ImportError as exc:  # a broken install: say so instead of "no config named ..."
        raise ConfigError(f"the installed lcomp has no {CONFIG_PACKAGE} package ({exc}); reinstall lcomp") from exc
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def _config_file_module(name: str) -> ModuleType:
    """Executes a user's config file, given by path (not imported: two files may share a name)."""
    path = pathlib.Path(name)
    if not path.is_file():
        raise ConfigError(f"config file {name!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"lcomp_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # a user's config file: report it as a config problem
        raise ConfigError(f"could not execute config file {path}: {exc!r}") from exc
    return module


def _shipped_config_module(name: str) -> ModuleType:
    """Imports the shipped config `name` from `lcomp.experiment_configs`."""
    known = shipped_config_names()
    if name not in known:
        raise ConfigError(
            f"no config named {name!r} among the configs shipped with lcomp (known: {', '.join(known) or 'none'}); "
            "pass a path to a .py file with get_config() instead"
        )
    try:
        return importlib.import_module(f"{CONFIG_PACKAGE}.{name}")
    except Exception as exc:
        raise ConfigError(f"could not import config {CONFIG_PACKAGE}.{name}: {exc!r}") from exc


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Loads `name[:variant]` (a shipped config) or `path.py[:variant]` and applies `--config.a.b=v` overrides."""
    name, _, variant = spec.partition(":")
    is_path = name.endswith(".py")
    module = _config_file_module(name) if is_path else _shipped_config_module(name)
    where = name if is_path else f"{CONFIG_PACKAGE}.{name}"
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config {where} has no get_config() function")
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: get_config({variant!r}) failed: {exc}") from exc
    return apply_overrides(config, overrides)


def codec_config(codec: str, variant: str = "", overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """The config a registered codec names (`CodecEntry.config`), loaded from the shipped configs.

    ConfigError if the codec is unknown, names a config lcomp does not ship, or names one for another codec."""
    from lcomp.codecs import registry

    entry = registry.get(codec)
    if entry.config not in shipped_config_names():
        raise ConfigError(f"codec {codec!r} names config {entry.config!r}, which does not ship with lcomp")
    spec = f"{entry.config}:{variant}" if variant else entry.config
    config = load_config(spec, overrides)
    if config.codec != codec:
        raise ConfigError(f"config {spec!r} (named by codec {codec!r}) configures codec {config.codec!r}")
    return config


def parse_value(text: str):
    """A command-line value: a Python literal if it parses as one, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as --config.data.source=folder


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Applies overrides of the form `--config.a.b=value` (or `a.b=value`); values are Python literals."""
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if text.startswith("config."):
            text = text[len("config.") :]
        key, sep, raw = text.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like --config.a.b=value")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node:
                raise ConfigError(_unknown_key_message(key, config))
            node = node[part]
        if leaf not in node:
            raise ConfigError(_unknown_key_message(key, config))
        value = parse_value(raw)
        current = node[leaf]
        if isinstance(current, str) and not isinstance(value, str):
            value = raw  # e.g. --config.data.path=123 stays a string
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cannot set {key} to {raw!r}: {exc}") from exc
    return config


def _flat_keys(config, prefix=""):
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from _flat_keys(value, full + ".")
        else:
            yield full


def _unknown_key_message(key: str, config) -> str:
    close = difflib.get_close_matches(key, list(_flat_keys(config)), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"unknown config key {key!r}{hint}"


def dataclass_from_mapping(cls, mapping, what: str, convert=lambda v: v, **defaults):
    """Builds the frozen settings dataclass `cls` from a dict or ConfigDict section; unknown keys are an error."""
    import dataclasses

    if hasattr(mapping, "to_dict"):
        mapping = mapping.to_dict()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ConfigError(f"unknown {what} settings: {', '.join(unknown)}")
    return cls(**{**defaults, **{k: convert(v) for k, v in dict(mapping).items()}})


def to_json(config: ml_collections.ConfigDict) -> str:
    """Canonical JSON of a config (sorted keys), used for config.json and model fingerprints."""
    return json.dumps(config.to_dict(), sort_keys=True, default=list)


def from_json(text: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads(text))


def integer_setting(label: str, value: Any, minimum: int | None = None) -> int:
    """An integer setting (Python, numpy or 0-d JAX integer; not bool), checked against a lower bound."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ConfigError(f"{label} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{label} must be >= {minimum}, got {number}")
    return number
