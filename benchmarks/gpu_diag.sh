#!/bin/bash
# Diagnosis run for a lent GPU (device tool): kernels tests and two first-order steps in
# parallel, full logs under $OUT. Usage: bash benchmarks/gpu_diag.sh
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
O=${OUT:-/tmp/gpu_diag}; mkdir -p $O
timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py >$O/kernels.log 2>&1 &
timeout 400 python3 benchmarks/search_step.py --estimator first_order --batch 64 --depthwise conv --steps 20 >$O/fo64.log 2>&1 &
XLA_FLAGS=--xla_gpu_autotune_level=0 timeout 400 python3 benchmarks/search_step.py --estimator first_order --batch 64 --depthwise conv --steps 20 >$O/fo64_noautotune.log 2>&1 &
wait
for f in $O/*.log; do echo "== $f"; grep -v "^    @ " $f | grep -E "Check|Error|error|FAIL|assert|passed|failed|median_step|F[0-9]{4}|E[0-9]{4}|RESOURCE|Abort" | head -25; done
