#!/usr/bin/env bash
# One machine, one GPU (a workstation or Colab): install the CUDA build of JAX and train.
#   bash launch/single_gpu.sh configs/demo.py data/syn128 runs/demo_stage1 [more train flags]
# On Colab: !git clone <this repo> && cd vasa_jax && bash launch/single_gpu.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:?config file}; DATA=${2:?corpus folder}; WORKDIR=${3:?run folder}; shift 3
python3 -m pip install -q -c constraints.txt -e '.[cuda]'
python3 -c 'import jax; d = jax.devices(); print("devices:", d); assert d[0].platform == "gpu", "no GPU visible to JAX"'
exec python3 -m vasa_jax.train --config "$CONFIG" --data "$DATA" --workdir "$WORKDIR" "$@"
