#!/usr/bin/env bash
# Pretrain a ViT with a mixing method:  tools/pretrain.sh CONFIG [key=value ...]
#
#   tools/pretrain.sh configs/pretrain/synthetic_transmix.yaml train.epochs=5
#   NPROC=8 tools/pretrain.sh configs/pretrain/deit_s_transmix.yaml data.root=/data/imagenet
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 MASTER_PORT=29500 NPROC=8 tools/pretrain.sh CONFIG
#
# NPROC processes per node (default: number of GPUs, or 1 on CPU). Uses .venv when present.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ]; then
  echo "usage: $0 CONFIG [key=value ...]" >&2
  exit 2
fi
PY=${PYTHON:-python}
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
NPROC=${NPROC:-$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')}
NNODES=${NNODES:-1}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "$NNODES" = "1" ]; then
  exec "$PY" -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node="$NPROC" \
    -m pretrain.train --config "$@"
fi
exec "$PY" -m torch.distributed.run --nnodes="$NNODES" --node-rank="${NODE_RANK:?set NODE_RANK}" \
  --master-addr="${MASTER_ADDR:?set MASTER_ADDR}" --master-port="${MASTER_PORT:-29500}" \
  --nproc-per-node="$NPROC" -m pretrain.train --config "$@"
