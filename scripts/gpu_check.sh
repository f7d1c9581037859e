#!/usr/bin/env bash
# GPU check of the speed work (issue 6): environment, the benchmark on CUDA in fp32 and bf16, and a
# short CIFAR-10 sweep. About 8 minutes of wall time.
#
#   OUT=/some/dir scripts/gpu_check.sh      # everything lands in $OUT (default results/bench/gpu)
#
# 1. environment (nvidia-smi, torch, CUDA)                               -> $OUT/env.txt
# 2. scripts/bench.py --device cuda (MNIST MLP + CIFAR CNN, dropbn vs DataLoader, eval, GEMM roofline)
#                                                                        -> $OUT/bench.json, bench.log
# 3. the same with bf16 autocast in both loops (--amp)                   -> $OUT/bench_amp.json
# 4. a short CIFAR-10 CNN comparison sweep on the GPU (5 reg presets, seed 0, 4 epochs, the
#    10k-image subset of +exp=compare_cifar10_cnn), then reg=both with train.amp=true,
#    train.compile=true and both                                         -> $OUT/sweep.log, summaries.json
# 5. ResNet-20 (configs/model/resnet.yaml) training images/s with batch norm and without (reg=batchnorm
#    vs reg=none, dropbn's loop vs the DataLoader loop)              -> $OUT/bench_resnet20_{batchnorm,none}.json
# 6. where batch norm's time goes in the CIFAR CNN: BatchNorm2d forward+backward alone at the CNN's
#    shapes, NCHW vs channels_last, float32 vs bf16, and the CNN's whole step with reg=batchnorm vs
#    reg=none in both layouts (the committed study saw 2.80 s vs 1.29 s per epoch with 3-6 runs
#    sharing the GPU: contention, or a slow channels_last BN kernel?)   -> $OUT/bn_layout.json
#
# DEVICE=cpu scripts/gpu_check.sh: a rehearsal of every step on the CPU at tiny size (a few steps,
# 1-epoch sweep on 512 images), to check the script before spending GPU time; its numbers mean nothing.
#
# Needs: torch with CUDA (.venv/bin/python, else $PY, else python3) and the data. The data root is
# $DROPBN_DATA_DIR, else ./shared/data, ../shared/data, ./.gpudata or ./data; it must hold MNIST/raw
# (the IDX files, plain or .gz) and cifar10-jpeg.tar.gz. When the data root is not reachable from
# the GPU host, stage a small copy inside the checkout first, e.g.
#   mkdir -p .gpudata/MNIST/raw && for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$f" \
#     > ".gpudata/MNIST/raw/$(basename "$f").gz"; done && cp ../shared/data/cifar10-jpeg.tar.gz .gpudata/
#   echo /.gpudata/ >> .git/info/exclude          # about 31 MB; keep it out of git
# (bench.py's MNIST baseline then uses a torchvision-MNIST-equivalent dataset over the same pixels.)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/bench/gpu}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if [ "$DEVICE" = cpu ]; then  # rehearsal sizes
  BENCH_SIZE=(--quick --rounds 1 --steps-mlp 4 --steps-cnn 2 --eval-cnn 256 --eval-mlp 1000 --workers none)
  SWEEP_SIZE=(train.epochs=1 data.train_size=512 train.eval_train_size=256 device=cpu)
  BN_STEPS=3
else
  BENCH_SIZE=()
  SWEEP_SIZE=(train.epochs=4 device=cuda)
  BN_STEPS=50
fi
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONUNBUFFERED=1
export DROPBN_CACHE_DIR=${DROPBN_CACHE_DIR:-/tmp/dropbn-cache-gpu}
if [ -z "${DROPBN_DATA_DIR:-}" ]; then
  for d in shared/data ../shared/data .gpudata data; do
    if [ -f "$d/cifar10-jpeg.tar.gz" ]; then DROPBN_DATA_DIR=$d; break; fi
  done
fi
export DROPBN_DATA_DIR=${DROPBN_DATA_DIR:-data}
CIFAR="$DROPBN_DATA_DIR/cifar10-jpeg.tar.gz"
[ -f "$CIFAR" ] || { echo "gpu_check: no $CIFAR (see the header for staging the data)" | tee "$OUT/env.txt"; exit 2; }

