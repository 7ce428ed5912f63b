"""The recurrent coder of Toderici et al. 2017 / Johnston et al. 2018: networks and bit-probability model.

* :mod:`lcomp.codecs.rnn.network`: encoder, binarizer, decoder and their iteration loops
  (``RNNCoderConfig``, ``RNNCoderNetwork``).
* :mod:`lcomp.codecs.rnn.entropy_model`: the learned probability model for the emitted bits.
"""

from lcomp.codecs.rnn.network import IterationOutputs, RNNCoderConfig, RNNCoderNetwork

__all__ = ["IterationOutputs", "RNNCoderConfig", "RNNCoderNetwork"]
