"""Check a `dropbn train` command line before Hydra runs anything.

Hydra reports its own errors (an unknown key, an unknown group option, a
malformed override) as several lines and exit code 1, and a sweep finds a bad
value only when it reaches that run. `check_args` composes the config of every
job the command asks for — each combination of a -m sweep, including the
`hydra.sweeper.params` of an +exp preset — through Hydra's compose API, runs
`validate()` on each (dropbn/config/validation.py: the schema's rules), and raises a
`DropbnError` whose message is the one line `<key>=<value>: <what is allowed>`,
quoting the value as the command line gave it. Then what the jobs need from
this machine: the devices they name (when the launcher runs them here; a remote
launcher's jobs check on their own machine) and a writable place for the run or
sweep folder. `precheck` prints an error as `dropbn: error: ...` and exits with code 2.

This module is the only one that touches Hydra's internals (its command-line parser, the basic
sweeper's expansion of a sweep, the override_dirname of a job), each behind a public function here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigTypeError, ValidationError

from .validation import CONFIG_DIR, type_error, unknown_key_hint, validate
from ..base.errors import ConfigError, DropbnError, fail, first_line

# flags after which Hydra does not run the job (help, info, ...): nothing to check
_NO_JOB_FLAGS = ("help", "hydra_help", "version", "shell_completion", "info", "experimental_rerun")
# launchers whose jobs run on this machine (class names): their devices are checked before anything runs
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher", "LocalLauncher")
GRAMMAR_URL = "https://hydra.cc/docs/advanced/override_grammar/basic/"


class OverrideError(DropbnError):
    """A command-line override Hydra cannot use; message: `<override>: <what is allowed>`."""


def _parse_args(args: list[str]):
    parser = get_args_parser()
    try:
        return parser.parse_args(args)
    except SystemExit:  # argparse already printed its usage line(s)
        raise OverrideError(f"{' '.join(args)}: not a valid command line; see dropbn train --help") from None


def parse_overrides(lines: list[str], config_loader=None) -> list:
    parser = OverridesParser.create(config_loader=config_loader)
    out = []
    for line in lines:
        try:
            out.extend(parser.parse_overrides([line]))
        except Exception as e:  # OverrideParseException, HydraException
            msg = first_line(e)
            raise OverrideError(f"{line}: malformed override ({msg}); expected key=value, "
                                f"e.g. optim.lr=0.01 or model.hidden=[512,512] (grammar: {GRAMMAR_URL})") from None
    return out


def _display_key(ov) -> str:
    return ov.get_key_element()  # with its ~ / + / ++ prefix


def check_group_choices(overrides: list, loader) -> None:
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


_NOT_GIVEN = object()


def _given(key: str, overrides: list[str], default=_NOT_GIVEN):
    """The value the command line gives `key` (as Hydra parses it: -1, 'abc', [64, 0]), else `default`."""
    for ov in reversed(parse_overrides(overrides)):
        if ov.key_or_group == key and not ov.is_delete():
            return ov.value()
    return default


def _as_given(e: ConfigError, overrides: list[str]) -> ConfigError:
    """`e` quoting the value as typed (optim.lr=-1, not the -1.0 of a float field)."""
    return ConfigError(e.key, _given(e.key, overrides, e.value), e.allowed)


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
        if isinstance(cause, ValidationError):  # a value of the wrong type for its schema field
            key = full_key.partition("[")[0]  # model.hidden[1] -> model.hidden
            return str(type_error(key, _given(key, overrides, getattr(cause, "value", None))))
        if isinstance(cause, ConfigTypeError) and "deletion" in str(cause):
            return f"~{full_key}: a key of the config cannot be deleted; set it to another value"
        value = _given(full_key, overrides, None)
        if "Could not override" in msg or "not in struct" in msg or "Could not delete" in msg:
            return str(ConfigError(full_key, value, unknown_key_hint(full_key)))
        return str(ConfigError(full_key, value, first_line(cause)))
    return first_line(e)


def override_dirname(overrides: list, exclude_keys: list, item_sep: str, kv_sep: str) -> str:
    """Hydra's hydra.job.override_dirname of a job from its parsed overrides (as the job itself gets it,
    for the folder-name resolver: dropbn.record.identity.folder_name)."""
    return get_overrides_dirname(overrides, exclude_keys, item_sep, kv_sep)


def expand_jobs(overrides: list[str], multirun: bool, loader, sweeper_params=None) -> list[list[str]]:
    """Every job's override list, as Hydra's basic sweeper would launch them."""
    parsed = parse_overrides(overrides, loader)
    check_group_choices(parsed, loader)
    if not multirun:
        for ov in parsed:
            if ov.is_sweep_override():
                v = (ov.input_line or "").partition("=")[2]
                k = _display_key(ov)
                raise OverrideError(f"{k}={v}: a sweep needs -m (dropbn train -m {k}={v}); "
                                    f"for a list write {k}=[{v}]")
        return [list(overrides)]
    params = [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    parsed_params = parse_overrides(params, loader)
    check_group_choices(parsed_params, loader)
    try:
        batches = BasicSweeper.split_arguments(parsed_params + parsed, None)
    except Exception as e:
        raise OverrideError(first_line(e)) from None
    return [list(job) for batch in batches for job in batch]


def check_args(args: list[str], config_dir=None, config_name: str = "train") -> int:
    """Compose and validate every job of `dropbn train <args>`; raise DropbnError on the first
    bad input. Returns the number of jobs checked (0 when the flags run no job)."""
    a = _parse_args(args)
    if any(getattr(a, f, False) for f in _NO_JOB_FLAGS) or a.config_path or a.config_dir:
        return 0  # no job runs, or a user's own config tree (Hydra checks it)
    if GlobalHydra.instance().is_initialized():
        return 0  # inside a running Hydra app (tests, notebooks): leave it alone
    name = a.config_name or config_name
    with initialize_config_dir(config_dir=str(config_dir or CONFIG_DIR), version_base="1.3",
                               job_name="dropbn"):
        loader = GlobalHydra.instance().config_loader()
        jobs = _unique_jobs(name, a, loader)
        cfgs = []
        for job in jobs:
            cfg = _compose(name, list(job), loader)
            if not a.cfg:  # --cfg job/hydra/all shows the config: values are not judged
                _validate(cfg, list(job), loader)
                cfgs.append(cfg)
        if cfgs:
            hydra_cfg = _compose(name, list(jobs[0]), loader, hydra=True)
            if _runs_here(hydra_cfg.hydra.launcher):
                _check_devices(cfgs)
            _check_writable(hydra_cfg, a.multirun, loader)
            _claims(cfgs[0], hydra_cfg, a.multirun)
    if a.multirun:
        os.environ["DROPBN_SWEEP_JOBS"] = str(len(jobs))
    return len(jobs)


def _claims(cfg, hydra_cfg, multirun: bool) -> None:
    """report.claims: the files are checked now (a bad one stops the command, exit 2); a -m sweep
    registers them in its folder before its first run (dropbn/report/registration.py)."""
    files = list(OmegaConf.select(cfg, "report.claims", default=None) or [])
    if not files:
        return
    from .claims_file import load
    from .registration import register_sweep

    claim_set = load(files)
    if multirun:
        register_sweep(hydra_cfg.hydra.sweep.dir, claim_set)


def job_folders(args: list[str], config_dir=None, config_name: str = "train") -> list[tuple[Path, DictConfig]]:
    """(run folder, composed config) of every job of `dropbn train <args>`, composed as `check_args`
    does (nothing runs; values are not judged): the folder is Hydra's run.dir, or under -m its
    sweep.dir/sweep.subdir with the job's number."""
    a = _parse_args(args)
    name = a.config_name or config_name
    with initialize_config_dir(config_dir=str(config_dir or CONFIG_DIR), version_base="1.3",
                               job_name="dropbn"):
        loader = GlobalHydra.instance().config_loader()
        out = []
        for num, job in enumerate(_unique_jobs(name, a, loader)):
            cfg = _compose(name, list(job), loader, hydra=True)
            with open_dict(cfg):
                cfg.hydra.job.num = cfg.hydra.job.id = num
            h = cfg.hydra
            out.append((Path(h.sweep.dir) / h.sweep.subdir if a.multirun else Path(h.run.dir), cfg))
    return out


