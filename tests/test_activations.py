"""model.act, model.init, reg.dropout_kind=alpha and the residual MLP (model.skip): SELU with alpha
dropout stays self-normalising through 16 layers, the initialisations do what they say, committed
runs still build the models they recorded, and short real runs train above chance."""
from __future__ import annotations

import math

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from torch import nn

from dropbn.train import loop as T
from dropbn.train.activations import resolve_init
from dropbn.config.validation import complete, validate
from dropbn.train.models import build_model, describe, layer_kinds
from dropbn.train.resnet import residual_blocks
from tests.conftest import ROOT, compose, needs_mnist
from tests.one_thread import one_thread  # noqa: F401  (autouse)

MNIST = (1, 28, 28)


def mlp(*ov):
    cfg = compose("model=mlp", *ov)
    validate(cfg)
    return build_model(cfg.model, cfg.reg, MNIST, 10)


def block_outputs(net, x):
    """The output of every hidden block (train mode: dropout on)."""
    outs = []
    hooks = [m.register_forward_hook(lambda mod, i, o: outs.append(o.detach()))
             for name, m in net.named_children() if name.startswith("block")]
    net(x)
    for h in hooks:
        h.remove()
    return outs


@pytest.mark.parametrize("act,kinds", [("relu", nn.ReLU), ("gelu", nn.GELU), ("silu", nn.SiLU),
                                       ("tanh", nn.Tanh), ("selu", nn.SELU)])
@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet"])
def test_every_activation_in_every_model(act, kinds, model):
    cfg = compose(f"model={model}", "data=cifar10", f"model.act={act}", "reg=batchnorm",
                  *(("model.depth=8",) if model == "resnet" else ()))
    validate(cfg)
    net = build_model(cfg.model, cfg.reg, (3, 32, 32), 10)
    acts = [m for m in net.modules() if layer_kinds(m) == ["act"]]
    assert acts and all(type(m) is kinds for m in acts)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_selu_with_alpha_dropout_stays_self_normalising_through_16_layers():
    torch.manual_seed(0)
    x = torch.randn(4096, 1, 28, 28)  # standardised inputs
    snn = mlp("model.hidden=" + str([256] * 16).replace(" ", ""), "model.act=selu",
              "reg=dropout", "reg.dropout=0.1", "reg.dropout_kind=alpha").train()
    assert isinstance(snn.block1.dropout, nn.AlphaDropout) and resolve_init("auto", "selu") == "lecun"
    outs = block_outputs(snn, x)
    assert len(outs) == 16
    for o in outs:
        assert abs(o.mean().item()) < 0.1 and 0.8 < o.var().item() < 1.2, (o.mean().item(), o.var().item())
    # the same net with ReLU and PyTorch's default init does not keep unit variance (the check can fail)
    relu = mlp("model.hidden=" + str([256] * 16).replace(" ", ""), "reg=dropout", "reg.dropout=0.1").train()
    assert not 0.8 < block_outputs(relu, x)[-1].var().item() < 1.2
    snn.eval()
    assert torch.equal(snn(x[:8]), snn(x[:8]))  # alpha dropout is off in eval


@pytest.mark.parametrize("init,std", [("kaiming", lambda fan, act: math.sqrt(2 / fan)),
                                      ("lecun", lambda fan, act: math.sqrt(1 / fan)),
                                      ("xavier", lambda fan, act: math.sqrt(2 / (fan + 256)))])
def test_initialisations_have_their_scale_and_zero_biases(init, std):
    torch.manual_seed(0)
    net = mlp("model.hidden=[256,256]", f"model.init={init}", "reg=none")
    w = net.block2.linear.weight
    assert abs(w.std().item() / std(256, "relu") - 1) < 0.02
    assert not net.block2.linear.bias.any()


def test_auto_and_torch_init_leave_relu_nets_as_pytorch_builds_them():
    torch.manual_seed(0)
    a = mlp("model.hidden=[64,64]")
    torch.manual_seed(0)
    b = mlp("model.hidden=[64,64]", "model.init=torch")
    torch.manual_seed(0)
    c = nn.Linear(784, 64)  # the first layer PyTorch builds from the same seed
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(a.block1.linear.weight, c.weight)


@pytest.mark.parametrize("run", ["tuned_mnist_mlp/final", "tuned_cifar10_cnn/final", "tuned_placement_mnist_mlp/final"])
def test_committed_runs_still_build_the_model_they_recorded(run):
    """Every new key's default builds today's model: model.txt of committed runs is reproduced."""
    folder = next(p.parent for p in sorted((ROOT / "results" / run).glob("*/model.txt")))
    config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
    cfg = OmegaConf.create(config)  # without the new keys: completed with their defaults, as readers do
    shape = (3, 32, 32) if "cifar" in cfg.data.name else MNIST
    net = build_model(complete(cfg.model, "model"), complete(cfg.reg, "reg"), shape, 10)
    assert describe(net, shape) + "\n" == (folder / "model.txt").read_text()


def test_residual_mlp_adds_the_input_of_blocks_of_equal_width():
    torch.manual_seed(0)
    net = mlp("model.hidden=[32,32,32]", "model.skip=true", "reg=batchnorm").eval()
    plain = mlp("model.hidden=[32,32,32]", "reg=batchnorm").eval()
    blocks = residual_blocks(net)
    assert len(blocks) == 2 and sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in plain.parameters())
    h = torch.randn(5, 32)
    assert torch.allclose(blocks[0](h), h + blocks[0].branch(h))
    assert layer_kinds(blocks[0].branch) == ["linear", "norm", "act"]  # reg.order inside the branch


# ---------------------------------------------------------------- short real runs
TINY = ("data=mnist", "data.train_size=2000", "train.eval_train_size=500", "train.epochs=2", "train.batch_size=32",
        "train.progress=false", "train.diagnostics=false", "device=cpu")


@needs_mnist
@pytest.mark.parametrize("ov", [
    ("model.hidden=[64,64,64,64]", "model.skip=true", "reg=batchnorm"),
])
def test_a_residual_mlp_trains_above_chance(tmp_path, ov):
    cfg = compose("model=mlp", *TINY, *ov)
    validate(cfg)
    s = T.run(cfg, tmp_path)
    assert s["status"] == "completed" and s["final_test_acc"] > 0.8, s["final_test_acc"]  # chance: 0.1
    assert "block2.join" in (tmp_path / "model.txt").read_text()


def test_report_labels_runs_by_activation_when_it_varies():
    import pandas as pd

    from dropbn.report.collect import finish

    rows = [{"run": f"r{i}", "status": "completed", "has_config": True, "kind": "none", "seed": 0,
             "cfg.model.act": act, "cfg.reg.norm": "none"} for i, act in enumerate(["relu", "selu"])]
    assert sorted(finish(pd.DataFrame(rows), pd.DataFrame(columns=["run", "epoch"]), []).runs["label"].astype(str)) \
        == ["none, act=relu", "none, act=selu"]


def test_a_model_node_without_the_new_keys_gets_their_defaults():
    m = complete(OmegaConf.create({"name": "mlp", "hidden": [8]}), "model")
    assert m.act == "relu" and m.init == "auto" and m.skip is False and m.hidden == [8]
