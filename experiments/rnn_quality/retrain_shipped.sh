#!/bin/sh
# The next retrain of the shipped johnston2018 small model, as the experiments recommend: the small config on
# the embedded photographs mixed half and half with procedural dead-leaves images, every example turned by a
# random multiple of 90 degrees (rnn_quality/j18_v3 against j18_v2: +1.1 dB PSNR@16 on held-out crops at step
# 1750), 4000 steps, keeping every 250th checkpoint for the learning curve. Resumable: rerun after a kill.
# Pinned to one core and one XLA thread (the project's shared 2-core machine); CORE picks it (default 1).
# Extra arguments after WORKDIR are further config overrides (a controlled variant of this recipe: same seed,
# same data order), e.g. --config.model.network.reconstruction=additive (rnn_quality/j18_additive);
# --config.model.network.reconstruction=residual_scaling --config.model.network.gain_block=16 (j18_rscale);
# --config.model.network.iterations=4 --config.model.network.bits_per_position=128 (j18_t4b128, then
# compare_curves.py --bits-ratio 4).
#   sh experiments/rnn_quality/retrain_shipped.sh [WORKDIR [--config.X=Y ...]]
# Then: python experiments/rnn_quality/learning_curve.py WORKDIR --out experiments/results/rnn_quality/j18_v5
#       python experiments/export_model.py WORKDIR lcomp/zoo/johnston2018
#       lcomp eval --checkpoint lcomp/zoo/johnston2018 --out experiments/results/johnston2018_shipped_kodak
# j18_v2 = this without the two data flags (shipped before j18_v5); j18_v4 = j18_v2 with
# --config.model.network.decoder_rnn_features="(64,64,32,32)", 1800 steps (warmup 150, decay_steps 1650).
WORKDIR=${1:-/work/runs/j18_v5}
[ $# -gt 0 ] && shift
exec taskset -c "${CORE:-1}" env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
  OMP_NUM_THREADS=1 nice -n 10 python -m lcomp train --config johnston2018:small --workdir "$WORKDIR" \
  --config.data.dead_leaves_fraction=0.5 --config.data.rotate90=True \
  --config.train.checkpoint_every=250 --config.train.keep_checkpoints=1000 --config.train.progress=False "$@"
