"""Li et al. 2018: binary code, learned importance map and its mask, exact 3D context models, real files."""

from lcomp.codecs.li2018 import codec  # noqa: F401  (registers li2018)
