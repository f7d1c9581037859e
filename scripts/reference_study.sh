#!/usr/bin/env bash
# Regenerates every committed reference report under results/.
# Usage: scripts/reference_study.sh [study ...]   (default: all, in this order)
# Needs the data sets under $DROPBN_DATA_DIR (or ./data, downloaded when online);
# CIFAR-10 uses the JPEG q75 mirror at $DROPBN_DATA_DIR/cifar10-jpeg.tar.gz when
# present, else torchvision's CIFAR-10.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DATA=${DROPBN_DATA_DIR:-data}
studies=("$@")
[ ${#studies[@]} -eq 0 ] && studies=(compare_mnist_mlp lr_mnist_mlp datasize_mnist_mlp compare_fashion_mlp compare_cifar10_cnn)
for s in "${studies[@]}"; do
  extra=()
  if [ "$s" = compare_cifar10_cnn ] && [ -f "$DATA/cifar10-jpeg.tar.gz" ]; then
    extra=(data=imagefolder "data.path=$DATA/cifar10-jpeg.tar.gz")
  fi
  start=$(date +%s)
  # diagnostics are computed afterwards, on an idle machine, by `dropbn diagnose`
  "$BIN/dropbn" train -m "+exp=$s" train.progress=false train.diagnostics=false "${extra[@]}"
  echo "sweep $s: $(( $(date +%s) - start )) s wall" | tee -a "results/$s/sweep_times.txt"
done
