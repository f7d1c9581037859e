"""Check a `dropbn train` command line before Hydra runs anything.

Hydra reports its own errors (an unknown key, an unknown group option, a
malformed override) as several lines and exit code 1, and a sweep finds a bad
value only when it reaches that run. `check_args` composes the config of every
job the command asks for — each combination of a -m sweep, including the
`hydra.sweeper.params` of an +exp preset — through Hydra's compose API, runs
`validate()` and the unknown-key check on each, and raises a `DropbnError`
whose message is the one line `<key>=<value>: <what is allowed>`. `precheck`
prints it as `dropbn: error: ...` and exits with code 2.
"""
from __future__ import annotations

import os
import re
import sys

from .errors import ConfigError, DropbnError

# flags after which Hydra does not run the job (help, info, ...): nothing to check
_NO_JOB_FLAGS = ("help", "hydra_help", "version", "shell_completion", "info", "experimental_rerun")
GRAMMAR_URL = "https://hydra.cc/docs/advanced/override_grammar/basic/"


class OverrideError(DropbnError):
    """A command-line override Hydra cannot use; message: `<override>: <what is allowed>`."""


def _first_line(e: BaseException) -> str:
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


def _parse_args(args: list[str]):
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    try:
        return parser.parse_args(args)
    except SystemExit:  # argparse already printed its usage line(s)
        raise OverrideError(f"{' '.join(args)}: not a valid command line; see dropbn train --help") from None


def _parse_overrides(lines: list[str], config_loader=None) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=config_loader)
    out = []
    for line in lines:
        try:
            out.extend(parser.parse_overrides([line]))
        except Exception as e:  # OverrideParseException, HydraException
            msg = _first_line(e)
            raise OverrideError(f"{line}: malformed override ({msg}); expected key=value, "
                                f"e.g. optim.lr=0.01 or model.hidden=[512,512] (grammar: {GRAMMAR_URL})") from None
    return out


def _display_key(ov) -> str:
    return ov.get_key_element()  # with its ~ / + / ++ prefix


def _check_group_choices(overrides: list, loader) -> None:
    """`reg=bogus`, `+exp=nope`, `hydra/launcher=nope`: name the options that exist."""
    for ov in overrides:
        if ov.is_delete():
            continue
        group = ov.key_or_group
        options = loader.get_group_options(group)
        if not options:
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
        for v in values:
            if v not in options:
                raise OverrideError(f"{_display_key(ov)}={v}: allowed: {', '.join(options)}")


def _value_of(key: str, overrides: list[str]) -> str | None:
    for line in reversed(overrides):
        k, sep, v = line.partition("=")
        if sep and k.lstrip("+~") == key:
            return v
    return None


def explain(e: BaseException, overrides: list[str], loader=None) -> str:
    """One line `<key>=<value>: <what is allowed>` for an exception from compose/validate."""
    if isinstance(e, DropbnError):
        return str(e)
    msg = str(e)
    m = re.search(r"Could not find '([^']+)/([^'/]+)'", msg)
    if m:
        group, option = m.groups()
        options = loader.get_group_options(group) if loader is not None else []
        allowed = f"allowed: {', '.join(options)}" if options else "no such config"
        return f"{group}={option}: {allowed}"
    m = re.search(r"Ambiguous value for argument '([^']+)'", msg)
    if m:
        k, _, v = m.group(1).partition("=")
        return (f"{k}={v}: a sweep needs -m (dropbn train -m {k}={v}); for a list write "
                f"{k}=[{v}], for a string quote it: {k}='{v}'")
    cause = e.__cause__ or e
    full_key = getattr(cause, "full_key", None) or getattr(e, "full_key", None)
    if full_key is None:
        m = re.search(r"Could not (?:override|append to|delete from|delete) '([^']+)'", msg)
        full_key = m.group(1) if m else None
    if full_key:
        value = _value_of(full_key, overrides)
        if "Could not override" in msg or "not in struct" in msg or "Could not delete" in msg:
            from .config import unknown_key_hint

            return f"{full_key}={value}: " + unknown_key_hint(full_key)
        return f"{full_key}={value}: {_first_line(cause)}"
    return _first_line(e)