def _unique_jobs(name: str, a, loader) -> list[tuple]:
    return list(dict.fromkeys(map(tuple, _jobs(name, list(a.overrides), a.multirun, loader))))


def _runs_here(launcher) -> bool:
    target = str((launcher or {}).get("_target_", "BasicLauncher"))
    return target.rpartition(".")[2] in LOCAL_LAUNCHERS


def _check_devices(cfgs) -> None:
    """Every device the jobs name is on this machine (device=cuda, cuda:N, mps): one line if not."""
    wanted = sorted({str(c.device) for c in cfgs} - {"auto", "cpu"})
    if wanted:
        from ..train.device import check_available  # imports torch: only when a job names an accelerator

        for spec in wanted:
            check_available(spec)


def _check_writable(hydra_cfg, multirun: bool, loader) -> None:
    """The run folder (or a sweep's folder) exists or can be created. An existing run folder may be
    read-only (a finished run is skipped without writing); a sweep writes multirun.yaml into its folder."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        target = Path(str(OmegaConf.select(hydra_cfg, key)))
    except Exception as e:  # the folder name's resolver could not read data.path
        raise OverrideError(explain(e, [], loader)) from None
    existing = next(q for q in (target, *target.parents) if os.path.exists(q) or q == q.parent)
    if existing == target and not multirun:
        return
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "a sweep (-m) writes multirun.yaml there" if existing == target else f"cannot create {target}"
        raise DropbnError(f"{existing} is not writable; {what}; choose another out_root=... or name=...")


def _jobs(name: str, overrides: list[str], multirun: bool, loader) -> list[list[str]]:
    parsed = parse_overrides(overrides, loader)  # malformed overrides first, named one by one
    if not multirun:
        return expand_jobs(overrides, False, loader)
    check_group_choices(parsed, loader)
    base = [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]
    sweeper = _compose(name, base, loader, hydra=True).hydra.get("sweeper") or {}
    if "BasicSweeper" not in str(sweeper.get("_target_", "BasicSweeper")):
        return [base]  # another sweeper plugin expands its own search space
    params = sweeper.get("params")
    return expand_jobs(overrides, True, loader, OmegaConf.to_container(params) if params is not None else None)


def _compose(name: str, job: list[str], loader, hydra: bool = False):
    try:
        return compose(name, job, return_hydra_config=hydra)
    except Exception as e:
        raise OverrideError(explain(e, job, loader)) from None


def _validate(cfg, job: list[str], loader) -> None:
    try:
        validate(cfg)
    except ConfigError as e:
        raise _as_given(e, job) from None
    except DropbnError:
        raise
    except Exception as e:  # an interpolation that does not resolve, ...
        raise OverrideError(explain(e, job, loader)) from None


def precheck(args: list[str]) -> None:
    """`check_args`; on a bad input print `dropbn: error: <one line>` and exit 2."""
    try:
        check_args(args)
    except Exception as e:  # a DropbnError, or a Hydra error not mapped above: still one line
        fail(e)
