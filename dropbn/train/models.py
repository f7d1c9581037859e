"""MLP and CNN built from the `model` and `reg` config fields.

Every hidden block is a Linear (or Conv) followed by the layers named in
`reg.order`, in that order: `norm`, `act`, `dropout`. A token whose layer is
switched off (norm=none, dropout rate 0, or a block that `dropout_blocks=last`
excludes) is simply left out, so the printed model is exactly what runs.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import activations, resnet


def _layer_norm(width: int, conv: bool, groups: int) -> nn.Module:
    """Over all features of a sample (C, H, W for conv)."""
    return nn.GroupNorm(1, width) if conv else nn.LayerNorm(width)


# reg.norm: the norm layer of a block (width, conv, reg.norm_groups) -> module; none: no layer
NORMS = {
    "none": None,
    "batch": lambda width, conv, groups: nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width),
    "layer": _layer_norm,
    "group": lambda width, conv, groups: nn.GroupNorm(groups, width),
}


_RAND_MASK_OK: bool | None = None


def _rand_mask_is_bernoulli() -> bool:
    """Whether `rand(float64) < q` draws exactly the mask (and generator state) of `bernoulli_(q)`
    on this CPU build. Checked once; if not, Dropout below falls back to nn.Dropout's path."""
    global _RAND_MASK_OK
    if _RAND_MASK_OK is None:
        g1, g2 = torch.Generator().manual_seed(1234), torch.Generator().manual_seed(1234)
        a = torch.empty(4099).bernoulli_(0.7, generator=g1)
        b = (torch.rand(4099, dtype=torch.float64, generator=g2) < 0.7).float()
        _RAND_MASK_OK = torch.equal(a, b) and torch.equal(torch.rand(5, generator=g1),
                                                          torch.rand(5, generator=g2))
    return _RAND_MASK_OK


