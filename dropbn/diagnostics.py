"""Post-training diagnostics: BN variance shift, BN folding, inference cost.

`run_diagnostics(model, data, cfg, device)` is called by the training loop at
the end of a completed run (train.diagnostics=true) and by `dropbn diagnose
RUN_DIR ...` on finished runs. It never mutates the model it is given: every
measurement runs on a deep copy. It returns summary.json's "diagnostics", whose
keys are defined once, for this writer and the report, in dropbn/summary.py
(Diagnostics, VarianceShift, Inference).

Variance shift (Li et al. 2019, "Understanding the disharmony between dropout
and batch normalization by variance shift"): for every BatchNorm layer and
channel c, ratio_c = (running_var_c + eps) / (test_var_c + eps), where
test_var_c is the variance of the layer's *input* in eval mode (dropout off)
over the test set (over N for BN1d, over N, H, W for BN2d) and eps is the
layer's own eps (so channels that are dead on both sides read 1, not nan).
This is Li et al.'s moving/real direction: > 1 when training fed the layer
more variance than it sees at test time, as dropout placed before BN does;
BN then divides test activations by too large a standard deviation.
`mean_ratio` / `max_ratio` are the arithmetic mean / maximum over channels;
the *worst* layer is the one whose mean ratio is furthest from 1 in log terms,
i.e. the largest |log(mean_ratio)|, so a shift in either direction counts.

Recalibration (Li et al.'s remedy): a copy of the model whose BN running
statistics are re-estimated with dropout off -- BN layers in train mode with
momentum=None (cumulative average), everything else in eval mode, one
no-grad pass over the (un-augmented, seeded-shuffled) training set in
training-size batches -- then evaluated on the test set in eval mode.

BN folding: `fold_bn(model)` returns an eval-mode copy in which every
BatchNorm whose input comes straight from a Linear/Conv2d is folded into that
layer's weight and bias and replaced by nn.Identity. "Straight" looks through
nn.Identity and dropout, which are identities in eval mode. A BatchNorm1d that
instead feeds straight into a Linear (order [act, dropout, norm], where act
sits between BN and the previous layer) is folded into that *next* Linear,
which is exact too. Anything else (e.g. BN2d before a padded conv or a
max-pool) is left as it is; `count_bn(model) - count_bn(fold_bn(model))` is
the number folded. Folding is exact in real arithmetic (float64 copies agree to
~1e-14); `fold_max_abs_diff` is measured in the model's own dtype on the test
set, so for trained float32 models with logits of magnitude 40-100 it sits at
float32 rounding level (~1e-5), the same size as the unfolded float32 model's
own deviation from a float64 evaluation.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .summary import Diagnostics, Inference, VarianceShift

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


def _sync(device) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ---------------------------------------------------------------- variance shift
class _BNInputStats:
    """Forward pre-hooks accumulating per-channel sums of every BN layer's input.

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
            out.append({"name": name, "mean_ratio": float(r.mean()), "max_ratio": float(r.max())})
        return out


@torch.inference_mode()
def variance_shift(model: nn.Module, batches) -> list[dict]:
    """Per BN layer: mean and max over channels of running_var / eval-mode input variance.

    Runs an eval-mode copy over `batches` (x or (x, y)); see the module docstring.
    """
    m = copy.deepcopy(model).eval()
    with _BNInputStats(m) as st:
        for x in _xs(batches):
            m(x)
    return st.ratios()


def worst_layer(layers: list[dict]) -> dict | None:
    """The layer whose mean ratio is furthest from 1 in log terms (largest |log mean_ratio|)."""
    def dist(l):
        r = l["mean_ratio"]
        return abs(math.log(r)) if r > 0 and math.isfinite(r) else math.inf
    return max(layers, key=dist) if layers else None


