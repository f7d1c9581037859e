"""The CIFAR ResNets of He et al. 2016 (`model=resnet`), and the residual block that `model.skip`
also gives the MLP.

ResNet-(6n+2) (`model.depth`): a 3x3 stem conv to 16 channels, three stages of n basic blocks with
16k, 32k, 64k channels (`model.width` = k, Wide-ResNet style; the first block of stages 2 and 3
halves H and W), global average pooling, (dropout at `reg.dropout`), the classifier. A basic block
adds its input, through the shortcut, to a branch of two 3x3 convs. The layers between the branch's
two convs are exactly `reg.order` (norm = `reg.norm`, act = `model.act`, dropout at
`reg.conv_dropout` in the stages `reg.dropout_blocks` selects: Zagoruyko & Komodakis 2016's dropout
between the convs), so the branch follows the same placement rule as every other block of dropbn:

    post-activation (He et al. 2016a, the default): conv -> order -> conv -> norm, add, act
    pre-activation (`model.preact=true`, He et al. 2016b): norm, act -> conv -> order -> conv, add
      (the order's norm and act before the first conv, in the order's order; after the last stage a
      final norm and act before the pooling)

The stem conv is followed by the order's norm and act (post-activation), or nothing (pre-activation).
Shortcuts (`model.shortcut`): `pad`, He et al.'s parameter-free option A for CIFAR (identity; where
the shape changes, subsample by 2 and zero-pad the new channels), or `projection` (option B: a
strided 1x1 conv and the norm layer where the shape changes). `model.skip=false` drops the addition:
the plain net of the same depth and layers (He et al.'s comparison). Convs have no bias when a norm
layer follows them (reg.norm != none).

`model.zero_init_residual` (null: on exactly when reg.norm=none) zeroes the last layer of every
residual branch (its norm's weight, or the conv), so that each block starts as the identity and an
unnormalised ResNet keeps a finite signal at any depth (Goyal et al. 2017; Zhang et al. 2019's Fixup).
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import nn

from .activations import activation

STEM_CHANNELS = 16
STAGE_CHANNELS = (16, 32, 64)  # x model.width
SHORTCUTS = ("pad", "projection")  # model.shortcut


class Join(nn.Module):
    """Where a block's branch meets its shortcut: their sum, or with skip=False the branch alone. A
    layer of its own so that model.txt lists it where it runs (after the branch, before the act)."""

    def __init__(self, shortcut: nn.Module | None, skip: bool):
        super().__init__()
        self.skip = skip
        self.what = "x" if shortcut is None else getattr(shortcut, "what", "projection(x)")

    def forward(self, branch_out, shortcut_out):
        return branch_out + shortcut_out if self.skip else branch_out

    def short(self) -> str:
        return f"add: {self.what} + branch(x)" if self.skip else "no skip: branch(x) alone"


class Residual(nn.Module):
    """out = act(shortcut(x) + branch(x)); without a shortcut module the shortcut is the identity,
    without `act` nothing follows the addition, with skip=False there is no addition (a plain block)."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None, act: nn.Module | None = None,
                 skip: bool = True):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.join = Join(shortcut, skip)
        self.act = act

    @property
    def skip(self) -> bool:
        return self.join.skip

    def forward(self, x):
        out = self.branch(x)
        out = self.join(out, (x if self.shortcut is None else self.shortcut(x)) if self.skip else None)
        return out if self.act is None else self.act(out)


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample by `stride`, zero-pad the channels from `c_in` to `c_out`."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.c_out - self.c_in
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2)) if extra else x

    @property
    def what(self) -> str:
        return f"pad(x: /{self.stride}, {self.c_in}->{self.c_out} channels)"

    def short(self) -> str:
        return f"PadShortcut(/{self.stride}, {self.c_in}->{self.c_out} channels)"


def _conv(c_in: int, c_out: int, reg, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=reg.norm == "none")


def _order_layers(width: int, reg, act: str, rate: float, tokens, suffix: str = "") -> list:
    """reg.order's layers of the given tokens (in the order's order), as (name, module)."""
    from .models import ORDER_TOKENS  # dropbn.train.models imports this module for its builder registry

    out = []
    for tok in reg.order:
        if tok in tokens:
            m = ORDER_TOKENS[tok](width, reg, True, rate, act)
            if m is not None:
                out.append((tok + suffix, m))
    return out


