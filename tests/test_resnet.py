"""model=resnet: He et al.'s exact parameter counts, the branch's layers follow reg.order, the skip
connection (and its absence in the plain net), eval mode, the zero-initialised residual branch,
validation, and a real run on MNIST digits that trains above chance, resumes bit-identically on CPU,
writes the block structure to model.txt and names the architecture in its report."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dropbn.train import loop as T
from dropbn.config.validation import validate
from dropbn.base.errors import ConfigError, Interrupted
from dropbn.train.models import build_model, count_params, layer_kinds
from dropbn.train.resnet import Residual, residual_blocks
from tests.conftest import DATA_DIR, compose, needs_mnist, run_cli
from tests.one_thread import one_thread  # noqa: F401  (autouse)

CIFAR = (3, 32, 32)


def resnet(*ov, shape=CIFAR):
    cfg = compose("model=resnet", "data=cifar10", *ov)
    validate(cfg)
    return build_model(cfg.model, cfg.reg, shape, 10)


@pytest.mark.parametrize("depth,params", [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018),
                                          (110, 1_727_962)])
def test_parameter_counts_are_he_et_al_table_6(depth, params):
    assert count_params(resnet(f"model.depth={depth}", "reg=batchnorm")) == params


def test_width_multiplier_and_projection_shortcuts_add_parameters():
    base = count_params(resnet("model.depth=8", "reg=batchnorm"))
    assert count_params(resnet("model.depth=8", "reg=batchnorm", "model.shortcut=projection")) == \
        base + (16 * 32 + 64) + (32 * 64 + 128)  # a 1x1 conv + BN where the shape changes
    wide = resnet("model.depth=8", "reg=batchnorm", "model.width=2")
    assert [b.branch.conv2.out_channels for b in residual_blocks(wide)] == [32, 64, 128]


ORDERS = [["norm", "act", "dropout"], ["act", "norm", "dropout"], ["act", "dropout", "norm"],
          ["dropout", "norm", "act"]]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("preact", [False, True])
def test_branch_layers_follow_reg_order(order, preact):
    net = resnet("model.depth=8", "reg=both", f"reg.order=[{','.join(order)}]", "reg.conv_dropout=0.3",
                 f"model.preact={str(preact).lower()}")
    without_dropout = [t for t in order if t != "dropout"]
    for block in residual_blocks(net):
        kinds = layer_kinds(block.branch)
        if preact:  # norm, act before the first conv; the whole order between the convs
            assert kinds == [*without_dropout, "conv", *order, "conv"]
            assert block.act is None
        else:       # the whole order between the convs; the norm after the second; the act after the addition
            assert kinds == ["conv", *order, "conv", "norm"]
            assert isinstance(block.act, torch.nn.ReLU)


def test_dropout_blocks_select_stages_and_classifier_dropout_sits_before_the_head():
    net = resnet("model.depth=8", "reg=both", "reg.conv_dropout=0.3", "reg.dropout_blocks=last")
    assert ["dropout" in layer_kinds(b.branch) for b in residual_blocks(net)] == [False, False, True]
    assert list(dict(net.named_children()))[-2:] == ["dropout", "head"]
    assert net.dropout.p == 0.5


def test_activation_and_norm_kinds_reach_the_branch():
    net = resnet("model.depth=8", "reg=batchnorm", "reg.norm=group", "reg.norm_groups=4", "model.act=silu")
    kinds = {type(m).__name__ for m in residual_blocks(net)[0].branch}
    assert kinds == {"Conv2d", "GroupNorm", "SiLU"}


@pytest.mark.parametrize("preact", [False, True])
def test_the_skip_connection_is_there_and_gone_in_the_plain_net(preact):
    torch.manual_seed(0)
    pa = f"model.preact={str(preact).lower()}"
    res, plain = resnet("model.depth=8", "reg=batchnorm", pa).eval(), resnet("model.depth=8", "reg=batchnorm",
                                                                             pa, "model.skip=false").eval()
    assert count_params(res) == count_params(plain)  # option A: the same layers, only the addition differs
    x = torch.randn(4, 16, 8, 8)
    for block in (residual_blocks(res)[0], residual_blocks(plain)[0]):
        act = block.act or torch.nn.Identity()
        plus_x = act(block.branch(x) + x)
        assert torch.allclose(block(x), plus_x) == block.skip
        assert torch.allclose(block(x), act(block.branch(x))) == (not block.skip)
    # where the shape changes, option A adds the subsampled input, zero-padded to the new channels
    down = residual_blocks(res)[1]
    y = torch.randn(2, 16, 8, 8)
    padded = torch.cat([torch.zeros(2, 8, 4, 4), y[:, :, ::2, ::2], torch.zeros(2, 8, 4, 4)], 1)
    assert torch.allclose(down(y), (down.act or torch.nn.Identity())(down.branch(y) + padded))


def test_eval_turns_dropout_off_and_bn_uses_running_statistics():
    torch.manual_seed(0)
    net = resnet("model.depth=8", "reg=both", "reg.conv_dropout=0.3")
    x = torch.randn(8, *CIFAR)
    net.train()
    assert not torch.equal(net(x), net(x))  # dropout masks differ
    net.eval()
    out = net(x)
    assert torch.equal(out, net(x))
    assert torch.allclose(net(x[:1]), out[:1], atol=1e-5)  # a sample's output does not depend on its batch
    bn = residual_blocks(net)[0].branch.norm1
    bn.running_mean.fill_(3.0)  # eval normalises with the running statistics
    assert not torch.allclose(net(x), out)


def test_zero_init_residual_keeps_an_unnormalised_resnet_56_finite():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    net = resnet("model.depth=56", "reg=none").eval()  # null: on without a norm layer
    for block in residual_blocks(net):  # each block starts as act(shortcut(x)): its branch's last layer is zero
        assert not block.branch.conv2.weight.any() and not block.branch.conv2.bias.any()
    out = net(x)
    torch.manual_seed(0)
    blown = resnet("model.depth=56", "reg=none", "model.zero_init_residual=false").eval()(x)
    assert torch.isfinite(out).all() and out.abs().max() < 10
    assert not (torch.isfinite(blown).all() and blown.abs().max() < 10)  # without it the signal explodes


@pytest.mark.parametrize("ov,key", [
    (["model=resnet", "model.depth=21"], "model.depth"),
    (["model=resnet", "model.depth=null"], "model.depth"),
    (["model=resnet", "model.shortcut=C"], "model.shortcut"),
    (["model=resnet", "model.skip=false", "model.zero_init_residual=true"], "model.zero_init_residual"),
    (["model=resnet", "reg=batchnorm", "reg.norm=group", "reg.norm_groups=5"], "reg.norm_groups"),
    (["model=mlp", "model.depth=20"], "model.depth"),
    (["model=cnn", "model.preact=true"], "model.preact"),
    (["model=cnn", "model.skip=true"], "model.skip"),
    (["model=mlp", "model.skip=true", "model.hidden=[64,32]"], "model.hidden"),
    (["model=mlp", "model.width=0"], "model.width"),
])
def test_bad_values_are_one_config_error(ov, key):
    with pytest.raises(ConfigError) as e:
        validate(compose(*ov))
    assert e.value.key == key


def test_a_bad_depth_is_one_line_and_exit_2(tmp_path):
    r = run_cli(["train", "model=resnet", "model.depth=21", f"out_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "model.depth=21" in r.stderr and "6n+2" in r.stderr


# ---------------------------------------------------------------- a real run
def mnist_folder(root: Path, n_train: int, n_test: int) -> Path:
    """The first n_train / n_test MNIST digits of each split as an image folder (PNG per digit)."""
    raw = DATA_DIR / "MNIST" / "raw"
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = np.fromfile(raw / f"{prefix}-images-idx3-ubyte", dtype=np.uint8, offset=16).reshape(-1, 28, 28)
        y = np.fromfile(raw / f"{prefix}-labels-idx1-ubyte", dtype=np.uint8, offset=8)
        for i in range(n):
            d = root / split / str(y[i])
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i], mode="L").save(d / f"{i:05d}.png")
    return root


# digits resized to 14x14 (a quarter of the compute); 40 steps per epoch
RUN = ("model=resnet", "model.depth=8", "reg=batchnorm", "data=imagefolder", "data.image_size=14", "train.epochs=2",
       "train.batch_size=16", "optim.lr=0.05", "train.progress=false", "train.diagnostics=false", "device=cpu")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return mnist_folder(tmp_path_factory.mktemp("digits"), 640, 200)


def train(out: Path, digits: Path, *ov):
    cfg = compose(*RUN, f"data.path={digits}", *ov)
    validate(cfg)
    return T.run(cfg, out)


@needs_mnist
def test_a_resnet_trains_resumes_bit_identically_and_says_what_it_is(tmp_path, digits, monkeypatch):
    ref = train(tmp_path / "ref", digits)
    assert ref["status"] == "completed" and ref["final_test_acc"] > 0.5  # chance: 0.1 (200 test digits)
    txt = (tmp_path / "ref" / "model.txt").read_text()
    assert re.search(r"\nstage2\.block1\.branch\.norm2 .*\nstage2\.block1\.shortcut +PadShortcut.*\n"
                     r"stage2\.block1\.join +add: pad\(x: /2, 16->32 channels\) \+ branch\(x\) .*\n"
                     r"stage2\.block1\.act +ReLU", txt), txt

    # stop in the middle of epoch 2 (as SIGINT would, between two steps), then resume in a fresh job
    import dropbn.train.optimize as O
    calls = {"n": 0}

    def stop_in_epoch_2():
        calls["n"] += 1
        return calls["n"] > 50  # epoch 1: 40 steps (and a check after them)

    monkeypatch.setattr(O, "stopping", stop_in_epoch_2)
    with pytest.raises(Interrupted):
        train(tmp_path / "cut", digits)
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "summary.json").exists()
    again = train(tmp_path / "cut", digits)
    a, b = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (tmp_path / "ref", tmp_path / "cut"))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    drop = ("epoch_seconds", "eval_seconds", "train_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in a["metrics"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in b["metrics"]]
    assert again["final_test_acc"] == ref["final_test_acc"]

    from dropbn.report.collect import collect
    from dropbn.report.sections import title_of
    assert title_of(collect([tmp_path], progress=False).runs).endswith(" · ResNet-8")  # the report's title
