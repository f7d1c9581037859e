"""dropbn report on hand-made run folders with known numbers (no training)."""
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml

from dropbn.base.datasets import DATASETS
from dropbn.base.errors import DropbnError
from dropbn.report import claims as C
from dropbn.commands import report_cmd as report_cli
from dropbn.report import anchors as A
from dropbn.report import figures, render, sections, tables
from dropbn.report import measures as M
from dropbn import stats
from dropbn.report.collect import collect, facet, read_runs_csv

from .conftest import ROOT

REGS = {
    "none": dict(norm="none", dropout=0.0, order=["act"]),
    "dropout": dict(norm="none", dropout=0.5, order=["act", "dropout"]),
    "batchnorm": dict(norm="batch", dropout=0.0, order=["norm", "act"]),
    "both": dict(norm="batch", dropout=0.5, order=["norm", "act", "dropout"]),
    "dropout_before_bn": dict(norm="batch", dropout=0.5, order=["act", "dropout", "norm"]),
    "dropout_after_bn": dict(norm="batch", dropout=0.5, order=["act", "norm", "dropout"]),
}


def config(reg, seed, lr=0.05, train_size=None, data="mnist", device="cpu", epochs=3, target=0.96,
           dropout_blocks="all", input_dropout=0.0):
    r = dict(norm_groups=8, input_dropout=input_dropout, conv_dropout=0.0, channel_dropout=False,
             dropout_blocks=dropout_blocks, max_norm=None, **REGS[reg])
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
             status="completed", summary=True, params=1000, diagnostics=None, env=None, **cfg_kw):
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
    s = {"status": status, "seed": seed, "data": DATASETS[cfg["data"]["name"]].label,
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
         "config": cfg, "env": {"torch": "x", "device": "cpu", "threads": 1, "parallel_runs": 1, "git_commit": "abc",
                                **(env or {})}}
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


def test_input_dropout_arm_is_compared_with_its_control(tmp_path):
    """Srivastava et al.'s arm (input dropout 0.2, hidden 0.5) and its control (neither) differ in two
    dropout keys: both belong to the kind, so the report compares them (one context, claim rows),
    and a net with input dropout alone is a dropout net too."""
    root = tmp_path / "sriv"
    for seed, (a, c) in enumerate([(0.988, 0.985), (0.987, 0.984), (0.989, 0.985)]):
        make_run(root / f"seed={seed}", "dropout", seed, test_acc=(0.95, a), train_acc=(0.95, 0.995),
                 input_dropout=0.2)
        make_run(root / f"reg.dropout=0,reg.input_dropout=0,seed={seed}", "none", seed,
                 test_acc=(0.95, c), train_acc=(0.95, 1.0))
    make_run(root / "inputs_only", "none", 0, input_dropout=0.2)
    coll = collect([root], progress=False)
    assert set(coll.varying) == {"reg.dropout", "reg.input_dropout", "reg.order"}
    kinds = dict(zip(coll.runs["run"].str.rsplit("/", n=1).str[-1], coll.runs["kind"]))
    assert kinds["inputs_only"] == "dropout" and kinds["seed=0"] == "dropout"
    assert kinds["reg.dropout=0,reg.input_dropout=0,seed=0"] == "none"
    (root / "inputs_only").rename(tmp_path / "inputs_only")
    assert collect([root], progress=False).dims == []       # no context split between the arms
    out = tmp_path / "out"
    report_cli.main([str(root), "--out", str(out), "--no-progress"])
    cl = pd.read_csv(out / "tables/claims.csv", na_values=["n/a"])
    gap = cl[cl["claim"].astype(str) == "3"]
    assert len(gap) == 1 and gap["a"].iloc[0] == "dropout" and gap["b"].iloc[0] == "none"


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


FORBIDDEN = ("no effect", "equivalent", "indistinguishable", "within ci", "within the ci", "exact:")


def assert_honest_wording(md: str) -> None:
    """A report never reads a non-significant test as 'no difference', and has no sign-only verdicts."""
    low = md.lower()
    for word in FORBIDDEN:
        assert word not in low, word


def check(coll):
    return C.claims(coll, tables.baselines(coll, ("reg", "none")))


def rows(ct) -> dict:
    return {(c if x == "all" else f"{c} [{x}]"): r for (c, x), r in
            zip(zip(ct.df["claim"], ct.df["context"]), ct.df.to_dict("records"))}


