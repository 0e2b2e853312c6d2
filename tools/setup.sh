#!/usr/bin/env bash
# Idempotent set-up of the full stack in ./.venv (CPU; GPU with FORCE_CUDA=1).
#
#   bash tools/setup.sh            # create/refresh .venv, then print the versions of the stack
#
# Environment knobs:
#   PYTHON=python3.11      interpreter used to create the venv (>= 3.10)
#   VITMIX_VENV=PATH       venv location (default: <repo>/.venv)
#   VITMIX_CACHE=PATH      where built wheels are cached across clones (default: ~/.cache/vitmix)
#   FORCE_CUDA=1           build mmcv ops with CUDA (needs nvcc); TORCH_CUDA_ARCH_LIST is honoured
#   MAX_JOBS=N             parallel compile jobs for the mmcv build (default: number of cores)
#
# The slow part is compiling mmcv 2.1.0 with its ops (10-25 min on 2 cores). The wheel is cached
# under $VITMIX_CACHE keyed by mmcv, torch, python (and CUDA) versions, so it is built once per machine.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VITMIX_VENV:-$ROOT/.venv}
CACHE=${VITMIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vitmix}
PYTHON=${PYTHON:-python3}
HELPERS=$ROOT/tools/setup_helpers

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
D2_SDIST=pb1-detectron2==0.6
D2_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29
PY_PACKAGES=(
  "timm==1.0.31" "mmengine==0.10.7" "mmsegmentation==1.2.2" "mmdet==3.3.0"
  "pycocotools>=2.0.7" "safetensors>=0.4" "ftfy" "regex" "pyyaml" "tqdm" "matplotlib"
  "scipy" "shapely" "pytest>=7" "tensorboard"
)
# openmim's own pins would downgrade setuptools and more: install it without deps, plus what it needs.
MIM_DEPS=("click" "colorama" "model-index" "pandas" "requests" "rich" "tabulate")

STEP="start"
T0=$(date +%s)
step() { STEP="$1"; printf '\n[setup %s +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$1"; }
fail() {
  local rc=$?
  printf '\n[setup] FAILED at step: %s (exit code %s)\n' "$STEP" "$rc" >&2
  [ -n "${LOG:-}" ] && [ -f "$LOG" ] && { printf '[setup] last lines of %s:\n' "$LOG" >&2; tail -n 30 "$LOG" >&2; }
  exit "$rc"
}
trap fail ERR

step "check python (>= 3.10)"
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 10):
    raise SystemExit(f"Python >= 3.10 is required, found {sys.version.split()[0]}")
print("python", sys.version.split()[0])
PY

step "create venv at $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
else
  echo "exists"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

