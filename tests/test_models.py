"""The layer sequence is exactly what the config says; dropout and BN behave
correctly in train vs eval mode."""
import pytest
import torch
from torch import nn

from dropbn.train.evaluation import evaluate
from dropbn.train.models import apply_max_norm, build_model, hidden_weights, layer_kinds
from tests.conftest import compose

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


def mlp(*ov):
    cfg = compose("model=mlp", "model.hidden=[32,16]", *ov)
    return build_model(cfg.model, cfg.reg, MNIST, 10)


def cnn(*ov):
    cfg = compose("model=cnn", "model.channels=[8,16]", "model.fc=[32]", "data=cifar10", *ov)
    return build_model(cfg.model, cfg.reg, CIFAR, 10)


def blocks(kinds, start):
    """Split a flat kind list into the sub-sequences that follow each `start` layer."""
    out = []
    for k in kinds:
        if k == start:
            out.append([])
        elif out:
            out[-1].append(k)
    return out


@pytest.mark.parametrize("reg,expect", [
    ("none", ["act"]),
    ("dropout", ["act", "dropout"]),
    ("batchnorm", ["norm", "act"]),
    ("both", ["norm", "act", "dropout"]),
    ("dropout_before_bn", ["act", "dropout", "norm"]),
    ("dropout_after_bn", ["act", "norm", "dropout"]),  # dropout_before_bn with dropout and norm swapped
])
def test_mlp_reg_presets(reg, expect):
    kinds = layer_kinds(mlp(f"reg={reg}"))
    assert kinds[0] == "flatten"
    assert blocks(kinds, "linear") == [expect, expect, []]  # two hidden blocks, then the head


@pytest.mark.parametrize("order", [["norm", "act", "dropout"], ["act", "norm", "dropout"],
                                   ["act", "dropout", "norm"], ["dropout", "norm", "act"]])
def test_mlp_order_is_followed(order):
    kinds = layer_kinds(mlp("reg=both", f"reg.order=[{','.join(order)}]"))
    assert blocks(kinds, "linear")[:2] == [order, order]


def test_mlp_dropout_blocks_last_and_input_dropout():
    kinds = layer_kinds(mlp("reg=both", "reg.dropout_blocks=last", "reg.input_dropout=0.2"))
    assert kinds[:2] == ["flatten", "dropout"]
    assert blocks(kinds, "linear") == [["norm", "act"], ["norm", "act", "dropout"], []]


def test_mlp_dropout_blocks_first_has_the_same_dropout_as_last():
    first = mlp("reg=both", "reg.dropout_blocks=first", "model.hidden=[64,64,64]")
    assert blocks(layer_kinds(first), "linear") == [["norm", "act", "dropout"], ["norm", "act"],
                                                    ["norm", "act"], []]
    last = mlp("reg=both", "reg.dropout_blocks=last", "model.hidden=[64,64,64]")
    rates = [[m.p for m in net.modules() if isinstance(m, nn.Dropout)] for net in (first, last)]
    assert rates[0] == rates[1] == [0.5]


@pytest.mark.parametrize("norm,cls", [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm), ("group", nn.GroupNorm)])
def test_mlp_norm_kinds(norm, cls):
    m = mlp("reg=batchnorm", f"reg.norm={norm}", "reg.norm_groups=4")
    assert sum(isinstance(x, cls) for x in m.modules()) == 2
    assert m(torch.randn(4, *MNIST)).shape == (4, 10)