def test_claims_on_constructed_sweep(sweep):
    ct = check(collect([sweep[0]], progress=False))
    r = rows(ct)
    assert r["4"]["verdict"] == "supported"          # bn 97.6 vs 96.1, tight seeds
    assert r["3"]["verdict"] == "supported"          # dropout gap 0.5 pp vs ~3.9 pp
    assert "1 crashed (status failed)" in r["4"]["note"]   # the crashed 'none' run is left out and counted
    # zero spread in both arms (2 s vs 1 s per epoch, every seed): no p, so no verdict, and not in m
    assert r["6"]["verdict"] == "inconclusive" and math.isnan(r["6"]["p_value"])
    assert "no spread in either arm" in r["6"]["reason"]
    # stability: shown as the ratio of standard deviations, with its F interval, and the verdict says what it allows
    five = r["5"]
    assert five["unit"] == "spread" and five["diff"] == pytest.approx(five["value_a"] / five["value_b"])
    lo, hi = stats.sd_ratio_ci(five["value_a"], five["n_a"], five["value_b"], five["n_b"])
    assert (five["diff_ci_low"], five["diff_ci_high"]) == pytest.approx((lo, hi)) and lo < five["diff"] < hi
    assert five["verdict"] == "inconclusive"  # 3 vs 3 runs of equal spread: the interval is wide
    assert f"sd a / sd b between ×{lo:.2f} and ×{hi:.2f} (95% CI)" in C.verdict_text(five)
    # 3 vs 3 epochs to target: the rank test cannot reach 0.05 (was 'not supported' under the old rule)
    assert r["1"]["p_value"] == pytest.approx(0.1) and "cannot reach p < 0.05" in r["1"]["reason"]
    assert r["1"]["test"].startswith("rank test")
    # intention to treat: the diverged 'both' run enters at chance (10%), so 'both' has mean 76.0
    assert r["7"]["value_a"] == pytest.approx((98.0 + 98.1 + 97.9 + 10.0) / 4)
    assert "1 vs 0 diverged run(s) entered at chance" in r["7"]["note"] and r["7"]["n_a"] == 4
    # dropout_before_bn ([act,dropout,norm]) is never compared with 'both' ([norm,act,dropout]): two
    # changes at once. Its matched partner ([act,norm,dropout]) is not in this sweep: not checked.
    assert "8" not in r and "9" not in r
    assert dict(ct.skipped)["8"].startswith("no matched partner of dropout_before_bn")
    # trainability rows for the comparisons with a failed run: Fisher, 1/4 vs 0/3 (claim 7 compares 'both'
    # with each single one, an intersection-union test: both pairs get a row)
    assert [(r[t]["a"], r[t]["b"]) for t in ("T1", "T2")] == [("both", "dropout"), ("both", "batchnorm")]
    assert r["T2"]["test"] == "Fisher" and r["T2"]["p_value"] == pytest.approx(1.0) and r["T2"]["value_a"] == 25.0
    runs = collect([sweep[0]], progress=False).runs
    ps = [stats.mean_difference(*(100 * M.itt_values(M.arm(runs, lab)[0])[0] for lab in ("both", b))).p
          for b in ("dropout", "batchnorm")]
    assert "intersection-union test" in r["7"]["note"] and r["7"]["p_value"] == pytest.approx(max(ps), rel=1e-12)
    # one family: Holm over every finite p, m stated
    assert ct.m == int(ct.df["p_value"].notna().sum()) == len(ct.df) - 1
    assert ct.df["p_holm"].tolist() == pytest.approx(stats.holm(ct.df["p_value"]).tolist(), nan_ok=True)
    assert "exact" not in " ".join(ct.df["verdict"])
    # every inconclusive row states the seeds (or why none follow)
    for _, row in ct.df[ct.df["verdict"] == "inconclusive"].iterrows():
        assert "seeds per arm" in row["reason"] or "no sample size follows" in row["reason"]
    assert [c for c, _ in ct.skipped] == ["8", "9"]


def placement_sweep(root, acc: dict, seeds=range(4)):
    """Runs of (reg kind, reg.dropout_blocks) -> accuracy per seed, in a placement study's layout."""
    for (kind, blocks), a in acc.items():
        for seed in seeds:
            make_run(root / f"reg={kind},reg.dropout_blocks={blocks},seed={seed}", kind, seed,
                     test_acc=(0.9, a + 0.0001 * seed), train_acc=(0.9, a + 0.01), dropout_blocks=blocks)
    return root


