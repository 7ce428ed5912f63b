"""Mentzer et al. 2018: autoencoder, importance mask, exact 3D context model, wavefront decoding."""

from lcomp.codecs.mentzer2018 import codec  # noqa: F401  (registers mentzer2018)
