#!/usr/bin/env bash
# Regenerates every committed reference report under results/:
#   train the sweep -> `dropbn diagnose` (variance shift, BN folding, inference timing) -> `dropbn report`.
# Usage: scripts/reference_study.sh [study ...]   (default: all, in this order)
#   STAGES="train diagnose report" (default) picks the stages; THREADS=N sets torch threads.
# Needs the data sets under $DROPBN_DATA_DIR (or ./data, downloaded when online);
# CIFAR-10 uses the JPEG q75 mirror at $DROPBN_DATA_DIR/cifar10-jpeg.tar.gz when
# present, else torchvision's CIFAR-10.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DATA=${DROPBN_DATA_DIR:-data}
STAGES=${STAGES:-train diagnose report}
studies=("$@")
[ ${#studies[@]} -eq 0 ] && studies=(compare_mnist_mlp lr_mnist_mlp datasize_mnist_mlp compare_fashion_mlp compare_cifar10_cnn droprate_mnist_mlp placement_mnist_mlp)
for s in "${studies[@]}"; do
  extra=()
  if [ "$s" = compare_mnist_mlp ]; then
    extra=(seed=0,1,2,3,4)   # the headline study: five seeds
  fi
  if [ "$s" = compare_cifar10_cnn ] && [ -f "$DATA/cifar10-jpeg.tar.gz" ]; then
    extra=(data=cifar10_jpeg)
  fi
  if [[ " $STAGES " == *" train "* ]]; then
    start=$(date +%s)
    # THREADS=1 keeps the timings steady when something else shares the machine
    "$BIN/dropbn" train -m "+exp=$s" train.progress=false train.diagnostics=false \
      "train.threads=${THREADS:-null}" "${extra[@]}"
    echo "sweep $s: $(( $(date +%s) - start )) s wall" | tee -a "results/$s/sweep_times.txt"
  fi
  # diagnostics after training, on an idle machine (timings), one thread for steady numbers
  # (variance shift / folding / timing: for the comparison and placement studies)
  if [[ " $STAGES " == *" diagnose "* && ( $s == compare_* || $s == placement_* ) ]]; then
    "$BIN/dropbn" diagnose "results/$s" --skip-done --threads 1
  fi
  if [[ " $STAGES " == *" report "* ]]; then
    "$BIN/dropbn" report "results/$s"
  fi
done
