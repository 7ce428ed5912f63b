"""Li et al. 2018: binary code + learned importance map, exact 3D context models for the code and the map.

    lcomp train --config li2018:stage1 --workdir runs/li18-s1                          # stage 1: no map
    lcomp train --config li2018:3 --workdir runs/li18-3 \\
        --config.train.init_from=runs/li18-s1                                             # stage 2, rate point 3
    lcomp train --config li2018:small_stage1 --workdir runs/li18-small-s1              # the shipped CPU model
    lcomp train --config li2018:small --workdir runs/li18-small --config.train.init_from=runs/li18-small-s1
    lcomp bench --config li2018                                                         # paper size, n = 64

Variants. Paper size (spec li2018 section 2: n = 64, L = 16 for released models 1-4; n = 128, L = 32 for 5):
    "" / "3"        n = 64, r = 0.30
    "1" "2" "4"     n = 64, r = 0.12 / 0.18 / 0.50
    "5"             n = 128, L = 32, r = 0.40
    "stage1"        n = 64 without the importance map (every channel kept and coded), the start of 1-4
    "stage1_128"    the same for n = 128
    "small", "small_stage1"   the shipped model: narrower layers, n = 32, L = 8, 64 x 64 patches
    "tiny"          tests: a few thousand parameters (stage 2 from scratch)

What is ours, not the paper's (spec 4.1/4.2 leave it open): the rate term gamma * max(mean(p) - r, 0) with r a
fraction of the map's range (the per-model r above are chosen to land near the released rate points of spec
6.2, not read from the prototxts' `cmp_ratio`, whose mapping to models is unknown); distortion = MSE of the
[-1, 1] images (per-pixel mean); Adam 1e-4 (stage 1) and 1e-5 (stage 2) as the spec recommends, batch 32,
128 x 128 crops; the context models: Adam 1e-4, their own cross-entropy. Stage 2 needs `train.init_from`.
"""

import ml_collections

from lcomp import configs

RATE_POINTS = {"1": (64, 16, 0.12), "2": (64, 16, 0.18), "3": (64, 16, 0.30), "4": (64, 16, 0.50),
               "5": (128, 32, 0.40)}  # n, L, r
VARIANTS = (*RATE_POINTS, "stage1", "stage1_128", "small", "small_stage1", "tiny")


def get_config(variant: str = ""):
    variant = variant or "3"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
    cfg = configs.base_config()
    cfg.codec = "li2018"
    n, levels, r = RATE_POINTS.get(variant, (128 if variant == "stage1_128" else 64, 32 if variant == "stage1_128" else 16, 0.3))
    stage = 1 if variant.startswith("stage1") or variant == "small_stage1" else 2
    cfg.model = ml_collections.ConfigDict(
        dict(
            network=dict(code_channels=n, encoder_widths=(128, 256), decoder_widths=(512, 256, 32),
                         block_hidden=128, importance_hidden=128),
            levels=levels,
            stage=stage,
            gamma=1.0,
            rate_target=r,
            code_model=dict(features=24),
            map_model=dict(features=16),
        )
    )
    cfg.data.patch_size = 128
    cfg.data.batch_size = 32
    cfg.optim = ml_collections.ConfigDict(
        {
            "autoencoder": configs.optimizer_config(1e-4 if stage == 1 else 1e-5, schedule="constant"),
            "context_model": configs.optimizer_config(1e-4, schedule="constant"),
        }
    )
    cfg.train.num_steps = 160_000
    cfg.train.log_every = 100
    cfg.train.checkpoint_every = 5_000
    # Stage 2 starts from a stage-1 run: --config.train.init_from=<its workdir or exported model>.
    if variant in ("small", "small_stage1"):
        cfg.model.network.update(code_channels=32, encoder_widths=(48, 96), decoder_widths=(128, 64, 16),
                                 block_hidden=32, importance_hidden=32)
        cfg.model.levels = 8
        cfg.model.rate_target = 0.6
        cfg.model.code_model.features = 12
        cfg.model.map_model.features = 8
        cfg.data.patch_size = 64
        cfg.data.batch_size = 8
        # A short CPU run: larger steps than the paper's fine-tuning rate, cosine to zero.
        steps = 4000 if stage == 1 else 3000
        cfg.optim.autoencoder.update(learning_rate=1e-3 if stage == 1 else 3e-4, schedule="cosine",
                                     decay_steps=steps)
        cfg.optim.context_model.update(learning_rate=2e-3, schedule="cosine", decay_steps=steps)
        cfg.train.num_steps = steps
        cfg.train.log_every = 50
        cfg.train.checkpoint_every = 250
    elif variant == "tiny":
        cfg.model.network.update(code_channels=8, encoder_widths=(8, 16), decoder_widths=(16, 16, 8),
                                 block_hidden=8, importance_hidden=8)
        cfg.model.levels = 4
        cfg.model.rate_target = 0.3
        cfg.model.code_model.features = 6
        cfg.model.map_model.features = 4
        cfg.data.patch_size = 32
        cfg.data.batch_size = 4
        cfg.optim.autoencoder.update(learning_rate=2e-3)
        cfg.optim.context_model.update(learning_rate=3e-3)
        cfg.train.num_steps = 100
        cfg.train.log_every = 20
        cfg.train.checkpoint_every = 50
    return cfg
