"""dropbn report on hand-made run folders with known numbers (no training)."""
import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml

from dropbn.errors import DropbnError
from dropbn.report import cli as report_cli
from dropbn.report import tables
from dropbn.report.collect import collect

from .conftest import ROOT

REGS = {
    "none": dict(norm="none", dropout=0.0, order=["act"]),
    "dropout": dict(norm="none", dropout=0.5, order=["act", "dropout"]),
    "batchnorm": dict(norm="batch", dropout=0.0, order=["norm", "act"]),
    "both": dict(norm="batch", dropout=0.5, order=["norm", "act", "dropout"]),
    "dropout_before_bn": dict(norm="batch", dropout=0.5, order=["act", "dropout", "norm"]),
}


def config(reg, seed, lr=0.05, train_size=None, data="mnist", device="cpu", epochs=3, target=0.96):
    r = dict(norm_groups=8, input_dropout=0.0, conv_dropout=0.0, channel_dropout=False,
             dropout_blocks="all", max_norm=None, **REGS[reg])
    return {
        "data": {"name": data, "root": None, "path": None, "cache_dir": None, "download": True,
                 "train_size": train_size, "val_size": 0, "split_seed": 0, "augment": False, "image_size": None},
        "model": {"name": "mlp", "hidden": [64, 64], "channels": None, "fc": None},
        "reg": r,
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 0.0},
        "seed": seed, "device": device, "name": "study", "out_root": "results",
        "train": {"epochs": epochs, "batch_size": 128, "target_acc": target, "progress": False,
                  "force": False, "threads": None, "diagnostics": False},
    }


def make_run(folder, reg="none", seed=0, *, test_acc=(0.90, 0.95, 0.97), train_acc=None, sec=1.0,
             status="completed", summary=True, params=1000, diagnostics=None, **cfg_kw):
    """A run folder as dropbn train writes it, with the numbers given."""
    folder.mkdir(parents=True)
    cfg = config(reg, seed, **cfg_kw)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    train_acc = train_acc or [min(1.0, a + 0.02) for a in test_acc]
    rows = []
    for i, (te, tr) in enumerate(zip(test_acc, train_acc)):
        rows.append({"epoch": i + 1, "train_loss": 1 - tr, "train_acc": tr, "test_loss": 1.1 - te,
                     "test_acc": te, "lr": cfg["optim"]["lr"], "step_loss": 1 - tr, "epoch_seconds": sec,
                     "eval_seconds": 0.1, "train_seconds": sec * (i + 1)})
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    if not summary:
        return folder
    target = cfg["train"]["target_acc"]
    hit = next((r for r in rows if r["test_acc"] >= target), None)
    last = rows[-1] if rows else {}
    s = {"status": status, "seed": seed, "data": "MNIST",
         "data_sizes": {"train": cfg["data"]["train_size"] or 60000, "val": 0, "test": 10000},
         "params": params, "epochs": cfg["train"]["epochs"], "epochs_completed": len(rows),
         "final_test_acc": last.get("test_acc"), "final_test_loss": last.get("test_loss"),
         "final_train_acc": last.get("train_acc"), "final_train_loss": last.get("train_loss"),
         "best_test_acc": max((r["test_acc"] for r in rows), default=None), "best_epoch": len(rows),
         "first_epoch_test_acc": rows[0]["test_acc"] if rows else None,
         "generalization_gap": last["train_acc"] - last["test_acc"] if rows else None,
         "loss_gap": last["test_loss"] - last["train_loss"] if rows else None,
         "target_acc": target, "epochs_to_target": hit["epoch"] if hit else None,
         "seconds_to_target": hit["train_seconds"] if hit else None,
         "train_seconds": last.get("train_seconds", 0.0), "seconds_per_epoch": sec,
         "diverged_at": {"epoch": len(rows) + 1, "step": 7, "reason": "non-finite loss"}
         if status == "diverged" else None,
         "config": cfg, "env": {"torch": "x", "device": "cpu", "threads": 1, "git_commit": "abc"}}
    if diagnostics:
        s["diagnostics"] = diagnostics
    (folder / "summary.json").write_text(json.dumps(s))
    return folder


