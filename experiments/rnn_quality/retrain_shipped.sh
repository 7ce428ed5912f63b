#!/bin/sh
# Retrain the shipped johnston2018 small model with the fixed small-variant schedule (lr 2e-3, warmup 200,
# cosine to 0 at step 4000), keeping every 250th checkpoint for the learning curve. Resumable: rerun the same
# command after a kill. Pinned to one core and one XLA thread (the project's shared 2-core machine).
#   sh experiments/rnn_quality/retrain_shipped.sh [WORKDIR]
# Then: python experiments/rnn_quality/learning_curve.py WORKDIR --out experiments/results/rnn_quality/j18_v2
#       lcomp eval --checkpoint WORKDIR --out runs/eval-j18-v2
WORKDIR=${1:-/work/runs/j18_v2}
exec taskset -c 1 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
  OMP_NUM_THREADS=1 nice -n 10 python -m lcomp train --config johnston2018:small --workdir "$WORKDIR" \
  --config.train.checkpoint_every=250 --config.train.keep_checkpoints=1000 --config.train.progress=False
