#!/usr/bin/env bash
# A GPU check for a machine with CUDA, in at most ten minutes: every experiment that declares cuda
# (the devices column of `tenfold list`) at --preset smoke on --device cuda, then one full-preset run,
# with whatever time is left. Results go to $OUT (default runs/gpu-check); the log says PASS/FAIL/TIMEOUT
# per run. Usage: scripts/gpu-check.sh [FULL_EXPERIMENT]   (default: adaptive-temperature; its full-preset
# GPU time is unmeasured, so a TIMEOUT there says it does not fit in the time left, not that it is wrong)
set -u
PYTHON=${PYTHON:-python}
OUT=${OUT:-runs/gpu-check}
FULL=${1:-adaptive-temperature}
BUDGET_S=${BUDGET_S:-570}  # leave a margin under ten minutes
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }

"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "no CUDA device: nothing to check" >&2; exit 2; }
names=$("$PYTHON" -c "from tenfold import registry
print(' '.join(n for n in registry.names() if 'cuda' in registry.get(n).devices))")
echo "experiments on cuda: $names"
status=0
run() {  # run LABEL ARGS...: one tenfold run under the time left
  local label=$1; shift
  local limit; limit=$(left)
  if (( limit < 10 )); then echo "SKIP    $label (no time left)"; status=1; return; fi
  local t0; t0=$(date +%s)
  timeout "$limit" "$PYTHON" -m tenfold run "$@" --device cuda --workers 1 --out "$OUT" > "$OUT/$label.log" 2>&1
  local rc=$? took=$(( $(date +%s) - t0 ))
  case $rc in
    0) echo "PASS    $label (${took}s)";;
    124) echo "TIMEOUT $label (${took}s)"; status=1;;
    *) echo "FAIL    $label (rc $rc, ${took}s; see $OUT/$label.log)"; status=1;;
  esac
}
mkdir -p "$OUT"
for name in $names; do
  run "$name-smoke" "$name" --preset smoke
done
run "$FULL-full" "$FULL" --preset full
echo "total $(( $(date +%s) - start ))s; results under $OUT"
exit $status
