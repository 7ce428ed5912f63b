"""Layers Flax lacks, shared by the codecs.

* :mod:`lcomp.nn.conv_rnn`: ``ConvGRUCell``, ``ConvLSTMCell`` (separate input/hidden kernels, stride on
  the input convolution only) for the recurrent coder of Toderici et al. / Johnston et al.
* :mod:`lcomp.nn.masked`: causal masked 2D/3D convolutions for context models (Li et al., Mentzer et al.).
* :mod:`lcomp.nn.blocks`: ``conv2d``/``Conv2D`` (a drop-in for ``nn.Conv`` without XLA:CPU's slow
  small-map convolutions and gradients), ``depth_to_space``/``space_to_depth`` (TensorFlow channel
  order), ``ResidualBlock``, ``SubpixelUpsample``.
"""

from lcomp.nn.blocks import Conv2D, ResidualBlock, SubpixelUpsample, conv2d, depth_to_space, space_to_depth
from lcomp.nn.conv_rnn import ConvGRUCell, ConvLSTMCell
from lcomp.nn.masked import MaskedConv2D, MaskedConv3D, raster_mask

__all__ = [
    "Conv2D",
    "conv2d",
    "ConvGRUCell",
    "ConvLSTMCell",
    "MaskedConv2D",
    "MaskedConv3D",
    "raster_mask",
    "ResidualBlock",
    "SubpixelUpsample",
    "depth_to_space",
    "space_to_depth",
]
