"""Toderici et al. 2017: full-resolution recurrent coder (conv-GRU, one-shot, L1 on every iteration).

    lcomp train --config toderici2017:tiny --workdir runs/t17-tiny
    lcomp train --config toderici2017 --workdir runs/t17 --config.model.network.cell=lstm

Switches for the paper's variants: network.cell ("gru" | "lstm"), network.reconstruction ("one_shot" |
"additive" | "residual_scaling"), network.residual_gru (unverified form of the Residual GRU).
"""

from lcomp.experiment_configs._rnn_common import rnn_config


def get_config(variant: str = ""):
    return rnn_config("toderici2017", variant, network={}, loss="l1")
