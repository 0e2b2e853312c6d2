#!/usr/bin/env bash
# Free-space checks for tools/setup.sh (sourced). A set-up that runs out of disk half way fails inside
# pip with "[Errno 28] No space left on device" and leaves a broken venv behind; checking first stops
# before anything is written, with the numbers and the ways out.
#
# The venv ends near 6.3 GiB on x86_64 with python 3.11 (measured), almost all of it torch's CUDA build
# with its nvidia-* wheels. The mmcv build's 2 GiB is a margin over its object files and wheel (the
# compiled extension alone is 82 MB for the CPU ops, 108 MB with CUDA ops for one architecture).

# Free MiB that `tools/setup.sh` asks for, by purpose (each can be set from the environment).
VITMIX_NEED_MIB_VENV=${VITMIX_NEED_MIB_VENV:-7500}               # a venv without torch yet
VITMIX_NEED_MIB_VENV_UPDATE=${VITMIX_NEED_MIB_VENV_UPDATE:-1500} # a venv that already holds torch
VITMIX_NEED_MIB_BUILD=${VITMIX_NEED_MIB_BUILD:-2000}             # compiling mmcv under $TMPDIR

# vitmix_free_mib PATH: free MiB on the file system that holds PATH (or its nearest existing parent).
vitmix_free_mib() {
  local p=$1
  while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done
  df -Pm -- "$p" | awk 'NR == 2 { print $4 }'
}

# vitmix_require_space PATH NEED_MIB WHAT: fail (return 1) with a message naming the file system, the
# need and what is free, unless VITMIX_SKIP_DISK_CHECK=1.
vitmix_require_space() {
  local path=$1 need=$2 what=$3 free
  free=$(vitmix_free_mib "$path")
  if [ -z "$free" ] || [ "$free" -ge "$need" ]; then
    return 0
  fi
  if [ "${VITMIX_SKIP_DISK_CHECK:-0}" = "1" ]; then
    printf '[setup] warning: %s needs about %s MiB free at %s, only %s MiB are (VITMIX_SKIP_DISK_CHECK=1)\n' \
      "$what" "$need" "$path" "$free" >&2
    return 0
  fi
  printf '[setup] not enough disk space: %s needs about %s MiB free at %s, the file system has %s MiB.\n' \
    "$what" "$need" "$path" "$free" >&2
  printf '[setup] free some space there, or point the set-up elsewhere (VITMIX_VENV=PATH for the venv,\n' >&2
  printf '[setup] TMPDIR=PATH for build folders, VITMIX_CACHE=PATH for cached wheels);\n' >&2
  printf '[setup] VITMIX_SKIP_DISK_CHECK=1 goes on anyway.\n' >&2
  return 1
}
