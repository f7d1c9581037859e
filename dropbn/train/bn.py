"""Batch-norm maths on a model: variance shift, recalibration, folding, counting. Torch only.

Nothing here knows about configs, data sets or run folders. The functions that
measure or transform a model work on a deep copy and leave the caller's model
untouched (`BNInputStats` hooks the model it is given, while it is active).
`batches` arguments yield x or (x, y, ...).

Variance shift (Li et al. 2019, "Understanding the disharmony between dropout
and batch normalization by variance shift"): for every BatchNorm layer and
channel c, ratio_c = (running_var_c + eps) / (real_var_c + eps), where
real_var_c is the variance of the layer's *input* in eval mode (dropout off)
over the batches given (over N for BN1d, over N, H, W for BN2d) and eps is the
layer's own eps (so channels that are dead on both sides read 1, not nan).
Li et al. measure it on training data; dropbn/train/diagnostics.py measures it on both
the training and the test set. This is Li et al.'s moving/real direction: > 1
when training fed the layer more variance than it sees with dropout off, as
dropout placed before BN does; BN then divides eval-mode activations by too
large a standard deviation. `mean_ratio` / `median_ratio` / `max_ratio` are the
arithmetic mean / median / maximum over the layer's channels (a few near-dead
channels can dominate the mean; the median is robust to them).
`median_mean2_over_var` is the median over channels of mean_c^2 / real_var_c of
the same eval-mode input: with inverted dropout at rate p right before the layer,
the running variance (train mode) is (var + mean^2) / (1 - p) - mean^2, so the
predicted ratio is 1/(1 - p) + p/(1 - p) * mean^2/var (2 + mean^2/var at
p = 0.5), not 1/(1 - p): post-ReLU inputs have a mean. The *worst*
layer is the one whose ratio (`worst_layer`'s `key`) is furthest from 1 in log
terms, i.e. the largest |log ratio|, so a shift in either direction counts.

Recalibration: a copy of the model whose BN running statistics are
re-estimated with dropout off -- BN layers in train mode with momentum=None
(cumulative average), everything else in eval mode, one no-grad pass over the
given batches (dropbn/train/diagnostics.py: the training set). This is the BN
re-estimation of Hendrycks & Gimpel (2016, "Adjusting for dropout variance in
batch normalization and weight initialization"), who update the variance
moving averages with dropout off after training. It is not Li et al.'s remedy:
theirs are dropout after all BN layers (reg.dropout_blocks=last), and "Uout",
a variance-stable uniform dropout (not implemented here).

BN folding: `fold_bn(model)` returns an eval-mode copy in which every
BatchNorm whose input comes straight from a Linear/Conv2d is folded into that
layer's weight and bias and replaced by nn.Identity. "Straight" looks through
nn.Identity and dropout, which are identities in eval mode. A BatchNorm1d that
instead feeds straight into a Linear (order [act, dropout, norm], where act
sits between BN and the previous layer) is folded into that *next* Linear,
which is exact too. Anything else (e.g. BN2d before a padded conv or a
max-pool) is left as it is; `count_bn(model) - count_bn(fold_bn(model))` is
the number folded. Folding is exact in real arithmetic (float64 copies agree to
~1e-14); `max_abs_diff(model, folded, batches)` measures the error in the
model's own dtype (dropbn/train/diagnostics.py: on the test set, as `fold_max_abs_diff`):
for trained float32 models with logits of magnitude 40-100 it sits at float32
rounding level (~1e-5), the same size as the unfolded float32 model's own
deviation from a float64 evaluation.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


# ---------------------------------------------------------------- helpers
def bn_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every BatchNorm layer that tracks running statistics."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, BN_TYPES) and m.track_running_stats and m.running_var is not None]


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, BN_TYPES) for m in model.modules())


def _xs(batches):
    """Accept batches of x or of (x, y, ...)."""
    for b in batches:
        yield b[0] if isinstance(b, (tuple, list)) else b


# ---------------------------------------------------------------- variance shift
class BNInputStats:
    """Forward pre-hooks accumulating per-channel sums of every BN layer's input.

    A context manager: the hooks are on `model` while it is active; `ratios()`
    then gives each reached layer's {"name", "mean_ratio", "median_ratio", "max_ratio"}.

    Values are shifted by the layer's running mean before summing (less
    cancellation in E[d^2] - E[d]^2); batch sums in float32, totals in float64.
    """

    def __init__(self, model: nn.Module):
        self.layers = bn_layers(model)
        self.acc = {}
        self.hooks = []

    def __enter__(self):
        for name, m in self.layers:
            self.hooks.append(m.register_forward_pre_hook(self._hook(name, m)))
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()
        self.hooks = []

    def _hook(self, name, m):
        def hook(mod, inputs):
            x = inputs[0].detach().float()
            shape = [1, -1] + [1] * (x.dim() - 2)
            d = x - m.running_mean.float().view(shape)
            dims = [0] + list(range(2, x.dim()))
            s1, s2 = d.sum(dims).double(), (d * d).sum(dims).double()
            n = x.numel() // x.shape[1]
            if name in self.acc:
                a = self.acc[name]
                a[0] += s1
                a[1] += s2
                a[2] += n
            else:
                self.acc[name] = [s1, s2, n]
        return hook

    def ratios(self) -> list[dict]:
        out = []
        for name, m in self.layers:
            if name not in self.acc:  # layer not reached
                continue
            s1, s2, n = self.acc[name]
            mean_d = s1 / n
            test_var = (s2 / n - mean_d * mean_d).clamp_min(0.0)
            r = (m.running_var.double() + m.eps) / (test_var + m.eps)
            mean = m.running_mean.double() + mean_d
            q = mean * mean / (test_var + m.eps)  # input mean^2 / variance per channel (eval mode)
            out.append({"name": name, "mean_ratio": float(r.mean()),
                        "median_ratio": float(r.quantile(0.5)),  # the mean of the two middle values
                        "max_ratio": float(r.max()),
                        "median_mean2_over_var": float(q.quantile(0.5))})
        return out


@torch.inference_mode()
def variance_shift(model: nn.Module, batches) -> list[dict]:
    """Per BN layer: mean, median and max over channels of running_var / eval-mode input variance.

    Runs an eval-mode copy over `batches` (x or (x, y)); see the module docstring.
    """
    m = copy.deepcopy(model).eval()
    with BNInputStats(m) as st:
        for x in _xs(batches):
            m(x)
    return st.ratios()


def worst_layer(layers: list[dict], key: str = "mean_ratio") -> dict | None:
    """The layer whose ratio `key` is furthest from 1 in log terms (largest |log ratio|); None if no layers."""
    def dist(l):
        r = l[key]
        return abs(math.log(r)) if r > 0 and math.isfinite(r) else math.inf
    return max(layers, key=dist) if layers else None


def recalibrate_bn(model: nn.Module, batches) -> nn.Module:
    """Copy of `model` with BN running statistics re-estimated with dropout off (Hendrycks & Gimpel).

    Resets every BN layer's statistics, sets momentum=None (cumulative
    average over the pass), puts BN in train mode and all else in eval mode,
    runs one no-grad pass over `batches`, and returns the copy in eval mode.
    """
    m = copy.deepcopy(model).eval()
    bns = [b for _, b in bn_layers(m)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
        b.train()
    with torch.no_grad():
        for x in _xs(batches):
            m(x)
    return m.eval()


# ---------------------------------------------------------------- folding
def _leaves(module: nn.Module, prefix=""):
    """Leaf modules in execution order through (nested) nn.Sequential, with their parent."""
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, f"{prefix}{name}.")
        else:
            yield module, name, child


@torch.no_grad()
def _bn_affine(bn) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode BN as y = scale * x + shift, per channel, float64."""
    scale = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        scale = scale * bn.weight.double()
        shift = shift * bn.weight.double() + bn.bias.double()
    return scale, shift


