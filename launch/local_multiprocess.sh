#!/usr/bin/env bash
# Several processes on one machine, each with its own (fake) CPU devices: exercises the
# multi-host code path (per-process data slices, global arrays, shared checkpoints).
#   bash launch/local_multiprocess.sh 2 configs/tiny.py /tmp/syn64 /tmp/run_mp --config.train.steps=2
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:?number of processes}; CONFIG=${2:?config}; DATA=${3:?corpus}; WORKDIR=${4:?run folder}; shift 4
PORT=${PORT:-$((20000 + RANDOM % 20000))}
PY=${PYTHON:-python3}
pids=()
for ((i = 0; i < N; i++)); do
  JAX_PLATFORMS=cpu $PY -m vasa_jax.train --config "$CONFIG" --data "$DATA" --workdir "$WORKDIR" \
    --coordinator "localhost:$PORT" --num-processes "$N" --process-id "$i" "$@" &
  pids+=($!)
done
# One process failing leaves its peers blocked in a collective: stop them all.
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
status=0
for ((i = 0; i < N; i++)); do
  if ! wait -n; then status=1; kill "${pids[@]}" 2>/dev/null || true; break; fi
done
exit $status
