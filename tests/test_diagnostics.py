"""dropbn.train.bn (BN folding, variance shift, recalibration) and dropbn.train.diagnostics (run_diagnostics,
`dropbn diagnose`)."""
from __future__ import annotations

import copy
import json
import math
import shutil
from collections import OrderedDict

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dropbn.config.validation import complete
from dropbn.train import models
from dropbn.train.data import Data, Split
from dropbn.train.bn import BNInputStats, count_bn, fold_bn, recalibrate_bn, variance_shift, worst_layer
from dropbn.commands.diagnose_cmd import main
from dropbn.train.diagnostics import TRAIN_SHIFT_IMAGES, run_diagnostics, train_shift_split
from dropbn.base.errors import DropbnError
from dropbn.train.loop import run

from .conftest import DATA_DIR, TINY, call_cli, compose, needs_mnist


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # the test machine is shared with training sweeps: one thread avoids oversubscription stalls
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def reg(order, norm="batch", dropout=0.0, **kw):
    d = dict(norm=norm, norm_groups=2, dropout=dropout, input_dropout=0.0, conv_dropout=0.0,
             channel_dropout=False, order=list(order), dropout_blocks="all", max_norm=None)
    d.update(kw)
    return complete(OmegaConf.create(d), "reg")


def mlp(order, hidden=(64, 32), in_shape=(1, 8, 8), **kw):
    cfg = complete(OmegaConf.create({"name": "mlp", "hidden": list(hidden), "channels": None, "fc": None}), "model")
    return models.build_model(cfg, reg(order, **kw), in_shape, 10)


def cnn(order, **kw):
    cfg = complete(OmegaConf.create({"name": "cnn", "hidden": None, "channels": [4, 6], "fc": [16]}), "model")
    return models.build_model(cfg, reg(order, **kw), (3, 8, 8), 10)


