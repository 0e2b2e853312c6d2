#!/usr/bin/env bash
# Set up the stack (idempotent, cached) and run the test suite:  bash tools/test.sh [pytest args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
T0=$(date +%s)
bash tools/setup.sh
T1=$(date +%s)
echo "[test] setup took $((T1 - T0))s"
# One intra-op thread per process: with data-loader workers beside it, more threads oversubscribe 2 cores
# (measured: 100 vs 17 img/s for the synthetic pretraining config).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
set +e
.venv/bin/python -m pytest tests -q "$@"
rc=$?
set -e
echo "[test] pytest took $(( $(date +%s) - T1 ))s (exit $rc)"
exit $rc
