"""Codecs, one module (or folder) per paper. Importing this package registers them all."""

from lcomp.codecs.base import Codec, Variables  # noqa: F401
from lcomp.codecs.registry import create, get, names, register  # noqa: F401

from lcomp.codecs.rnn import codec as _rnn_codec  # noqa: F401,E402  (registers toderici2017, johnston2018)
from lcomp.codecs.mentzer2018 import codec as _mentzer2018_codec  # noqa: F401,E402  (registers mentzer2018)
from lcomp.codecs.li2018 import codec as _li2018_codec  # noqa: F401,E402  (registers li2018)