def test_matched_claims_change_one_thing(tmp_path):
    """Claim 8 pairs [act,dropout,norm] with [act,norm,dropout] (not with 'both', [norm,act,dropout]);
    claim 9 pairs dropout in the first block with the last block, at every other setting equal."""
    acc = {("both", "all"): 0.981, ("both", "first"): 0.975, ("both", "last"): 0.982,
           ("dropout_after_bn", "all"): 0.980, ("dropout_after_bn", "first"): 0.979,
           ("dropout_after_bn", "last"): 0.9795, ("dropout_before_bn", "all"): 0.970,
           ("dropout_before_bn", "last"): 0.977}
    coll = collect([placement_sweep(tmp_path / "placement", acc)], progress=False)
    assert set(coll.runs["kind"]) == {"both", "dropout_after_bn", "dropout_before_bn"}
    ct = check(coll)
    got = {(r["claim"], r["a"], r["b"]): r for r in ct.df.to_dict("records")}
    lab = list(coll.runs["label"].cat.categories)
    pairs8 = {(a, b) for c, a, b in got if c == "8"}
    assert pairs8 == {("dropout_before_bn, dropout_blocks=all", "dropout_after_bn, dropout_blocks=all"),
                      ("dropout_before_bn, dropout_blocks=last", "dropout_after_bn, dropout_blocks=last")}, lab
    r8 = got[("8", "dropout_before_bn, dropout_blocks=all", "dropout_after_bn, dropout_blocks=all")]
    assert r8["diff"] == pytest.approx(-1.0) and r8["verdict"] == "supported" and "matched" in r8["note"]
    pairs9 = {(a, b) for c, a, b in got if c == "9"}
    assert pairs9 == {("both, dropout_blocks=first", "both, dropout_blocks=last"),
                      ("dropout_after_bn, dropout_blocks=first", "dropout_after_bn, dropout_blocks=last")}
    assert got[("9", "both, dropout_blocks=first", "both, dropout_blocks=last")]["diff"] == pytest.approx(-0.7)
    # a matched row counts in the Holm family like any other
    assert ct.m == int(ct.df["p_value"].notna().sum())
    # claims 1-7 have no baseline in any context: one line per reason, not one per claim and context
    lines = C.skipped_lines(ct.skipped)
    assert "- claims 1, 3, 7 [dropout_blocks=all; dropout_blocks=first; dropout_blocks=last]: no 'dropout' " \
           "configuration in these runs" in lines
    assert len(lines) < len(ct.skipped) and all(line.startswith("- claim") for line in lines)


def test_censored_epochs_to_target(tmp_path):
    """Runs that never reach the target rank after every run that did (not 'epochs + 1')."""
    root = tmp_path / "cens"
    for seed in range(4):
        make_run(root / f"reg=none,seed={seed}", "none", seed, test_acc=(0.97, 0.975, 0.98))
        make_run(root / f"reg=dropout,seed={seed}", "dropout", seed, test_acc=(0.90, 0.93, 0.95 + seed / 1000))
    r = rows(check(collect([root], progress=False)))
    one = r["1"]
    assert one["p_value"] == pytest.approx(2 / 70)             # complete separation, C(8, 4) splits
    assert "reached the target: 0/4 vs 4/4" in one["note"] and math.isnan(one["value_a"])
    assert math.isnan(r["3"]["p_value"])                       # both gaps without spread: no p, not in m
    assert one["p_holm"] == pytest.approx(2 / 70) and one["verdict"] == "supported"
    assert "no shift CI: 4 run(s) without a time to the target" in one["note"]
    # every run reaches the target (dropout one epoch later): the rows carry the Hodges-Lehmann shift and its CI
    late = tmp_path / "late"
    for seed in range(4):
        make_run(late / f"reg=none,seed={seed}", "none", seed, test_acc=(0.97, 0.975, 0.98))
        make_run(late / f"reg=dropout,seed={seed}", "dropout", seed, test_acc=(0.90, 0.97, 0.98))
    one = rows(check(collect([late], progress=False)))["1"]
    assert one["diff"] == 1.0 and "Hodges-Lehmann shift a − b +1.00 epochs, 95% CI +1.00 to +1.00 epochs (Moses)" \
        in one["note"]
    # the same with 3 seeds per arm cannot reach alpha at all, and says how many seeds could
    small = tmp_path / "small"
    for seed in range(3):
        make_run(small / f"reg=none,seed={seed}", "none", seed, test_acc=(0.97, 0.975, 0.98))
        make_run(small / f"reg=dropout,seed={seed}", "dropout", seed, test_acc=(0.90, 0.93, 0.95))
    one = rows(check(collect([small], progress=False)))["1"]
    assert one["p_value"] == pytest.approx(0.1) and one["verdict"] == "inconclusive"
    assert "cannot reach p < 0.05" in one["reason"] and "at least 4 seeds per arm" in one["reason"]
    assert "no shift CI: 3 run(s) without a time to the target" in one["note"]


def lr_study(root, lrs, kinds=("none", "batchnorm"), seeds=(0, 1, 2)):
    """Plain runs diverge at every learning rate given; batch norm trains (97, 96, 95% by seed)."""
    for lr in lrs:
        for kind in kinds:
            for seed in seeds:
                blows = kind in ("none", "dropout")
                make_run(root / f"optim.lr={lr},reg={kind},seed={seed}", kind, seed, lr=lr,
                         test_acc=(0.9,) if blows else (0.9, 0.95, 0.97 - seed / 100),
                         status="diverged" if blows else "completed")
    return root


