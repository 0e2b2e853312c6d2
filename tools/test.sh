#!/usr/bin/env bash
# Set up the stack (idempotent, cached) and run the test suite:  bash tools/test.sh [pytest args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
T0=$(date +%s)
bash tools/setup.sh
T1=$(date +%s)
echo "[test] setup took $((T1 - T0))s"
# Two cores: one intra-op thread per worker process avoids oversubscription.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
set +e
.venv/bin/python -m pytest tests -q "$@"
rc=$?
set -e
echo "[test] pytest took $(( $(date +%s) - T1 ))s (exit $rc)"
exit $rc