{
  echo "== $(date) device $DEVICE"
  if [ "$DEVICE" != cpu ]; then
    nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))"
  fi
  echo "data $DROPBN_DATA_DIR, cache $DROPBN_CACHE_DIR, cores $(nproc)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 2-3: benchmark (DataLoader workers min(8, cores-1); tqdm bars go to the log)
timeout 240 "$PY" scripts/bench.py --device "$DEVICE" "${BENCH_SIZE[@]}" --out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" | grep -v "it/s\]\|round\]\|img\]" || true
if [ "$DEVICE" != cpu ]; then
  timeout 120 "$PY" scripts/bench.py --device cuda --amp --rounds 2 --out "$OUT/bench_amp.json" 2>&1 \
    | tee -a "$OUT/bench.log" | grep -v "it/s\]\|round\]\|img\]" || true
fi

# 4: short sweep on the GPU
RES=/tmp/dropbn-gpu-results
rm -rf "$RES"
common=(data=imagefolder "data.path=$CIFAR" "out_root=$RES" seed=0 "${SWEEP_SIZE[@]}"
        train.diagnostics=false train.progress=false)
{
  echo "== sweep: 5 reg presets, fp32"
  time timeout 200 "$PY" -m dropbn.cli train -m +exp=compare_cifar10_cnn "${common[@]}" \
    reg=none,dropout,batchnorm,both,dropout_before_bn
  extras=("train.amp=true" "train.compile=true" "train.amp=true train.compile=true")
  [ "$DEVICE" = cpu ] && extras=("train.compile=false")
  for extra in "${extras[@]}"; do
    echo "== reg=both $extra"
    # shellcheck disable=SC2086
    time timeout 150 "$PY" -m dropbn.cli train +exp=compare_cifar10_cnn "${common[@]}" reg=both $extra
  done
} > "$OUT/sweep.log" 2>&1
tail -n 40 "$OUT/sweep.log"

"$PY" - "$RES" "$OUT/summaries.json" <<'EOF'
import json, sys
from pathlib import Path
rows = []
for f in sorted(Path(sys.argv[1]).rglob("summary.json")):
    s = json.loads(f.read_text())
    rows.append({"run": str(f.parent.relative_to(sys.argv[1])), "status": s.get("status"),
                 "final_test_acc": s.get("final_test_acc"), "seconds_per_epoch": s.get("seconds_per_epoch")})
Path(sys.argv[2]).write_text(json.dumps(rows, indent=2) + "\n")
for r in rows:
    print(f"{r['run']:<70} {r['status']:<10} acc {r['final_test_acc']}  {r['seconds_per_epoch']} s/epoch")
EOF
# 5: ResNet-20 with and without batch norm
for reg in batchnorm none; do
  timeout 150 "$PY" scripts/bench.py --device "$DEVICE" --cases cifar_resnet20 --reg "$reg" --rounds 2 \
    --workers none "${BENCH_SIZE[@]}" --out "$OUT/bench_resnet20_$reg.json" >> "$OUT/bench.log" 2>&1 || true
done
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
for reg in ("batchnorm", "none"):
    f = Path(sys.argv[1]) / f"bench_resnet20_{reg}.json"
    if f.exists():
        r = json.loads(f.read_text())["results"]["cifar_resnet20"]
        print(f"ResNet-20 reg={reg}: dropbn {r['median']['dropbn_train_sps']:,.0f} training images/s, "
              f"DataLoader loop {r['baselines']['example']['median_train_sps']:,.0f}")
    else:
        print(f"ResNet-20 reg={reg}: no result (see {sys.argv[1]}/bench.log)")
EOF

# 6: batch norm's cost by layout and dtype (BN alone, and the CNN's step with and without BN)
timeout 150 "$PY" scripts/bn_layout.py --device "$DEVICE" --steps "$BN_STEPS" --out "$OUT/bn_layout.json" || true
echo "gpu_check: done, files in $OUT"
