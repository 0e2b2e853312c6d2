#!/usr/bin/env bash
# One command for a GPU machine (bare or the Docker image): set-up with the CUDA build, mmcv's CUDA ops
# against their CPU results, the GPU smoke suite, then every benchmark with its GPU arguments.
#
#   bash tools/gpu_validate.sh                 # everything (about 30-45 min on one H100)
#   bash tools/gpu_validate.sh --skip-setup    # the stack is already built (e.g. in the image)
#   bash tools/gpu_validate.sh --only bench    # steps: setup, ops, smoke, bench (comma-separated)
#   bash tools/gpu_validate.sh --borrowed [--wheels DIR] [--dry-run] [--out DIR]
#                                              # <= 8 min on a borrowed machine: its own python3 (PYTHON) with
#                                              # torch + timm, no mmcv, no package index; carried pure-Python
#                                              # wheels unpacked onto PYTHONPATH (tools/gpu_validate_borrowed.py)
#
# Outputs: runs/gpu_validate/<UTC date-time>/ holds env.txt (device, driver, versions, date), one log
# per step and one markdown/JSON file per benchmark; the end prints which docs/benchmarks/*.md file each
# table belongs to. Every benchmark runs under `timeout` (BENCH_TIMEOUT seconds, default 600; sized to
# take at most about 5 min on an H100), so one hung step cannot stall the rest; a step that fails or
# times out is reported and the script goes on, then exits non-zero.
#
# Environment: TORCH_CUDA_ARCH_LIST (default: the visible GPUs' architectures), BENCH_TIMEOUT,
# SMOKE_TIMEOUT (default 1800), PYTHON (default: .venv/bin/python).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
if [ "${1:-}" = "--borrowed" ]; then  # nothing installed, nothing built: the machine's python3 runs everything
  shift
  exec "${PYTHON:-python3}" "$ROOT/tools/gpu_validate_borrowed.py" --python "${PYTHON:-python3}" "$@"
fi
STEPS="setup,ops,smoke,bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-setup) STEPS=${STEPS/setup,/}; shift ;;
    --only) STEPS=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
want() { [[ ",$STEPS," == *",$1,"* ]]; }

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${GPU_VALIDATE_OUT:-runs/gpu_validate/$STAMP}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-1800}
FAILED=()

log() { printf '\n[gpu_validate %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
# run NAME TIMEOUT CMD...: run a step with a time limit, its output to OUT/NAME.log (and the terminal)
run() {
  local name=$1 limit=$2 rc t0
  shift 2
  log "$name: $*"
  t0=$(date +%s)
  timeout --kill-after=30 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "[gpu_validate] $name: TIMED OUT after ${limit}s" | tee -a "$OUT/$name.log"
    FAILED+=("$name (timeout)")
  elif [ "$rc" != 0 ]; then
    echo "[gpu_validate] $name: FAILED (exit $rc)" | tee -a "$OUT/$name.log"
    FAILED+=("$name (exit $rc)")
  else
    echo "[gpu_validate] $name: ok in $(( $(date +%s) - t0 ))s"
  fi
  return 0
}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU visible (nvidia-smi -L failed); in Docker run with --gpus all" >&2
  exit 2
fi
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  # the visible GPUs' compute capabilities, e.g. 9.0 on an H100
  TORCH_CUDA_ARCH_LIST=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | sort -u | paste -sd ';')
fi
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST
mkdir -p "$OUT"

if want setup; then
  run setup 7200 bash tools/setup.sh
fi
PY=${PYTHON:-$ROOT/.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "no venv at $ROOT/.venv: run without --skip-setup (or set PYTHON)" >&2
  exit 2
fi

{
  echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "host: $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader | sed 's/^/gpu: /'
  "$PY" - <<'PY'
import platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}), device 0: {torch.cuda.get_device_name(0)}")
for name in ("timm", "mmcv", "mmseg", "mmdet", "detectron2"):
    try:
        mod = __import__(name)
        print(f"{name} {mod.__version__}")
    except Exception as exc:  # report and go on: the later steps name what is broken
        print(f"{name}: import failed: {exc}")
try:
    from mmcv.ops import get_compiling_cuda_version, get_compiler_version
    print(f"mmcv ops: compiled with CUDA {get_compiling_cuda_version()}, {get_compiler_version()}")
except Exception as exc:
    print(f"mmcv ops: {exc}")
PY
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
} 2>&1 | tee "$OUT/env.txt"

if want ops; then
  # mmcv's compiled CUDA kernels against the CPU kernels on the same inputs (no pytest needed)
  run ops 300 "$PY" - <<'PY'
import torch
from mmcv.ops import get_compiling_cuda_version, nms, roi_align