def test_all_diverged_arm_and_trainability(tmp_path):
    ct = check(collect([lr_study(tmp_path / "one", [0.3])], progress=False))
    r = rows(ct)
    acc = r["4"]       # intention to treat: 10, 10, 10% vs 97, 96, 95%
    assert acc["value_b"] == pytest.approx(10.0) and acc["verdict"] == "supported"
    assert "0 vs 3 diverged run(s) entered at chance" in acc["note"]
    assert math.isnan(r["6"]["p_value"]) and "n = 3 vs 0" in r["6"]["reason"]
    assert "have no value here" in r["6"]["note"]
    speed = r["2a"]    # diverged runs rank worst: a complete separation, still p = 0.1
    assert speed["p_value"] == pytest.approx(0.1) and "cannot reach" in speed["reason"]
    t = r["T1"]        # one stratum: Fisher, 0/3 vs 3/3 cannot reach 0.05
    assert t["test"] == "Fisher" and t["p_value"] == pytest.approx(0.1)
    assert (t["value_a"], t["value_b"]) == (0.0, 100.0) and t["verdict"] == "inconclusive"
    assert "3 vs 3 runs cannot reach p < 0.05" in t["reason"] + t["note"]
    assert t["text"].startswith("Batch norm stabilises training")
    # two learning rates pool as strata: 2 / 20^2 = 0.005, which can survive Holm
    ct = check(collect([lr_study(tmp_path / "two", [0.3, 1.0])], progress=False))
    t = rows(ct)["T1 [pooled over lr=0.3, lr=1]"]
    assert t["test"].startswith("exact stratified") and t["p_value"] == pytest.approx(0.005)
    # m = 9 (claim 6 has no p in either context); T1 is third smallest after the two accuracy rows: 7 * 0.005
    assert ct.m == 9 and t["p_holm"] == pytest.approx(0.035) and t["verdict"] == "supported"


@pytest.mark.slow
def test_garbin_collapse_row_and_runs_ending_at_chance(tmp_path):
    """Garbin et al.'s observation, dropout against batch norm, gets a trainability row of its own; a run
    that completes at chance accuracy (a collapse without a non-finite loss) counts as failed to train,
    in the row and in the learning-rate table."""
    root = lr_study(tmp_path / "g", [0.3, 1.0], kinds=("none", "dropout", "batchnorm"))
    for seed in (0, 1, 2):  # lr 0.01: every kind trains, but `none` seed 0 ends at chance (10.5% < 12%)
        for kind in ("none", "dropout", "batchnorm"):
            acc = 0.105 if (kind, seed) == ("none", 0) else 0.9 - seed / 100
            make_run(root / f"optim.lr=0.01,reg={kind},seed={seed}", kind, seed, lr=0.01, test_acc=(0.5, acc))
    ct = check(collect([root], progress=False))
    garbin = [r for r in ct.df.to_dict("records") if r["text"].startswith("Garbin et al. 2020")]
    assert len(garbin) == 1
    g = garbin[0]
    assert (g["a"], g["b"]) == ("dropout", "batchnorm") and g["context"].startswith("pooled over")
    assert "dropout fails to train more often than batchnorm" in g["text"]
    assert (g["value_a"], g["value_b"]) == (pytest.approx(200 / 3), 0.0)  # 6/9 vs 0/9
    assert g["test"].startswith("exact stratified") and g["p_value"] == pytest.approx(0.005)  # two-sided: 2 / 20^2
    # the difference in failed fractions gets a 95% CI (Newcombe's, on the pooled 6/9 vs 0/9), and says so
    lo, hi = stats.proportion_difference_ci(6, 9, 0, 9)
    assert (g["diff_ci_low"], g["diff_ci_high"]) == (pytest.approx(100 * lo), pytest.approx(100 * hi)) and 0 < lo < hi
    assert "Newcombe's interval on the counts pooled over the strata" in g["note"]
    none_vs_dropout = next(r for r in ct.df.to_dict("records")
                           if r["claim"].startswith("T") and (r["a"], r["b"]) == ("dropout", "none"))
    assert none_vs_dropout["value_b"] == pytest.approx(700 / 9)  # 7/9: 6 diverged, 1 at chance
    md = report_cli.main([str(root), "--no-progress"]).read_text()
    assert "Garbin et al. 2020 (their CIFAR-10 CNN at RMSprop lr 0.001, one run each: 10.01% with dropout, " \
           "84.47% with batch norm): with dropout the network collapses" in md
    lr_tab = pd.read_csv(root / "report" / "tables" / "lr_tolerance.csv", index_col=0)
    cell = lr_tab.loc["none", "0.01"]  # (10.5 + 89 + 88) / 3
    assert cell.startswith("62.50 ± ") and cell.endswith("(n=3); failed to train 1/3 (1 at chance)")
    assert lr_tab.loc["dropout", "0.3"] == "–; failed to train 3/3 (3 diverged)"


