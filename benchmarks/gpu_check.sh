#!/usr/bin/env bash
# The CUDA checks, in one run of under 10 minutes on a machine with a GPU:
#   bash benchmarks/gpu_check.sh 2>&1 | tee gpu_check.txt
# The core's CUDA-only tests (the widget tests need a display); training steps/s
# with and without mixed precision, for the paper's network and tile and for the
# defaults; the elastic deformation on the GPU; the ISBI 2012 figure after 3 GPU
# minutes (paper-sized network). Each step is stamped with the time, so that a
# run cut short still says where it was. Its output goes into benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
step() {
  echo "## $(date +%T) $*"
  "$@"
}
step python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'"
step nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
step python -m pytest -q -m gpu tests/core
step python benchmarks/bench_train_speed.py --device cuda --steps 100
step python benchmarks/bench_train_speed.py --device cuda --steps 100 --tile 256 --batch 4 \
  --width 16 --padding same --norm batch
step python benchmarks/bench_augment.py --draws 200
step python benchmarks/eval_isbi.py --minutes 3 --seeds 0 --skip-anchor --width 64 \
  --set device=cuda tile=388 batch_size=1
echo "## $(date +%T) done"