# Skip the install steps when this exact set-up already completed in this venv.
STAMP="$VENV/.vitmix-setup-stamp"
KEY=$(cat "$0" "$ROOT/pyproject.toml" "$HELPERS"/* | sha256sum | cut -c1-16)-cuda${FORCE_CUDA:-0}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
  step "already set up (stamp $KEY): verifying only"
else
  rm -f "$STAMP"

  step "base build tools (pip, setuptools>=77,<81, wheel, ninja)"
  "${PIP[@]}" install -q --upgrade pip
  "${PIP[@]}" install -q "setuptools>=77,<81" wheel ninja

  step "torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" numpy "mmengine==0.10.7"
  # Built wheels depend on the exact torch; read what is actually installed.
  TORCH_ACTUAL=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')

  CUDA_TAG=cpu
  if [ "${FORCE_CUDA:-0}" = "1" ]; then
    CUDA_TAG=cu$("$PY" -c 'import torch; print((torch.version.cuda or "none").replace(".", ""))')
    CUDA_TAG=$CUDA_TAG-$(echo "${TORCH_CUDA_ARCH_LIST:-default}" | tr ' ;+' '__p')
  fi

  step "mmcv==$MMCV_VERSION with compiled ops (cached wheel, or build from sdist)"
  MMCV_DIR="$CACHE/wheels/mmcv-${MMCV_VERSION}_torch-${TORCH_ACTUAL}_py${PYVER}_${CUDA_TAG}"
  if ! ls "$MMCV_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    mkdir -p "$CACHE/wheels" "$CACHE/bin"
    # torch >= 2.10 headers need C++20 while mmcv's setup.py forces -std=c++14/17: the last flag wins.
    printf '#!/bin/sh\nexec g++ "$@" -std=c++20\n' > "$CACHE/bin/cxx-std20"
    chmod +x "$CACHE/bin/cxx-std20"
    BUILD=$(mktemp -d "$CACHE/wheels/.build-mmcv.XXXXXX")
    LOG="$BUILD/build.log"
    echo "building mmcv $MMCV_VERSION (10-25 min on 2 cores); log: $LOG"
    CXX="$CACHE/bin/cxx-std20" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" PATH="$VENV/bin:$PATH" \
      "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$BUILD" "mmcv==$MMCV_VERSION" > "$LOG" 2>&1
    mkdir -p "$MMCV_DIR.tmp" && mv "$BUILD"/mmcv-*.whl "$MMCV_DIR.tmp"/ && mv "$MMCV_DIR.tmp" "$MMCV_DIR"
    rm -rf "$BUILD"; LOG=""
  else
    echo "cached: $(ls "$MMCV_DIR"/mmcv-*.whl)"
  fi
  "${PIP[@]}" install -q --no-deps "$MMCV_DIR"/mmcv-*.whl
  # mmcv's runtime deps (its wheel was installed without them)
  "${PIP[@]}" install -q addict "packaging" "pillow" "pyyaml" "yapf" "opencv-python"

  step "python packages (timm, mmengine, mmsegmentation, mmdet, pycocotools, ...)"
  "${PIP[@]}" install -q "${PY_PACKAGES[@]}" "setuptools>=77,<81"

  step "openmim (without its pins)"
  "${PIP[@]}" install -q --no-deps openmim
  "${PIP[@]}" install -q "${MIM_DEPS[@]}" "setuptools>=77,<81"

  step "detectron2 ($D2_SDIST, patched; cached wheel)"
  D2_DIR="$CACHE/wheels/detectron2-0.6_torch-${TORCH_ACTUAL}_py${PYVER}"
  if ! ls "$D2_DIR"/*.whl >/dev/null 2>&1; then
    mkdir -p "$CACHE/wheels"
    BUILD=$(mktemp -d "$CACHE/wheels/.build-d2.XXXXXX")
    LOG="$BUILD/build.log"
    "$PY" "$HELPERS/fetch_sdist.py" "$D2_SDIST" "$D2_SHA256" "$BUILD" > "$LOG" 2>&1
    "$PY" "$HELPERS/patch_detectron2.py" "$BUILD"/pb1-detectron2-0.6 >> "$LOG" 2>&1
    PATH="$VENV/bin:$PATH" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$BUILD/dist" "$BUILD"/pb1-detectron2-0.6 >> "$LOG" 2>&1
    mkdir -p "$D2_DIR.tmp" && mv "$BUILD"/dist/*.whl "$D2_DIR.tmp"/ && mv "$D2_DIR.tmp" "$D2_DIR"
    rm -rf "$BUILD"; LOG=""
  else
    echo "cached: $(ls "$D2_DIR"/*.whl)"
  fi
  "${PIP[@]}" install -q --no-deps "$D2_DIR"/*.whl
  # detectron2's runtime deps (fvcore/iopath/omegaconf/hydra are pure python)
  "${PIP[@]}" install -q "fvcore<0.1.6,>=0.1.5" "iopath<0.1.10,>=0.1.7" "omegaconf>=2.1" "hydra-core>=1.1" \
    "black" "future" "cloudpickle" "termcolor>=1.1" "tabulate" "pydot" "setuptools>=77,<81"

  step "this project (editable)"
  LOG="$VENV/.vitmix-editable.log"
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT" > "$LOG" 2>&1
  LOG=""

  echo "$KEY" > "$STAMP"
fi

step "verify imports"
"$PY" "$HELPERS/verify.py"
printf '\n[setup] done in %ss; activate with: source %s/bin/activate\n' "$(( $(date +%s) - T0 ))" "$VENV"
