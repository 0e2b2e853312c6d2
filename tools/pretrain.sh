#!/usr/bin/env bash
# Pretrain a ViT with a mixing method over torchrun:
#
#   tools/pretrain.sh [launcher options] CONFIG [--resume auto|PATH] [key=value ...]
#
#   tools/pretrain.sh configs/pretrain/synthetic_transmix.yaml train.epochs=5          # CPU or one GPU
#   tools/pretrain.sh --nproc 8 configs/pretrain/deit_s_transmix.yaml data.root=/data/imagenet
#   tools/pretrain.sh --nproc 8 configs/pretrain/deit_s_transmix.yaml --resume auto     # continue a run
#   # two nodes, run on each with its own --node-rank (torchrun's static rendezvous):
#   tools/pretrain.sh --nnodes 2 --node-rank 0 --master-addr host0 --master-port 29500 --nproc 8 CONFIG
#   # the same on every node, node ranks assigned by a c10d rendezvous; 2 to 4 nodes (elastic), up to 3
#   # restarts of the worker group after a failure, each resuming from the newest checkpoint:
#   tools/pretrain.sh --nnodes 2:4 --rdzv-backend c10d --rdzv-endpoint host0:29400 --rdzv-id job42 \
#       --max-restarts 3 --nproc 8 CONFIG
#
# Launcher options (or the environment variables in brackets):
#   --nproc N            processes per node [NPROC]; default: the number of visible GPUs, or 1 on CPU
#   --nnodes N|MIN:MAX   number of nodes [NNODES, default 1]; MIN:MAX (elastic) needs --rdzv-backend
#   --node-rank R        this node's rank [NODE_RANK] (static rendezvous only)
#   --master-addr H      address of node 0 [MASTER_ADDR] (static rendezvous only)
#   --master-port P      port on node 0 [MASTER_PORT, default 29500] (static rendezvous only)
#   --rdzv-backend B     c10d (or etcd): a rendezvous assigns the node ranks [RDZV_BACKEND]
#   --rdzv-endpoint H:P  where the rendezvous runs, e.g. the first node [RDZV_ENDPOINT]
#   --rdzv-id ID         the job's name, the same on every node [RDZV_ID, default SLURM_JOB_ID]
#   --max-restarts N     restarts of the worker group after a failure [MAX_RESTARTS, default 0]; the
#                        restarted group resumes from the run folder's newest checkpoint
# Everything from CONFIG on goes to `python -m pretrain.train --config CONFIG ...` (also --break-lock: take
# over the lock a dead run left on another host). Uses .venv when present. The command is checked before
# any process starts (pretrain/engine/launch.py wraps torchrun: the run lock on node 0, or on every node
# with a rendezvous); the trainers die with this launcher.
# Exit status: 0 done; 2 an error in the command (config, train.out_dir a file or in use by another run),
# one line on stderr; 75 stopped by SIGUSR1/SIGTERM after writing a checkpoint (resume with --resume auto);
# 1 anything else. See docs/pretraining.md for the run folder, its lock and SLURM (tools/slurm/).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2; exit 2; }
NPROC=${NPROC:-}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-}
MASTER_ADDR=${MASTER_ADDR:-}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_BACKEND=${RDZV_BACKEND:-}
RDZV_ENDPOINT=${RDZV_ENDPOINT:-}
RDZV_ID=${RDZV_ID:-${SLURM_JOB_ID:-}}
MAX_RESTARTS=${MAX_RESTARTS:-0}
need() { [ $# -ge 2 ] || { echo "launcher option $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nproc|--nproc-per-node|--nproc_per_node) need "$@"; NPROC=$2; shift 2 ;;
    --nnodes) need "$@"; NNODES=$2; shift 2 ;;
    --node-rank|--node_rank) need "$@"; NODE_RANK=$2; shift 2 ;;
    --master-addr|--master_addr) need "$@"; MASTER_ADDR=$2; shift 2 ;;
    --master-port|--master_port) need "$@"; MASTER_PORT=$2; shift 2 ;;
    --rdzv-backend|--rdzv_backend) need "$@"; RDZV_BACKEND=$2; shift 2 ;;
    --rdzv-endpoint|--rdzv_endpoint) need "$@"; RDZV_ENDPOINT=$2; shift 2 ;;
    --rdzv-id|--rdzv_id) need "$@"; RDZV_ID=$2; shift 2 ;;
    --max-restarts|--max_restarts) need "$@"; MAX_RESTARTS=$2; shift 2 ;;
    --*=*) opt=${1%%=*}; val=${1#*=}; shift; set -- "$opt" "$val" "$@" ;;
    -h|--help) usage ;;
    -*) echo "unknown launcher option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
[ -f "$1" ] || { echo "config file not found: $1" >&2; exit 2; }
[[ "$MAX_RESTARTS" =~ ^[0-9]+$ ]] || { echo "--max-restarts must be a whole number, got $MAX_RESTARTS" >&2; exit 2; }
[[ "$NNODES" =~ ^[0-9]+(:[0-9]+)?$ ]] || { echo "--nnodes must be N or MIN:MAX, got $NNODES" >&2; exit 2; }
PY=${PYTHON:-python}
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
[ -n "$NPROC" ] || NPROC=$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
LAUNCH=("$PY" -m pretrain.engine.launch --nproc-per-node="$NPROC" --max-restarts="$MAX_RESTARTS")
if [ -n "$RDZV_BACKEND" ] && [ "$RDZV_BACKEND" != static ]; then
  [ -n "$RDZV_ENDPOINT" ] || { echo "--rdzv-endpoint HOST:PORT (or RDZV_ENDPOINT) is required with --rdzv-backend $RDZV_BACKEND" >&2; exit 2; }
  [ -n "$RDZV_ID" ] || { echo "--rdzv-id (or RDZV_ID) is required with --rdzv-backend $RDZV_BACKEND: the same name on every node of the job" >&2; exit 2; }
  exec "${LAUNCH[@]}" --nnodes="$NNODES" --rdzv-backend="$RDZV_BACKEND" --rdzv-endpoint="$RDZV_ENDPOINT" \
    --rdzv-id="$RDZV_ID" -- --config "$@"
fi
case "$NNODES" in *:*) echo "--nnodes $NNODES (elastic) needs --rdzv-backend c10d and --rdzv-endpoint" >&2; exit 2 ;; esac
if [ "$NNODES" = "1" ]; then
  exec "${LAUNCH[@]}" --standalone --nnodes=1 -- --config "$@"
fi
[ -n "$NODE_RANK" ] || { echo "--node-rank (or NODE_RANK) is required with --nnodes $NNODES" >&2; exit 2; }
[ -n "$MASTER_ADDR" ] || { echo "--master-addr (or MASTER_ADDR) is required with --nnodes $NNODES" >&2; exit 2; }
exec "${LAUNCH[@]}" --nnodes="$NNODES" --node-rank="$NODE_RANK" \
  --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" -- --config "$@"
