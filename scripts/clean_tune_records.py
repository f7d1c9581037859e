"""Remove every test number from a study's committed tune run records.

    python scripts/clean_tune_records.py results/STUDY [...]

Tune runs trained before `dropbn study` passed them `train.eval_test=false` evaluated the test set
every epoch. Selection never read those numbers, but a record that holds them invites a peek. This
rewrites, in each <study>/tune/<run>/: metrics.csv without its test_* columns, summary.json with every
test-derived field null (final/best/first-epoch test accuracy and loss, the test accuracy at the
picked epoch, the train-test gaps, epochs/seconds/steps to the target test accuracy) and without
its diagnostics (they measure the test set). Everything else, validation numbers included, is kept
byte for byte, so the study's selection is unchanged (the script checks it) and a re-run still
skips the runs as finished. Writes atomically; running it again changes nothing.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dropbn.record.layout import METRICS, SUMMARY, atomic_write_json, atomic_write_text
from dropbn.report.study_report import load_selected, rescore
from dropbn.study.selection import SELECTED, TUNE

TEST_FIELDS = ("final_test_acc", "final_test_loss", "best_test_acc", "test_acc_at_best_epoch",
               "first_epoch_test_acc", "generalization_gap", "loss_gap", "epochs_to_target",
               "seconds_to_target", "steps_to_target")


def clean_metrics(path: Path) -> bool:
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    keep = [i for i, k in enumerate(header) if not k.startswith("test_")]
    if len(keep) == len(header):
        return False
    out = [",".join(c for i, c in enumerate(line.rstrip("\n").split(",")) if i in keep) + "\n" for line in lines]
    atomic_write_text("".join(out), path)
    return True


def clean_summary(path: Path) -> bool:
    s = json.loads(path.read_text())
    new = {k: (None if k in TEST_FIELDS else v) for k, v in s.items() if k != "diagnostics"}
    if new == s:
        return False
    atomic_write_json(new, path)
    return True


def picks(study: Path) -> dict:
    ranked = rescore(load_selected(study), study / TUNE)
    return {name: [(p.point, p.best_epoch, p.mean, p.other) for p in pts] for name, pts in ranked.items()}


def main(studies: list[Path]) -> None:
    for study in studies:
        before = picks(study) if (study / SELECTED).is_file() else None
        changed = 0
        for run in sorted((study / TUNE).iterdir()):
            if (run / METRICS).is_file():
                changed += clean_metrics(run / METRICS)
            if (run / SUMMARY).is_file():
                changed += clean_summary(run / SUMMARY)
        if before is not None:
            assert picks(study) == before, f"{study}: the selection changed"
        print(f"{study}: {changed} file(s) rewritten")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
