"""`dropbn` command line: the train command's Hydra app, and thin dispatch to the other subcommands
(dropbn/commands/). The Hydra app stays in this module: Hydra names the job after it (`cli`, the
job name a SLURM launcher shows).

    dropbn train [hydra overrides]     a full Hydra app (+exp=..., -m, --cfg job, --help)
    dropbn report DIR [DIR ...]        comparison report of the runs under DIR
    dropbn study +exp=NAME [overrides] tune on validation -> select -> final on test -> report
    dropbn status DIR | -m OVERRIDES | --study OVERRIDES   the state of every run of a sweep or study
"""
from __future__ import annotations

import logging
import os
import sys

from .base.errors import DropbnError, Interrupted, fail
from .base.signals import GracefulStop, exit_with_parent, in_worker_process

USAGE = """usage: dropbn <command> [args]

Measure what dropout and batch normalization do to a network.

commands:
  train    train one configuration, or sweep many with -m (a Hydra app:
           dropbn train +exp=quickstart, dropbn train -m +exp=compare_mnist_mlp,
           dropbn train --help lists every config group and key)
  report   turn the runs under one or more folders into comparison tables,
           claim checks and figures (dropbn report results/compare_mnist_mlp)
  study    a fair comparison in one command: tune every variant on a validation split,
           select each one's best setting, re-run it with fresh seeds on the test set,
           report (dropbn study +exp=tuned_mnist_mlp; dropbn study --help)
  status   the state of every run of a sweep (completed, running, partial, failed,
           missing) and an ETA: dropbn status results/NAME, or the arguments of
           dropbn train -m (dropbn status -m +exp=NAME), or of dropbn study after
           --study (dropbn status --study +exp=tuned_mnist_mlp); exit 0 when all finished
  diagnose add BN variance shift, BN folding, timing to finished runs (dropbn diagnose DIR)
  export   TensorBoard event files of finished runs, one subfolder per run
           (dropbn export tensorboard results/compare_mnist_mlp --out tb)

Data root: data.root=..., else $DROPBN_DATA_DIR, else ./data.
"""


def _train_app():
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from .config.validation import CONFIG_DIR

    @hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
    def train(cfg):
        from .config.validation import validate
        from .train.device import check_available
        from .record.job_record import JobRecord
        from .record.objective import objective
        from .train.loop import run

        hc = HydraConfig.get()
        record = JobRecord(HydraConfig.instance().cfg, cfg)  # .hydra/ and train.log, once run() trains
        try:
            validate(cfg)
            check_available(cfg.device)  # here too: a remote launcher's job may land on another machine
            if str(hc.mode) == "RunMode.MULTIRUN":  # which run of how many (total from the pre-check)
                total = os.environ.get("DROPBN_SWEEP_JOBS", "?")
                logging.getLogger("dropbn").info(f"=== run {hc.job.num + 1}/{total}: {hc.job.override_dirname}")
            launcher = hc.launcher if "launcher" in hc else None  # a sweep's: the run's share of the cores
            if in_worker_process(launcher):
                exit_with_parent()  # a worker does not outlive `dropbn train -m` (kill -9)
            with GracefulStop():  # SIGINT/SIGTERM: stop at the next step, exit 130/143
                summary = run(cfg, hc.runtime.output_dir, launcher=launcher, start=record.start)
            if summary is None:  # another process holds the run's claim and trains it
                return None
            return objective(summary, cfg.train.objective)  # the job's return value (dropbn/record/objective.py)
        except DropbnError as e:
            end = isinstance(e, Interrupted) and in_worker_process(launcher)  # a stopped joblib worker ends
            if end:
                record.close()  # os._exit skips the finally below
            fail(e, end_process=end)
        finally:
            record.close()

    return train


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        from .config.precheck import precheck

        precheck(rest)  # every job's config, before any work: one line + exit 2 if bad
        if "-m" in rest or "--multirun" in rest:
            from .base.signals import forward_sigterm

            forward_sigterm()  # parallel workers stop with this process, not orphaned
        sys.argv = ["dropbn train", *rest]
        _train_app()()
    elif cmd in ("report", "diagnose", "export", "study", "status"):
        if cmd == "report":
            from .commands.report_cmd import main as sub_main
        elif cmd == "status":
            from .commands.status_cmd import main as sub_main
        elif cmd == "export":
            from .commands.export_cmd import main as sub_main
        elif cmd == "study":
            from .commands.study_cmd import main as sub_main
        else:
            from .commands.diagnose_cmd import main as sub_main
        try:
            rc = sub_main(rest)
        except DropbnError as e:  # an input problem: one line, exit 2
            fail(e)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    else:
        print(f"dropbn: error: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
