"""The config schema: one dataclass per group, its defaults, and the rule of every key.

Registered in Hydra's ConfigStore; Hydra 1.3 applies a schema to a YAML file only
through that file's defaults list, so every option of a group starts with

    defaults:
      - /data_schema@_here_   # (model_schema, reg_schema, optim_schema)
      - _self_

and lists only what differs from the defaults here; train.yaml starts with
`- train_schema`. OmegaConf then enforces the types (and struct mode: no unknown
keys); each field's `Rule` says the rest, and `dropbn.config.validation.validate` applies the
rules and the cross-field ones.

Allowed names come from the registry of the module that implements them
(`OneOf("dropbn.train.models:NORMS")`). Those modules import torch, which takes seconds,
so a registry is imported when a value is checked, not with the schema: `dropbn train
--help` and `--cfg job` stay torch-free, and validate() applies the rules that need
no registry first, so that most bad values are reported without torch.
"""
import copy
import importlib
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ..record.layout import RESULTS_DIR

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # cuda:N: the N-th GPU, e.g. cuda:1
# Where values are used: numbers become float32 tensors or scalars of the optimizer, integers int64
# (seeds, sizes, steps); a value beyond them would pass here and crash the job, so it is rejected here
FLOAT32_MAX = 3.4028234663852886e38
INT64_MAX = 2**63 - 1


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Rule:
    """What a key accepts: `ok(value)`, and `allowed`, the text after `key=value: `."""

    allowed = ""
    registry = ""  # "module:NAME" of the registry of allowed names it imports, if any

    def ok(self, v) -> bool:
        raise NotImplementedError

    def allowed_for(self, v) -> str:
        """`allowed`, with why `v` fails when the reason is not in it."""
        return self.allowed


@dataclass(frozen=True)
class Int(Rule):
    lo: int
    null: bool = False

    def ok(self, v) -> bool:
        return (v is None and self.null) or (_is_int(v) and self.lo <= v <= INT64_MAX)

    @property
    def allowed(self) -> str:
        return f"must be an integer >= {self.lo}" + (" or null" if self.null else "")

    def allowed_for(self, v) -> str:
        too_big = _is_int(v) and v > INT64_MAX
        return self.allowed + (f"; at most {INT64_MAX} (int64, as torch uses it)" if too_big else "")


@dataclass(frozen=True)
class Num(Rule):
    """A finite number (never nan or inf) in a range; hi=None: no upper bound."""
    lo: float
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False

    def ok(self, v) -> bool:
        if v is None:
            return self.null
        return _is_num(v) and math.isfinite(v) and abs(v) <= FLOAT32_MAX and not (
            (v <= self.lo if self.lo_open else v < self.lo) or
            (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)))

    @property
    def allowed(self) -> str:
        rng = (f"{'(' if self.lo_open else '['}{self.lo}, {self.hi if self.hi is not None else 'inf'}"
               f"{')' if self.hi_open or self.hi is None else ']'}")
        return f"must be a number in {rng}" + (" or null" if self.null else "")

    def allowed_for(self, v) -> str:
        too_big = _is_num(v) and math.isfinite(v) and abs(v) > FLOAT32_MAX
        return self.allowed + (f"; at most {FLOAT32_MAX:.7g} (float32, as training uses it)" if too_big else "")


@dataclass(frozen=True)
class Bool(Rule):
    null: bool = False

    def ok(self, v) -> bool:
        return isinstance(v, bool) or (v is None and self.null)

    @property
    def allowed(self) -> str:
        return "must be true or false" + (" or null" if self.null else "")


@dataclass(frozen=True)
class OneOf(Rule):
    registry: str  # "module:NAME" of a dict (or tuple) whose keys are the allowed names

    @property
    def names(self) -> list:
        module, _, name = self.registry.partition(":")
        return list(getattr(importlib.import_module(module), name))

    def ok(self, v) -> bool:
        return v in self.names

    @property
    def allowed(self) -> str:
        return f"allowed: {', '.join(self.names)}"


@dataclass(frozen=True)
class Device(Rule):
    allowed = f"allowed: {', '.join(DEVICES)}"

    def ok(self, v) -> bool:
        return isinstance(v, str) and (v in DEVICES or re.fullmatch(r"cuda:\d+", v) is not None)


@dataclass(frozen=True)
class Text(Rule):
    """A non-empty string (a path, a folder name) or, with null, None."""
    allowed: str
    null: bool = False
    plain: bool = False  # a plain folder name: no "/", not hidden

    def ok(self, v) -> bool:
        if v is None:
            return self.null
        return isinstance(v, str) and bool(v) and not (self.plain and ("/" in v or v.startswith(".")))


@dataclass(frozen=True)
class Widths(Rule):
    """Layer widths; null where the model does not read them (validate checks the ones it does)."""
    allowed = "must be a non-empty list of positive integers, e.g. [1024, 1024]"

    def ok(self, v) -> bool:
        return v is None or (isinstance(v, list) and len(v) > 0 and all(_is_int(w) and w >= 1 for w in v))


