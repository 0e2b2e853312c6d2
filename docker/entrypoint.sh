#!/usr/bin/env bash
# Entry point of the vitmix image: activates the project's venv and runs the command (default: bash)
# from the project folder. Datasets are expected under /data and outputs go to /runs (docker/README.md).
set -euo pipefail
cd /opt/vitmix
# shellcheck source=/dev/null
source /opt/vitmix/.venv/bin/activate
if [ ! -e /dev/nvidiactl ] && [ -z "${VITMIX_QUIET:-}" ]; then
  echo "vitmix: no GPU visible in this container (run it with --gpus all); continuing on the CPU" >&2
fi
if [ $# -eq 0 ]; then
  set -- bash
fi
exec "$@"
