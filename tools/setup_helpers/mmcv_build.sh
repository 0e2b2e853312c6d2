# shellcheck shell=bash
# How mmcv 2.1.0 is compiled: the compiler wrappers, the build environment, the wheel-cache tag and the
# CUDA pre-flight checks. Sourced by tools/setup.sh (one place, so that a bare machine and the Docker
# image build mmcv the same way); `VITMIX_SETUP_DRY_RUN=1 bash tools/setup.sh` prints what it composes.
#
# Why wrappers: torch >= 2.10 headers need C++20, while mmcv's setup.py hard-codes `-std=c++17` for
# both g++ (`extra_compile_args['cxx']`) and nvcc (`extra_compile_args['nvcc']`).
#   * g++ keeps the last -std flag, so `cxx-std20` appends `-std=c++20` (CXX, used by torch's
#     BuildExtension for .cpp files and the link).
#   * nvcc does not simply take the last -std: CUDA 13's nvcc warns "incompatible redefinition for
#     option 'std', the last value of this option was used", older releases stop with "redefinition
#     of argument 'std'" (so NVCC_APPEND_FLAGS=-std=c++20 works on some toolkits only). `nvcc-std20`
#     drops every -std/--std argument and passes `-std=c++20` exactly once, on every toolkit; nvcc
#     forwards the standard to the host compiler, so the host code of the .cu files is C++20 too.
#     torch's BuildExtension calls it through PYTORCH_NVCC, which its ninja build honours (ninja is
#     required for the CUDA build; the pre-flight checks it).

# vitmix_cxx_wrapper_text: the g++ wrapper script.
vitmix_cxx_wrapper_text() {
  printf '#!/bin/sh\nexec g++ "$@" -std=c++20\n'
}

# vitmix_nvcc_wrapper_text NVCC: the nvcc wrapper script, calling the nvcc at the absolute path NVCC.
vitmix_nvcc_wrapper_text() {
  cat <<EOF
#!/bin/sh
# nvcc with its language standard forced to C++20: every -std=X / --std=X / -std X is dropped and
# -std=c++20 is passed once (mmcv 2.1.0 passes -std=c++17; nvcc warns about or rejects two -std).
skip=0
for a do
  shift
  if [ "\$skip" = 1 ]; then skip=0; continue; fi
  case "\$a" in
    -std=*|--std=*) ;;
    -std|--std) skip=1 ;;
    *) set -- "\$@" "\$a" ;;
  esac
done
exec "$1" "\$@" -std=c++20
EOF
}

# vitmix_write_wrapper PATH TEXT: write an executable script atomically (concurrent set-ups share the cache).
vitmix_write_wrapper() {
  local path=$1 text=$2 tmp
  mkdir -p "$(dirname "$path")"
  if [ -f "$path" ] && [ "$(cat "$path")" = "$text" ]; then return 0; fi
  tmp=$(mktemp "$path.XXXXXX")
  printf '%s\n' "$text" > "$tmp"
  chmod 755 "$tmp"
  mv -f "$tmp" "$path"
}

# vitmix_find_cuda_home: the CUDA toolkit to build with, in torch's search order: $CUDA_HOME or
# $CUDA_PATH, else the toolkit of the nvcc on PATH (through symlinks; a shim script on PATH falls
# back to /usr/local/cuda), else /usr/local/cuda. Prints nothing when there is none.
vitmix_find_cuda_home() {
  local home=${CUDA_HOME:-${CUDA_PATH:-}} p
  if [ -n "$home" ]; then echo "$home"; return 0; fi
  p=$(command -v nvcc 2>/dev/null || true)
  if [ -n "$p" ]; then
    home=$(dirname "$(dirname "$(readlink -f "$p")")")
    if [ -f "$home/include/cuda_runtime.h" ]; then echo "$home"; return 0; fi
  fi
  if [ -x /usr/local/cuda/bin/nvcc ]; then echo /usr/local/cuda; fi
}

# vitmix_nvcc_release NVCC: "13.0" from `nvcc --version`.
vitmix_nvcc_release() {
  { "$1" --version 2>/dev/null || true; } | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1
}

# vitmix_cuda_tag TORCH_CUDA ARCH_LIST: the wheel-cache tag, e.g. cu130-7.5_8.0_8.6_8.9_9.0pPTX.
vitmix_cuda_tag() {
  printf 'cu%s-%s\n' "$(echo "$1" | tr -d '.')" "$(echo "$2" | tr ' ;+' '__p')"
}

