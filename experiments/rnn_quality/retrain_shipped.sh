#!/bin/sh
# Retrain the shipped johnston2018 small model: the small config (last decoder GRU 32 channels, 8 features per
# output pixel after the last depth_to_space, the bottleneck found in experiments/results/rnn_quality/width;
# lr 2e-3, warmup 150, cosine to 0 at step 1800; the flags below spell it out), keeping every 250th
# checkpoint for the learning curve. Resumable: rerun the same command after a kill. Pinned to one core and one
# XLA thread (the project's shared 2-core machine).
#   sh experiments/rnn_quality/retrain_shipped.sh [WORKDIR]
# Then: python experiments/rnn_quality/learning_curve.py WORKDIR --out experiments/results/rnn_quality/j18_v4
#       python experiments/export_model.py WORKDIR lcomp/zoo/johnston2018
#       lcomp eval --checkpoint lcomp/zoo/johnston2018 --out experiments/results/johnston2018_shipped_kodak
# j18_v2 (experiments/results/rnn_quality/j18_v2) was the earlier small config (last decoder GRU 16 channels,
# 4000 steps, warmup 200); j18_v3 the same
# with data.dead_leaves_fraction=0.5 and data.rotate90=True, stopped at step 1950 (rnn_quality/j18_v3).
WORKDIR=${1:-/work/runs/j18_v4}
exec taskset -c 1 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
  OMP_NUM_THREADS=1 nice -n 10 python -m lcomp train --config johnston2018:small --workdir "$WORKDIR" \
  --config.model.network.decoder_rnn_features="(64,64,32,32)" \
  --config.train.num_steps=1800 --config.optim.autoencoder.warmup_steps=150 \
  --config.optim.autoencoder.decay_steps=1650 \
  --config.train.checkpoint_every=250 --config.train.keep_checkpoints=1000 --config.train.progress=False
