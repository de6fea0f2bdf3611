#!/usr/bin/env bash
# The CUDA checks, in one run of under 10 minutes on a machine with a GPU:
#   bash benchmarks/gpu_check.sh 2>&1 | tee gpu_check.txt
# CUDA-only tests, training steps/s at the paper's tile with and without mixed
# precision, and the ISBI 2012 figure after 3 GPU minutes (paper-sized network).
# Its output goes into benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
python -m pytest -q -m gpu tests
python benchmarks/bench_train_speed.py --device cuda
python benchmarks/bench_train_speed.py --device cuda --tile 196 --batch 4 --width 16
python benchmarks/eval_isbi.py --minutes 3 --seeds 0 --skip-anchor --width 64 \
  --set device=cuda tile=388 batch_size=1