def recalibrate_bn(model: nn.Module, batches) -> nn.Module:
    """Copy of `model` with BN running statistics re-estimated with dropout off.

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


# ---------------------------------------------------------------- timing
@torch.inference_mode()
def time_models(models: dict, x: torch.Tensor, device, budget_s: float = 1.0,
                min_reps: int = 5, max_reps: int = 200, warmup: int = 2) -> dict:
    """Median ms per forward of each model on `x` (eval mode, inference_mode).

    Warm-up, then rounds that time every model once, alternating the order
    each round (A B, B A, ...) so drift and contention hit both alike. The
    number of rounds is chosen from a first timing to fit `budget_s`,
    clamped to [min_reps, max_reps].
    """
    for mod in models.values():
        mod.eval()
        for _ in range(warmup):
            mod(x)
    _sync(device)
    t0 = time.perf_counter()
    for mod in models.values():
        mod(x)
    _sync(device)
    per_round = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(max_reps, max(min_reps, budget_s / per_round)))
    items = list(models.items())
    samples = {k: [] for k in models}
    for r in range(reps):
        for k, mod in (items if r % 2 == 0 else items[::-1]):
            _sync(device)
            t = time.perf_counter()
            mod(x)
            _sync(device)
            samples[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1000.0 for k, v in samples.items()}


# ---------------------------------------------------------------- the whole thing
@torch.inference_mode()
def _accuracy(model, batches) -> float:
    correct = n = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        n += len(y)
    return correct / max(n, 1)


def run_diagnostics(model: nn.Module, data, cfg, device, *, time_budget_s: float = 1.5) -> dict:
    """Variance shift, BN folding and inference cost of a trained model (see module docstring).

    `model` is left untouched (measurements use deep copies). `time_budget_s`
    is roughly the time spent in the timed loops (batch 256 gets 80 %).
    """
    from .data import Batches, Split

    device = torch.device(device)
    # feed the layout the model was trained with (train.py: channels_last CNNs)
    channels_last = any(w.dim() == 4 and not w.is_contiguous()
                        and w.is_contiguous(memory_format=torch.channels_last)
                        for w in model.parameters())
    ebs = int(cfg.train.eval_batch_size)
    test = Batches(data.test, ebs, data.mean, data.std, channels_last=channels_last)

    as_trained = copy.deepcopy(model).eval()
    folded = fold_bn(model)
    n_folded = count_bn(as_trained) - count_bn(folded)

    # one pass over the test set: accuracy, BN input statistics, folding error
    correct, n, max_diff = 0, 0, 0.0
    with torch.inference_mode(), _BNInputStats(as_trained) as st:
        for x, y in test:
            out = as_trained(x)
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
            max_diff = max(max_diff, float((folded(x).float() - out.float()).abs().max()))
    test_acc = correct / max(n, 1)

    vs = None
    if bn_layers(as_trained):
        layers = st.ratios()
        gen = torch.Generator(device=data.train.x.device).manual_seed(0)
        train = Batches(data.train, int(cfg.train.batch_size), data.mean, data.std, shuffle=True,
                        generator=gen, channels_last=channels_last)
        recal = recalibrate_bn(model, train)
        worst = worst_layer(layers)
        vs = VarianceShift(layers=layers,
                           worst_layer=worst["name"] if worst else None,
                           worst_mean_ratio=worst["mean_ratio"] if worst else None,
                           worst_max_ratio=worst["max_ratio"] if worst else None,
                           test_acc=test_acc,
                           test_acc_recalibrated=_accuracy(recal, test))
        del recal

    # inference cost on real test images
    idx = torch.arange(256, device=data.test.x.device) % len(data.test)
    x256, _ = next(iter(Batches(Split(data.test.x[idx], data.test.y[idx]), 256, data.mean, data.std,
                                channels_last=channels_last)))
    x1 = x256[:1].clone()
    pair = {"as_trained": as_trained, "folded": folded}
    b256 = time_models(pair, x256, device, budget_s=0.8 * time_budget_s, min_reps=5, max_reps=100)
    b1 = time_models(pair, x1, device, budget_s=0.2 * time_budget_s, min_reps=10, max_reps=300)
    inference = Inference(
        bn_layers_folded=int(n_folded),
        fold_max_abs_diff=max_diff,
        batch1_ms=b1,
        batch256_ms=b256,
        throughput={k: 256.0 / (v / 1000.0) for k, v in b256.items()},
    )
    return Diagnostics(vs, inference).to_json()


# ---------------------------------------------------------------- dropbn diagnose
def find_runs(paths) -> list[Path]:
    """Run folders (holding checkpoint.pt) at or under each path, sorted, without duplicates."""
    seen, out = set(), []
    for p in paths:
        p = Path(p)
        cands = [p] if (p / "checkpoint.pt").is_file() else []
        if p.is_dir():
            cands += sorted(c.parent for c in p.rglob("checkpoint.pt"))
        for c in cands:
            r = c.resolve()
            if r not in seen:
                seen.add(r)
                out.append(c)
    return out


def _describe(d: dict) -> str:
    inf = d["inference"]
    parts = []
    vs = d["variance_shift"]
    if vs:
        parts.append(f"var ratio {vs['worst_mean_ratio']:.3f} ({vs['worst_layer']}), "
                     f"acc {vs['test_acc']:.4f} -> {vs['test_acc_recalibrated']:.4f} recalibrated")
    parts.append(f"{inf['bn_layers_folded']} BN folded (diff {inf['fold_max_abs_diff']:.1e})")
    parts.append(f"b256 {inf['batch256_ms']['as_trained']:.2f}/{inf['batch256_ms']['folded']:.2f} ms, "
                 f"b1 {inf['batch1_ms']['as_trained']:.3f}/{inf['batch1_ms']['folded']:.3f} ms")
    return "; ".join(parts)


def diagnose_run(run_dir, device="auto", data_cache: dict | None = None) -> dict:
    """Rebuild a finished run's model and data, compute diagnostics, write them into summary.json."""
    from omegaconf import OmegaConf

    from . import models
    from .data import load_data
    from .errors import DropbnError
    from .runs import RunDir
    from .train import resolve_device

    rd = RunDir(run_dir)
    summary = rd.read_summary()
    ckpt = load_checkpoint(rd)
    config = (summary or {}).get("config") or (ckpt or {}).get("config")
    if ckpt is None or config is None:
        raise DropbnError(f"{rd.path}: no checkpoint.pt or config")
    cfg = OmegaConf.create(config)
    dev = resolve_device(device)
    key = (json.dumps(OmegaConf.to_container(cfg.data), sort_keys=True), str(dev))
    if data_cache is not None and key in data_cache:
        data = data_cache[key]
    else:
        data = load_data(cfg.data, dev)
        if data_cache is not None:
            data_cache.clear()  # keep one data set resident at a time
            data_cache[key] = data
    model = models.build_model(cfg.model, cfg.reg, data.shape, len(data.classes)).to(dev)
    if cfg.model.name == "cnn" and dev.type != "mps":
        model = model.to(memory_format=torch.channels_last)
    model.load_state_dict(ckpt["model"])
    del ckpt
    diag = run_diagnostics(model, data, cfg, dev)
    fresh = rd.read_summary() or summary  # re-read: keep anything written meanwhile
    fresh["diagnostics"] = diag
    rd.write_summary(fresh)
    return diag