@pytest.mark.slow
def test_lr_cifar10_cnn_design_lets_the_trainability_rows_pass_holm(tmp_path):
    """Why configs/exp/lr_cifar10_cnn.yaml adds seeds 3-4 at lr 1.0 and 0.3: in its grid (5 rates x 4
    variants), with 3 seeds per arm, the Garbin row cannot pass Holm even when every unnormalised run
    fails at the two highest rates and no batch-norm run does; with 5 seeds at those rates it can."""
    def garbin(root, extra):
        for i, lr in enumerate((0.01, 0.03, 0.1, 0.3, 1.0)):
            for kind in ("none", "dropout", "batchnorm", "both"):
                for seed in (0, 1, 2) + (extra if lr >= 0.3 else ()):
                    fails = kind in ("none", "dropout") and lr >= 0.3
                    acc = 0.6 + ((seed * 7 + i * 3 + len(kind)) % 5) / 100
                    make_run(root / f"optim.lr={lr},reg={kind},seed={seed}", kind, seed, lr=lr,
                             test_acc=(0.9,) if fails else (0.3, 0.5, acc), status="diverged" if fails else "completed")
        coll = collect([root], progress=False)
        ct = C.claims(coll, tables.baselines(coll, tables.parse_baseline("reg=none")))
        return ct, next(r for r in ct.df.to_dict("records") if r["text"].startswith("Garbin"))
    ct, g = garbin(tmp_path / "three", ())
    assert ct.m == 34 and g["p_value"] == pytest.approx(0.005) and g["p_holm"] > 0.05 and g["verdict"] == "inconclusive"
    # the rank tests of claims 1, 2a and 2b cannot reach 0.05 with 3 runs per arm (smallest p 0.1) at any
    # rate: 15 of the 34 (claim 7 compares 'both' with each single one, so both pairs add a trainability
    # row), and the report's rule says so
    assert ct.unreachable == 15
    assert "15 of the 34 cannot reach p < 0.05 with the runs at hand" in sections.claims_rule(ct.m, ct.unreachable)
    ct, g = garbin(tmp_path / "five", (3, 4))
    assert ct.unreachable == 11  # 5 vs 5 can reach it, but not where every run of both arms diverged (all tied)
    assert g["p_value"] == pytest.approx(2 / 252 ** 2) and g["p_holm"] < 0.005 and g["verdict"] == "supported"


def test_timing_claims_name_what_differs(tmp_path):
    root = tmp_path / "t"
    for seed in range(3):
        commit = {"git_commit": "c0ffee" if seed else "abc"}   # both arms span the same two commits
        make_run(root / f"reg=none,seed={seed}", "none", seed, sec=1.0 + seed / 10,
                 env={"threads": 1, "parallel_runs": 1, **commit})
        make_run(root / f"reg=batchnorm,seed={seed}", "batchnorm", seed, sec=2.0 + seed / 10,
                 env={"threads": 2, "platform": "Linux-x", "cpu_count": 8, "parallel_runs": 6 - 3 * (seed > 0), **commit})
    six = rows(check(collect([root], progress=False)))["6"]
    assert six["test"] == "Welch on log values" and six["diff"] > 1
    assert "thread counts differ (2 vs 1)" in six["note"]
    assert "runs sharing the machine differ (3, 6 vs 1)" in six["note"]
    assert "commits differ within each arm, the same mix in both (abc, c0ffee)" in six["note"]
    assert "first epoch" in six["note"]   # these runs record no steady-state time: the note says so
    # runs that shared the machine time the contention too: no test, out of the Holm family
    assert six["verdict"] == C.UNEQUAL and math.isnan(six["p_holm"]) and "up to 6 runs shared" in six["reason"]