def expand_jobs(overrides: list[str], multirun: bool, loader, sweeper_params=None) -> list[list[str]]:
    """Every job's override list, as Hydra's basic sweeper would launch them."""
    parsed = _parse_overrides(overrides, loader)
    _check_group_choices(parsed, loader)
    if not multirun:
        for ov in parsed:
            if ov.is_sweep_override():
                v = (ov.input_line or "").partition("=")[2]
                k = _display_key(ov)
                raise OverrideError(f"{k}={v}: a sweep needs -m (dropbn train -m {k}={v}); "
                                    f"for a list write {k}=[{v}]")
        return [list(overrides)]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    parsed_params = _parse_overrides(params, loader)
    _check_group_choices(parsed_params, loader)
    try:
        batches = BasicSweeper.split_arguments(parsed_params + parsed, None)
    except Exception as e:
        raise OverrideError(_first_line(e)) from None
    return [list(job) for batch in batches for job in batch]


def check_args(args: list[str], config_dir=None, config_name: str = "train") -> int:
    """Compose and validate every job of `dropbn train <args>`; raise DropbnError on the first
    bad input. Returns the number of jobs checked (0 when the flags run no job)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .config import CONFIG_DIR, check_keys, validate

    a = _parse_args(args)
    if any(getattr(a, f, False) for f in _NO_JOB_FLAGS):
        return 0
    if a.config_path or a.config_dir:
        return 0  # a user's own config tree: Hydra checks it
    name = a.config_name or config_name
    overrides = list(a.overrides)
    inspect_only = bool(a.cfg)  # --cfg job/hydra/all: show the config, do not validate values
    was_initialized = GlobalHydra.instance().is_initialized()
    if was_initialized:
        return 0  # inside a running Hydra app (tests, notebooks): leave it alone
    with initialize_config_dir(config_dir=str(config_dir or CONFIG_DIR), version_base="1.3",
                               job_name="dropbn"):
        loader = GlobalHydra.instance().config_loader()
        _parse_overrides(overrides, loader)  # malformed overrides first, named one by one
        sweeper_params = None
        if a.multirun:
            parsed = _parse_overrides(overrides, loader)
            _check_group_choices(parsed, loader)
            base = [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]
            try:
                hcfg = compose(name, base, return_hydra_config=True)
            except Exception as e:
                raise OverrideError(explain(e, base, loader)) from None
            sweeper = hcfg.hydra.get("sweeper") or {}
            if "BasicSweeper" not in str(sweeper.get("_target_", "BasicSweeper")):
                jobs = [base]  # another sweeper plugin expands its own search space
            else:
                from omegaconf import OmegaConf

                p = sweeper.get("params")
                sweeper_params = OmegaConf.to_container(p) if p is not None else None
                jobs = expand_jobs(overrides, True, loader, sweeper_params)
        else:
            jobs = expand_jobs(overrides, False, loader)
        seen = set()
        for job in jobs:
            key = tuple(job)
            if key in seen:
                continue
            seen.add(key)
            try:
                cfg = compose(name, job)
            except Exception as e:
                raise OverrideError(explain(e, job, loader)) from None
            if inspect_only:
                continue
            try:
                check_keys(cfg)
                validate(cfg)
            except ConfigError:
                raise
            except DropbnError:
                raise
            except Exception as e:  # an interpolation that does not resolve, ...
                raise OverrideError(explain(e, job, loader)) from None
        if a.multirun:
            os.environ["DROPBN_SWEEP_JOBS"] = str(len(seen))
        return len(seen)


def precheck(args: list[str]) -> None:
    """`check_args`, printing `dropbn: error: <one line>` and exiting 2 on a bad input."""
    try:
        check_args(args)
    except DropbnError as e:
        print(f"dropbn: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # a Hydra error not mapped above: still one line
        print(f"dropbn: error: {_first_line(e)}", file=sys.stderr)
        sys.exit(2)
