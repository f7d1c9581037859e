"""The Hydra job around one run: the run folder's .hydra/ record and its train.log.

Hydra would write .hydra/ and open train.log in the run folder before the task
starts; configs/train.yaml turns both off (hydra.output_subdir: null and a
console-only job_logging). `JobRecord.start` writes them instead, and
dropbn.train.loop.run calls it only once it knows that this call trains the run, so
a call that skips a finished run, or stops on a config mismatch, writes nothing
into the folder (a read-only folder can be skipped). .hydra/ keeps Hydra's
layout, config.yaml (the recorded config, as in summary.json), overrides.yaml and
hydra.yaml, plus folder_name.txt: the folder's name from its overrides before it
was shortened (dropbn.record.identity).
"""
from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from .identity import fit_name, full_folder_name
from .layout import FOLDER_NAME, HYDRA_CONFIG, HYDRA_HYDRA, HYDRA_OVERRIDES, TRAIN_LOG
from .run_dir import RunDir

LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"  # train.log: console lines with a time stamp


class JobRecord:
    """`start(rd, config)`: write .hydra/ and attach train.log; `close()`: detach it (every job ends so)."""

    def __init__(self, hydra_cfg: DictConfig, cfg: DictConfig):
        self.hydra_cfg = hydra_cfg  # HydraConfig.instance().cfg: {"hydra": ...}
        self.cfg = cfg
        self.handler: logging.Handler | None = None

    def start(self, rd: RunDir, config: dict) -> None:
        hc = self.hydra_cfg.hydra
        rd.write_text(HYDRA_CONFIG, OmegaConf.to_yaml(config))
        rd.write_text(HYDRA_OVERRIDES, OmegaConf.to_yaml(hc.overrides.task))
        rd.write_text(HYDRA_HYDRA, OmegaConf.to_yaml(self.hydra_cfg))
        name = full_folder_name(hc.job.override_dirname, self.cfg.data.path, self.cfg.data.cache_dir)
        rd.write_text(FOLDER_NAME, name + "\n")
        self.handler = logging.FileHandler(rd.file(TRAIN_LOG), encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(self.handler)
        if fit_name(name) != name:
            logging.getLogger("dropbn").info(f"folder name shortened: {fit_name(name)} = {name}")

    def close(self) -> None:
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler.close()
            self.handler = None