def _ensure_bias(layer) -> None:
    if layer.bias is None:
        w = layer.weight
        layer.bias = nn.Parameter(torch.zeros(w.shape[0], device=w.device, dtype=w.dtype),
                                  requires_grad=w.requires_grad)


@torch.no_grad()
def _fold_into_previous(layer, bn) -> None:
    """layer -> bn becomes layer' : W' = s * W (per output unit/channel), b' = s * b + t."""
    s, t = _bn_affine(bn)
    _ensure_bias(layer)
    w = layer.weight
    shape = [-1] + [1] * (w.dim() - 1)
    w.copy_((w.double() * s.view(shape)).to(w.dtype))  # copy_ keeps the memory format
    layer.bias.copy_((layer.bias.double() * s + t).to(layer.bias.dtype))


@torch.no_grad()
def _fold_into_next(bn, layer) -> None:
    """bn -> Linear becomes Linear' : W' = W * s (per input feature), b' = W t + b."""
    s, t = _bn_affine(bn)
    _ensure_bias(layer)
    w = layer.weight
    layer.bias.copy_((layer.bias.double() + w.double() @ t).to(layer.bias.dtype))
    w.copy_((w.double() * s.view(1, -1)).to(w.dtype))


def _transparent(m: nn.Module) -> bool:
    """Identity in eval mode."""
    return isinstance(m, (nn.Identity, *DROPOUT_TYPES))