def test_report_files_and_contents(sweep):
    root, out, md_path, before = sweep
    assert md_path == out / "report.md"
    md = md_path.read_text()
    for name in ("reg=both,seed=3", "reg=none,seed=3", "reg=dropout,seed=3"):
        assert name in md  # diverged, failed, unfinished: listed by name
    assert "diverged at epoch 2" in md and "unfinished: 1/3 epochs" in md
    assert "unreadable summary.json" in md and "empty_folder" in md
    assert "## The article's comparison table, measured" in md and "## Claims check" in md
    assert "Welch" in md and "alpha = 0.05" in md and "**m = 9**" in md  # rows with a p: 1-7 less 6, T1-T2
    assert "Minimal effects" in md and "0.2 pp of accuracy" in md and "1 epoch" in md and "10% of seconds" in md
    assert "intention to treat" in md and "Best test accuracy (oracle" in md
    assert_honest_wording(md)
    cl = pd.read_csv(out / "tables/claims.csv", na_values=["n/a"])
    for col in ("diff", "diff_ci_low", "diff_ci_high", "hedges_g", "p_value", "p_holm", "verdict", "test",
                "n_a", "n_b", "seeds_per_arm", "note"):
        assert col in cl.columns, col
    assert "p" not in cl.columns
    assert cl["p_holm"].tolist() == pytest.approx(stats.holm(cl["p_value"]).tolist(), nan_ok=True)
    decided = cl[cl["verdict"].isin(["supported", "not supported"])]
    assert len(decided) and (decided["p_holm"] < 0.05).all()
    ranked = cl.dropna(subset=["p_value"]).sort_values("p_value")
    assert (ranked["p_holm"].diff().dropna() >= 0).all() and (ranked["p_holm"] >= ranked["p_value"]).all()
    assert (cl["test"] == "Fisher").any()          # a sweep with a diverged run has a trainability row
    assert not cl["verdict"].str.contains("exact").any()
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


@pytest.mark.slow
def test_several_dirs(tmp_path):
    a = compare_sweep(tmp_path / "a", kinds={k: ACC[k] for k in ("none", "batchnorm")}, seeds=(0, 1))
    b = compare_sweep(tmp_path / "b", kinds={k: ACC[k] for k in ("none", "batchnorm")}, seeds=(0, 1),
                      data="fashion_mnist")
    with pytest.raises(DropbnError, match="--out"):
        report_cli.main([str(a), str(b)])
    md = report_cli.main([str(a), str(b), "--out", str(tmp_path / "both"), "--no-progress"]).read_text()
    assert "none, data=fashion_mnist" in md and "batchnorm, data=mnist" in md
    assert "### data=fashion_mnist" in md  # one comparison table per context, each with its baseline


@pytest.mark.slow
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
    assert_honest_wording(md)
    assert (root / "report" / "figures" / "lr_tolerance.png").is_file()
    lr_tab = pd.read_csv(root / "report" / "tables" / "lr_tolerance.csv", index_col=0)
    assert list(lr_tab.index) == ["none", "batchnorm"]
    assert lr_tab.loc["none", "1"] == "–; failed to train 2/2 (2 diverged)"
    assert lr_tab.loc["batchnorm", "1"].endswith("(n=2); failed to train 0/2")
    # a second report of the same folder ignores the first one's output (not a run, not "skipped")
    again = report_cli.main([str(root), "--no-progress"]).read_text()
    assert "**12 runs**" in again and "Skipped folders" not in again


@pytest.mark.slow
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
    assert "## Variance shift" in md and "1.500 [1.500–1.500] (n=2)" in md and "both, n_train=full" in md
    assert "Hendrycks & Gimpel" in md and "Uout" in md and "not one of Li et al.'s remedies" in md
    assert_honest_wording(md)
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_runs_csv_round_trip_and_new_summary_fields(tmp_path):
    """A report's runs.csv reads back into the same claims; fields newer runs carry (steady-state time,
    validation-selected test accuracy, training-data variance ratios) show up when present."""
    root = compare_sweep(tmp_path / "study", kinds={k: ACC[k] for k in ("none", "batchnorm", "dropout_before_bn")})
    coll = collect([root], progress=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "runs.csv").write_text(render.runs_csv(coll.runs))
    back = read_runs_csv(tmp_path / "a" / "runs.csv")
    assert list(back.runs["label"].cat.categories) == list(coll.runs["label"].cat.categories)
    before, after = check(coll).df, check(back).df
    assert after["verdict"].tolist() == before["verdict"].tolist()
    assert after["p_value"].tolist() == pytest.approx(before["p_value"].tolist(), nan_ok=True)

    runs = coll.runs.copy()
    bn = runs["kind"] != "none"
    runs["first_epoch_seconds"] = runs["seconds_per_epoch"] * 1.5     # these runs ran 3 epochs
    runs["test_acc_at_best_epoch"], runs["best_epoch_by"] = runs["final_test_acc"] - 0.001, "val"
    shift = runs["kind"].map({"batchnorm": 1.05, "dropout_before_bn": 3.0}) * (1 + runs["seed"] / 20)
    layer = [[{"name": "block1.norm", "mean_ratio": 2 * v, "median_ratio": v, "max_ratio": 9 * v}] if b else []
             for v, b in zip(shift, bn)]
    for key, val in {"worst_layer": "block1.norm", "worst_mean_ratio": 2 * shift, "worst_median_ratio": shift,
                     "worst_median_layer": "block1.norm",
                     "worst_max_ratio": 9 * shift, "train_worst_layer": "block1.norm",
                     "train_worst_mean_ratio": 1.8 * shift, "train_worst_median_ratio": 0.9 * shift,
                     "train_worst_max_ratio": 8 * shift, "test_acc": runs["final_test_acc"],
                     "test_acc_recalibrated": runs["final_test_acc"] + (shift - 1) / 1000}.items():
        runs[f"vs_{key}"] = pd.Series(val, index=runs.index).where(bn)
    runs["vs_layers"], runs["vs_train_layers"] = layer, layer
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "runs.csv").write_text(render.runs_csv(runs))
    new = read_runs_csv(tmp_path / "b" / "runs.csv")
    assert new.runs["val_selected_test_acc"].notna().all() and new.runs["vs_train_layers"].map(len).sum() == 6
    md = render.build(new, tmp_path / "report", sources=["runs.csv"]).read_text()
    assert "seconds per epoch (steady state, first epoch excluded)" in md and "first epoch (s)" in md
    assert "Test acc. at the epoch picked on validation" in md
    assert "training data, worst layer by median: mean ratio" in md and "Spearman" in md
    corr = pd.read_csv(tmp_path / "report" / "tables" / "variance_shift_correlation.csv")
    assert corr["Spearman rho"].iloc[0] == pytest.approx(1.0) and (corr["runs"] == 6).all()
    lay = pd.read_csv(tmp_path / "report" / "tables" / "variance_shift_layers.csv")
    assert set(lay["data"]) == {"test", "training"} and len(lay) == 12
    six = rows(check(new))["6"]
    assert "steady state" in six["note"]
    assert (tmp_path / "report" / "figures" / "variance_shift_layers.png").is_file()
    assert_honest_wording(md)


