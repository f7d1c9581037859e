"""optim=adamw (decoupled decay), SGD with Nesterov momentum, optim.decay_norm_and_bias and
train.warmup_epochs: what each optimizer step does to the weights, the lr per tick, resume of the
scheduler, the defaults unchanged, and a short real run with the recipe."""
from __future__ import annotations

import pytest
import torch

from dropbn.train import optimize as O
from dropbn.train import loop as T
from dropbn.config.validation import validate
from dropbn.base.errors import ConfigError
from dropbn.train.models import build_model
from tests.conftest import compose, needs_mnist
from tests.one_thread import one_thread  # noqa: F401  (autouse)


def model_and_opt(*ov):
    cfg = compose("model=mlp", "model.hidden=[16]", "reg=batchnorm", *ov)
    validate(cfg)
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.reg, (1, 28, 28), 10)
    return cfg, net, O.build_optimizer(cfg, net.parameters())


@pytest.mark.parametrize("decay_all", [True, False])
def test_adamw_decay_is_decoupled_and_skips_norm_and_bias_when_asked(decay_all):
    lr, wd = 0.1, 0.5
    cfg, net, opt = model_and_opt("optim=adamw", f"optim.lr={lr}", f"optim.weight_decay={wd}",
                                  f"optim.decay_norm_and_bias={str(decay_all).lower()}")
    assert isinstance(opt, torch.optim.AdamW)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: an AdamW step is the decay alone
    opt.step()
    for n, p in net.named_parameters():
        one_d = p.ndim == 1  # biases, norm weights and biases
        shrink = 1.0 if one_d and not decay_all else 1 - lr * wd
        assert torch.allclose(p, before[n] * shrink), n
    assert ("block1.norm.weight" in before) and ("block1.linear.bias" in before)


def test_decay_on_everything_is_the_single_group_of_before():
    cfg, net, opt = model_and_opt("optim.weight_decay=0.1")
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.1
    assert opt.param_groups[0]["nesterov"] is False


def test_nesterov_reaches_sgd_and_is_checked():
    cfg, net, opt = model_and_opt("optim.nesterov=true")
    assert opt.param_groups[0]["nesterov"] is True
    for bad, key in ((("optim=adam", "optim.nesterov=true"), "optim.nesterov"),
                     (("optim.nesterov=true", "optim.momentum=0.0"), "optim.nesterov"),
                     (("train.warmup_epochs=10", "train.epochs=10"), "train.warmup_epochs"),
                     (("train.warmup_epochs=2", "train.steps=100", "data.train_size=6400", "train.batch_size=128"),
                      "train.warmup_epochs")):
        with pytest.raises(ConfigError) as e:
            validate(compose(*bad))
        assert e.value.key == key


def lrs(cfg, opt, budget, ticks):
    sched = O.build_scheduler(cfg, opt, budget)
    out = []
    for _ in range(ticks):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out, sched


def test_warmup_ramps_linearly_per_step_then_runs_the_schedule_over_the_rest():
    cfg, net, opt = model_and_opt("optim.lr=0.4", "train.warmup_epochs=2", "train.epochs=6", "train.schedule=cosine")
    got, _ = lrs(cfg, opt, O.Budget.of(cfg.train, per_pass=10), 60)  # 6 epochs of 10 steps
    ramp = [0.4 * (t + 1) / 20 for t in range(20)]
    cosine = [0.4 * (1 + torch.cos(torch.tensor(torch.pi * k / 40, dtype=torch.float64)).item()) / 2 for k in range(40)]
    assert got == pytest.approx(ramp + cosine)
    # the same in a run in steps: 2 passes of 10 steps
    cfg, net, opt = model_and_opt("optim.lr=0.4", "train.warmup_epochs=2", "train.steps=50", "train.schedule=none",
                                  "data.train_size=320", "train.batch_size=32")
    got, _ = lrs(cfg, opt, O.Budget.of(cfg.train, per_pass=10), 25)
    assert got == pytest.approx([0.4 * (t + 1) / 20 for t in range(20)] + [0.4] * 5)


def test_warmup_resumes_from_the_scheduler_state():
    cfg, net, opt = model_and_opt("train.warmup_epochs=3", "train.epochs=8", "train.schedule=step", "train.step_every=2")
    budget = O.Budget.of(cfg.train, per_pass=2)
    full, _ = lrs(cfg, opt, budget, 16)
    cfg, net, opt = model_and_opt("train.warmup_epochs=3", "train.epochs=8", "train.schedule=step", "train.step_every=2")
    first, sched = lrs(cfg, opt, budget, 7)
    state = sched.state_dict(), opt.state_dict()
    cfg, net, opt = model_and_opt("train.warmup_epochs=3", "train.epochs=8", "train.schedule=step", "train.step_every=2")
    sched = O.build_scheduler(cfg, opt, budget)
    sched.load_state_dict(state[0])
    opt.load_state_dict(state[1])
    rest = []
    for _ in range(9):
        rest.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert first + rest == full and len(set(full)) > 5  # ramp, then drops


def test_without_warmup_the_schedules_are_the_ones_of_before():
    cfg, net, opt = model_and_opt("train.schedule=cosine")
    assert type(O.build_scheduler(cfg, opt, O.Budget.of(cfg.train, per_pass=10))) is \
        torch.optim.lr_scheduler.CosineAnnealingLR


@needs_mnist
def test_a_recipe_run_trains_above_chance(tmp_path):
    """AdamW with warm-up and cosine, on a self-normalising MLP (SELU, alpha dropout)."""
    cfg = compose("model=mlp", "model.hidden=[64,64,64,64]", "model.act=selu", "reg=dropout", "reg.dropout=0.05",
                  "reg.dropout_kind=alpha", "optim=adamw", "train.warmup_epochs=1", "train.epochs=2",
                  "train.schedule=cosine", "data.train_size=2000", "train.eval_train_size=500",
                  "train.progress=false", "train.diagnostics=false", "device=cpu")
    validate(cfg)
    s = T.run(cfg, tmp_path)
    assert s["status"] == "completed" and s["final_test_acc"] > 0.5, s["final_test_acc"]  # chance: 0.1
    last = [float(line.split(",")[6]) for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert last[0] == 0.001 and last[1] < 1e-5  # each epoch's last step: the end of the ramp, then of the cosine
