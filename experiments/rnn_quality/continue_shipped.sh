#!/bin/sh
# Does the shipped johnston2018 model keep improving when training goes on at a learning rate that does not
# decay? (Its own 4000-step cosine schedule ends at learning rate 0, so its learning curve is flat at the end
# by construction: rnn_quality/j18_v5/learning_curve.md.) Starts from the shipped parameters (fresh Adam,
# 100-step warmup), then a constant 5e-4 for 1500 steps on the shipped recipe's data (embedded photographs
# half and half with dead leaves, rot90) with new data and step seeds, keeping every 250th checkpoint.
# Extra arguments are further config overrides (a variant of the continuation). Resumable: rerun after a kill.
# Pinned to one core and one XLA thread (the project's shared 2-core machine); CORE picks it (default 1).
#   sh experiments/rnn_quality/continue_shipped.sh WORKDIR [--config.X=Y ...]
# Then: python experiments/rnn_quality/learning_curve.py WORKDIR --out DIR
WORKDIR=${1:?usage: continue_shipped.sh WORKDIR [overrides]}
shift
exec taskset -c "${CORE:-1}" env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
  OMP_NUM_THREADS=1 nice -n 10 python -m lcomp train --config johnston2018:small --workdir "$WORKDIR" \
  --config.train.init_from=lcomp/zoo/johnston2018 \
  --config.data.dead_leaves_fraction=0.5 --config.data.rotate90=True \
  --config.data.seed=1 --config.train.seed=1 \
  --config.optim.autoencoder.schedule=constant --config.optim.autoencoder.learning_rate=5e-4 \
  --config.optim.autoencoder.warmup_steps=100 --config.optim.autoencoder.decay_steps=0 \
  --config.train.num_steps=1500 \
  --config.train.checkpoint_every=250 --config.train.keep_checkpoints=1000 --config.train.progress=False "$@"