class Dropout(nn.Dropout):
    """nn.Dropout with a faster CPU mask, bit-identical to nn.Dropout's output and gradient.

    On CPU, F.dropout computes `noise = empty_like(x).bernoulli_(1-p).div_(1-p); x * noise`;
    bernoulli_ is a serial kernel taking as long as the layer's matmul. `rand(float64) < 1-p`
    consumes the same generator draws and gives the same mask ~2.5x faster (verified once per
    process, else the stock path). Elsewhere (CUDA's fused kernel, eval, inplace,
    non-contiguous or low-precision input) this is nn.Dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or self.inplace or not 0.0 < self.p < 1.0 or x.device.type != "cpu"
                or x.dtype not in (torch.float32, torch.float64) or not x.is_contiguous()
                or not _rand_mask_is_bernoulli()):
            return super().forward(x)
        keep = 1.0 - self.p
        noise = (torch.rand(x.shape, dtype=torch.float64) < keep).to(x.dtype).div_(keep)
        return x * noise


def _norm_layer(width: int, reg, conv: bool, rate: float) -> nn.Module | None:
    make = NORMS[reg.norm]
    return make(width, conv, int(reg.norm_groups)) if make else None


def _dropout_layer(width: int, reg, conv: bool, rate: float) -> nn.Module | None:
    if rate <= 0:
        return None
    if reg.dropout_kind == "alpha":
        return activations.alpha_dropout(rate, conv and reg.channel_dropout)
    return nn.Dropout2d(rate) if conv and reg.channel_dropout else Dropout(rate)


# reg.order tokens: (width, reg, conv, rate, model.act) -> the layer each adds after a block's
# Linear/Conv, or None when switched off
ORDER_TOKENS = {
    "norm": lambda width, reg, conv, rate, act: _norm_layer(width, reg, conv, rate),
    "act": lambda width, reg, conv, rate, act: activations.activation(act),
    "dropout": lambda width, reg, conv, rate, act: _dropout_layer(width, reg, conv, rate),
}
# reg.dropout_blocks: which of n dense blocks get dropout (conv blocks only with "all")
DROPOUT_BLOCKS = {
    "all": lambda n: [True] * n,
    "last": lambda n: [False] * (n - 1) + [True],  # after every norm layer (Li et al. 2019)
    # the same amount of dropout as "last", but feeding the next block's norm layer: the matched
    # control of "last" (report claim 9)
    "first": lambda n: [True] + [False] * (n - 1),
}


def _block(layer: nn.Module, width: int, reg, *, conv: bool, rate: float, act: str = "relu") -> nn.Sequential:
    parts = [("conv" if conv else "linear", layer)]
    for tok in reg.order:
        module = ORDER_TOKENS[tok](width, reg, conv, rate, act)
        if module is not None:
            parts.append((tok, module))
    return nn.Sequential(OrderedDict(parts))


def _dense_rates(reg, n_blocks: int) -> list[float]:
    rate = float(reg.dropout)
    return [rate if on else 0.0 for on in DROPOUT_BLOCKS[reg.dropout_blocks](n_blocks)]


def build_mlp(model_cfg, reg, in_shape, num_classes: int) -> nn.Sequential:
    in_features = 1
    for d in in_shape:
        in_features *= int(d)
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    if float(reg.input_dropout) > 0:
        layers.append(("input_dropout", Dropout(float(reg.input_dropout))))
    widths = [int(w) for w in model_cfg.hidden]
    rates = _dense_rates(reg, len(widths))
    prev = in_features
    for i, (w, r) in enumerate(zip(widths, rates)):
        block = _block(nn.Linear(prev, w), w, reg, conv=False, rate=r, act=model_cfg.act)
        # model.skip: every block after the first adds its input (equal widths: validated)
        layers.append((f"block{i + 1}", resnet.Residual(block) if model_cfg.skip and i > 0 else block))
        prev = w
    layers.append(("head", nn.Linear(prev, num_classes)))
    return nn.Sequential(OrderedDict(layers))


def build_cnn(model_cfg, reg, in_shape, num_classes: int) -> nn.Sequential:
    c, h, w = (int(d) for d in in_shape)
    conv_rate = float(reg.conv_dropout) if reg.dropout_blocks == "all" else 0.0  # see DROPOUT_BLOCKS
    layers: list[tuple[str, nn.Module]] = []
    prev = c
    for s, ch in enumerate(int(x) for x in model_cfg.channels):
        stage = []
        for k in range(2):
            conv = nn.Conv2d(prev, ch, 3, padding=1)
            stage.append((f"block{k + 1}", _block(conv, ch, reg, conv=True, rate=conv_rate, act=model_cfg.act)))
            prev = ch
        stage.append(("pool", nn.MaxPool2d(2)))
        h, w = h // 2, w // 2
        layers.append((f"stage{s + 1}", nn.Sequential(OrderedDict(stage))))
    layers.append(("flatten", nn.Flatten()))
    prev = prev * h * w
    widths = [int(x) for x in model_cfg.fc]
    rates = _dense_rates(reg, len(widths))
    for i, (wd, r) in enumerate(zip(widths, rates)):
        layers.append((f"fc{i + 1}", _block(nn.Linear(prev, wd), wd, reg, conv=False, rate=r, act=model_cfg.act)))
        prev = wd
    layers.append(("head", nn.Linear(prev, num_classes)))
    return nn.Sequential(OrderedDict(layers))


@dataclass(frozen=True)
class Builder:
    build: Callable[..., nn.Sequential]  # (model_cfg, reg, in_shape, num_classes) -> model
    widths: tuple[str, ...]              # the model.* width lists it reads
    conv: bool                           # conv stages: each halves H and W; reg.conv_dropout applies


# model.name
BUILDERS = {
    "mlp": Builder(build_mlp, widths=("hidden",), conv=False),
    "cnn": Builder(build_cnn, widths=("channels", "fc"), conv=True),
    "resnet": Builder(resnet.build_resnet, widths=(), conv=True),
}


def build_model(model_cfg, reg, in_shape, num_classes: int) -> nn.Sequential:
    """The model of a complete `model` and `reg` config node (every key of the schema; a node recorded
    before a key existed is completed by its reader: dropbn.config.validation.complete)."""
    model = BUILDERS[model_cfg.name].build(model_cfg, reg, in_shape, num_classes)
    activations.init_weights(model, model_cfg.init, model_cfg.act)  # model.init (auto + ReLU: as built)
    resnet.zero_init_residual(model, model_cfg, reg)
    return model


KIND = {nn.Linear: "linear", nn.Conv2d: "conv", nn.BatchNorm1d: "norm", nn.BatchNorm2d: "norm",
        nn.LayerNorm: "norm", nn.GroupNorm: "norm", nn.ReLU: "act", nn.Dropout: "dropout", Dropout: "dropout",
        nn.Dropout2d: "dropout", nn.MaxPool2d: "pool", nn.Flatten: "flatten",
        **{t: "act" for t in activations.ACTIVATION_TYPES}, nn.AlphaDropout: "dropout",
        nn.FeatureAlphaDropout: "dropout", nn.AdaptiveAvgPool2d: "pool"}


def layer_kinds(model: nn.Module) -> list[str]:
    """The flat sequence of leaf layers as tokens: linear, conv, norm, act, dropout, pool, flatten."""
    return [KIND[type(m)] for m in model.modules() if type(m) in KIND]


def hidden_weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights of every hidden Linear/Conv (all but the classifier head), for max-norm."""
    return [m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and name != "head"]