assert get_compiling_cuda_version() not in ("", "not available"), "mmcv ops were built without CUDA"
g = torch.Generator().manual_seed(0)
xy = torch.rand(500, 2, generator=g) * 200
wh = torch.rand(500, 2, generator=g) * 60 + 4
boxes = torch.cat([xy, xy + wh], 1)
scores = torch.rand(500, generator=g)
_, keep_cpu = nms(boxes, scores, 0.5)
_, keep_gpu = nms(boxes.cuda(), scores.cuda(), 0.5)
assert torch.equal(keep_cpu, keep_gpu.cpu()), "nms: CUDA and CPU kept different boxes"
feats = torch.randn(2, 16, 32, 32, generator=g)
rois = torch.cat([torch.randint(0, 2, (64, 1), generator=g).float(), boxes[:64] / 8], 1)
ref = roi_align(feats, rois, (7, 7), 0.5, 2, "avg", True)
out = roi_align(feats.cuda(), rois.cuda(), (7, 7), 0.5, 2, "avg", True).cpu()
err = (out - ref).abs().max().item()
assert err < 1e-4, f"roi_align: CUDA differs from CPU by {err}"
print(f"mmcv CUDA ops ok: nms keeps {keep_cpu.numel()} boxes on both devices; roi_align max |diff| {err:.2e}")
PY
fi

if want smoke; then
  run smoke "$SMOKE_TIMEOUT" "$PY" -m pytest -m gpu tests -q -rs
fi

if want bench; then
  if [ ! -f data/synthetic/synthetic.json ]; then
    run make_synthetic 900 "$PY" tools/make_synthetic.py --out data/synthetic
  fi
  run bench_mixers_deit_s "$BENCH_TIMEOUT" "$PY" tools/bench_mixers.py --device cuda --amp bf16 \
    --model deit_small_patch16_224 --batch 256 --steps 10 --rounds 5 --json "$OUT/bench_mixers_deit_s.json"
  run bench_mixers_deit_b "$BENCH_TIMEOUT" "$PY" tools/bench_mixers.py --device cuda --amp bf16 \
    --model deit_base_patch16_224 --batch 128 --steps 10 --rounds 5 --json "$OUT/bench_mixers_deit_b.json"
  run bench_pretrain "$BENCH_TIMEOUT" "$PY" tools/bench_pretrain.py --preset gpu --json "$OUT/bench_pretrain.json"
  run bench_pretrain_compile "$BENCH_TIMEOUT" "$PY" tools/bench_pretrain.py --preset gpu --compile --channels-last \
    --data '' --json "$OUT/bench_pretrain_compile.json"
  run bench_mmseg_deit_s "$BENCH_TIMEOUT" "$PY" tools/bench_mmseg.py --device cuda --amp bf16 --sizes 512 --batch 8 \
    --steps 30 --warmup 5 --config configs/mmseg/mask_deit-s_ade20k-512x512.py --json "$OUT/bench_mmseg_deit_s.json"
  run bench_mmseg_deit_b "$BENCH_TIMEOUT" "$PY" tools/bench_mmseg.py --device cuda --amp bf16 --sizes 512 --batch 8 \
    --steps 30 --warmup 5 --config configs/mmseg/mask_deit-b_ade20k-512x512.py --json "$OUT/bench_mmseg_deit_b.json"
  run bench_detection "$BENCH_TIMEOUT" "$PY" tools/bench_detection.py --device cuda --amp bf16 --size 1024 --batch 2 \
    --iters 20 --warmup 5 --json "$OUT/bench_detection.json"
  run bench_analysis "$BENCH_TIMEOUT" "$PY" tools/bench_analysis.py --device cuda --amp bf16 \
    --model deit_small_patch16_224 --batch-size 256 --batches 4
  if [ -f tools/bench_mixmo.py ]; then
    # the GPU command of its docstring (WRN-28-10, batch 64, repetition 4)
    run bench_mixmo "$BENCH_TIMEOUT" "$PY" tools/bench_mixmo.py --device cuda --amp bf16 --arch wrn28_10 \
      --batch 64 --repeat 4 --steps 10 --rounds 5 --warmup 3 --json "$OUT/bench_mixmo.json"
  fi
fi

log "done; outputs in $OUT"
cat <<EOF
Paste each table, with the date, device and versions from $OUT/env.txt and the command from the log's
first line, into:
  bench_mixers_deit_{s,b}.log      -> docs/benchmarks/mixers.md    (GPU section)
  bench_pretrain{,_compile}.log    -> docs/benchmarks/pretrain.md  (GPU tables)
  bench_mmseg_deit_{s,b}.log       -> docs/benchmarks/mmseg.md     (GPU rows)
  bench_detection.log              -> docs/benchmarks/detection.md (GPU row)
  bench_analysis.log               -> docs/benchmarks/analysis.md  (GPU table)
  bench_mixmo.log (when present)   -> docs/benchmarks/mixmo.md
  smoke.log (pytest -m gpu)        -> docs/benchmarks.md, with the device and date of this run
EOF
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "[gpu_validate] failed steps: ${FAILED[*]}" >&2
  exit 1
fi