# vitmix_cuda_preflight NVCC TORCH_CUDA ARCH_LIST NINJA: fail early, with the fix, on a CUDA build that
# could only fail after many minutes: no nvcc, an nvcc whose major differs from torch's CUDA (torch's
# BuildExtension refuses it), an arch the nvcc cannot compile (e.g. sm_70 on CUDA >= 13), no ninja.
vitmix_cuda_preflight() {
  local nvcc=$1 torch_cuda=$2 arches=$3 ninja=$4 rel supported a num bad=()
  if [ -z "$torch_cuda" ] || [ "$torch_cuda" = none ]; then
    echo "FORCE_CUDA=1 but the installed torch is a CPU-only build (torch.version.cuda is None);" \
      "install a CUDA build of torch (TORCH_INDEX_URL=https://download.pytorch.org/whl/cuXYZ)" >&2
    return 1
  fi
  if [ -z "$nvcc" ] || [ ! -x "$nvcc" ]; then
    echo "FORCE_CUDA=1 needs nvcc (CUDA toolkit $torch_cuda, matching torch): none at \$CUDA_HOME/bin," \
      "on PATH or at /usr/local/cuda/bin; install the toolkit or set CUDA_HOME" >&2
    return 1
  fi
  rel=$(vitmix_nvcc_release "$nvcc")
  if [ -z "$rel" ]; then
    echo "could not read the CUDA release from '$nvcc --version'" >&2
    return 1
  fi
  if [ "${rel%%.*}" != "${torch_cuda%%.*}" ]; then
    echo "nvcc at $nvcc is CUDA $rel but torch was built with CUDA $torch_cuda: the majors must match" \
      "(torch's extension builder refuses the pair). Use a CUDA ${torch_cuda%%.*}.x toolkit, or a torch" \
      "build for CUDA ${rel%%.*} (TORCH_INDEX_URL=https://download.pytorch.org/whl/cu${rel%%.*}X)" >&2
    return 1
  fi
  if [ -z "$arches" ]; then
    echo "FORCE_CUDA=1 needs TORCH_CUDA_ARCH_LIST when no GPU is visible (e.g. in 'docker build')," \
      "for example TORCH_CUDA_ARCH_LIST=\"7.5;8.0;8.6;8.9;9.0+PTX\"" >&2
    return 1
  fi
  supported=" $({ "$nvcc" --list-gpu-arch 2>/dev/null || true; } | tr '\n' ' ') "
  for a in $(echo "$arches" | tr ';' ' '); do
    num=${a%+PTX}
    case "$num" in
      [0-9]*.[0-9]*) ;;
      *) continue ;;  # a named family (Ampere, Hopper, ...): torch expands and checks it
    esac
    num=${num%a}
    num=$(echo "$num" | tr -d '.')
    if [ "$supported" != "  " ] && [[ "$supported" != *" compute_$num "* ]]; then bad+=("$a"); fi
  done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "TORCH_CUDA_ARCH_LIST=\"$arches\": nvcc $rel cannot compile ${bad[*]} (it supports:" \
      "$(echo "$supported" | xargs)). CUDA 13 dropped Volta (7.0) and older: for Volta use a CUDA 12.x toolkit" \
      "and torch build (docker/README.md, 'Volta')" >&2
    return 1
  fi
  if [ -z "$ninja" ]; then
    echo "the CUDA build needs ninja (torch's ninja build is the one that honours PYTORCH_NVCC)" >&2
    return 1
  fi
}

# vitmix_mmcv_build_env BIN_DIR VENV CUDA NVCC ARCH_LIST: fill the array MMCV_BUILD_ENV with the
# NAME=VALUE pairs `env` runs mmcv's `pip wheel` with. CUDA is 0 (CPU ops) or 1 (CPU + CUDA ops);
# NVCC is $CUDA_HOME/bin/nvcc of the toolkit to use (CUDA_HOME is passed on, so that torch's
# version check, include and library paths see the same toolkit as the wrapper).
vitmix_mmcv_build_env() {
  local bin=$1 venv=$2 cuda=$3 nvcc=${4:-} arches=${5:-}
  MMCV_BUILD_ENV=(
    "CXX=$bin/cxx-std20"
    "MMCV_WITH_OPS=1"
    "MAX_JOBS=${MAX_JOBS:-$(nproc)}"
    "PATH=$venv/bin:$PATH"
  )
  if [ "$cuda" = 1 ]; then
    local home
    home=$(dirname "$(dirname "$nvcc")")
    MMCV_BUILD_ENV+=(
      "FORCE_CUDA=1"
      "CUDA_HOME=$home"
      "PYTORCH_NVCC=$bin/nvcc-std20"
      "TORCH_CUDA_ARCH_LIST=$arches"
    )
    # A toolkit with nvcc and the runtime only (e.g. installed from the nvidia-cuda-nvcc wheels) lacks the
    # math-library headers torch's ATen/cuda headers include (cusparse.h, cublas_v2.h, ...). The
    # nvidia-* wheels torch itself depends on ship them: searched after the toolkit's own include dir.
    if [ ! -f "$home/include/cusparse.h" ]; then
      local libinc
      libinc=$(vitmix_wheel_cuda_includes "$venv")
      if [ -n "$libinc" ]; then
        MMCV_BUILD_ENV+=("CPATH=$libinc${CPATH:+:$CPATH}")
      fi
    fi
  fi
}

# vitmix_wheel_cuda_includes VENV: the include folders of the nvidia-* wheels in VENV that hold the CUDA
# math-library headers (cu13: one nvidia/cu13/include; cu12: nvidia/<library>/include each), ':'-joined.
vitmix_wheel_cuda_includes() {
  local venv=$1
  find "$venv"/lib/python3*/site-packages/nvidia -maxdepth 3 \( -name cusparse.h -o -name cublas_v2.h \
    -o -name cusolverDn.h -o -name curand.h -o -name cufft.h \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd: \
    || true  # no venv yet (dry run) or no nvidia wheels: nothing to add
}
