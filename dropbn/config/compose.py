"""Hydra's compose API on the real configs/ tree, for planning a study (no training)."""
from __future__ import annotations

import contextlib
import re

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from .precheck import OverrideError, explain, parse_overrides
from .validation import CONFIG_DIR, FREE_FORM_KEYS


class Composer:
    """Hydra's compose API on the real configs/ tree, kept open for the whole study."""

    def __init__(self):
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3",
                                                        job_name="dropbn"))
        self.loader = GlobalHydra.instance().config_loader()
        self.parser = OverridesParser.create(config_loader=self.loader)
        self.config_dir = CONFIG_DIR

    def close(self):
        self._stack.close()

    def compose(self, overrides: list[str], hydra: bool = False) -> DictConfig:
        try:
            return hydra_compose("train", list(overrides), return_hydra_config=hydra)
        except Exception as e:
            msg = str(e)
            m = re.search(r"To append to your config use (\+\S+)", msg)
            key = m.group(1).lstrip("+").partition("=")[0] if m else ""
            if m and key.startswith(tuple(k + "." for k in FREE_FORM_KEYS)):  # a mapping the preset lacks
                raise OverrideError(f"{key}: not in this preset's study node; add it with Hydra's +: "
                                    f"{m.group(1)}") from None
            raise OverrideError(explain(e, overrides, self.loader)) from None

    def parse(self, lines: list[str]) -> list:
        return parse_overrides(lines, self.loader)

    def value(self, text: str):
        """Override text -> the Python value Hydra would set."""
        return self.parser.parse_overrides([f"x={text}"])[0].value()

    def is_group(self, key: str) -> bool:
        return "." not in key and (self.config_dir / key).is_dir() and key not in ("exp", "hydra")

    def group_options(self, key: str) -> list[str]:
        return sorted(p.stem for p in (self.config_dir / key).glob("*.yaml"))