def _foldable_bn(m, conv: bool) -> bool:
    want = nn.BatchNorm2d if conv else nn.BatchNorm1d
    return type(m) is want and m.track_running_stats and m.running_var is not None


def fold_bn(model: nn.Module) -> nn.Module:
    """Eval-mode copy of `model` with BatchNorm folded into adjacent Linear/Conv2d layers.

    Pass 1: a BN whose input comes straight from a Linear (BN1d) / Conv2d (BN2d,
    per output channel) -- looking through Identity and dropout -- is folded into
    it. Pass 2: a remaining BN1d whose output goes straight into a Linear is
    folded into that Linear (per input feature). Folded BNs become nn.Identity;
    others stay. The caller's model is not touched.
    """
    m = copy.deepcopy(model).eval()
    # pass 1: fold into the previous Linear/Conv
    prev = None
    for parent, name, leaf in list(_leaves(m)):
        if _transparent(leaf):
            continue
        if isinstance(leaf, BN_TYPES) and prev is not None:
            conv = isinstance(prev, nn.Conv2d)
            if _foldable_bn(leaf, conv) and prev.weight.shape[0] == leaf.num_features:
                _fold_into_previous(prev, leaf)
                setattr(parent, name, nn.Identity())
                prev = None
                continue
        prev = leaf if isinstance(leaf, (nn.Linear, nn.Conv2d)) else None
    # pass 2: fold a remaining BN1d into the next Linear
    pending = None  # (parent, name, bn)
    for parent, name, leaf in list(_leaves(m)):
        if _transparent(leaf):
            continue
        if (pending is not None and isinstance(leaf, nn.Linear)
                and leaf.in_features == pending[2].num_features):
            _fold_into_next(pending[2], leaf)
            setattr(pending[0], pending[1], nn.Identity())
            pending = None
            continue
        pending = (parent, name, leaf) if _foldable_bn(leaf, conv=False) else None
    return m.eval()


@torch.inference_mode()
def max_abs_diff(a: nn.Module, b: nn.Module, batches) -> float:
    """Largest |b(x) - a(x)| over `batches`, compared in float32 (e.g. `fold_bn`'s error).

    Both models are called as they are: hand them in eval mode.
    """
    diff = 0.0
    for x in _xs(batches):
        diff = max(diff, float((b(x).float() - a(x).float()).abs().max()))
    return diff
