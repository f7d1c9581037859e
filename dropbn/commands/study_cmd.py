"""`dropbn study` on the command line: usage text and entry point."""
from __future__ import annotations

import sys

from ..study.stages import Study

USAGE = """usage: dropbn study +exp=NAME [overrides]

Tune every compared variant on a validation split, select each one's best setting on
validation only, re-train it with fresh seeds on the test set and report:
  dropbn study +exp=tuned_mnist_mlp
  dropbn study +exp=tuned_mnist_mlp 'study.search.optim.lr=[0.03,0.1]' 'study.final_seeds=[100,101,102]'
Overrides are those of `dropbn train` (dropbn train --help lists them), plus the study.* keys:
  study.variants, study.search   config keys -> lists of values (keys not in a preset need +)
  study.tune_seeds, study.final_seeds, study.select (val_acc | val_loss),
  study.searcher (grid | optuna), study.trials, study.final_val_size, study.final_overrides
Output: <out_root>/<name>/{tune,final}/<run>/, selected.yaml, report/report.md.
Run the same command again to continue an interrupted study; a finished one trains nothing."""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    return Study(argv).run(report=_report)


def _report(study_dir, claims=()):
    # imported here: pandas and matplotlib take ~1.4 s to import, which `dropbn study --help` and a study
    # stopped by a bad input (before any training) would otherwise wait for
    from ..report.study_report import build

    return build(study_dir, claims=list(claims))
