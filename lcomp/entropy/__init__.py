"""Entropy coding: probabilities -> integer frequencies -> range-coded bytes, and back.

- :mod:`lcomp.entropy.frequencies`: :func:`quantize_pmf` (the one float -> integer-frequency rule both
  ends use), :func:`binary_pmf`, :func:`code_length_bits`.
- :mod:`lcomp.entropy.range_coding`: :class:`SymbolEncoder` / :class:`SymbolDecoder` (constriction's
  range coder, several calls per stream, for multi-pass decoding).

The byte-level details are in ``docs/bitstream.md``.
"""

from lcomp.entropy.frequencies import (
    DEFAULT_PRECISION,
    MAX_PRECISION,
    EntropyCodingError,
    binary_pmf,
    code_length_bits,
    quantize_pmf,
)
from lcomp.entropy.range_coding import CODER_PRECISION, SymbolDecoder, SymbolEncoder

__all__ = [
    "CODER_PRECISION",
    "DEFAULT_PRECISION",
    "MAX_PRECISION",
    "EntropyCodingError",
    "SymbolDecoder",
    "SymbolEncoder",
    "binary_pmf",
    "code_length_bits",
    "quantize_pmf",
]
