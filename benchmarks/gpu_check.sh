#!/usr/bin/env bash
# Every GPU check in one call, sized for a lent H100/H200: about 7 minutes (the step limits add up to 9.5):
#   1. the compiled Triton kernels on CUDA against the reference (tests/cuda: every autotune config, the op
#      grid, processor and pipeline parity), autotuning as it goes;
#   2. the op benchmark (bench_ops.py: reference, SDPA region loop, FlexAttention, torch, triton);
#   3. one UNet forward's attention (bench_processors.py);
#   4. whole edits per backend on a full-size SD1.5 UNet with random weights (bench_edit.py);
#   5. a profile of a fused-backend edit (ale-profile): top kernels, attention share, Chrome trace.
# Usage, from the repository root:  OUT=gpu_check_out bash benchmarks/gpu_check.sh
# Python packages the GPU image lacks (diffusers, open-clip-torch's BPE file) come as wheels in .whl/ (see
# the README's "Benchmarking" section); they are installed into /tmp/site, never over the image's own.
# Each step has its own time limit, so one slow or failing step never hides the others' results.
set -u
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
PY=${PYTHON:-python3}

if ! $PY -c "import diffusers" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log it, record its exit status
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start))s" | tee -a "$LOG"
    echo "$name exit=$rc seconds=$((SECONDS - start))" >>/tmp/gpu_check_steps.txt
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
    $PY -c "import diffusers, transformers; print('diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee -a "$LOG"

# 12 workers: the run is mostly Triton compiles (CPU-bound); on an H100 with 8 workers 88% of it took 150 s.
step cuda-tests 180 $PY -m pytest -p no:cacheprovider -q -rf -n 12 --maxfail=30 tests/cuda -o addopts=""
step bench-ops 50 $PY benchmarks/bench_ops.py --device cuda --regions 4 --no-flex --json "$OUT/bench_ops.json"
# FlexAttention apart: its compiles take tens of seconds and must not cost the other rows.
step bench-ops-flex 60 $PY benchmarks/bench_ops.py --device cuda --regions 4 --impls reference flex_attention triton \
    --no-memory --json "$OUT/bench_ops_flex.json"
step bench-self-attention 30 $PY benchmarks/bench_self_attention.py --device cuda --json "$OUT/bench_self_attention.json"
step bench-processors 60 $PY benchmarks/bench_processors.py --device cuda --sizes 768 --json "$OUT/bench_processors.json"
step bench-edit 100 $PY benchmarks/bench_edit.py --device cuda --model sd15 --sizes 768 --steps 15 \
    --json "$OUT/bench_edit.json"
step profile 90 $PY -m ale_pipeline.profile --device cuda --model sd15 --size 768 --steps 3 --backend triton \
    --trace /tmp/ale_trace.json --force --summary "$OUT/profile.md"
gzip -c /tmp/ale_trace.json >"$OUT/ale_trace.json.gz" 2>/dev/null || true
cat /tmp/gpu_check_steps.txt | tee -a "$LOG"