def test_many_configurations_draw_small_multiples(tmp_path):
    coll = collect([lr_study(tmp_path / "lr", [0.01, 0.1, 1.0], kinds=("none", "dropout", "batchnorm"),
                             seeds=(0,))], progress=False)
    assert len(coll.runs["label"].cat.categories) == 9
    f = facet(coll.runs, coll.dims)
    assert f.key == "optim.lr" and f.panels == ["lr=0.01", "lr=0.1", "lr=1"]
    assert f.series == ["none", "dropout", "batchnorm"] and f.of["dropout, lr=0.1"] == ("lr=0.1", "dropout")
    assert facet(coll.runs[coll.runs["kind"] == "none"], coll.dims) is None     # few lines: one panel


def test_accuracy_bands_stay_within_0_100():
    import matplotlib.pyplot as plt
    df = pd.DataFrame({"epoch": [1, 1, 2, 2], "test_acc": [0.99, 1.0, 0.995, 1.0], "configuration": "x"})
    fig, ax = plt.subplots()
    figures.line_band(ax, df, "epoch", "test_acc", "configuration", ["x"], {"x": "C0"}, scale=100)
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(100.0) and ys.min() < 100       # unclipped, the t band would pass 100
    plt.close(fig)


def test_runs_csv_keeps_no_absolute_data_path():
    """A committed report carries no machine path: data locations keep only their file name."""
    import pandas as pd

    from dropbn.report.render import runs_csv

    runs = pd.DataFrame({"label": ["none"], "cfg.data.path": ["/somewhere/data/cifar10-jpeg.tar.gz"],
                         "cfg.data.root": ["rel/root"]})
    out = runs_csv(runs)
    assert "/somewhere" not in out and "cifar10-jpeg.tar.gz" in out and "rel/root" in out


def test_baseline_help_names_every_report_kind():
    from dropbn.commands.report_cmd import parser
    from dropbn.report.collect import KIND_ORDER
    text = " ".join(parser().format_help().split())
    assert all(k in text for k in KIND_ORDER) and "dropout_after_bn" in text


