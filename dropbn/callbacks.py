"""Hydra callbacks for dropbn runs.

`SaveReturn` records what each job returned (train.objective, see dropbn/record/objective.py),
one JSON line per job with its run folder, for sweeps whose values a user wants
outside an optimizing sweeper:

    dropbn train -m ... '+hydra.callbacks.returns._target_=dropbn.callbacks.SaveReturn' \\
        '+hydra.callbacks.returns.path=returns.jsonl'

None is written as null and an infinite loss as Infinity (Python's json reads both).
"""
from __future__ import annotations

import json
import os

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback


class SaveReturn(Callback):
    def __init__(self, path: str):
        self.path = path

    def on_job_end(self, config, job_return, **kwargs) -> None:
        line = json.dumps({"run_dir": HydraConfig.get().runtime.output_dir, "value": job_return.return_value})
        # one write in append mode: lines from parallel jobs do not interleave
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
