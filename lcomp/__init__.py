"""lcomp: learned image compression in JAX.

Data flow (each stage lives in its own module):

    image -> lcomp.data -> codec encoder (lcomp.codecs.*, built from lcomp.nn)
          -> lcomp.quantize -> lcomp.entropy (probabilities -> integer frequencies -> range coder)
          -> lcomp.container (the file) -> decoder -> image

Training runs through the single engine in lcomp.train; evaluation through lcomp.evaluate.
"""

__version__ = "0.1.0"

from lcomp.errors import LcompError  # noqa: E402,F401
