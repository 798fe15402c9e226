#!/usr/bin/env bash
# Every stage on the GPU: the tiny experiment of each domain with the trainings, the
# evaluations, the proxies and the latency target on CUDA; prints each stage's device
# line ("stage search: evaluations and BN recalibration on cuda:0") and a summary table;
# exits non-zero when a run fails or a stage evaluated on the CPU.
#
# Needs a CUDA machine with the project installed (`make install`, or the wheels of
# hwnas and its dependencies in the python named by $PY), run from the repository root
# (the tiny experiments read tests/fixtures/):
#     bash benchmarks/gpu_check.sh            # PY=.venv/bin/python by default
#     EXPERIMENTS="synthetic_tiny" bash benchmarks/gpu_check.sh
#     DEVICE=cpu bash benchmarks/gpu_check.sh  # a rehearsal of the script on the CPU
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3) || { echo "gpu_check: no python (set PY=)"; exit 2; }
EXPERIMENTS=${EXPERIMENTS:-"synthetic_tiny vit_synthetic_tiny squad_tiny asr_tiny bootstrap_tiny"}
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then
    ON=(trainer.accelerator=gpu zero_shot.device=cuda hardware=cuda)
else
    ON=(trainer.accelerator=cpu zero_shot.device=cpu hardware=analytic)
fi

if ! "$PY" -c "import hydra, omegaconf, lightning, torch, hwnas" 2>/dev/null; then
    echo "gpu_check: $PY lacks hwnas or its dependencies (hydra-core, omegaconf," \
         "lightning, torch): run make install, or pip install the wheels, first"
    exit 2
fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: torch sees no CUDA device on this machine (a CPU-only torch build?)"
    exit 2
fi
[ "$DEVICE" = cuda ] && "$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), \
'torch', torch.__version__)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hwnas-gpu-check.XXXXXX")
echo "gpu_check: runs in $WORK"
SUMMARY=()
FAILED=0
for e in $EXPERIMENTS; do
    run="$WORK/$e"
    start=$(date +%s)
    PYTHONHASHSEED=0 "$PY" -m hwnas "experiment=$e" threads=1 seed=0 "${ON[@]}" \
        "hydra.run.dir=$run" "paths.cache_dir=$WORK/cache" "paths.data_dir=$WORK/data" \
        >"$WORK/$e.out" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    echo "== $e (exit $rc, ${secs} s)"
    lines=$(grep -ho "stage [a-z_]*: [a-z].* on .*" "$run/hwnas.log" "$WORK/$e.out" 2>/dev/null \
            | grep -v "starting\|already done" | awk '!seen[$0]++')
    echo "${lines:-(no stage device lines)}" | sed 's/^/  /'
    status=ok
    if [ "$rc" -ne 0 ]; then
        status="FAILED"
        tail -n 15 "$WORK/$e.out" | sed 's/^/  | /'
    elif echo "$lines" | grep "stage \(search\|final\): evaluations" | grep -vq " on $DEVICE"; then
        status="EVALUATED OFF $DEVICE"
    elif ! echo "$lines" | grep -q "stage final: evaluations on $DEVICE"; then
        status="NO DEVICE LINE"
    fi
    [ "$status" = ok ] || FAILED=1
    metric=$("$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); \
print(', '.join(f'{k}={v:.4g}' for k, v in m.items() if k.startswith('final/test_') \
or k == 'final/latency_ms'))" "$run/metrics.json" 2>/dev/null || echo "-")
    SUMMARY+=("$(printf '%-20s %-18s %6s  %s' "$e" "$status" "${secs}s" "$metric")")
done

echo
printf '%-20s %-18s %6s  %s\n' experiment status time "final metrics (test; latency on $DEVICE)"
printf '%s\n' "${SUMMARY[@]}"
echo "logs and run folders: $WORK"
exit $FAILED