@dataclass(frozen=True)
class Order(Rule):
    registry: str = "dropbn.train.models:ORDER_TOKENS"
    required: str = "act"

    def ok(self, v) -> bool:
        names = OneOf(self.registry).names
        return (isinstance(v, list) and all(t in names for t in v) and len(set(v)) == len(v)
                and self.required in v)

    @property
    def allowed(self) -> str:
        names = OneOf(self.registry).names
        return (f"must list each of {', '.join(names)} at most once and contain {self.required}, "
                f"e.g. [{', '.join(names)}]")


@dataclass(frozen=True)
class Study(Rule):
    """A `dropbn study` setting: dropbn/study/spec.py checks it (with the config it applies to)."""

    allowed = "see dropbn study --help"

    def ok(self, v) -> bool:
        return True


@dataclass(frozen=True)
class Files(Rule):
    """A list of file paths (claims files: dropbn/report/claim_file.py reads and checks them)."""
    allowed = "must be a list of file paths, e.g. [my_claims.yaml]"

    def ok(self, v) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def key(default: Any, rule: Rule):
    """A schema field: its default and its rule (a list or dict default is copied per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


PATH = Text("must be a path or null", null=True)


@dataclass
class DataConfig:
    name: str = key(MISSING, OneOf("dropbn.train.data:SOURCES"))
    root: Optional[str] = key(None, PATH)        # data root; null -> $DROPBN_DATA_DIR, else ./data
    path: Optional[str] = key(None, PATH)        # data=imagefolder: the folder or .tar.gz to read
    cache_dir: Optional[str] = key(None, PATH)   # decoded tensors; null -> $DROPBN_CACHE_DIR, else ~/.cache/dropbn
    download: bool = key(True, Bool())           # try torchvision's download when files are missing
    train_size: Optional[int] = key(None, Int(1, null=True))  # null = all; an int draws a seeded subset
    val_size: int = key(0, Int(0))               # held out from the training set; 0 = no validation split
    split_seed: int = key(0, Int(0))             # seed of the subset/validation split (fixed across run seeds)
    augment: bool = key(False, Bool())           # random crop (pad 4) + horizontal flip; meant for CIFAR-10
    image_size: Optional[int] = key(None, Int(1, null=True))  # image folders: resize to this size


@dataclass
class ModelConfig:
    name: str = key(MISSING, OneOf("dropbn.train.models:BUILDERS"))
    hidden: Optional[List[int]] = key(None, Widths())    # MLP: widths of the hidden blocks
    channels: Optional[List[int]] = key(None, Widths())  # CNN: a stage of two 3x3 convs + 2x2 max-pool each
    fc: Optional[List[int]] = key(None, Widths())        # CNN: dense blocks after the stages
    act: str = key("relu", OneOf("dropbn.train.activations:ACTIVATIONS"))  # the activation of every block
    init: str = key("auto", OneOf("dropbn.train.activations:INITS"))  # auto: matches act (dropbn/train/activations.py)
    skip: bool = key(False, Bool())                      # residual blocks (ResNet; MLP: blocks 2.. add their input)
    depth: Optional[int] = key(None, Int(8, null=True))  # ResNet: 6n+2 layers (20, 32, 44, 56, 110, ...)
    width: int = key(1, Int(1))                          # ResNet: channel multiplier k (16k, 32k, 64k)
    preact: bool = key(False, Bool())                    # ResNet: pre-activation blocks (He et al. 2016b)
    shortcut: str = key("pad", OneOf("dropbn.train.resnet:SHORTCUTS"))  # ResNet: option A (pad) or projection
    zero_init_residual: Optional[bool] = key(None, Bool(null=True))  # ResNet; null: on when reg.norm=none


@dataclass
class RegConfig:  # the defaults: no regularisation
    norm: str = key("none", OneOf("dropbn.train.models:NORMS"))
    norm_groups: int = key(8, Int(1))                        # groups for norm=group
    dropout: float = key(0.0, Num(0.0, 1.0, hi_open=True))   # rate in hidden (dense) blocks
    input_dropout: float = key(0.0, Num(0.0, 1.0, hi_open=True))  # MLP: dropout on the input pixels
    conv_dropout: float = key(0.0, Num(0.0, 1.0, hi_open=True))   # CNN conv blocks (0 = dense blocks only)
    channel_dropout: bool = key(False, Bool())               # conv blocks drop whole channels (Dropout2d)
    order: List[str] = key(["act"], Order())                 # layers after each Linear/Conv
    dropout_blocks: str = key("all", OneOf("dropbn.train.models:DROPOUT_BLOCKS"))
    dropout_kind: str = key("standard", OneOf("dropbn.train.activations:DROPOUT_KINDS"))  # alpha: for SELU
    max_norm: Optional[float] = key(None, Num(0.0, lo_open=True, null=True))  # max L2 norm of each unit's weights


@dataclass
class OptimConfig:
    name: str = key(MISSING, OneOf("dropbn.train.optimize:OPTIMIZERS"))
    lr: float = key(MISSING, Num(0.0, lo_open=True))
    momentum: float = key(0.0, Num(0.0, 1.0, hi_open=True))  # Adam: beta1
    weight_decay: float = key(0.0, Num(0.0))
    nesterov: bool = key(False, Bool())                # SGD: Nesterov momentum
    decay_norm_and_bias: bool = key(True, Bool())      # false: no weight decay on norm parameters and biases


@dataclass
class TrainConfig:
    epochs: int = key(10, Int(1))
    batch_size: int = key(128, Int(1))
    schedule: str = key("none", OneOf("dropbn.train.optimize:SCHEDULES"))
    warmup_epochs: int = key(0, Int(0))                # linear lr warm-up before the schedule (dropbn/train/warmup.py)
    step_every: int = key(5, Int(1))                   # epochs (periods, see steps) between lr drops for schedule=step
    step_gamma: float = key(0.1, Num(0.0, 1.0, lo_open=True))
    target_acc: float = key(0.97, Num(0.0, 1.0, lo_open=True))  # epochs/seconds to reach this test accuracy
    eval_train_size: Optional[int] = key(10000, Int(1, null=True))  # training images evaluated each epoch; null = all
    eval_batch_size: int = key(1000, Int(1))         # not in run identity: eval mode makes it change only rounding
    threads: Optional[int] = key(None, Int(1, null=True))  # torch threads; null = all cores (shared by parallel runs)
    amp: bool = key(False, Bool())                     # bf16 autocast on CUDA
    compile: bool = key(False, Bool())                 # torch.compile the model
    force: bool = key(False, Bool())                   # re-run a completed run instead of skipping it
    progress: bool = key(True, Bool())                 # tqdm bars
    diagnostics: bool = key(True, Bool())              # variance shift, BN folding, inference timing at the end
    eval_test: bool = key(True, Bool())                # evaluate the test set (false in a study's tune stage)
    tensorboard: bool = key(False, Bool())             # TensorBoard event files in the run folder
    objective: str = key("val_acc", OneOf("dropbn.record.objective:OBJECTIVES"))  # what a run returns to a sweeper
    claim_timeout: float = key(600.0, Num(0.0, lo_open=True))  # seconds: an older run claim is taken over
    # a budget in optimisation steps instead of epochs: null = train.epochs epochs; an int S = exactly S
    # steps from a stream of seeded passes (train.epochs is then ignored), evaluated, logged and
    # checkpointed every train.eval_every_steps steps and at step S; the lr schedule then runs per step
    # (cosine over S steps; step drops every train.step_every evaluation periods)
    steps: Optional[int] = key(None, Int(1, null=True))
    eval_every_steps: Optional[int] = key(None, Int(1, null=True))  # needs train.steps; null = one pass


@dataclass
class StudyConfig:
    """`dropbn study` only (tune -> select -> final -> report, dropbn/study/). Training runs ignore
    it: it is a non-result key (dropbn.record.identity.NON_RESULT_KEYS), never in folder names or run identity."""
    variants: Dict[str, Any] = key({"reg": ["none", "dropout", "batchnorm", "both"]}, Study())  # compared
    search: Dict[str, Any] = key({}, Study())          # tuned per variant: config keys -> lists of values
    tune_seeds: List[int] = key([0, 1], Study())       # seeds of the tune stage (validation only)
    final_seeds: List[int] = key(list(range(100, 110)), Study())  # fresh seeds, disjoint from tune_seeds
    select: str = key("val_acc", Study())              # val_acc (maximise) | val_loss (minimise)
    searcher: str = key("grid", Study())               # grid | optuna (study.trials points per variant)
    trials: int = key(20, Study())                     # optuna: distinct points per variant
    final_val_size: Optional[int] = key(None, Study())  # null: keep data.val_size; 0: retrain on all images
    final_overrides: Dict[str, Any] = key({}, Study())  # config keys -> one value, final runs only
    claims: List[str] = key([], Files())               # claims files registered before the final runs ([]: default)


@dataclass
class ReportConfig:
    """Report settings a training command records. report.claims: claims files that `dropbn train -m`
    registers in the sweep folder before its first run (docs/claims.md); a non-result key."""
    claims: List[str] = key([], Files())


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    reg: RegConfig = MISSING
    optim: OptimConfig = MISSING
    seed: int = key(0, Int(0))
    device: str = key("auto", Device())                # auto = cuda > mps > cpu
    name: str = key("default", Text("must be a plain folder name", plain=True))  # runs go to out_root/name/
    out_root: str = key(RESULTS_DIR, Text("must be a folder path"))
    train: TrainConfig = field(default_factory=TrainConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


GROUPS = {"data": DataConfig, "model": ModelConfig, "reg": RegConfig, "optim": OptimConfig}


def _rules(cls, prefix: str = "") -> dict[str, Rule]:
    out = {}
    for f in fields(cls):
        if is_dataclass(f.type):
            out.update(_rules(f.type, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f.metadata["rule"]
    return out


RULES: dict[str, Rule] = _rules(Config)  # dotted key -> rule, e.g. "optim.lr" -> Num(0.0, lo_open=True)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=Config)
    for group, node in GROUPS.items():
        cs.store(name=f"{group}_schema", node=node)


register()