@pytest.mark.parametrize("reg,conv,fc", [
    ("none", ["act"], ["act"]),
    ("dropout", ["act"], ["act", "dropout"]),  # conv_dropout defaults to 0: dense blocks only
    ("batchnorm", ["norm", "act"], ["norm", "act"]),
    ("both", ["norm", "act"], ["norm", "act", "dropout"]),
])
def test_cnn_reg_presets(reg, conv, fc):
    m = cnn(f"reg={reg}")
    kinds = layer_kinds(m)
    convs = blocks(kinds, "conv")
    # every conv block: conv -> order tokens (a pool closes each 2-conv stage)
    assert [c[: len(conv)] for c in convs] == [conv] * 4
    assert blocks(kinds, "linear") == [fc, []]
    assert kinds.count("pool") == 2
    assert m(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_cnn_conv_dropout_channelwise_and_order():
    m = cnn("reg=both", "reg.conv_dropout=0.1", "reg.channel_dropout=true", "reg.order=[act,norm,dropout]")
    convs = blocks(layer_kinds(m), "conv")
    assert all(c[:3] == ["act", "norm", "dropout"] for c in convs)
    assert sum(isinstance(x, nn.Dropout2d) for x in m.modules()) == 4
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 4


def test_cnn_dropout_blocks_last():
    m = cnn("reg=both", "model.fc=[32,32]", "reg.dropout_blocks=last")
    assert blocks(layer_kinds(m), "linear") == [["norm", "act"], ["norm", "act", "dropout"], []]


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_cnn_layer_and_group_norm(norm):
    m = cnn("reg=batchnorm", f"reg.norm={norm}")
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert m(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_dropout_off_in_eval_and_scaled_in_train():
    torch.manual_seed(0)
    d = mlp("reg=dropout", "reg.dropout=0.25").block1.dropout
    x = torch.ones(2000, 32)
    d.train()
    y = d(x)
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))  # inverted dropout: 1/(1-p)
    assert 0.2 < (y == 0).float().mean().item() < 0.3
    d.eval()
    assert torch.equal(d(x), x)


def test_whole_model_eval_is_deterministic_and_train_is_not():
    torch.manual_seed(0)
    m = mlp("reg=both")
    x = torch.randn(64, *MNIST)
    m.train()
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


def test_batchnorm_uses_running_stats_in_eval():
    torch.manual_seed(0)
    m = mlp("reg=batchnorm")
    bn = m.block1.norm
    m.train()
    for _ in range(50):
        m(torch.randn(128, *MNIST) * 3 + 1)
    assert bn.running_mean.abs().sum() > 0
    m.eval()
    h = m.block1.linear(torch.randn(16, 784))
    expect = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(bn(h), expect, atol=1e-5)
    # one sample in eval works (would fail with batch statistics)
    assert m(torch.randn(1, *MNIST)).shape == (1, 10)
    before = bn.running_mean.clone()
    m(torch.randn(128, *MNIST) * 10)
    assert torch.equal(bn.running_mean, before)  # eval never updates running stats


def test_evaluation_does_not_depend_on_the_eval_batch_size():
    """Why train.eval_batch_size is not part of a run's identity (dropbn.record.identity.NON_RESULT_KEYS)."""
    torch.manual_seed(0)
    m = cnn("reg=both")
    m.train()
    for _ in range(5):
        m(torch.randn(32, *CIFAR) * 2 + 0.5)  # running statistics away from their initial values
    x, y = torch.randn(60, *CIFAR), torch.randint(0, 10, (60,))
    results = [evaluate(m, [(x[i:i + bs], y[i:i + bs]) for i in range(0, 60, bs)]) for bs in (60, 7, 1)]
    assert m.training  # the caller's mode is restored
    (loss, acc), *others = results
    for other_loss, other_acc in others:
        assert other_acc == acc and other_loss == pytest.approx(loss, rel=1e-5)


def test_max_norm_constraint():
    m = mlp("reg=dropout", "reg.max_norm=2.0")
    ws = hidden_weights(m)
    assert len(ws) == 2 and all(w.dim() == 2 for w in ws)
    with torch.no_grad():
        for w in ws:
            w.mul_(100)
    apply_max_norm(ws, 2.0)
    for w in ws:
        assert w.norm(dim=1).max().item() <= 2.0 + 1e-5
