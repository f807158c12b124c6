#!/usr/bin/env bash
# The checks that need a CUDA GPU, which CI never has: run them on a GPU machine, with the
# package importable (PYTHONPATH=src or installed) and its dependencies present
# (scripts/gpu_wheels.sh fetches those a machine lacks).
#
#   scripts/gpu_checks.sh OUT_FOLDER [BENCH_TOKENIZER]
#
# 1. The tests of the GPU paths, slow ones included: bf16 autocast with SDPA, torch.compile
#    (inductor's Triton kernels), packed chat rows against the same examples alone, the folded
#    LoRA layer, activation checkpointing, exact resume and the chat export.
# 2. The chat bench in bf16 on the GPU, finetunekit against TRL (bench/chat_sft.py), written to
#    OUT_FOLDER/chat_sft_gpu.json.
# 3. The rest of the fast suite, on the GPU wherever a test trains.
# Every step has its own time limit (STEP1_S, STEP2_S, STEP3_S: 240, 230 and 90 s, which fit one
# 10-minute device call on an H200; BENCH_RUNS and BENCH_STEPS narrow the bench), so one stuck
# step cannot take the others' time. A chat test without the SmolLM2 weights package reads its
# tokenizer from FINETUNEKIT_TEST_SMOLLM2.
set -u
out=${1:?usage: scripts/gpu_checks.sh OUT_FOLDER [BENCH_TOKENIZER]}
tokenizer=${2:-builtin:smollm2-135m-instruct}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L
python3 -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__,
torch.cuda.get_device_name(0), 'transformers', transformers.__version__, 'peft',
peft.__version__, 'accelerate', accelerate.__version__)"

GPU_PATHS="tests/test_gpu_switches.py tests/test_chat_packing.py tests/test_chat_masks.py
  tests/test_chat_export.py tests/test_lora_linear.py tests/test_activation_checkpointing.py
  tests/test_resume_families.py tests/test_loop.py"
echo "== 1. GPU paths"
# shellcheck disable=SC2086
# -v: each test's outcome is in the log as it ends, also when the time limit cuts the run short
timeout "${STEP1_S:-240}" python3 -m pytest -v -p no:cacheprovider -n 4 -rfEs $GPU_PATHS \
  --junitxml="$out/gpu_paths.xml" >"$out/step1.log" 2>&1
grep -E "FAILED|ERROR" "$out/step1.log" | head -20  # through a file: a pipe would wait on
tail -30 "$out/step1.log"                          # the xdist workers a time limit left

echo "== 2. chat bench, bf16 on the GPU"
runs=finetunekit_full_bf16,finetunekit_lora_bf16,trl_default_full_bf16,trl_packing_full_bf16
runs=$runs,trl_default_lora_bf16,trl_packing_lora_bf16,finetunekit_full_nogc_bf16
timeout "${STEP2_S:-230}" python3 bench/chat_sft.py --steps "${BENCH_STEPS:-20}" --warmup 5 \
  --tokenizer "$tokenizer" --out "$out/chat_sft_gpu.json" --runs "${BENCH_RUNS:-$runs}" \
  >"$out/step2.log" 2>&1
grep -v Warning "$out/step2.log" | tail -20

echo "== 3. the rest of the fast suite"
ignores=$(for f in $GPU_PATHS; do printf -- '--ignore=%s ' "$f"; done)
# shellcheck disable=SC2086
timeout "${STEP3_S:-90}" python3 -m pytest -v -p no:cacheprovider -n 8 -rfEs -m "not slow" $ignores \
  tests --junitxml="$out/fast_suite.xml" >"$out/step3.log" 2>&1
grep -E "FAILED|ERROR" "$out/step3.log" | head -20
tail -30 "$out/step3.log"
