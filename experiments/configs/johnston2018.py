"""Johnston et al. 2018: T17's recurrent coder + hidden-state priming, diffusion, SSIM-weighted L1, SABR.

    lcomp train --config johnston2018:tiny --workdir runs/j18-tiny
    lcomp train --config johnston2018 --workdir runs/j18 --config.model.network.priming_steps=2

Unconfirmed facts of the paper are switches here (spec rnn_coder.md section 9):
  network.priming_steps    k extra encoder/decoder steps on the first iteration (no bits, no image)
  network.diffusion_steps  d extra steps between later iterations
  loss                     "ssim_weighted_l1" (J18) or "l1"
  ssim_weight_by           "dissimilarity" (S = 1 - SSIM, default) or "similarity"
  sabr.*                   the encode-time SABR defaults (metric, block size); the target comes from
                           `lcomp compress --target-quality Q`
"""

from lcomp.experiment_configs._rnn_common import rnn_config


def get_config(variant: str = ""):
    return rnn_config(
        "johnston2018",
        variant,
        network=dict(priming_steps=3, diffusion_steps=0),  # 3-priming: the likely final model (gru_prime3)
        loss="ssim_weighted_l1",
    )
