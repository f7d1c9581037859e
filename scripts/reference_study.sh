#!/usr/bin/env bash
# Runs (or continues) the reference studies under results/ and rewrites their reports.
# Usage: scripts/reference_study.sh [study ...]       (default: the current studies, in this order)
#   JOBS=N      runs side by side, one torch thread each (default 1; JOBS=2 on a 2-core machine)
#   STAGES="train report" (default) picks the stages
#
# Current studies (results/README.md lists each one's runs and wall time):
#   tuned_placement_mnist_mlp, tuned_mnist_mlp, tuned_fashion_mlp, tuned_cifar10_cnn
#                                -> `dropbn study +exp=NAME` (tune -> select -> final -> report)
#   srivastava_mnist_mlp       -> two `dropbn train -m` sweeps (dropout arm, control), then report
#   datasize_steps_mnist_mlp   -> `dropbn train -m`, then report
#   lr_cifar10_cnn             -> `dropbn train -m` (3 seeds), then seeds 3-4 at lr 1.0 and 0.3, then report
# Superseded v1 studies (compare_*, lr/droprate/datasize/placement_mnist_mlp) run the same way as a
# plain sweep: `dropbn train -m +exp=NAME`, then `dropbn diagnose` and `dropbn report`.
#
# Every call trains only what is missing: finished runs are skipped (their committed records are
# enough), and an interrupted run resumes from its checkpoint. Commit the finished runs' records as
# a sweep goes on:  git add $(python scripts/finished_records.py results/NAME)
# Each call appends "<study> <stage>: <seconds> s wall, <date>, JOBS=<n>" to results/NAME/sweep_times.txt.
# Needs the data sets under $DROPBN_DATA_DIR (or ./data, downloaded when online).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
JOBS=${JOBS:-1}
STAGES=${STAGES:-train report}
studies=("$@")
[ ${#studies[@]} -eq 0 ] && studies=(tuned_placement_mnist_mlp tuned_mnist_mlp tuned_fashion_mlp srivastava_mnist_mlp
                                     datasize_steps_mnist_mlp tuned_cifar10_cnn)
launch=(train.progress=false)
[ "$JOBS" -gt 1 ] && launch+=(hydra/launcher=parallel "hydra.launcher.n_jobs=$JOBS")

timed() {  # timed STUDY WHAT COMMAND...: run it, append its wall time to results/STUDY/sweep_times.txt
  local s=$1 what=$2 start rc=0
  shift 2
  start=$(date +%s)
  "$@" || rc=$?
  mkdir -p "results/$s"
  echo "$s $what: $(( $(date +%s) - start )) s wall, $(date -u +%Y-%m-%dT%H:%MZ), JOBS=$JOBS, exit $rc" \
    | tee -a "results/$s/sweep_times.txt"
  return $rc
}

for s in "${studies[@]}"; do
  case $s in
    tuned_*)
      # the study writes its own report at the end; `dropbn report` below rewrites it from the records
      [[ " $STAGES " == *" train "* ]] && timed "$s" study "$BIN/dropbn" study "+exp=$s" "${launch[@]}"
      ;;
    srivastava_mnist_mlp)
      if [[ " $STAGES " == *" train "* ]]; then
        timed "$s" "dropout arm" "$BIN/dropbn" train -m "+exp=$s" "${launch[@]}"
        timed "$s" control "$BIN/dropbn" train -m "+exp=$s" reg.dropout=0 reg.input_dropout=0 "${launch[@]}"
      fi
      ;;
    lr_cifar10_cnn)
      if [[ " $STAGES " == *" train "* ]]; then
        timed "$s" sweep "$BIN/dropbn" train -m "+exp=$s" "${launch[@]}"
        # seeds 3-4 at the two highest rates, where the trainability test needs them (see the preset)
        timed "$s" "seeds 3-4" "$BIN/dropbn" train -m "+exp=$s" seed=3,4 optim.lr=1.0,0.3 "${launch[@]}"
      fi
      ;;
    *)
      [[ " $STAGES " == *" train "* ]] && timed "$s" sweep "$BIN/dropbn" train -m "+exp=$s" "${launch[@]}"
      if [[ " $STAGES " == *" train "* && ( $s == compare_* || $s == placement_* ) ]]; then
        "$BIN/dropbn" diagnose "results/$s" --skip-done --threads 1   # v1 studies: diagnostics after training
      fi
      ;;
  esac
  if [[ " $STAGES " == *" report "* ]]; then
    "$BIN/dropbn" report "results/$s"
  fi
done
