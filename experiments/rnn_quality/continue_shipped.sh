#!/bin/sh
# Does the shipped johnston2018 model keep improving when training goes on at a learning rate that does not
# decay? (Its own 4000-step cosine schedule ends at learning rate 0, so its learning curve is flat at the end
# by construction: rnn_quality/j18_v5/learning_curve.md.) Starts from the shipped parameters (fresh Adam,
# 100-step warmup), then a constant 5e-4 for 1500 steps on the shipped recipe's data (embedded photographs
# half and half with dead leaves, rot90) with new data and step seeds, keeping every 250th checkpoint.
# Extra arguments are further config overrides (a variant of the continuation). Resumable: rerun after a kill.
# Runs through retrain_shipped.sh: one core and one XLA thread; CORE picks the core (default 1).
#   sh experiments/rnn_quality/continue_shipped.sh WORKDIR [--config.X=Y ...]
# Then: python experiments/rnn_quality/learning_curve.py WORKDIR --out DIR
WORKDIR=${1:?usage: continue_shipped.sh WORKDIR [overrides]}
shift
# The shipped recipe's command (pinning, data flags, checkpoints) with the continuation's settings on top.
exec sh "$(dirname "$0")/retrain_shipped.sh" "$WORKDIR" \
  --config.train.init_from=lcomp/zoo/johnston2018 \
  --config.data.seed=1 --config.train.seed=1 \
  --config.optim.autoencoder.schedule=constant --config.optim.autoencoder.learning_rate=5e-4 \
  --config.optim.autoencoder.warmup_steps=100 --config.optim.autoencoder.decay_steps=0 \
  --config.train.num_steps=1500 "$@"
