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
from lcomp.entropy.masks import channel_causal_mask, checkerboard_mask, mask_taps, raster_mask
from lcomp.entropy.range_coding import CODER_PRECISION, SymbolDecoder, SymbolEncoder
from lcomp.entropy.side_info import decode_integer_map, encode_integer_map, mask_from_counts

__all__ = [
    "CODER_PRECISION",
    "DEFAULT_PRECISION",
    "MAX_PRECISION",
    "EntropyCodingError",
    "SymbolDecoder",
    "SymbolEncoder",
    "binary_pmf",
    "channel_causal_mask",
    "checkerboard_mask",
    "code_length_bits",
    "decode_integer_map",
    "encode_integer_map",
    "mask_from_counts",
    "mask_taps",
    "quantize_pmf",
    "raster_mask",
]