def test_published_numbers_sit_next_to_ours(sweep, tmp_path):
    """The anchors section: each published number that is about a configuration of the report, with our
    mean and 95% CI over its completed runs, ours − published, the runs that did not complete, and
    both settings; an anchor that needs max-norm appears only for runs trained with it, and none for a
    configuration trained on a subset of the training images."""
    _root, out, md_path, _ = sweep
    md = md_path.read_text()
    assert "## Published numbers next to ours" in md
    tab = pd.read_csv(out / "tables" / "anchors.csv")
    assert list(tab["published"]) == ["1.60%", "1.25%"] and list(tab["configuration here"]) == ["none", "dropout"]
    drop = tab.iloc[1]
    err = [100 * (1 - a) for a in ACC["dropout"]]
    ci = stats.mean_ci(err)
    assert drop["ours (mean ± 95% CI)"] == f"{ci.mean:.2f}% ± {ci.half:.2f}"
    assert drop["ours − published (pp)"].startswith(f"{ci.mean - 1.25:+.2f} [{ci.mean - 1.25 - ci.half:+.2f}, ")
    assert drop["n"] == "3 completed, 1 not completed"   # the unfinished seed 3 is counted, not dropped
    assert "ReLU MLP 64x64" in drop["setting here"] and "no max-norm" in drop["setting here"]
    assert "60,000 training images" in drop["setting here"] and "3 epochs, constant lr" in drop["setting here"]
    assert "Garbin" not in md.split("## Published numbers")[1].split("##")[0]  # not a CIFAR CNN

    root = compare_sweep(tmp_path / "maxnorm", kinds={"dropout": ACC["dropout"]})
    for f in root.glob("*/summary.json"):  # the same runs, trained with max-norm
        s = json.loads(f.read_text())
        s["config"]["reg"]["max_norm"] = 3.5
        f.write_text(json.dumps(s))
    tab = A.anchor_table(collect([root], progress=False).runs, tables.group_stats(collect([root], progress=False)))
    assert list(tab["published"]) == ["1.25%", "1.06%"] and "max-norm 3.5" in tab["setting here"].iloc[1]

    none = compare_sweep(tmp_path / "none_only", kinds={"batchnorm": ACC["batchnorm"]})
    assert not len(A.anchor_table(collect([none], progress=False).runs,
                                  tables.group_stats(collect([none], progress=False))))

    small = compare_sweep(tmp_path / "subset", kinds={"dropout": ACC["dropout"]}, train_size=1000)
    assert not len(A.anchor_table(collect([small], progress=False).runs,  # 1,000 images: no match
                                  tables.group_stats(collect([small], progress=False))))
    fashion = compare_sweep(tmp_path / "fashion", kinds={"none": ACC["none"], "dropout": ACC["dropout"]},
                            data="fashion_mnist")
    tab = A.anchor_table(collect([fashion], progress=False).runs, tables.group_stats(collect([fashion], progress=False)))
    assert list(tab["published"]) == ["90.05%"] and list(tab["configuration here"]) == ["none"]
    assert "Fashion-MNIST" in tab["setting here"].iloc[0] and "Srivastava" not in " ".join(tab["source"])
    held_out = compare_sweep(tmp_path / "held_out", kinds={"dropout": ACC["dropout"]}, train_size=55000)
    for f in held_out.glob("*/summary.json"):  # all but a 5,000-image validation split
        s = json.loads(f.read_text())
        s["config"]["data"]["val_size"] = 5000
        f.write_text(json.dumps(s))
    assert len(A.anchor_table(collect([held_out], progress=False).runs,
                              tables.group_stats(collect([held_out], progress=False)))) == 1


def _files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_a_report_is_replaced_whole_not_patched(tmp_path):
    """Issue 27: tables of a context whose runs are gone do not outlive them in report/."""
    root = tmp_path / "s"
    for data in ("mnist", "fashion_mnist"):
        for seed in (0, 1):
            make_run(root / f"data={data},seed={seed}", "none", seed, data=data, test_acc=(0.9, 0.95 + 0.01 * seed))
    report_cli.main([str(root), "--no-progress"])
    first = _files(root / "report")
    stale = {f for f in first if "fashion" in f.lower()}
    assert stale  # comparison_data=...csv/.tex of each data set
    (root / "report" / "notes.txt").write_text("written by hand")
    for run in root.glob("data=fashion_mnist,*"):
        shutil.rmtree(run)
    md = report_cli.main([str(root), "--no-progress"]).read_text()
    now = _files(root / "report")
    assert not now & stale and "notes.txt" not in now
    listed = {line[3:-1] for line in md.splitlines() if line.startswith("- `")}
    assert now == listed | {"report.md"}  # every file in report/ is one this call wrote
    assert sorted(p.name for p in root.iterdir()) == sorted([*(p.name for p in root.glob("data=*")), "report"])


def test_a_report_that_cannot_be_written_leaves_the_previous_one(tmp_path, monkeypatch):
    import errno

    root = tmp_path / "s"
    for seed in (0, 1):
        make_run(root / f"seed={seed}", "none", seed)
    (root / "report" / "tables").mkdir(parents=True)  # the previous report
    (root / "report" / "report.md").write_text("# the previous report\n")
    (root / "report" / "tables" / "comparison.csv").write_text("a,b\n1,2\n")
    before = {f: (root / "report" / f).read_bytes() for f in _files(root / "report")}

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(render, "atomic_write_text", disk_full)  # the first table fails
    with pytest.raises(DropbnError, match=f"report: cannot write {root / 'report'} \\(No space left on device\\); "
                                          "the previous report, if any, is unchanged"):
        report_cli.main([str(root), "--no-progress"])
    assert {f: (root / "report" / f).read_bytes() for f in _files(root / "report")} == before
    assert sorted(p.name for p in root.iterdir()) == ["report", "seed=0", "seed=1"]  # no temp folder left