def _shortcut(c_in: int, c_out: int, stride: int, model_cfg, reg) -> nn.Module | None:
    if c_in == c_out and stride == 1:
        return None
    if model_cfg.shortcut == "pad":
        return PadShortcut(c_in, c_out, stride)
    parts = [("conv", nn.Conv2d(c_in, c_out, 1, stride=stride, bias=reg.norm == "none"))]
    parts += _order_layers(c_out, reg, model_cfg.act, 0.0, ("norm",))
    return nn.Sequential(OrderedDict(parts))


def basic_block(c_in: int, c_out: int, stride: int, rate: float, model_cfg, reg) -> Residual:
    """One basic block (see the module docstring); `rate`: dropout between its two convs."""
    act = model_cfg.act
    middle = _order_layers(c_out, reg, act, rate, ("norm", "act", "dropout"), "1")
    if model_cfg.preact:
        parts = _order_layers(c_in, reg, act, 0.0, ("norm", "act"), "0")
        parts += [("conv1", _conv(c_in, c_out, reg, stride)), *middle, ("conv2", _conv(c_out, c_out, reg))]
        after = None
    else:
        parts = [("conv1", _conv(c_in, c_out, reg, stride)), *middle, ("conv2", _conv(c_out, c_out, reg))]
        parts += _order_layers(c_out, reg, act, 0.0, ("norm",), "2")
        after = activation(act)
    shortcut = _shortcut(c_in, c_out, stride, model_cfg, reg) if model_cfg.skip else None
    return Residual(nn.Sequential(OrderedDict(parts)), shortcut, after, skip=bool(model_cfg.skip))


def blocks_per_stage(depth: int) -> int:
    """n of a ResNet-(6n+2) (validated: depth = 6n+2, n >= 1)."""
    return (int(depth) - 2) // 6


def stage_channels(model_cfg) -> list[int]:
    return [c * int(model_cfg.width) for c in STAGE_CHANNELS]


def build_resnet(model_cfg, reg, in_shape, num_classes: int) -> nn.Sequential:
    from .models import DROPOUT_BLOCKS, _dropout_layer

    act, n = model_cfg.act, blocks_per_stage(model_cfg.depth)
    stem = [("conv", _conv(int(in_shape[0]), STEM_CHANNELS, reg))]
    if not model_cfg.preact:
        stem += _order_layers(STEM_CHANNELS, reg, act, 0.0, ("norm", "act"))
    layers = [("stem", nn.Sequential(OrderedDict(stem)))]
    rates = [float(reg.conv_dropout) if on else 0.0 for on in DROPOUT_BLOCKS[reg.dropout_blocks](3)]
    prev = STEM_CHANNELS
    for s, (ch, rate) in enumerate(zip(stage_channels(model_cfg), rates)):
        stage = []
        for b in range(n):
            stride = 2 if s > 0 and b == 0 else 1
            stage.append((f"block{b + 1}", basic_block(prev, ch, stride, rate, model_cfg, reg)))
            prev = ch
        layers.append((f"stage{s + 1}", nn.Sequential(OrderedDict(stage))))
    if model_cfg.preact:
        final = _order_layers(prev, reg, act, 0.0, ("norm", "act"))
        if final:
            layers.append(("final", nn.Sequential(OrderedDict(final))))
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    drop = _dropout_layer(prev, reg, False, float(reg.dropout))
    if drop is not None:
        layers.append(("dropout", drop))
    layers.append(("head", nn.Linear(prev, num_classes)))
    return nn.Sequential(OrderedDict(layers))


def residual_blocks(model: nn.Module) -> list[Residual]:
    return [m for m in model.modules() if isinstance(m, Residual)]


def zero_init_residual(model: nn.Module, model_cfg, reg) -> None:
    """model.zero_init_residual (ResNets; null: on when reg.norm=none): zero the last layer with
    weights of every residual branch, and its bias."""
    on = model_cfg.zero_init_residual
    if model_cfg.name != "resnet" or not (reg.norm == "none" if on is None else on):
        return
    for block in residual_blocks(model):
        if not block.skip:
            continue
        last = [m for m in block.branch.modules() if getattr(m, "weight", None) is not None][-1]
        nn.init.zeros_(last.weight)
        if getattr(last, "bias", None) is not None:
            nn.init.zeros_(last.bias)

