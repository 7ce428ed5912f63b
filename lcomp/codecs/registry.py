"""Registry: paper name -> codec class, its config file and its shipped model.

    @register("johnston2018", config="johnston2018", zoo="johnston2018")
    class Johnston2018(Codec): ...

`create(name, model_config)` builds a codec; `lcomp.models.load_shipped(name)` loads its shipped model;
`lcomp.configs.codec_config(name, variant)` loads the config it names, a module of the installed package
`lcomp.experiment_configs` (experiments/configs/<config>.py in the repository), never a path into a checkout.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

from lcomp.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class CodecEntry:
    name: str
    factory: Callable  # model_config -> Codec
    config: str  # shipped config module: lcomp.experiment_configs.<config> (experiments/configs/<config>.py)
    zoo: str | None  # folder name under lcomp/zoo/ holding the shipped model, if any
    description: str


_REGISTRY: dict[str, CodecEntry] = {}


def register(name: str, *, config: str | None = None, zoo: str | None = None, description: str = ""):
    """Class decorator registering a codec under its paper's name."""

    def decorator(cls):
        previous = _REGISTRY.get(name)
        if previous is not None and _qualified(previous.factory) != _qualified(cls):
            raise ConfigError(f"a codec named {name!r} is already registered ({_qualified(previous.factory)})")
        cls.name = name
        _REGISTRY[name] = CodecEntry(name, cls, config or name, zoo, description or (cls.__doc__ or "").strip())
        return cls

    return decorator


def _qualified(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_builtin_codecs():
    # Importing the package registers every codec that ships with lcomp.
    importlib.import_module("lcomp.codecs")


def import_codec_module(module: str) -> None:
    """Imports a module that registers codecs defined outside lcomp (config key `codec_module`)."""
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"cannot import codec module {module!r}: {exc}") from exc


def get(name: str) -> CodecEntry:
    _import_builtin_codecs()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown codec {name!r}; registered codecs: {', '.join(names()) or 'none'}")
    return _REGISTRY[name]


def names() -> list[str]:
    _import_builtin_codecs()
    return sorted(_REGISTRY)


def create(name: str, model_config):
    """Builds the codec registered as `name` from its `model` config section."""
    return get(name).factory(model_config)
