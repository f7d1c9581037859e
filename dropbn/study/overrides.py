"""Hydra override text for `dropbn study`: Python values <-> `key=value` text, merging override lists."""
from __future__ import annotations

import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

_PLAIN = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_PARSER = None


def _parses_as_itself(s: str) -> bool:
    global _PARSER
    if _PARSER is None:
        _PARSER = OverridesParser.create()
    try:
        return _PARSER.parse_overrides([f"x={s}"])[0].value() == s
    except Exception:
        return False


def ov_value(v) -> str:
    """A Python value as Hydra override text (the inverse of Hydra's parser for these types)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(ov_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{ov_value(x)}" for k, x in v.items()) + "}"
    s = str(v)
    if _PLAIN.match(s) and _parses_as_itself(s):  # not a number, bool or null in disguise
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_py(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def merge_overrides(base: list[str], extra: list[str], parser) -> list[str]:
    """base + extra, where an extra override replaces a base override of the same key."""
    keys = {o.key_or_group for o in parser.parse_overrides(extra)} if extra else set()
    kept = [line for line, o in zip(base, parser.parse_overrides(base) if base else []) if o.key_or_group not in keys]
    return kept + list(extra)


def fmt_point(point: dict) -> str:
    return ", ".join(f"{k}={x}" for k, x in point.items()) or "(defaults)"