@torch.no_grad()
def apply_max_norm(weights: list[torch.Tensor], max_norm: float) -> None:
    """Rescale each unit's incoming weight vector to L2 norm <= max_norm."""
    for w in weights:
        w.copy_(torch.renorm(w, 2, 0, max_norm))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# one-line description of a leaf layer, by its type (first match wins)
SHORT = (
    (nn.Linear, lambda m: f"Linear({m.in_features}->{m.out_features})"),
    (nn.Conv2d, lambda m: f"Conv2d({m.in_channels}->{m.out_channels}, "
                          f"{m.kernel_size[0]}x{m.kernel_size[1]}, pad {m.padding[0]})"),
    ((nn.BatchNorm1d, nn.BatchNorm2d), lambda m: f"{type(m).__name__}({m.num_features})"),
    (nn.LayerNorm, lambda m: f"LayerNorm({m.normalized_shape[0]})"),
    (nn.GroupNorm, lambda m: f"GroupNorm({m.num_groups} groups, {m.num_channels})"),
    ((nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout), lambda m: f"{type(m).__name__}(p={m.p:g})"),
    ((resnet.Join, resnet.PadShortcut), lambda m: m.short()),
    (nn.MaxPool2d, lambda m: f"MaxPool2d({m.kernel_size})"),
)


def short(m: nn.Module) -> str:
    """Compact one-line description of a leaf layer."""
    return next((fmt(m) for types, fmt in SHORT if isinstance(m, types)), type(m).__name__)


def describe(model: nn.Module, in_shape) -> str:
    """Layer-by-layer table: name, layer, output shape, parameters."""
    rows, hooks = [], []
    for name, m in model.named_modules():
        if type(m) in KIND or (isinstance(m, nn.Module) and not list(m.children()) and name):
            def hook(mod, inp, out, name=name):
                rows.append((name, short(mod), tuple(out.shape[1:]),
                             sum(p.numel() for p in mod.parameters(recurse=False))))
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    p = next(model.parameters())
    try:
        model(torch.zeros((2, *in_shape), device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    wn = max(len(r[0]) for r in rows)
    wl = max(len(r[1]) for r in rows)
    lines = [f"{'layer':<{wn}}  {'module':<{wl}}  {'output':<16} params"]
    for name, mod, shape, n in rows:
        lines.append(f"{name:<{wn}}  {mod:<{wl}}  {str(shape):<16} {n:,}")
    lines.append(f"total parameters: {count_params(model):,}")
    return "\n".join(lines)
