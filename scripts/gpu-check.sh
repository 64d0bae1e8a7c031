#!/usr/bin/env bash
# A GPU check for a machine with CUDA, in at most ten minutes, in one call: every experiment (all ten
# declare cuda: the devices column of `tenfold list`) at --preset smoke on --device cuda; then, where an
# experiment has the option, a smoke run with --set amp=bf16 on the GPU; then one full-preset run with
# whatever time is left. Results go to $OUT (default runs/gpu-check): one log per run and summary.txt,
# which says PASS/FAIL/TIMEOUT/SKIP and the wall seconds of each run (copy it into the cards).
# Usage: scripts/gpu-check.sh [FULL_EXPERIMENT]   (default: adaptive-temperature; its full-preset GPU time
# is an estimate, so a TIMEOUT there says it does not fit in the time left, not that it is wrong; the log
# then shows how far it got). The smoke runs use one worker; the full run uses the default (one seed process
# per core, all on the one GPU), as `tenfold reproduce --preset full --device cuda` does. PYTHON, OUT,
# BUDGET_S, AMP_SMOKE=0 (skip the bf16 pass) and DRY_RUN=1 (print the runs, run nothing; no GPU needed) may be set.
set -u
PYTHON=${PYTHON:-python}
OUT=${OUT:-runs/gpu-check}
FULL=${1:-adaptive-temperature}
BUDGET_S=${BUDGET_S:-570}  # leave a margin under ten minutes
AMP_SMOKE=${AMP_SMOKE:-1}
DRY_RUN=${DRY_RUN:-0}
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }

if [[ $DRY_RUN != 1 ]]; then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device: nothing to check" >&2; exit 2; }
fi
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }
say "$("$PYTHON" -c "import torch; print('torch', torch.__version__, '|',
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU (dry run)')")"
names=$("$PYTHON" -c "from tenfold import registry
print(' '.join(n for n in registry.names() if 'cuda' in registry.get(n).devices))")
amp_names=$("$PYTHON" -c "from tenfold import registry
print(' '.join(n for n in registry.names() if hasattr(registry.get(n).config('smoke'), 'amp')))")
say "experiments on cuda: $names"
status=0
run() {  # run LABEL ARGS...: one tenfold run under the time left
  local label=$1; shift
  local limit; limit=$(left)
  if (( limit < 10 )); then say "SKIP    $label (no time left)"; status=1; return; fi
  if [[ $DRY_RUN == 1 ]]; then say "DRY     $label: tenfold run $* --device cuda --out $OUT"; return; fi
  local t0; t0=$(date +%s)
  timeout "$limit" "$PYTHON" -m tenfold run "$@" --device cuda --out "$OUT" > "$OUT/$label.log" 2>&1
  local rc=$? took=$(( $(date +%s) - t0 ))
  case $rc in
    0) say "PASS    $label (${took}s)";;
    124) say "TIMEOUT $label (${took}s)"; status=1;;
    *) say "FAIL    $label (rc $rc, ${took}s; see $OUT/$label.log)"; status=1;;
  esac
}
for name in $names; do
  run "$name-smoke" "$name" --preset smoke --workers 1
done
if [[ $AMP_SMOKE == 1 ]]; then
  for name in $amp_names; do
    run "$name-smoke-bf16" "$name" --preset smoke --workers 1 --set amp=bf16
  done
fi
run "$FULL-full" "$FULL" --preset full
say "total $(( $(date +%s) - start ))s; results under $OUT"
exit $status
