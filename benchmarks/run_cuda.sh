#!/usr/bin/env bash
# Every GPU check in one go: the CUDA tests, then the CUDA benchmarks, each under a time cap so
# that one slow part cannot take the others' time. Results go to OUTDIR (default
# benchmarks/results); the attack-loop and fast-path JSON files are saved after every case, so a
# capped run still leaves what it measured.
#
#   bash benchmarks/run_cuda.sh [OUTDIR]
#
# Caps (seconds) can be changed through TEST_CAP, ATTACK_CAP, FAST_CAP, TRAINER_CAP, GRID_CAP,
# AUTOATTACK_CAP, CERTIFY_CAP and FASTEVAL_CAP.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  timeout "${TEST_CAP:-90}" "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    tests/attacks/test_attack_invariants.py -k "cuda or Cuda or test_cuda"
} 2>&1 | tee "$out/cuda_tests.log"

timeout "${ATTACK_CAP:-150}" "$python" benchmarks/attack_loop.py --device cuda \
  --json "$out/attack_loop_cuda.json" --markdown "$out/attack_loop_cuda.md" 2>&1 \
  | tee "$out/attack_loop_cuda.log"

timeout "${FAST_CAP:-240}" "$python" benchmarks/attack_fast_paths.py --device cuda \
  --json "$out/attack_fast_paths_cuda.json" --markdown "$out/attack_fast_paths_cuda.md" 2>&1 \
  | tee "$out/attack_fast_paths_cuda.log"

# 30 batches: a GPU epoch of 20 is so short that the per-fit setup would dominate.
timeout "${TRAINER_CAP:-60}" "$python" benchmarks/trainer_overhead.py --device cuda --batches 30 \
  --output-dir "$out" 2>&1 | tee "$out/trainer_overhead_cuda.log"

timeout "${GRID_CAP:-120}" "$python" benchmarks/robustness_grid.py --device cuda --out "$out" 2>&1 \
  | tee "$out/robustness_grid_cuda.log"

# AutoAttack, standard budgets, advkit vs torchattacks on 500 test digits (the whole test split),
# against torchattacks as shipped and, in the same run, at advkit's 100 steps.
timeout "${AUTOATTACK_CAP:-400}" "$python" benchmarks/autoattack.py --device cuda --samples 500 --like-for-like \
  --out "$out" 2>&1 | tee "$out/autoattack_cuda.log"

# Randomized smoothing: certify at the forward floor (ResNet-18, widths 16 and 64, batches of 2048
# and 512 rows), then the digits table (9 small models; on a GPU the training dominates).
timeout "${CERTIFY_CAP:-300}" "$python" benchmarks/certify.py --device cuda --batch-size 2048 \
  --inputs 64 --out "$out" 2>&1 | tee "$out/certify_cuda.log"

# AutoAttack's fast version (and A3's rules added to it) against the standard one, model work
# counted: the PGD-trained CNN and ResNet-18 on the 500 test digits, L-inf.
timeout "${FASTEVAL_CAP:-300}" "$python" benchmarks/fast_evaluation.py --device cuda --samples 500 \
  --a3 --models cnn-pgd resnet18-pgd --threads 4 --out "$out" 2>&1 | tee "$out/fast_evaluation_cuda.log"
