#!/usr/bin/env bash
# Pretrain a ViT with a mixing method over torchrun:
#
#   tools/pretrain.sh [launcher options] CONFIG [--resume auto|PATH] [key=value ...]
#
#   tools/pretrain.sh configs/pretrain/synthetic_transmix.yaml train.epochs=5          # CPU or one GPU
#   tools/pretrain.sh --nproc 8 configs/pretrain/deit_s_transmix.yaml data.root=/data/imagenet
#   tools/pretrain.sh --nproc 8 configs/pretrain/deit_s_transmix.yaml --resume auto     # continue a run
#   # two nodes, run on each with its own --node-rank:
#   tools/pretrain.sh --nnodes 2 --node-rank 0 --master-addr host0 --master-port 29500 --nproc 8 CONFIG
#
# Launcher options (or the environment variables in brackets):
#   --nproc N         processes per node [NPROC]; default: the number of visible GPUs, or 1 on CPU
#   --nnodes N        number of nodes [NNODES, default 1]
#   --node-rank R     this node's rank [NODE_RANK]
#   --master-addr H   address of node 0 [MASTER_ADDR]
#   --master-port P   port on node 0 [MASTER_PORT, default 29500]
# Everything from CONFIG on goes to `python -m pretrain.train --config CONFIG ...` (also --break-lock: take
# over the lock a dead run left on another host). Uses .venv when present. The command is checked before
# any process starts (pretrain/engine/launch.py wraps torchrun); the trainers die with this launcher.
# Exit status: 0 done; 2 an error in the command (config, train.out_dir a file or in use by another run),
# one line on stderr; 75 stopped by SIGUSR1/SIGTERM after writing a checkpoint (resume with --resume auto);
# 1 anything else. See docs/pretraining.md for the run folder, its lock and a SLURM script.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2; exit 2; }
NPROC=${NPROC:-}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-}
MASTER_ADDR=${MASTER_ADDR:-}
MASTER_PORT=${MASTER_PORT:-29500}
while [ $# -gt 0 ]; do
  case "$1" in
    --nproc|--nproc-per-node) NPROC=$2; shift 2 ;;
    --nnodes) NNODES=$2; shift 2 ;;
    --node-rank|--node_rank) NODE_RANK=$2; shift 2 ;;
    --master-addr|--master_addr) MASTER_ADDR=$2; shift 2 ;;
    --master-port|--master_port) MASTER_PORT=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "unknown launcher option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
[ -f "$1" ] || { echo "config file not found: $1" >&2; exit 2; }
PY=${PYTHON:-python}
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
[ -n "$NPROC" ] || NPROC=$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "$NNODES" = "1" ]; then
  exec "$PY" -m pretrain.engine.launch --standalone --nnodes=1 --nproc-per-node="$NPROC" \
    -- --config "$@"
fi
[ -n "$NODE_RANK" ] || { echo "--node-rank (or NODE_RANK) is required with --nnodes $NNODES" >&2; exit 2; }
[ -n "$MASTER_ADDR" ] || { echo "--master-addr (or MASTER_ADDR) is required with --nnodes $NNODES" >&2; exit 2; }
exec "$PY" -m pretrain.engine.launch --nnodes="$NNODES" --node-rank="$NODE_RANK" \
  --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" \
  --nproc-per-node="$NPROC" -- --config "$@"