@torch.no_grad()
def randomize_bn(model, seed=0):
    """Non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.1)
            if m.affine:
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g))
    return model


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def assert_fold_exact(model, x):
    before, was_training = state(model), model.training
    folded = fold_bn(model)
    assert model.training == was_training and same_state(before, state(model)), "caller's model changed"
    assert not folded.training
    ref = copy.deepcopy(model).eval()(x)
    diff = (folded(x) - ref).abs().max().item()
    assert diff < 1e-5, diff
    return folded


# ---------------------------------------------------------------- folding
@pytest.mark.parametrize("order", [["norm", "act", "dropout"], ["norm", "act"], ["act", "dropout", "norm"],
                                   ["act", "norm", "dropout"], ["dropout", "norm", "act"]])
def test_fold_mlp_exact(order):
    torch.manual_seed(0)
    model = randomize_bn(mlp(order, dropout=0.3))
    model.train()  # fold_bn must not care about (nor change) the mode it is handed
    folded = assert_fold_exact(model, torch.randn(64, 1, 8, 8))
    # every BN1d of an MLP is next to a Linear (through eval-mode dropout): all fold
    assert count_bn(model) == 2 and count_bn(folded) == 0
    assert models.layer_kinds(folded).count("linear") == 3


def test_fold_norm_act_dropout_leaves_no_batchnorm():
    torch.manual_seed(1)
    model = randomize_bn(mlp(["norm", "act", "dropout"], dropout=0.5, hidden=(128, 128, 64)))
    folded = assert_fold_exact(model, torch.randn(32, 1, 8, 8))
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in folded.modules())
    # the folded BNs became Identity; everything else is where it was
    assert [n for n, _ in folded.named_modules()] == [n for n, _ in model.named_modules()]
    assert isinstance(folded.block1.norm, nn.Identity)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fold_cnn_exact(channels_last):
    torch.manual_seed(2)
    model = randomize_bn(cnn(["norm", "act", "dropout"], dropout=0.5, conv_dropout=0.2,
                             channel_dropout=True))
    x = torch.randn(16, 3, 8, 8)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    folded = assert_fold_exact(model, x)
    assert count_bn(model) == 5 and count_bn(folded) == 0
    if channels_last:
        w = folded.stage1.block2.conv.weight
        assert w.is_contiguous(memory_format=torch.channels_last)


def test_fold_cnn_act_before_norm_folds_only_what_is_exact():
    torch.manual_seed(3)
    model = randomize_bn(cnn(["act", "norm"]))
    folded = assert_fold_exact(model, torch.randn(16, 3, 8, 8))
    # BN2d after ReLU feeds a padded conv or a max-pool: left alone; the dense BN1d feeds the head
    assert count_bn(model) == 5 and count_bn(folded) == 4
    assert isinstance(folded.fc1.norm, nn.Identity)


def test_fold_without_affine_or_bias():
    torch.manual_seed(4)
    model = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(3, 5, 3, padding=1, bias=False)), ("bn", nn.BatchNorm2d(5, affine=False)),
        ("act", nn.ReLU()), ("flatten", nn.Flatten()),
        ("inner", nn.Sequential(nn.Linear(5 * 16, 7, bias=False), nn.BatchNorm1d(7, affine=False))),
        ("act2", nn.ReLU()), ("head", nn.Linear(7, 3))]))
    randomize_bn(model)
    folded = assert_fold_exact(model, torch.randn(8, 3, 4, 4))
    assert count_bn(folded) == 0
    assert folded.conv.bias is not None


# ---------------------------------------------------------------- variance shift / recalibration
def synthetic(n=1024, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.linspace(0.5, 3, d) + torch.linspace(-2, 2, d)
    y = (x[:, :4].sum(1) > x[:, 4:8].sum(1)).long() + 2 * (x[:, 8] > 0).long()
    return x, y


def train_steps(model, x, y, steps=30, bs=128, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(steps):
        j = torch.randint(0, len(x), (bs,))
        loss = nn.functional.cross_entropy(model(x[j]), y[j])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_variance_ratio_is_one_after_exact_recalibration():
    torch.manual_seed(0)
    x, y = synthetic()
    model = train_steps(mlp(["norm", "act"], hidden=(32, 32), in_shape=(16,)), x, y)
    before = state(model)
    recal = recalibrate_bn(model, [x])  # one full batch: running stats = the data's own
    assert same_state(before, state(model))
    layers = variance_shift(recal, [(x, y)])
    assert [l["name"] for l in layers] == ["block1.norm", "block2.norm"]
    for l in layers:  # only the n/(n-1) of the unbiased running variance remains
        assert abs(l["mean_ratio"] - 1) < 0.01 and abs(l["max_ratio"] - 1) < 0.03, l


def test_dropout_before_bn_shows_variance_shift():
    torch.manual_seed(0)
    x, y = synthetic()
    model = mlp(["act", "dropout", "norm"], hidden=(32, 32), in_shape=(16,), dropout=0.5)
    for m in model.modules():  # cumulative running averages: no dependence on the initial (0, 1)
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = None
    train_steps(model, x, y)
    layers = variance_shift(model, [x[:500], x[500:]])
    # inverted dropout (p=0.5) doubles E[h^2] in training: var ratio (2m2 - mu^2)/(m2 - mu^2) >= 2
    for l in layers:
        assert l["mean_ratio"] > 1.5 and l["max_ratio"] >= l["mean_ratio"], l
    assert worst_layer(layers) in layers
    # BN statistics re-estimated with dropout off (Hendrycks & Gimpel) -> the shift is gone
    for l in variance_shift(recalibrate_bn(model, [x]), [x]):
        assert abs(l["mean_ratio"] - 1) < 0.02, l


def test_ratio_mean_median_max_over_channels_are_exact():
    """Known per-channel ratios: running_var / input variance = 1, 2, 4, 16 (eps negligible)."""
    bn = nn.BatchNorm1d(4, eps=1e-12).eval()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4096, 4, generator=g, dtype=torch.float64)
    z = (z - z.mean(0)) / z.std(0, unbiased=False)  # exactly zero mean, unit (population) variance
    x = (z * torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64) + 5).float()  # variances 1, 4, 0.25, 9
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
        bn.running_var.copy_(torch.tensor([1.0, 8.0, 1.0, 144.0]))  # ratios 1, 2, 4, 16
    model = nn.Sequential(OrderedDict([("bn", bn)]))
    with BNInputStats(model) as st, torch.no_grad():
        model(x[:1000])
        model(x[1000:])  # accumulated over batches
    (layer,) = st.ratios()
    assert set(layer) == {"name", "mean_ratio", "median_ratio", "max_ratio", "median_mean2_over_var"}
    assert layer["name"] == "bn"
    # mean^2 / variance per channel: 25/1, 25/4, 25/0.25, 25/9 -> median (25/4 + 25/1) / 2
    assert layer["median_mean2_over_var"] == pytest.approx((25 / 4 + 25) / 2, rel=1e-5)
    assert layer["mean_ratio"] == pytest.approx(23 / 4, rel=1e-5)
    assert layer["median_ratio"] == pytest.approx(3.0, rel=1e-5)  # (2 + 4) / 2: even channel count
    assert layer["max_ratio"] == pytest.approx(16.0, rel=1e-5)


def test_worst_layer_is_the_largest_log_ratio_of_the_chosen_key():
    layers = [{"name": "a", "mean_ratio": 3.0, "median_ratio": 1.1},
              {"name": "b", "mean_ratio": 0.5, "median_ratio": 0.4},   # |log 0.4| > |log 1.1|
              {"name": "c", "mean_ratio": 1.0, "median_ratio": 1.0}]
    assert worst_layer(layers)["name"] == "a"                  # by mean: |log 3| > |log 0.5|
    assert worst_layer(layers, "median_ratio")["name"] == "b"  # a shift below 1 counts too
    assert worst_layer([]) is None


def test_recalibration_ignores_dropout_and_keeps_exact_stats():
    x, _ = synthetic()
    model = mlp(["act", "dropout", "norm"], hidden=(32, 32), in_shape=(16,), dropout=0.5)
    torch.manual_seed(1)
    a = recalibrate_bn(model, [x[:512], x[512:]])
    torch.manual_seed(2)
    b = recalibrate_bn(model, [x[:512], x[512:]])
    assert same_state(state(a), state(b))  # dropout was off: no randomness

    # a model without dropout whose running stats are exactly the data's: outputs unchanged
    torch.manual_seed(3)
    model = mlp(["norm", "act"], hidden=(32,), in_shape=(16,))
    with torch.no_grad():
        h = model.block1.linear(x)
        model.block1.norm.running_mean.copy_(h.mean(0))
        model.block1.norm.running_var.copy_(h.var(0, unbiased=True))
        model.block1.norm.weight.uniform_(0.5, 2)
        model.block1.norm.bias.normal_()
        ref = copy.deepcopy(model).eval()(x)
        out = recalibrate_bn(model, [x])(x)
    assert (out - ref).abs().max().item() < 1e-5


# ---------------------------------------------------------------- run_diagnostics
def fake_data(shape=(1, 8, 8), n_train=300, n_test=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    split = lambda n: Split(torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8),
                            torch.randint(0, 10, (n,), generator=g))
    c = shape[0]
    return Data(name="fake", label="fake", classes=list(range(10)), train=split(n_train),
                test=split(n_test), val=None, mean=torch.full((c,), 0.5), std=torch.full((c,), 0.29))


def diag_cfg(name):
    return OmegaConf.create({"model": {"name": name}, "train": {"eval_batch_size": 64, "batch_size": 32}})


def check_schema(d, *, bn: bool):
    assert set(d) == {"variance_shift", "inference"}
    inf = d["inference"]
    assert set(inf) == {"bn_layers_folded", "fold_max_abs_diff", "batch1_ms", "batch256_ms", "throughput"}
    for k in ("batch1_ms", "batch256_ms", "throughput"):
        assert set(inf[k]) == {"as_trained", "folded"} and all(v > 0 for v in inf[k].values())
    assert isinstance(inf["bn_layers_folded"], int) and 0 <= inf["fold_max_abs_diff"] < 1e-5
    vs = d["variance_shift"]
    if not bn:
        assert vs is None and inf["bn_layers_folded"] == 0
    else:
        assert set(vs) == {"layers", "worst_layer", "worst_mean_ratio", "worst_max_ratio",
                           "test_acc", "test_acc_recalibrated", "worst_median_layer", "worst_median_ratio",
                           "train_layers", "train_images", "train_worst_layer", "train_worst_mean_ratio",
                           "train_worst_median_ratio", "train_worst_max_ratio"}
        names = [l["name"] for l in vs["layers"]]
        assert [l["name"] for l in vs["train_layers"]] == names
        for l in vs["layers"] + vs["train_layers"]:
            assert set(l) == {"name", "mean_ratio", "median_ratio", "max_ratio", "median_mean2_over_var"}
            assert l["median_mean2_over_var"] >= 0
            assert 0 < l["median_ratio"] <= l["max_ratio"] and l["mean_ratio"] <= l["max_ratio"]
        w = next(l for l in vs["layers"] if l["name"] == vs["worst_layer"])
        assert w == worst_layer(vs["layers"]) and vs["worst_mean_ratio"] == w["mean_ratio"]
        wm = worst_layer(vs["layers"], "median_ratio")
        assert (vs["worst_median_layer"], vs["worst_median_ratio"]) == (wm["name"], wm["median_ratio"])
        tw = worst_layer(vs["train_layers"], "median_ratio")
        assert vs["train_worst_layer"] == tw["name"]
        assert [vs[f"train_worst_{k}_ratio"] for k in ("mean", "median", "max")] == \
            [tw[f"{k}_ratio"] for k in ("mean", "median", "max")]
        assert 0 <= vs["test_acc"] <= 1 and 0 <= vs["test_acc_recalibrated"] <= 1
    json.dumps(d, allow_nan=False)  # plain, finite JSON


def test_run_diagnostics_without_bn():
    torch.manual_seed(0)
    model = mlp(["act", "dropout"], norm="none", dropout=0.5)
    d = run_diagnostics(model, fake_data(), diag_cfg("mlp"), torch.device("cpu"), time_budget_s=0.1)
    check_schema(d, bn=False)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_run_diagnostics_with_bn(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        model, data = mlp(["act", "dropout", "norm"], dropout=0.5), fake_data()
    else:
        model, data = cnn(["norm", "act", "dropout"], dropout=0.5), fake_data((3, 8, 8), 200, 100)
        model = model.to(memory_format=torch.channels_last)
    randomize_bn(model)
    model.train()
    before = state(model)
    d = run_diagnostics(model, data, diag_cfg(kind), torch.device("cpu"), time_budget_s=0.1)
    assert model.training and same_state(before, state(model))
    check_schema(d, bn=True)
    assert d["inference"]["bn_layers_folded"] == count_bn(model)
    assert len(d["variance_shift"]["layers"]) == count_bn(model)
    assert d["variance_shift"]["train_images"] == len(data.train)  # fewer than TRAIN_SHIFT_IMAGES: all


def test_train_shift_split_is_a_fixed_seeded_subset():
    data = fake_data(n_train=TRAIN_SHIFT_IMAGES + 500)
    a, b = train_shift_split(data.train), train_shift_split(data.train)
    assert len(a) == TRAIN_SHIFT_IMAGES and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, data.train.x[:TRAIN_SHIFT_IMAGES])  # a shuffled order, not the first images
    small = fake_data(n_train=300).train
    assert torch.equal(torch.sort(train_shift_split(small).y).values, torch.sort(small.y).values)


@needs_mnist
def test_training_data_variance_shift_dropout_before_vs_after_bn(tmp_path):
    """Li et al.'s measurement on a short real MNIST run: dropout before BN shifts the variance on
    training data (running var > eval-mode var, ratio ~2 for p = 0.5); dropout after BN does not."""
    ov = (*TINY, "model.hidden=[64,64]", "train.epochs=3", "train.diagnostics=true", "reg.dropout=0.5")
    before = run(compose(*ov, "reg=dropout_before_bn"), tmp_path / "before")["diagnostics"]["variance_shift"]
    after = run(compose(*ov, "reg=both", "reg.dropout_blocks=last"),
                tmp_path / "after")["diagnostics"]["variance_shift"]
    assert before["train_images"] == after["train_images"] == 2000
    for l in before["train_layers"]:
        assert l["median_ratio"] > 1.5, l
    for l in after["train_layers"]:  # no dropout in front of any BN: only momentum noise remains
        assert abs(math.log(l["median_ratio"])) < 0.25, l
    assert before["train_worst_median_ratio"] > after["train_worst_median_ratio"] * 1.4
    assert before["train_worst_mean_ratio"] > 1.5 and before["worst_median_ratio"] > 1.5  # test set too


# ---------------------------------------------------------------- dropbn diagnose, end to end
@pytest.mark.skipif(not (DATA_DIR / "MNIST").exists(), reason=f"MNIST not under {DATA_DIR}")
def test_diagnose_cli_end_to_end(tmp_path):
    out = tmp_path / "out"
    r = call_cli(["train", "data.train_size=500", "train.epochs=1", "model.hidden=[32]", "train.diagnostics=false",
                  "train.progress=false", f"out_root={out}", "name=t"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (summary_path,) = list(out.rglob("summary.json"))
    before = json.loads(summary_path.read_text())
    assert before["status"] == "completed" and "diagnostics" not in before
    # an unfinished run next to it (checkpoint, no summary) is skipped, not diagnosed
    unfinished = out / "t" / "unfinished"
    unfinished.mkdir()
    shutil.copy(summary_path.parent / "checkpoint.pt", unfinished / "checkpoint.pt")

    r = call_cli(["diagnose", str(out), "--device", "cpu"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    after = json.loads(summary_path.read_text())
    check_schema(after["diagnostics"], bn=True)  # default reg=both: BN after each Linear
    assert after["diagnostics"]["inference"]["bn_layers_folded"] == 1
    assert after["diagnostics"]["variance_shift"]["layers"][0]["name"] == "block1.norm"
    assert abs(after["diagnostics"]["variance_shift"]["test_acc"] - before["final_test_acc"]) < 1e-9
    assert {k: v for k, v in after.items() if k != "diagnostics"} == before
    assert "not completed" in r.stderr and not (unfinished / "summary.json").exists()

    r = call_cli(["diagnose", str(out), "--device", "cpu", "--skip-done"], cwd=tmp_path)
    assert r.returncode == 0 and "already has diagnostics" in r.stderr, r.stderr[-2000:]
    assert json.loads(summary_path.read_text()) == after


def test_diagnose_cli_errors(tmp_path, capsys):
    with pytest.raises(DropbnError, match="no such folder"):
        main([str(tmp_path / "missing")])
    assert main([str(tmp_path)]) == 0  # no runs: nothing to do, not an error
    assert "nothing to do" in capsys.readouterr().err


def test_dropout_right_before_bn_shifts_the_variance_by_the_measured_mean():
    """Inverted dropout at rate p feeding BN: running var / eval var = 1/(1-p) + p/(1-p) mean^2/var,
    not 1/(1-p): the ratio `ratios()` measures against the prediction from its own measured input."""
    p = 0.5
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20000, 8, generator=g) * torch.linspace(0.5, 2, 8) + torch.linspace(0, 1.5, 8)  # means > 0
    bn = nn.BatchNorm1d(8, momentum=None)
    model = nn.Sequential(OrderedDict([("drop", nn.Dropout(p)), ("bn", bn)]))
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for xb in x.split(500):  # cumulative running statistics of the train-mode (dropout on) input
            model(xb)
    model.eval()
    with BNInputStats(model) as st, torch.no_grad():
        model(x)
    (layer,) = st.ratios()
    predicted = 1 / (1 - p) + p / (1 - p) * layer["median_mean2_over_var"]
    assert layer["median_mean2_over_var"] > 1  # far from the 1/(1-p) = 2 of a zero-mean input
    assert layer["median_ratio"] == pytest.approx(predicted, rel=0.03)
