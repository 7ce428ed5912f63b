"""Config file for the toy test codec: `lcomp train --config tests/toy_config.py --workdir DIR`."""

from tests.toy_codec import toy_config


def get_config(variant: str = ""):
    return toy_config()