def main(argv=None) -> int:
    """`dropbn diagnose RUN_DIR [RUN_DIR ...]`."""
    from tqdm import tqdm

    from .runs import RunDir

    ap = argparse.ArgumentParser(
        prog="dropbn diagnose",
        description="Compute BN variance shift, BN folding and inference timing for finished runs "
                    "and write them into each run's summary.json (key 'diagnostics').")
    ap.add_argument("dirs", nargs="+", metavar="RUN_DIR",
                    help="run folders, or folders searched recursively for runs (checkpoint.pt)")
    ap.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    ap.add_argument("--skip-done", action="store_true", help="skip runs that already have diagnostics")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's, usually all cores); "
                         "timings are only meaningful on an otherwise idle machine")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from .errors import DropbnError
    missing = [d for d in args.dirs if not Path(d).exists()]
    if missing:
        raise DropbnError(f"no such folder: {missing[0]}")
    runs = find_runs(args.dirs)
    todo, skipped = [], []
    for r in runs:
        s = RunDir(r).read_summary()
        if not s or s.get("status") != "completed":
            skipped.append((r, "not completed"))
        elif args.skip_done and s.get("diagnostics"):
            skipped.append((r, "already has diagnostics"))
        else:
            todo.append(r)
    for r, why in skipped:
        print(f"skip {r} ({why})", file=sys.stderr)
    if not todo:
        print(f"dropbn diagnose: nothing to do ({len(runs)} run folders found, {len(skipped)} skipped)",
              file=sys.stderr)
        return 0
    failed, cache = 0, {}
    bar = tqdm(todo, desc="diagnose", unit="run", dynamic_ncols=True)
    for r in bar:
        bar.set_postfix_str(r.name, refresh=True)
        try:
            d = diagnose_run(r, args.device, cache)
        except Exception as e:  # one broken run (or missing data set) should not stop the others
            failed += 1
            tqdm.write(f"FAILED {r}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        tqdm.write(f"{r}: {_describe(d)}")
    bar.close()
    if failed:
        raise DropbnError(f"diagnostics failed for {failed} of {len(todo)} runs (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
