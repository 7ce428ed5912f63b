"""Mentzer et al. 2018: autoencoder + importance mask + exact 3D-CNN context model.

    lcomp train --config mentzer2018:A --workdir runs/m18-A        # released operating point A (default)
    lcomp train --config mentzer2018:small --workdir runs/m18-small # the shipped CPU model
    lcomp bench --config mentzer2018                              # paper-size model (K = 32, L = 6)

Variants (spec mentzer2018 section 8; common: beta = 500, L = 6, centers U[-2, 2], crop 160, batch 30,
AE Adam 8e-5, context model Adam 1e-4, both x0.1 every 85,410 steps, L2 0.005, MS-SSIM weight 5000):

    "" / "A"   cvpr/low:  K = 32, H_target = 0.4   (Kodak: 0.370 bpp, MS-SSIM 0.975)
    "B"        cvpr/med:  K = 32, H_target = 1.2   (0.677 bpp, 0.987)
    "C"        cvpr/hi:   K = 64, H_target = 1.0   (1.051 bpp, 0.992)
    "small"    the shipped model: narrower, 2 groups, K = 16, sub-pixel upsampling, 64x64 patches
    "tiny"     tests: a few thousand parameters, K = 8, 32x32 patches

Switches (spec section 11; defaults = the released code):
    model.mask             "code" (soft ramp) | "thesis" (ceiling, identity gradient)
    model.pc_input_grad    False (detached context-model input) | True (thesis: straight-through)
    model.pc_loss          "total" (context model trained by the total loss) | "own" (its own H_soft, thesis)
    model.distortion       "ms_ssim" (ms_ssim_weight * (1 - MS-SSIM)) | "mse" (mse_weight * MSE on [0, 255])
    model.network.upsampling  "transposed" (paper) | "subpixel" (conv + depth-to-space: 10-30x cheaper
                           gradients on XLA:CPU; small and tiny use it)
"""

import ml_collections

from lcomp import configs

OPERATING_POINTS = {"A": (32, 0.4), "B": (32, 1.2), "C": (64, 1.0)}  # K, H_target (bits per symbol)
DECAY_STEPS = 85_410  # two epochs of ImageNet at batch 30 (spec 7)


def get_config(variant: str = ""):
    variant = variant or "A"
    if variant not in (*OPERATING_POINTS, "small", "tiny"):
        raise ValueError(f"unknown variant {variant!r}: use A, B, C, small or tiny")
    cfg = configs.base_config()
    cfg.codec = "mentzer2018"
    k, h_target = OPERATING_POINTS.get(variant, (32, 0.4))
    cfg.model = ml_collections.ConfigDict(
        dict(
            network=dict(latent_channels=k, width=128, groups=5, blocks_per_group=3, first_width=64,
                         upsampling="transposed"),
            context_model=dict(features=24, logit_relu=True),
            num_centers=6,
            importance_map=True,
            mask="code",
            pc_input_grad=False,
            pc_loss="total",
            h_target=h_target,
            beta=500.0,
            distortion="ms_ssim",
            ms_ssim_weight=5000.0,
            mse_weight=1.0,
            l2_weight=0.005,
            l2_centers=0.1,
            sigma=1.0,
        )
    )
    cfg.data.patch_size = 160
    cfg.data.batch_size = 30
    cfg.optim = ml_collections.ConfigDict(
        {
            "autoencoder": configs.optimizer_config(8e-5, schedule="exponential", decay_steps=DECAY_STEPS,
                                                    decay_rate=0.1),
            "context_model": configs.optimizer_config(1e-4, schedule="exponential", decay_steps=DECAY_STEPS,
                                                      decay_rate=0.1),
        }
    )
    cfg.train.num_steps = 270_000
    cfg.train.log_every = 100
    cfg.train.checkpoint_every = 5_000
    if variant == "small":
        cfg.model.network.update(latent_channels=16, width=48, groups=2, first_width=32, upsampling="subpixel")
        cfg.model.h_target = 1.0  # implied 16 / 64 * 1.0 = 0.25 bpp; real rates land between 1x and 2x
        cfg.model.pc_loss = "own"  # a short run: the context model learns every step (thesis semantics)
        cfg.data.patch_size = 64
        cfg.data.batch_size = 8
        cfg.optim.autoencoder.update(learning_rate=1e-3, decay_steps=4_000)
        cfg.optim.context_model.update(learning_rate=1e-3, decay_steps=4_000)
        cfg.train.num_steps = 6_000
        cfg.train.log_every = 50
        cfg.train.checkpoint_every = 500
    elif variant == "tiny":
        cfg.model.network.update(latent_channels=8, width=16, groups=1, blocks_per_group=1, first_width=8,
                                 upsampling="subpixel")
        cfg.model.context_model.features = 8
        cfg.model.h_target = 1.0
        cfg.data.patch_size = 32
        cfg.data.batch_size = 4
        cfg.optim.autoencoder.update(learning_rate=2e-3, schedule="constant")
        cfg.optim.context_model.update(learning_rate=3e-3, schedule="constant")
        cfg.train.num_steps = 200
        cfg.train.log_every = 20
        cfg.train.checkpoint_every = 100
    return cfg