def snapshot(root):
    return {(p, os.path.getmtime(os.path.join(p, f)), f)
            for p, _d, fs in os.walk(root) for f in fs}


# accuracy per kind and seed; bn clearly above the baseline, dropout with a small gap
ACC = {"none": [0.960, 0.962, 0.961], "dropout": [0.965, 0.966, 0.964],
       "batchnorm": [0.975, 0.976, 0.977], "both": [0.980, 0.981, 0.979],
       "dropout_before_bn": [0.970, 0.969, 0.971]}


def compare_sweep(root, kinds=ACC, seeds=(0, 1, 2), **kw):
    for kind, accs in kinds.items():
        for seed in seeds:
            a = accs[seed]
            train = 1.0 if kind in ("none", "batchnorm") else a + 0.005
            first = 0.95 if "norm" in REGS[kind]["order"] else 0.90
            make_run(root / f"reg={kind},seed={seed}", kind, seed, test_acc=(first, a - 0.004, a),
                     train_acc=(first, 0.99, train), sec=2.0 if REGS[kind]["norm"] == "batch" else 1.0,
                     device=f"cuda:{seed}", **kw)
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A full compare sweep + one diverged, one failed, one unfinished run, and two broken folders."""
    root = compare_sweep(tmp_path_factory.mktemp("results") / "compare")
    make_run(root / "reg=both,seed=3", "both", 3, test_acc=(0.9,), status="diverged")
    make_run(root / "reg=none,seed=3", "none", 3, test_acc=(), status="failed")
    make_run(root / "reg=dropout,seed=3", "dropout", 3, test_acc=(0.9,), summary=False)
    bad = root / "reg=batchnorm,seed=9"
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    (root / "empty_folder").mkdir()
    before = snapshot(root)
    out = root.parent / "out"
    md = report_cli.main([str(root), "--out", str(out), "--no-progress"])
    return root, out, md, before


def test_grouping_by_varying_keys_except_seed(sweep):
    root = sweep[0]
    coll = collect([root], progress=False)
    # device varies (cuda:0..2) but never affects results; seed varies too: neither groups
    assert set(coll.varying) == {"reg.norm", "reg.dropout", "reg.order"}
    assert coll.dims == []  # all three are determined by the kind: short labels
    labels = list(coll.runs["label"].cat.categories)
    assert labels == ["none", "dropout", "batchnorm", "both", "dropout_before_bn"]  # baseline first
    counts = coll.runs.groupby("label", observed=True).size()
    assert counts["none"] == 4 and counts["dropout_before_bn"] == 3
    assert any("unreadable summary.json" in why for _, why in coll.skipped)
    assert any(p.endswith("empty_folder") for p, _ in coll.skipped)


def test_group_stats_known_numbers(sweep):
    gs = tables.group_stats(collect([sweep[0]], progress=False)).set_index("configuration")
    none = gs.loc["none"]
    assert none["final_test_acc_mean"] == pytest.approx(0.961)
    assert none["final_test_acc_n"] == 3  # the failed run is counted, not averaged
    assert (none["completed"], none["failed"]) == (3, 1)
    assert gs.loc["both", "diverged"] == 1 and gs.loc["dropout", "unfinished"] == 1
    assert none["final_test_acc_ci95"] == pytest.approx(2.4841e-3, rel=1e-3)  # t(.975,2)*s/sqrt(3), s=0.001


def test_claims_on_constructed_sweep(sweep):
    coll = collect([sweep[0]], progress=False)
    cl, skipped = tables.claims(coll, tables.baselines(coll, ("reg", "none")))
    v = dict(zip(cl["claim"], cl["verdict"]))
    assert v["4"] == "supported"          # bn 97.6 vs 96.1, tight seeds
    assert v["6"] == "supported"          # 2 s vs 1 s per epoch, exact
    assert v["3"] == "supported"          # dropout gap 0.5 pp vs ~3.9 pp
    assert v["8"] == "supported"          # before-bn 97.0 < both 98.0
    assert v["7"] == "supported"          # both 98.0 > batchnorm 97.6
    assert v["5"] == "inconclusive"       # equal spreads
    assert v["1"] == "not supported"      # dropout reaches 96% at epoch 2, none at epoch 3 (every seed)
    assert not skipped


def test_report_files_and_contents(sweep):
    root, out, md_path, before = sweep
    assert md_path == out / "report.md"
    md = md_path.read_text()
    for name in ("reg=both,seed=3", "reg=none,seed=3", "reg=dropout,seed=3"):
        assert name in md  # diverged, failed, unfinished: listed by name
    assert "diverged at epoch 2" in md and "unfinished: 1/3 epochs" in md
    assert "unreadable summary.json" in md and "empty_folder" in md
    assert "## The article's comparison table, measured" in md and "## Claims check" in md
    assert "Welch" in md and "alpha = 0.05" in md
    assert "plain ReLU" in md and "running statistics" in md
    setup = next(line for line in md.splitlines() if line.startswith("Setup (the same for every run):"))
    assert "training images all" in setup and "MLP widths [64,64]" in setup and "epochs 3" in setup
    assert "lr 0.05" in setup and "batch size 128" in setup
    assert "## Learning-rate tolerance" not in md and "## Training-set size" not in md
    assert "## Placement" in md  # dropout_before_bn is a placement variant
    for f in ("runs.csv", "tables/comparison.csv", "tables/comparison.tex", "tables/claims.csv",
              "tables/per_configuration.csv", "figures/learning_curves.png", "figures/final_test_acc.png",
              "figures/generalization_gap.png", "figures/seconds_per_epoch.png", "figures/test_acc_vs_time.png"):
        assert (out / f).is_file(), f
        assert f"]({f})" in md or not f.startswith("figures")  # embedded by relative path
    assert (out / "figures/learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    comp = pd.read_csv(out / "tables/comparison.csv", index_col=0)
    assert list(comp.columns) == ["none", "dropout", "batchnorm", "both", "dropout_before_bn"]
    assert comp.loc["Final test accuracy", "none"].startswith("96.10 ± 0.2")
    assert comp.loc["Final test accuracy", "none"].endswith("(n=3)")
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 18 and set(runs["status"]) == {"completed", "diverged", "failed", "unfinished"}
    assert snapshot(root) == before  # nothing written inside the run folders
    assert not any(f.endswith(".tmp") for _p, _m, f in snapshot(out))


def test_single_run(tmp_path):
    run = make_run(tmp_path / "study" / "run", "both", 0)
    md = report_cli.main([str(run), "--no-progress"])
    assert md == tmp_path / "study" / "run-report" / "report.md"  # beside the run, not inside it
    text = md.read_text()
    assert "**1 runs**" in text and "| both |" in text.replace("measured | both", "| both |")
    assert sorted(os.listdir(run)) == [".hydra", "metrics.csv", "summary.json"]
    with pytest.raises(DropbnError, match="inside the run folder"):
        report_cli.main([str(run), "--out", str(run / "report")])


def test_several_dirs(tmp_path):
    a = compare_sweep(tmp_path / "a", kinds={k: ACC[k] for k in ("none", "batchnorm")}, seeds=(0, 1))
    b = compare_sweep(tmp_path / "b", kinds={k: ACC[k] for k in ("none", "batchnorm")}, seeds=(0, 1),
                      data="fashion_mnist")
    with pytest.raises(DropbnError, match="--out"):
        report_cli.main([str(a), str(b)])
    md = report_cli.main([str(a), str(b), "--out", str(tmp_path / "both"), "--no-progress"]).read_text()
    assert "none, data=fashion_mnist" in md and "batchnorm, data=mnist" in md
    assert "### data=fashion_mnist" in md  # one comparison table per context, each with its baseline


def test_lr_section_only_when_lr_varies(tmp_path):
    root = tmp_path / "lr"
    for lr in (0.01, 0.1, 1.0):
        for kind in ("none", "batchnorm"):
            for seed in (0, 1):
                blows = lr == 1.0 and kind == "none"
                make_run(root / f"optim.lr={lr},reg={kind},seed={seed}", kind, seed, lr=lr,
                         test_acc=(0.9,) if blows else (0.9, 0.95, 0.97 - seed / 100),
                         status="diverged" if blows else "completed")
    md = report_cli.main([str(root), "--no-progress"]).read_text()
    assert "## Learning-rate tolerance" in md and "## Training-set size" not in md
    assert "none, lr=1" in md and "2 run(s) diverged" in md and "chance" in md
    assert (root / "report" / "figures" / "lr_tolerance.png").is_file()
    lr_tab = pd.read_csv(root / "report" / "tables" / "lr_tolerance.csv", index_col=0)
    assert list(lr_tab.index) == ["none", "batchnorm"] and "2 diverged" in lr_tab.loc["none", "1"]
    # a second report of the same folder ignores the first one's output (not a run, not "skipped")
    again = report_cli.main([str(root), "--no-progress"]).read_text()
    assert "**12 runs**" in again and "Skipped folders" not in again


def test_datasize_and_diagnostics_sections(tmp_path):
    root = tmp_path / "ds"
    diag = {"variance_shift": {"layers": [{"name": "block1.norm", "mean_ratio": 1.2, "max_ratio": 2.0},
                                          {"name": "block2.norm", "mean_ratio": 1.5, "max_ratio": 3.0}],
                               "worst_layer": "block2.norm", "worst_mean_ratio": 1.5, "worst_max_ratio": 3.0,
                               "test_acc": 0.95, "test_acc_recalibrated": 0.96},
            "inference": {"bn_layers_folded": 2, "fold_max_abs_diff": 1e-6,
                          "batch1_ms": {"as_trained": 0.2, "folded": 0.15},
                          "batch256_ms": {"as_trained": 2.0, "folded": 1.5},
                          "throughput": {"as_trained": 128000.0, "folded": 170000.0}}}
    for n in (1000, None):
        for kind in ("none", "both"):
            for seed in (0, 1):
                make_run(root / f"data.train_size={n},reg={kind},seed={seed}", kind, seed, train_size=n,
                         diagnostics=diag if kind == "both" else None)
    md = report_cli.main([str(root), "--no-progress"]).read_text()
    assert "## Training-set size" in md and "## Learning-rate tolerance" not in md
    assert "60000" in md  # null = full set, shown as the size actually used
    assert "## Variance shift" in md and "1.500 ± 0.000 (n=2)" in md and "both, n_train=full" in md
    assert "## Inference cost" in md and "30%" in md
    assert (root / "report" / "figures" / "datasize.png").is_file()
    assert (root / "report" / "figures" / "variance_shift_layers.png").is_file()


def test_user_errors(tmp_path):
    with pytest.raises(DropbnError, match="no such folder"):
        report_cli.main([str(tmp_path / "missing")])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DropbnError, match="no run folders"):
        report_cli.main([str(tmp_path / "nothing")])
    with pytest.raises(DropbnError, match="KEY=VALUE"):
        report_cli.main([str(tmp_path / "nothing"), "--baseline", "none"])
    from dropbn import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["report", str(tmp_path / "missing")])
    assert e.value.code == 2


def test_report_path_imports_no_torch(tmp_path):
    """`dropbn report` reads run folders without torch (seconds and most of a GB of memory saved)."""
    root = compare_sweep(tmp_path / "study", kinds={k: ACC[k] for k in ("none", "batchnorm")}, seeds=(0, 1))
    code = textwrap.dedent(f"""
        import sys
        from dropbn.cli import main
        main(["report", {str(root)!r}, "--no-progress"])
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (root / "report" / "report.md").is_file()
