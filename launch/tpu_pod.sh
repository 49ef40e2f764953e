#!/usr/bin/env bash
# A TPU VM pod slice: the same command on every worker; JAX finds its peers (--multihost).
#   TPU=my-v4-32 ZONE=us-central2-b bash launch/tpu_pod.sh configs/paper.py gs://bucket/syn512 gs://bucket/runs/paper
# The corpus and the run folder must be visible to every worker (GCS, or the same NFS path).
# Checkpoints hold every host's data-iterator state; rerunning the command resumes.
set -euo pipefail
CONFIG=${1:?config file}; DATA=${2:?corpus folder}; WORKDIR=${3:?run folder}; shift 3
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}"
: "${REPO:?set REPO to the git URL of this repository}"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e
  [ -d vasa_jax ] || git clone $REPO vasa_jax
  cd vasa_jax && git pull --ff-only
  python3 -m pip install -q -c constraints.txt -e '.[tpu]'
  python3 -m vasa_jax.train --multihost --config $CONFIG --data $DATA --workdir $WORKDIR $*
"
