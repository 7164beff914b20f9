#!/usr/bin/env bash
# Every GPU check in one call of about 8 minutes on a lent H100/H200 (the step limits add up to 485 s):
#   1. tests/cuda: the compiled Triton kernels against the reference (every autotune config, the op grid),
#      the processors and pipeline with TF32 off (parity), the triton ops under Inductor, compiled UNets in
#      the default, reduce-overhead and max-autotune modes, the torch backend's one-call path, and an
#      edit's UNet calls under torch.cuda.set_sync_debug_mode("error");
#   2. the op table (bench_ops.py): reference, SDPA region loop, torch (one call), triton; then the torch
#      backend's group loop (ALE_KERNELS_TORCH_GROUPS=1) against the reference, to show which is faster;
#      then FlexAttention side by side with the Triton path in one run;
#   3. the host overhead of a call (bench_overhead.py, on this machine's CPU);
#   4. whole edits per variant on a full-size SD1.5 UNet with random weights, 768 px, 15 steps
#      (bench_edit_compiled.py): published math, torch, Triton eager, Triton compiled and CUDA-graph
#      captured; one untimed warm-up edit per variant with the same steps and size (compiling, autotuning
#      and recording the graphs happen there), then interleaved timed edits; time per edit and peak memory;
#   5. SDXL at 1024 px in fp16, full size with random weights: one UNet forward of an edit step per variant
#      (bench_sdxl_unet.py: stock SDPA, the fused processors, the published math; allocator peaks above the
#      weights), then whole 4-step edits per backend (bench_edit_compiled.py, eager: published math, Triton);
#   6. a profile of a Triton edit (ale-profile): top kernels, attention share, Chrome trace.
# Usage, from the repository root:  OUT=gpu_check_out bash benchmarks/gpu_check.sh
#   DRY_RUN=1: run the Python parts on the CPU at toy sizes (no GPU): checks the script and its commands.
# Python packages the GPU image lacks (diffusers, open-clip-torch's BPE file) come as wheels in .whl/ (see
# the README's "Benchmarking" section); they are installed into /tmp/site, never over the image's own.
# Each step has its own time limit, so one slow or failing step never hides the others' results.
set -u
OUT=${OUT:-gpu_check_out}
DRY_RUN=${DRY_RUN:-0}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
STEPS="$OUT/gpu_check_steps.txt"
: >"$STEPS"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
PY=${PYTHON:-python3}

if ! $PY -c "import diffusers" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

SCALE=1  # the dry run's CPU is slower: its limits are scaled up
[ "$DRY_RUN" = 1 ] && SCALE=6
step() {  # step NAME SECONDS COMMAND...: run with a limit, log it, record its exit status
    local name=$1 limit=$(($2 * SCALE))
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start))s" | tee -a "$LOG"
    echo "$name exit=$rc seconds=$((SECONDS - start))" >>"$STEPS"
}

if [ "$DRY_RUN" = 1 ]; then
    # The same commands at toy sizes on the CPU: every argument is parsed and every script runs end to end.
    DEVICE=cpu
    OPS_ARGS=(--device cpu --quick --no-memory --threads 1)
    EDIT_ARGS=(--device cpu --model tiny --sizes 64 --steps 2 --repeats 1 --compile-backend eager
        --variants reference torch torch+compiled)
    SDXL_UNET_ARGS=(--device cpu --model tiny-xl --size 128 --dtype float32)
    SDXL_EDIT_ARGS=(--device cpu --model tiny-xl --sizes 64 --steps 2 --variants reference torch)
    PROFILE_ARGS=(--device cpu --model tiny --size 64 --steps 2 --backend torch)
else
    DEVICE=cuda
    OPS_ARGS=(--device cuda --regions 4)
    EDIT_ARGS=(--device cuda --model sd15 --sizes 768 --steps 15 --repeats 2
        --variants reference torch triton triton+compiled triton+captured)
    SDXL_UNET_ARGS=(--device cuda --model sdxl --size 1024 --dtype float16)
    SDXL_EDIT_ARGS=(--device cuda --model sdxl --sizes 1024 --steps 4 --variants reference triton)
    PROFILE_ARGS=(--device cuda --model sd15 --size 768 --steps 3 --backend triton)
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
        $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
        $PY -c "import diffusers, transformers; print('diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
    } 2>&1 | tee -a "$LOG"
    # 12 workers: the run is mostly Triton and Inductor compiles (CPU-bound). -rfE names every failure.
    step cuda-tests 150 $PY -m pytest -p no:cacheprovider -q -rfE -n 12 --maxfail=30 tests/cuda -o addopts=""
fi

step bench-ops 35 $PY benchmarks/bench_ops.py "${OPS_ARGS[@]}" --no-flex --json "$OUT/bench_ops.json"
# The torch backend's group loop (the path before the one-call fix) against the reference, in one run.
step bench-ops-torch-groups 20 env ALE_KERNELS_TORCH_GROUPS=1 $PY benchmarks/bench_ops.py "${OPS_ARGS[@]}" \
    --impls reference torch --no-memory --json "$OUT/bench_ops_torch_groups.json"
# FlexAttention beside the Triton path (and the reference) in one run; its compiles are not timed.
if [ "$DRY_RUN" != 1 ]; then
    step bench-ops-flex 30 $PY benchmarks/bench_ops.py "${OPS_ARGS[@]}" --impls reference flex_attention triton \
        --no-memory --json "$OUT/bench_ops_flex.json"
fi
step bench-overhead 15 $PY benchmarks/bench_overhead.py --rounds 7 --calls 100 --json "$OUT/bench_overhead.json"
step bench-edit 100 $PY benchmarks/bench_edit_compiled.py "${EDIT_ARGS[@]}" --json "$OUT/bench_edit.json"
# SDXL: one process per UNet variant (each builds the 2.6B-parameter UNet on the GPU), then whole edits.
step bench-sdxl-unet 50 $PY benchmarks/bench_sdxl_unet.py "${SDXL_UNET_ARGS[@]}" --rounds 1 \
    --variants sdpa,ours,reference --json "$OUT/bench_sdxl_unet.json" --out-md "$OUT/bench_sdxl_unet.md"
step bench-edit-sdxl 60 $PY benchmarks/bench_edit_compiled.py "${SDXL_EDIT_ARGS[@]}" --repeats 1 \
    --json "$OUT/bench_edit_sdxl.json"
step profile 25 $PY -m ale_pipeline.profile "${PROFILE_ARGS[@]}" --trace /tmp/ale_trace.json --force \
    --summary "$OUT/profile.md"
gzip -c /tmp/ale_trace.json >"$OUT/ale_trace.json.gz" 2>/dev/null || true
cat "$STEPS" | tee -a "$LOG"
