"""Activation functions, weight initialisations and dropout kinds: `model.act`, `model.init`,
`reg.dropout_kind`. Torch only; the models (dropbn/train/models.py, dropbn/train/resnet.py) take their layers
from these registries.

`model.init=auto` picks the initialisation that matches the activation: LeCun normal for SELU (the
self-normalising nets of Klambauer et al. 2017 need it), Glorot (Xavier) for tanh, and for ReLU,
GELU and SiLU PyTorch's own default (`torch`: what dropbn has always used, so every earlier run
builds the same weights). `kaiming` is He et al. 2015's normal init with the activation's gain
(fan in); `lecun` is normal with std 1/sqrt(fan in); `xavier` is Glorot & Bengio 2010's uniform
init (gain 1). All three zero the biases and leave norm layers at weight 1, bias 0.

`reg.dropout_kind=alpha` is alpha dropout (Klambauer et al. 2017), which keeps SELU activations at
zero mean and unit variance; with `reg.channel_dropout` it drops whole channels (FeatureAlphaDropout).
"""
from __future__ import annotations

import math

import torch
from torch import nn

# model.act: the activation layer
ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=False),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "selu": nn.SELU,
}
ACTIVATION_TYPES = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.SELU)

# the gain of `kaiming` per activation: ReLU's sqrt(2) for the ReLU family, 5/3 for tanh (PyTorch's
# calculate_gain), 1 for SELU (so that kaiming = lecun there, as self-normalisation requires)
GAINS = {"relu": math.sqrt(2.0), "gelu": math.sqrt(2.0), "silu": math.sqrt(2.0), "tanh": 5.0 / 3.0, "selu": 1.0}
AUTO_INIT = {"selu": "lecun", "tanh": "xavier"}  # model.init=auto; any other activation: torch


def _fan_in(w: torch.Tensor) -> int:
    return w[0].numel()


def _kaiming(w: torch.Tensor, act: str) -> None:
    nn.init.normal_(w, 0.0, GAINS[act] / math.sqrt(_fan_in(w)))


def _lecun(w: torch.Tensor, act: str) -> None:
    nn.init.normal_(w, 0.0, 1.0 / math.sqrt(_fan_in(w)))


def _xavier(w: torch.Tensor, act: str) -> None:
    nn.init.xavier_uniform_(w)


# model.init: (weight, activation) -> None, in place; None: keep PyTorch's default init
INITS = {
    "auto": None,  # resolved per activation by `resolve_init`
    "torch": None,
    "kaiming": _kaiming,
    "lecun": _lecun,
    "xavier": _xavier,
}


def resolve_init(init: str, act: str) -> str:
    """The initialisation `model.init` means for activation `act` (auto: see the module docstring)."""
    return AUTO_INIT.get(act, "torch") if init == "auto" else init


@torch.no_grad()
def init_weights(model: nn.Module, init: str, act: str) -> None:
    """Re-initialise every Linear and Conv2d of `model` (weights by `init`, biases zero); norm layers
    keep weight 1, bias 0. `torch` (and `auto` for ReLU, GELU, SiLU) leaves the model untouched."""
    fill = INITS[resolve_init(init, act)]
    if fill is None:
        return
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fill(m.weight, act)
            if m.bias is not None:
                m.bias.zero_()


def activation(act: str) -> nn.Module:
    return ACTIVATIONS[act]()


# reg.dropout_kind: (rate, channelwise) -> the dropout layer; "standard" stays in dropbn.train.models
# (its bit-identical fast CPU Dropout), "alpha" is here
DROPOUT_KINDS = ("standard", "alpha")


def alpha_dropout(rate: float, channelwise: bool) -> nn.Module:
    return nn.FeatureAlphaDropout(rate) if channelwise else nn.AlphaDropout(rate)
