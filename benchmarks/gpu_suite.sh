#!/usr/bin/env bash
# Copyright 2026 The phreg-hf authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
#
# The GPU benchmark suite: every benchmark table of the README, measured on one CUDA GPU in under 8 minutes.
#
#     benchmarks/gpu_suite.sh LOG_DIR                               # on a machine with a CUDA GPU
#     PHREG_GPU_SUITE_SMOKE=1 benchmarks/gpu_suite.sh LOG_DIR       # tiny sizes, CPU allowed (a smoke run)
#
# Steps, one after the other, each under its own time limit (`timeout`; the limits add up to under 8 minutes, so
# the suite cannot run longer whatever a step does):
#   trainer          benchmarks/bench_trainer.py: reference loop / DistillTrainer without and with a warm teacher
#                    cache / student alone; ViT-B-shaped random weights (768 wide, 12 layers, patch 14), 518 px,
#                    K = 10, batch 8, bf16 autocast
#   trainer_compile  the same shape with --torch_compile: row (a), for the ratios, and the compiled rows (b'),
#                    (c'), (d') (skipped in smoke mode)
#   inference        benchmarks/bench_inference.py: student vs base latency and memory ratios (DINOv2-B shape)
#   segmentation     benchmarks/bench_segmentation.py: CLIP student vs base MaskCLIP / NACLIP (ViT-B/16 shape)
#   input_pipeline   benchmarks/bench_input_pipeline.py: can the CPUs feed the GPU
#
# Each step's table is printed as it finishes and kept in LOG_DIR/STEP.out (its stderr: LOG_DIR/STEP.err);
# LOG_DIR/environment.txt records the machine and versions, LOG_DIR/summary.md each step's status and time.
# LOG_DIR must not exist yet (an existing folder is refused, never overwritten). A failed or timed-out step is
# reported and the next one runs; the exit status is 1 when any step failed, 2 for a usage error.
# Environment: PYTHON (default: python), PHREG_GPU_SUITE_SMOKE=1 for the smoke run.

set -uo pipefail

usage="usage: benchmarks/gpu_suite.sh LOG_DIR   (a folder that does not exist yet; PHREG_GPU_SUITE_SMOKE=1 for a tiny CPU smoke run)"
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "$usage" >&2
    exit 2
fi
log_dir=$1
if [ -e "$log_dir" ] || [ -L "$log_dir" ]; then
    echo "gpu_suite.sh: $log_dir already exists; pass a new folder for this run's logs (an existing one is never overwritten)." >&2
    exit 2
fi

python=${PYTHON:-python}
smoke=${PHREG_GPU_SUITE_SMOKE:-0}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's phreg_hf, installed or not

if [ "$smoke" != "1" ]; then
    if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_suite.sh: no CUDA GPU here (torch.cuda.is_available() is False in $python). Run it on a machine with one, or set PHREG_GPU_SUITE_SMOKE=1 for a smoke run at tiny sizes." >&2
        exit 2
    fi
fi

mkdir -p -- "$(dirname -- "$log_dir")" || exit 2
# Plain mkdir (no -p): fails if the folder appeared since the check above, so nothing is ever written into it.
if ! mkdir -- "$log_dir"; then
    echo "gpu_suite.sh: could not create $log_dir (it may exist now); pass a new folder." >&2
    exit 2
fi
log_dir=$(cd "$log_dir" && pwd)
cd "$repo" || exit 2

# Per-step time limits in seconds: 120 + 170 + 45 + 45 + 70 = 450 s, plus 5 s of grace each to end a step.
if [ "$smoke" = "1" ]; then
    trainer_args=(--hidden_size 32 --num_layers 2 --num_heads 2 --patch_size 14 --resolution 56 --num_views 2
        --batch_size 4 --num_images 8 --steps 2 --warmup_steps 1 --num_workers 0 --bf16)
    inference_args=(--small --resolutions 56 --batch_sizes 1 --attn sdpa --repeats 1)
    segmentation_args=(--small --images 1 --width 448)
    input_args=(--quick --resolution 56 --tokens 16 --hidden 8 --batch_size 4 --repeats 1)
    limit_trainer=120 limit_compile=0 limit_inference=120 limit_segmentation=120 limit_input=120
else
    trainer_args=(--hidden_size 768 --num_layers 12 --num_heads 12 --patch_size 14 --resolution 518 --num_views 10
        --batch_size 8 --num_images 32 --steps 10 --warmup_steps 2 --device cuda --bf16)
    inference_args=(--device cuda --repeats 10)
    segmentation_args=(--device cuda --images 8)
    input_args=()
    limit_trainer=120 limit_compile=170 limit_inference=45 limit_segmentation=45 limit_input=70
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "mode: $([ "$smoke" = "1" ] && echo "smoke (tiny sizes)" || echo "full")"
    echo "commit: $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "host: $(uname -a)"
    echo "cpus: $(env -u OMP_NUM_THREADS nproc 2>/dev/null || echo unknown)"
    "$python" -c 'import platform, torch, transformers, accelerate
print("python:", platform.python_version())
print("torch:", torch.__version__, "cuda:", torch.version.cuda)
print("transformers:", transformers.__version__, "accelerate:", accelerate.__version__)
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")' 2>&1
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    fi
} >"$log_dir/environment.txt"

failed=0
printf '| step | status | seconds | command |\n|---|---|---|---|\n' >"$log_dir/summary.md"

# run_step NAME LIMIT_S COMMAND...: run COMMAND under `timeout LIMIT_S`, printing its stdout (the table) as it
# comes and keeping it in LOG_DIR/NAME.out, its stderr in LOG_DIR/NAME.err; one summary line per step.
run_step() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "== $name (at most ${limit} s): $*"
    local start=$SECONDS status
    timeout --kill-after=5 "$limit" "$@" 2>"$log_dir/$name.err" | tee "$log_dir/$name.out"
    status=${PIPESTATUS[0]}
    local seconds=$((SECONDS - start)) result=ok
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        result="timed out after ${limit} s"
    elif [ "$status" -ne 0 ]; then
        result="failed (exit $status)"
    fi
    if [ "$result" != ok ]; then
        failed=1
        echo "== $name: $result; the last lines of $log_dir/$name.err:"
        tail -n 15 "$log_dir/$name.err"
    fi
    echo "| $name | $result | $seconds | \`$*\` |" >>"$log_dir/summary.md"
}

skip_step() {
    echo
    echo "== $1: skipped ($2)"
    echo "| $1 | skipped: $2 | 0 | |" >>"$log_dir/summary.md"
}

run_step trainer "$limit_trainer" "$python" benchmarks/bench_trainer.py "${trainer_args[@]}"
if [ "$smoke" = "1" ]; then
    skip_step trainer_compile "smoke mode; --torch_compile needs a CUDA GPU"
else
    run_step trainer_compile "$limit_compile" "$python" benchmarks/bench_trainer.py "${trainer_args[@]}" --torch_compile --compiled_only
fi
run_step inference "$limit_inference" "$python" benchmarks/bench_inference.py "${inference_args[@]}"
run_step segmentation "$limit_segmentation" "$python" benchmarks/bench_segmentation.py "${segmentation_args[@]}"
run_step input_pipeline "$limit_input" "$python" benchmarks/bench_input_pipeline.py ${input_args[@]+"${input_args[@]}"}

echo
echo "== summary (also in $log_dir/summary.md)"
cat "$log_dir/summary.md"
exit "$failed"
