"""`dropbn study`: tune on validation -> select -> final on test -> report, end to end.

One tiny real study (MNIST subset, two variants, two learning rates, one tune seed, two
final seeds, two epochs) is started, killed with SIGKILL once its first tune run has
finished, run again to the end, and run a third time. Checks: the kill resumes without
retraining finished runs; the third call trains nothing; the selection follows the
validation numbers and never reads a test metric; final runs use the selection and fresh
seeds; the report draws its claims from final/ and has the tuned section. Bad study inputs
are one line with exit code 2. The selection rule is also tested on hand-made run folders.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dropbn.study import selection as S
from dropbn.config.claims_file import load as load_claims
from dropbn.stats import holm as holm_adjust
from dropbn.study.plan import Plan
from dropbn.config.validation import CONFIG_DIR
from dropbn.record.identity import same_config
from dropbn.cli import main as cli_main

from .conftest import DATA_DIR, DROPBN, ROOT, call_cli, needs_joblib, needs_mnist, needs_submitit, run_cli

ARGS = ["+exp=tuned_mnist_mlp", "data.train_size=1000", "data.val_size=500", "train.eval_train_size=500",
        "model.hidden=[32]", "train.epochs=2", "train.schedule=none", "train.progress=false",
        "train.diagnostics=false", "device=cpu", "train.threads=1",
        "study.variants.reg=[none,batchnorm]", "study.search.optim.lr=[0.01,0.3]",
        "study.tune_seeds=[0]", "study.final_seeds=[100,101]"]
NAME = "tuned_mnist_mlp"


def tree_state(root: Path) -> dict:
    """{run file: (mtime_ns, size)} of every summary.json, metrics.csv and train.log under root."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for pat in ("*/summary.json", "*/metrics.csv", "*/train.log") for p in root.glob(pat)}


def completed_runs(stage: Path) -> list[Path]:
    out = []
    for s in stage.glob("*/summary.json"):
        if json.loads(s.read_text()).get("status") == "completed":
            out.append(s.parent)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study: killed after its first tune run, resumed, then run once more."""
    root = tmp_path_factory.mktemp("study")
    claims = root / "claims.yaml"  # the article's claims, registered before the final runs
    shutil.copy(CONFIG_DIR / "claims" / "article.yaml", claims)
    args = ["study", *ARGS, f"out_root={root}", f"study.claims=[{claims}]"]
    sdir = root / NAME
    p = subprocess.Popen([DROPBN, *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ), start_new_session=True)
    t0 = time.monotonic()
    while not completed_runs(sdir / "tune"):
        assert p.poll() is None, p.communicate()[0][-3000:]
        assert time.monotonic() - t0 < 240, "no tune run finished in time"
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # the study and its training sweep, mid-stage
    p.communicate()
    killed = {str(d.name): (d / "summary.json").stat().st_mtime_ns for d in completed_runs(sdir / "tune")}
    assert not (sdir / S.SELECTED).exists()

    second = call_cli(args, cwd=root)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    before = tree_state(sdir / "tune") | {f"final/{k}": v for k, v in tree_state(sdir / "final").items()}
    third = call_cli(args, cwd=root)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    after = tree_state(sdir / "tune") | {f"final/{k}": v for k, v in tree_state(sdir / "final").items()}
    return {"root": root, "dir": sdir, "killed": killed, "second": second, "third": third, "claims": claims,
            "before": before, "after": after, "sel": yaml.safe_load((sdir / S.SELECTED).read_text())}


def val_table(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if k in ("epoch", "val_acc", "val_loss")} for r in csv.DictReader(f)]


@needs_mnist
@pytest.mark.slow
def test_kill_resumes_without_retraining_and_a_finished_study_trains_nothing(study):
    sdir = study["dir"]
    for name, mtime in study["killed"].items():  # finished before the kill: not trained again
        assert (sdir / "tune" / name / "summary.json").stat().st_mtime_ns == mtime
    assert "$ dropbn train" in study["second"].stdout
    out = study["third"].stdout
    assert "$ dropbn train" not in out and "run(s) to train" not in out
    assert out.count("run(s) done") == 4  # tune + final, two variants
    assert study["after"] == study["before"]  # no run file touched by the third call
    assert len(study["before"]) == 3 * 8  # 4 tune + 4 final runs, three files each
    assert (sdir / "report" / "report.md").is_file()


@needs_mnist
@pytest.mark.slow
def test_selection_follows_the_validation_numbers(study):
    sel, tune = study["sel"], study["dir"] / "tune"
    assert sel["select"] == "val_acc" and sel["tune_seeds"] == [0] and sel["final_seeds"] == [100, 101]
    assert [v["name"] for v in sel["variants"]] == ["reg=none", "reg=batchnorm"]
    for v in sel["variants"]:
        assert v["searched"] == ["optim.lr"] and "reg.dropout" in v["skipped"]  # no dropout in these variants
        best = None
        for c in v["candidates"]:
            (run,) = c["runs"]
            rows = val_table(tune / run["run"])
            top = max(rows, key=lambda r: (r["val_acc"], -r["val_loss"], -r["epoch"]))
            assert c["best_epoch"] == int(top["epoch"]) and c["score"] == pytest.approx(top["val_acc"])
            key = (top["val_acc"], -top["val_loss"])
            if best is None or key > best[0]:
                best = (key, c["point"], int(top["epoch"]))
        assert v["selected"]["point"] == best[1] and v["selected"]["best_epoch"] == best[2]
        assert v["selected"]["final_epochs"] == best[2]  # train.schedule=none: the selected epoch count


@needs_mnist
@pytest.mark.slow
def test_selection_never_reads_a_test_metric(study, tmp_path):
    """Test metrics of the tune runs anti-correlated with validation, or removed: same selection."""
    sel = study["sel"]
    cands = {v["name"]: [{"point": c["point"], "runs": c["runs"]} for c in v["candidates"]] for v in sel["variants"]}

    def scores(tune):
        return {n: [(p.point, p.rank, p.best_epoch, p.mean, p.other) for p in S.score_variant(tune, c, "val_acc")]
                for n, c in cands.items()}

    reference = scores(study["dir"] / "tune")
    for mode in ("flip", "drop"):
        tune = tmp_path / mode
        shutil.copytree(study["dir"] / "tune", tune)
        for m in tune.glob("*/metrics.csv"):
            rows = list(csv.DictReader(m.open()))
            for r in rows:
                for k in [k for k in r if k.startswith("test_")]:
                    if mode == "drop":
                        del r[k]
                    else:
                        r[k] = str(1 - float(r["val_acc"])) if k == "test_acc" else str(float(r["val_loss"]) * -5)
            with m.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        for s in tune.glob("*/summary.json"):
            d = json.loads(s.read_text())
            for k in [k for k in d if "test" in k or k in ("best_epoch", "generalization_gap", "loss_gap")]:
                d[k] = None if mode == "drop" else -1.0
            s.write_text(json.dumps(d))
        assert scores(tune) == reference


@needs_mnist
@pytest.mark.slow
def test_final_runs_use_the_selection_and_fresh_seeds(study):
    sel, final = study["sel"], study["dir"] / "final"
    for v in sel["variants"]:
        assert [r["seed"] for r in v["final_runs"]] == [100, 101]
        for r in v["final_runs"]:
            s = json.loads((final / r["run"] / "summary.json").read_text())
            assert s["status"] == "completed" and s["seed"] == r["seed"]
            c = s["config"]
            assert "study" not in r["run"]  # no study key in a run's folder name or identity
            assert same_config(c, dict(c, study={"final_seeds": [7]})) and not same_config(c, dict(c, seed=7))
            assert c["optim"]["lr"] == float(v["selected"]["point"]["optim.lr"])
            assert c["reg"]["norm"] == ("batch" if v["name"] == "reg=batchnorm" else "none")
            assert s["epochs_completed"] == v["selected"]["final_epochs"]
            assert s["data_sizes"]["val"] == 500  # study.final_val_size=null keeps the split
    tune_names = {p.name for p in (study["dir"] / "tune").iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert all("seed=0" in n for n in tune_names) and len(tune_names) == 4


@needs_mnist
@pytest.mark.slow
def test_report_claims_from_final_and_a_tuned_section(study, tmp_path):
    rep = study["dir"] / "report"
    md = (rep / "report.md").read_text()
    for part in ("A tuned study", "## Tuned hyperparameters", "### Search space", "### Selection",
                 "### Every candidate", "### Sensitivity", "`optim.lr`", "## Claims check"):
        assert part in md, part
    assert (rep / "figures" / "sensitivity_reg=none.png").stat().st_size > 1000
    runs = list(csv.DictReader((rep / "runs.csv").open()))
    assert sorted(int(float(r["seed"])) for r in runs) == [100, 100, 101, 101]  # final runs only
    assert {r["label"] for r in runs} == {"none", "batchnorm"}  # tuned lr is part of the variant
    # `dropbn report` on the study folder writes the same report
    out = tmp_path / "again"
    cli_main(["report", str(study["dir"]), "--out", str(out), "--no-progress"])
    again = (out / "report.md").read_text()
    strip = [ln for ln in md.splitlines() if not ln.startswith("Generated")]
    assert [ln for ln in again.splitlines() if not ln.startswith("Generated")] == strip
    assert "Choices at an end" not in md  # two values searched: every choice is an end, none is flagged


@pytest.mark.slow
@needs_mnist
def test_claims_registered_before_the_final_runs_are_confirmatory_and_edited_ones_exploratory(study, tmp_path):
    sdir, reg = study["dir"], study["sel"]["registered_claims"]
    assert reg["sha256"] == load_claims([study["claims"]]).sha256() and reg["sources"] == [str(study["claims"])]
    started = min(c.stat().st_mtime for c in (sdir / "final").glob("*/.hydra/config.yaml"))
    assert datetime.fromisoformat(reg["registered_at"]).timestamp() <= started  # kept by the later calls
    cl = pd.read_csv(sdir / "report" / "tables" / "claims.csv", na_values=["n/a"])
    assert set(cl["registration"]) == {"confirmatory"} and cl["p_holm"].notna().any()
    assert "**pre-registered**" in (sdir / "report" / "report.md").read_text()
    # the file edited after the final stage started: claim 4 is exploratory, raw p only, outside the family
    edited = tmp_path / "claims.yaml"
    edited.write_text(study["claims"].read_text().replace("Batch norm improves accuracy", "Batch norm raises accuracy"))
    cli_main(["report", str(sdir), "--claims", str(edited), "--out", str(tmp_path / "r"), "--no-progress"])
    cl = pd.read_csv(tmp_path / "r" / "tables" / "claims.csv", na_values=["n/a"]).set_index("claim")
    assert cl.loc["4", "registration"] == "exploratory" and pd.isna(cl.loc["4", "p_holm"])
    assert cl.loc["4", "verdict"].startswith("exploratory: ") and "raw p" in cl.loc["4", "verdict"]
    family = cl[cl.index != "4"]
    assert set(family["registration"]) == {"confirmatory"}
    assert family["p_holm"].tolist() == pytest.approx(list(holm_adjust(family["p_value"])), nan_ok=True)


@pytest.mark.slow
def test_report_flags_a_choice_at_the_end_of_the_searched_range(study, tmp_path):
    copy = tmp_path / NAME
    shutil.copytree(study["dir"], copy, ignore=shutil.ignore_patterns("report", "checkpoint.pt"))
    sel = yaml.safe_load((copy / "selected.yaml").read_text())
    chosen = {v["name"]: v["selected"]["point"]["optim.lr"] for v in sel["variants"]}
    sel["search_space"]["optim.lr"] = ["0.001", "0.005", chosen["reg=none"]]  # none's choice is the largest
    (copy / "selected.yaml").write_text(yaml.safe_dump(sel))
    cli_main(["report", str(copy), "--no-progress"])
    md = (copy / "report" / "report.md").read_text()
    assert (f"**reg=none: `optim.lr={chosen['reg=none']}` is the largest value searched**: the best value may "
            f"lie beyond the range") in md


def test_search_edge_needs_three_numeric_values():
    space = {"optim.lr": ["0.01", "0.03", "0.1", "0.3"], "reg.dropout": ["0.2", "0.5"], "reg": ["a", "b", "c"]}
    assert S.at_search_edge({"optim.lr": "0.3", "reg.dropout": "0.5"}, space) == [("optim.lr", "largest")]
    assert S.at_search_edge({"optim.lr": "0.01"}, space) == [("optim.lr", "smallest")]
    assert S.at_search_edge({"optim.lr": "0.03", "reg": "c"}, space) == []


# ---------------------------------------------------------------- bad input: one line, exit 2

BAD = [
    (["study.final_seeds=[0,100]"], "study.final_seeds=[0, 100]: must not share seeds with study.tune_seeds"),
    (["data.val_size=0"], "data.val_size=0: must be > 0 for dropbn study"),
    (["study.search.optim.lr=[]"], "study.search.optim.lr=[]: must be a non-empty list"),
    (["study.search.optim.lr=0.1"], "study.search.optim.lr=0.1: must be a list of values"),
    (["+study.search.optim.lrr=[0.1]"], "study.search.optim.lrr=[0.1]: unknown key; did you mean optim.lr?"),
    (["study.search.optim.lr=[-1,0.1]"], "study.search.optim.lr=-1: must be a number"),
    (["study.variants.reg=[none,bogus]"], "study.variants.reg='bogus': allowed: batchnorm, both, dropout"),
    (["train.steps=600"], "train.steps=600: dropbn study budgets its runs in epochs"),
    (["study.select=test_acc"], "study.select='test_acc': allowed: val_acc, val_loss"),
    (["study.searcher=random"], "study.searcher='random': allowed: grid, optuna"),
    (["study.tune_seeds=[]"], "study.tune_seeds=[]: must be a non-empty list of integers"),
    (["optim.lr=0.1,0.3"], "a sweep; dropbn study runs its own sweeps"),
    (["seed=3"], "the study sets the seeds"),
    (["reg=both"], "reg is set on the command line and by the study"),
    (["+study.search.seed=[1,2]"], "study.search.seed=[1, 2]: is not a setting of what a run computes"),
    (["study.bogus=1"], "study.bogus=1: unknown key"),
    (["study.search.optim.momentum=[0.9]"], "study.search.optim.momentum: not in this preset's study node; add "
                                            "it with Hydra's +: +study.search.optim.momentum=[0.9]"),
    (["-m"], "dropbn study takes config overrides only"),
    # a whole mapping replaces the preset's (issue 27: {} kept the default variants)
    (["study.variants={}"], "study.variants={}: must name at least one compared key"),
    (["study.variants={optim:[sgd,bogus]}"], "study.variants.optim='bogus': allowed: adam, adamw, rmsprop, sgd"),
    (["study.variants={optim:sgd}"], "study.variants.optim='sgd': must be a list of values"),
    (["study.search={optim:{lr:[-1]}}"], "study.search.optim.lr=-1: must be a number"),
]


@pytest.mark.parametrize("extra,expect", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_study_input_is_one_line_exit_2(extra, expect, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["study", "+exp=tuned_mnist_mlp", f"out_root={tmp_path}", *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    assert not (tmp_path / NAME).exists()  # nothing trained, nothing written


def test_whole_mappings_replace_the_presets_and_a_rejected_search_value_is_skipped_for_its_variant(tmp_path):
    """Issue 27: `study.variants={optim:[sgd,adam]}` compares optimizers (it said "unknown key"); a search
    value one variant rejects (batch norm at batch size 1) is skipped for that variant only, with a line,
    instead of aborting the study."""
    plan = Plan(["+exp=tuned_mnist_mlp", f"out_root={tmp_path}", "study.variants={optim:[sgd,adam]}",
                 "study.search={}"])
    try:
        assert [(v.name, v.search) for v in plan.variants] == [("optim=sgd", []), ("optim=adam", [])]
    finally:
        plan.hy.close()
    plan = Plan(["+exp=tuned_mnist_mlp", f"out_root={tmp_path}", "study.variants={reg:[none,batchnorm]}",
                 "study.search={train:{batch_size:[1,32]}}"])
    try:
        none, bn = plan.variants
        assert (none.name, none.search, none.skipped) == ("reg=none", [("train.batch_size", [1, 32])], {})
        assert (bn.name, bn.search) == ("reg=batchnorm", [("train.batch_size", [32])])
        assert bn.skipped == {"train.batch_size=1": "train.batch_size=1: batch norm needs batches of at least 2"}
    finally:
        plan.hy.close()
    assert not (tmp_path / NAME).exists()


@pytest.mark.slow
def test_val_size_zero_through_the_real_command(tmp_path):
    r = run_cli(["study", "+exp=tuned_mnist_mlp", "data.val_size=0", f"out_root={tmp_path}"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "dropbn: error: data.val_size=0: must be > 0 for dropbn study: the tune stage selects on a validation "
        "split held out from the training set (e.g. data.val_size=5000)"]


def test_optuna_missing_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(SystemExit) as e:
        cli_main(["study", "+exp=tuned_mnist_mlp", "study.searcher=optuna", f"out_root={tmp_path}"])
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "study.searcher=optuna needs Optuna: pip install 'dropbn[search]'" in line


# ---------------------------------------------------------------- the plan of each preset

@pytest.mark.parametrize("exp", ["tuned_mnist_mlp", "tuned_fashion_mlp", pytest.param(
    "tuned_cifar10_cnn", marks=pytest.mark.skipif(not (DATA_DIR / "cifar10-jpeg.tar.gz").exists(),
                                                  reason="the CIFAR-10 JPEG mirror is not under the data root"))])
@pytest.mark.slow
def test_presets_plan_every_variant_with_the_same_space(exp, tmp_path):
    from dropbn.study.stages import Study

    st = Study([f"+exp={exp}", f"out_root={tmp_path}"])
    try:
        spec = st.spec
        assert [v.name for v in st.variants] == [f"reg={r}" for r in ("none", "dropout", "batchnorm", "both")]
        # issue 13: 8-12 final seeds on the MLPs; issue 14: >= 3 for the CPU-sized CIFAR-10 study
        assert not set(spec.tune_seeds) & set(spec.final_seeds) and len(spec.final_seeds) >= (3 if "cifar" in exp else 8)
        assert all(v.cfg.data.val_size > 0 and v.cfg.train.schedule == "cosine" for v in st.variants)
        lr = dict(spec.search)["optim.lr"]
        for v in st.variants:
            assert dict(v.search)["optim.lr"] == lr  # the same space for every variant...
            has_dropout = v.cfg.reg.dropout > 0
            assert ("reg.dropout" in dict(v.search)) == (has_dropout and "reg.dropout" in dict(spec.search))
            assert ("reg.dropout" in v.skipped) == (not has_dropout and "reg.dropout" in dict(spec.search))
        # the run count the preset's header documents (and results/README.md repeats) is the planned one
        header = next(line for line in (CONFIG_DIR / "exp" / f"{exp}.yaml").read_text().splitlines()
                      if line.startswith("# Runs:"))
        documented = sum(map(int, re.search(r"= (\d+(?: \+ \d+)*)", header).group(1).split(" + ")))
        planned = sum(len(sw.jobs) for sw in st.tune_sweeps().values()) + len(st.variants) * len(spec.final_seeds)
        assert planned == documented, header
    finally:
        st.hy.close()


@pytest.mark.slow
def test_placement_preset_varies_only_where_dropout_sits(tmp_path):
    """tuned_placement_mnist_mlp: 3 block orders x 3 dropout placements, the same lr space and the same
    dropout rate everywhere, so claims 8 and 9 compare configurations that differ in one setting."""
    from dropbn.study.stages import Study

    st = Study(["+exp=tuned_placement_mnist_mlp", f"out_root={tmp_path}"])
    try:
        cfgs = {v.name: v.cfg for v in st.variants}
        assert len(cfgs) == 9 and len(st.spec.final_seeds) >= 8
        assert {tuple(c.reg.order) for c in cfgs.values()} == {("norm", "act", "dropout"), ("act", "norm", "dropout"),
                                                                ("act", "dropout", "norm")}
        assert {c.reg.dropout_blocks for c in cfgs.values()} == {"all", "first", "last"}
        assert {(c.reg.norm, c.reg.dropout) for c in cfgs.values()} == {("batch", 0.5)}
        assert {tuple(dict(v.search)) for v in st.variants} == {("optim.lr",)}
    finally:
        st.hy.close()


# ---------------------------------------------------------------- the rule on hand-made runs

def make_tune_run(folder: Path, val_acc, val_loss=None, status="completed", test_acc=None):
    folder.mkdir(parents=True)
    val_loss = val_loss or [1 - a for a in val_acc]
    rows = [{"epoch": i + 1, "train_acc": 0.5, "test_acc": (test_acc or val_acc)[i], "val_acc": a, "val_loss": lo}
            for i, (a, lo) in enumerate(zip(val_acc, val_loss))]
    with (folder / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (folder / "summary.json").write_text(json.dumps({"status": status, "config": {"train": {"schedule": "none",
                                                                                            "epochs": len(rows)}}}))


def cands(specs):
    return [{"point": {"optim.lr": lr}, "runs": [{"seed": s, "run": f"lr={lr},seed={s}"} for s in seeds]}
            for lr, seeds in specs]


def test_rule_mean_over_seeds_best_epoch_and_lost_points(tmp_path):
    make_tune_run(tmp_path / "lr=0.1,seed=0", [0.90, 0.95, 0.94])
    make_tune_run(tmp_path / "lr=0.1,seed=1", [0.90, 0.93, 0.96])   # mean curve .90 .94 .95 -> epoch 3
    make_tune_run(tmp_path / "lr=1,seed=0", [0.97, 0.99])
    make_tune_run(tmp_path / "lr=1,seed=1", [0.97], status="diverged")  # best numbers, but a lost seed
    make_tune_run(tmp_path / "lr=0.01,seed=0", [0.80, 0.93])
    make_tune_run(tmp_path / "lr=0.01,seed=1", [0.80, 0.93])
    ranked = S.score_variant(tmp_path, cands([("0.01", [0, 1]), ("0.1", [0, 1]), ("1", [0, 1])]), "val_acc")
    assert [p.point["optim.lr"] for p in ranked] == ["0.1", "0.01", "1"]
    best = ranked[0]
    assert best.best_epoch == 3 and best.mean == pytest.approx(0.95) and best.n == 2
    assert best.values == pytest.approx([0.94, 0.96]) and best.ci95 > 0
    assert ranked[2].lost == 1 and ranked[2].n == 1
    assert S.final_epochs(best)[0] == 3


def test_rule_ties_go_to_lower_val_loss_then_search_order_and_earliest_epoch(tmp_path):
    make_tune_run(tmp_path / "lr=a,seed=0", [0.9, 0.9], val_loss=[0.30, 0.30])
    make_tune_run(tmp_path / "lr=b,seed=0", [0.9, 0.8], val_loss=[0.20, 0.10])
    make_tune_run(tmp_path / "lr=c,seed=0", [0.9, 0.9], val_loss=[0.30, 0.25])
    ranked = S.score_variant(tmp_path, cands([("a", [0]), ("b", [0]), ("c", [0])]), "val_acc")
    assert [p.point["optim.lr"] for p in ranked] == ["b", "a", "c"]   # .20 < .30 == .30 (epoch 1), then order
    assert [p.best_epoch for p in ranked] == [1, 1, 1]               # equal accuracy: the earliest epoch
    by_loss = S.score_variant(tmp_path, cands([("a", [0]), ("b", [0]), ("c", [0])]), "val_loss")
    assert [(p.point["optim.lr"], p.best_epoch) for p in by_loss] == [("b", 2), ("c", 2), ("a", 1)]


def test_rule_with_a_schedule_keeps_the_budget(tmp_path):
    make_tune_run(tmp_path / "lr=a,seed=0", [0.9, 0.95, 0.94])
    (tmp_path / "lr=a,seed=0" / "summary.json").write_text(json.dumps(
        {"status": "completed", "config": {"train": {"schedule": "cosine", "epochs": 3}}}))
    (best,) = S.score_variant(tmp_path, cands([("a", [0])]), "val_acc")
    epochs, why = S.final_epochs(best)
    assert best.best_epoch == 2 and epochs is None and "keep the full budget of 3 epochs" in why


# ---------------------------------------------------------------- optuna

@needs_mnist
@pytest.mark.slow
def test_optuna_search_resumes_an_interrupted_trial_and_then_trains_nothing(tmp_path, capsys):
    optuna = pytest.importorskip("optuna")
    from dropbn.study.stages import Study

    args = ["study", *[a for a in ARGS[:-4] if a != "train.epochs=2"], "train.epochs=1", "study.variants.reg=[none]", "study.search.optim.lr=[0.01,0.3]",
            "study.tune_seeds=[0]", "study.final_seeds=[100]", "study.searcher=optuna", f"out_root={tmp_path}"]
    cli_main([*args, "study.trials=1"])
    sdir = tmp_path / NAME
    storage = f"sqlite:///{sdir / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    ost = optuna.load_study(study_name=summary.study_name, storage=storage)
    (first,) = ost.get_trials()
    other = "0.3" if first.params["optim.lr"] == "0.01" else "0.01"
    ost.enqueue_trial({"optim.lr": other})
    ost.ask({"optim.lr": optuna.distributions.CategoricalDistribution(["0.01", "0.3"])})  # killed while training
    ost.ask()  # killed before its point was drawn: dropped
    assert [t.state.name for t in ost.get_trials()] == ["COMPLETE", "RUNNING", "RUNNING"]

    capsys.readouterr()
    cli_main([*args, "study.trials=2"])  # the budget of 2 points is met by finishing the interrupted trial
    out = capsys.readouterr().out
    assert "finishing optuna trial 1 of an interrupted call" in out and out.count("$ dropbn train") == 2
    assert [t.state.name for t in ost.get_trials()] == ["COMPLETE", "COMPLETE", "FAIL"]
    sel = yaml.safe_load((sdir / S.SELECTED).read_text())
    (v,) = sel["variants"]
    assert sorted(c["point"]["optim.lr"] for c in v["candidates"]) == ["0.01", "0.3"]
    assert [c["trial"] for c in v["candidates"]] == [0, 1]
    assert len(list((sdir / "tune").glob("*/summary.json"))) == 2

    before = tree_state(sdir / "tune")
    cli_main([*args, "study.trials=2"])
    out = capsys.readouterr().out
    assert "$ dropbn train" not in out and tree_state(sdir / "tune") == before
    st = Study([a for a in args[1:]] + ["study.trials=2"])
    try:
        assert st.optuna_budget(st.variants[0]) == 2
    finally:
        st.hy.close()


@needs_mnist
@pytest.mark.slow
def test_a_stage_waits_for_a_run_another_process_holds(tmp_path):
    """Processes may share a study folder. A tune run claimed by another live process is neither
    scored as lost nor selected around: the study waits for it, and once its holder lets go
    without finishing it, the study trains it itself and selects from every run."""
    from dropbn.record import lease as claims
    from dropbn.study.stages import Study

    args = [a for a in ARGS if not a.startswith("study.variants.reg=")] + ["study.variants.reg=[none]",
                                                                           f"out_root={tmp_path}"]
    st = Study(args)
    try:
        sw = st.tune_sweeps()["reg=none"]
    finally:
        st.hy.close()
    sdir = tmp_path / NAME
    held, free = (sdir / "tune" / job[2] for job in sw.jobs)  # lr 0.01 and lr 0.3, seed 0
    claim = claims.acquire(held, 600)  # "another process": this test's pid, alive, not the study's
    p = subprocess.Popen([DROPBN, "study", *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=dict(os.environ), start_new_session=True)
    try:
        out, t0 = [], time.monotonic()
        while not any("waiting for 1 run(s) trained by other processes" in line for line in out):
            line = p.stdout.readline()
            assert line or p.poll() is None, "".join(out)[-3000:]
            assert time.monotonic() - t0 < 240, "".join(out)[-3000:]
            out.append(line)
        assert json.loads((free / "summary.json").read_text())["status"] == "completed"
        time.sleep(2 * 5.0)  # two polls later: still waiting, nothing selected
        assert p.poll() is None and not (sdir / S.SELECTED).exists()
        assert not (held / "summary.json").exists()
        claim.release()
        rest = p.communicate(timeout=300)[0]
    finally:
        claim.release()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    text = "".join(out) + rest
    assert p.returncode == 0, text[-3000:]
    assert "1 unfinished run(s) that no live process holds: training them here" in text
    assert json.loads((held / "summary.json").read_text())["status"] == "completed"
    (v,) = yaml.safe_load((sdir / S.SELECTED).read_text())["variants"]
    assert v["selected"]["lost_seeds"] == 0 and all(c["lost_seeds"] == 0 for c in v["candidates"])


def test_a_stage_trains_an_unheld_run_once_then_stops_with_one_line(tmp_path, monkeypatch):
    """The end-of-stage loop on real folders and claims, with the training child replaced: an unfinished
    run nobody holds is trained here; if it is still unfinished right after, the study stops (exit 1)."""
    from types import SimpleNamespace

    from dropbn.study import sweeps as SW

    sw = SimpleNamespace(stage="tune", variant=SimpleNamespace(name="reg=none"), args=[],
                         jobs=[((0.1,), 0, "a"), ((0.1,), 1, "b")])
    (tmp_path / "tune" / "a").mkdir(parents=True)
    (tmp_path / "tune" / "a" / "summary.json").write_text(json.dumps({"status": "completed"}))
    calls = []

    def finishing(study_dir, s):  # the second call (the retry) finishes run b
        calls.append(s.variant.name)
        if len(calls) == 2:
            (study_dir / "tune" / "b").mkdir(parents=True)
            (study_dir / "tune" / "b" / "summary.json").write_text(json.dumps({"status": "completed"}))

    monkeypatch.setattr(SW, "run_sweep", finishing)
    SW.run_stage(tmp_path, [sw], poll_s=0.01)
    assert calls == ["reg=none", "reg=none"]

    sw.jobs.append(((0.1,), 2, "c"))
    calls.clear()
    monkeypatch.setattr(SW, "run_sweep", lambda study_dir, s: calls.append(s.variant.name))
    with pytest.raises(SW.StageError, match=r"^study stopped: tune reg=none: 1 run\(s\) stay unfinished with no "
                                           r"process training them \(e\.g\. c\)") as e:
        SW.run_stage(tmp_path, [sw], poll_s=0.01)
    assert e.value.exit_code == 1 and calls == ["reg=none", "reg=none"]


def test_ctrl_c_while_waiting_for_another_process_is_one_line_exit_130(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from dropbn.record import lease as claims
    from dropbn.base.errors import Interrupted
    from dropbn.study import sweeps as SW

    sw = SimpleNamespace(stage="final", variant=SimpleNamespace(name="reg=none"), args=[], jobs=[((), 100, "r")])
    claim = claims.acquire(tmp_path / "final" / "r", 600)  # held by this (live) process: waited for
    monkeypatch.setattr(SW, "run_sweep", lambda study_dir, s: None)

    def ctrl_c(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(SW.time, "sleep", ctrl_c)
    try:
        with pytest.raises(Interrupted, match=r"^study interrupted while waiting for the final runs of other "
                                              r"processes; run the same command again to continue$") as e:
            SW.run_stage(tmp_path, [sw])
    finally:
        claim.release()
    assert e.value.exit_code == 130


@needs_mnist
@pytest.mark.slow
def test_status_lists_the_whole_study_before_and_after_the_selection(study, tmp_path):
    """`dropbn status --study ARGS`: every tune run, then the final runs, named from the selection as
    soon as a variant's tune runs have ended (the names the study gave them), planned rows before."""
    root, sdir, sel = study["root"], study["dir"], study["sel"]
    finals = {run["run"]: v["selected"]["final_epochs"] for v in sel["variants"] for run in v["final_runs"]}
    tunes = [run["run"] for v in sel["variants"] for c in v["candidates"] for run in c["runs"]]

    def status(out_root):
        r = call_cli(["status", "--study", *ARGS, f"out_root={out_root}"], cwd=tmp_path)
        lines = r.stdout.splitlines()
        return r, [line.split()[:3] for line in lines[1:-1]], lines[-1] if lines else r.stderr

    r, rows, last = status(root)  # the finished study
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x[2] for x in rows] == [f"tune/{t}" for t in tunes] + [f"final/{f}" for f in finals]
    assert {x[0] for x in rows} == {"completed"} and last == "8 runs: 8 completed; nothing left to train"

    part = tmp_path / "part"  # tune stage done, nothing final yet: the final runs the study would train
    shutil.copytree(sdir / "tune", part / NAME / "tune")
    r, rows, last = status(part)
    assert r.returncode == 1
    assert [x for x in rows if x[0] == "missing"] == [["missing", f"0/{e}", f"final/{f}"] for f, e in finals.items()]
    assert last.startswith(f"8 runs: 4 completed, 4 missing; {sum(finals.values())} epochs left x ")

    r, rows, last = status(tmp_path / "new")  # nothing trained: one planned row per variant and final seed
    assert r.returncode == 1 and not (tmp_path / "new").exists()
    assert rows[4:] == [["missing", "0/2", f"final/reg={v},seed={s}"] for v in ("none", "batchnorm") for s in (100, 101)]
    assert r.stdout.count("planned: named by the selection once the tune runs have ended") == 4
    assert last == "8 runs: 8 missing; 16 epochs left; ETA unknown until an epoch has been measured"

    r = call_cli(["status", "--study", *ARGS, "study.searcher=optuna", f"out_root={tmp_path / 'o'}"], cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "optuna" in r.stderr


def fake_sweep(tag: str, n: int, *launcher: str):
    """A plan.Sweep stand-in: stage final, variant reg=<tag>, runs <tag>0 .. <tag>{n-1}."""
    from types import SimpleNamespace

    return SimpleNamespace(stage="final", variant=SimpleNamespace(name=f"reg={tag}"),
                           args=[f"+tag={tag}", *launcher, f"seed={','.join(map(str, range(n)))}"],
                           jobs=[((), s, f"{tag}{s}") for s in range(n)])


def finish_run(stage_dir: Path, run: str) -> None:
    """A finished run as a stage reads it: its status and a validation curve."""
    (stage_dir / run).mkdir(parents=True, exist_ok=True)
    (stage_dir / run / "summary.json").write_text(json.dumps({"status": "completed"}))
    (stage_dir / run / "metrics.csv").write_text("epoch,val_loss,val_acc\n1,1.0,0.5\n")


class FakeChildren:
    """Stands in for sweeps.Children: a child ends in start order and, unless its tag is in `fails`, finishes
    its sweep's runs. Waited for with a timeout, the oldest child finishes one run instead, if it has more
    than one left. `events` gets ("start", tag, *note(child, running)), ("run", run) and ("end", tag)."""

    def __init__(self, root: Path, sweeps: list, events: list, note, fails=()):
        self.root, self.sweeps, self.events, self.note, self.fails = root, sweeps, events, note, fails
        self.running = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    class Child:  # hashable, as a Popen is
        def __init__(self, tag, cmd, env):
            self.tag, self.cmd, self.env, self.returncode = tag, cmd, env, None

    def start(self, cmd, env):
        p = self.Child(next(a[5:] for a in cmd if a.startswith("+tag=")), cmd, env)
        self.running.append(p)
        self.events.append(("start", p.tag, *self.note(p, self.running)))
        return p

    def unfinished(self, p) -> list[str]:
        jobs = next(s for s in self.sweeps if s.variant.name == f"reg={p.tag}").jobs
        return [run for _, _, run in jobs if not (self.root / "final" / run / "metrics.csv").exists()]

    def wait_any(self, timeout=None):
        p = self.running[0]
        left = self.unfinished(p)
        if timeout is not None and len(left) > 1 and p.tag not in self.fails:
            finish_run(self.root / "final", left[0])
            self.events.append(("run", left[0]))
            return None
        self.running.pop(0)
        p.returncode = 1 if p.tag in self.fails else 0
        if not p.returncode:
            for run in left:
                finish_run(self.root / "final", run)
        self.events.append(("end", p.tag))
        return p


def test_a_stage_packs_its_sweeps_into_the_launcher_workers(tmp_path, monkeypatch):
    """run_packed, with the child processes replaced: in plan order, a sweep starts as soon as a worker is
    free, with n_jobs = min(its missing runs, the free workers); a sweep with fewer runs left than workers
    lends the idle ones to the next sweep; never more than `workers` runs at once. After a failed sweep no
    further sweep starts, the running ones end, and the study stops."""
    from dropbn.study import sweeps as SW

    def note(p, running):  # the child's n_jobs, the runs that can train at once now, DROPBN_STAGE_RUNS
        n_jobs = [a for a in p.cmd if a.startswith("hydra.launcher.n_jobs=")]
        assert len(n_jobs) == 1  # the study's n_jobs is replaced, not repeated
        p.share = int(n_jobs[0][22:])
        busy = sum(min(q.share, len(fake.unfinished(q))) for q in running)
        return p.share, busy, p.env["DROPBN_STAGE_RUNS"]

    def children(*args, **kw):
        nonlocal fake
        fake = FakeChildren(*args, **kw)
        return fake

    fake = None

    n_jobs = "hydra.launcher.n_jobs=4"
    root, sweeps = tmp_path / "ok", [fake_sweep(t, n, n_jobs) for t, n in (("a", 3), ("b", 3), ("c", 2), ("d", 1))]
    finish_run(root / "final", "b0")  # b has 2 runs left to train
    events = []
    monkeypatch.setattr(SW, "Children", lambda: children(root, sweeps, events, note))
    SW.run_stage(root, sweeps, poll_s=0.01, workers=4)
    assert events == [("start", "a", 3, 3, "4"), ("start", "b", 1, 4, "4"),
                      ("run", "a0"), ("start", "c", 1, 4, "4"),  # a has 2 runs left: 1 worker lent to c
                      ("run", "a1"), ("start", "d", 1, 4, "4"),  # and 1 left: another one, to d
                      ("end", "a"), ("end", "b"), ("end", "c"), ("end", "d")]

    root, sweeps = tmp_path / "fail", [fake_sweep(t, n, n_jobs) for t, n in (("a", 3), ("b", 3), ("c", 2))]
    events = []
    monkeypatch.setattr(SW, "Children", lambda: children(root, sweeps, events, note, fails={"a"}))
    with pytest.raises(SW.StageError, match=r"^study stopped: final reg=a: dropbn train exited with code 1") as e:
        SW.run_stage(root, sweeps, poll_s=0.01, workers=4)
    assert e.value.exit_code == 1
    assert events == [("start", "a", 3, 3, "4"), ("start", "b", 1, 4, "4"), ("end", "a"), ("end", "b")]


def test_under_slurm_a_stage_submits_every_sweep_at_once(tmp_path, monkeypatch):
    """run_packed with workers = inf (a SLURM launcher): every pending sweep starts before any ends, with
    its launcher settings as they are and no DROPBN_STAGE_RUNS (each run has its own allocation)."""
    import math

    from dropbn.study import sweeps as SW

    root = tmp_path / "study"
    sweeps = [fake_sweep(t, 2, "hydra/launcher=slurm") for t in "abc"]
    for run in ("c0", "c1"):  # sweep c is done: nothing to submit
        finish_run(root / "final", run)

    def note(p, running):
        sw = next(x for x in sweeps if x.variant.name == f"reg={p.tag}")
        assert p.cmd[-len(sw.args):] == sw.args and p.env == {}  # the launcher as configured
        return ()

    events = []
    monkeypatch.setattr(SW, "Children", lambda: FakeChildren(root, sweeps, events, note))
    SW.run_stage(root, sweeps, poll_s=0.01, workers=math.inf)
    assert events == [("start", "a"), ("start", "b"), ("end", "a"), ("end", "b")]


@needs_joblib
@needs_submitit
@pytest.mark.slow
def test_a_study_plans_its_stages_side_by_side_per_launcher(tmp_path):
    """How many runs of a stage's sweeps may run at once: the joblib workers, every one under SLURM
    (math.inf), or one sweep at a time under the default launcher (None)."""
    import math

    from dropbn.study.plan import Plan

    base = ["+exp=tuned_mnist_mlp", f"out_root={tmp_path}"]
    for extra, workers in (([], None), (["hydra/launcher=parallel", "hydra.launcher.n_jobs=3"], 3),
                           (["hydra/launcher=slurm"], math.inf), (["hydra/launcher=local"], None)):
        plan = Plan([*base, *extra])
        try:
            assert plan.workers == workers, extra
        finally:
            plan.hy.close()


@needs_mnist
@needs_joblib
@pytest.mark.slow
def test_a_stage_trains_its_variants_side_by_side_to_the_same_numbers(study, tmp_path):
    """With a joblib launcher both variants' sweeps of each stage train at once; on CPU the runs are
    deterministic, so the selection and every final number equal the one-sweep-at-a-time study's."""
    r = call_cli(["study", *ARGS, "hydra/launcher=parallel", "hydra.launcher.n_jobs=4", f"out_root={tmp_path}"],
                 cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("at a time, beside the stage's other sweeps") == 4  # tune and final, 2 variants each
    sel = yaml.safe_load((tmp_path / NAME / S.SELECTED).read_text())
    for v, w in zip(sel["variants"], study["sel"]["variants"], strict=True):
        assert v["selected"] == w["selected"] and v["candidates"] == w["candidates"]
        for run in v["final_runs"]:
            a = json.loads((tmp_path / NAME / "final" / run["run"] / "summary.json").read_text())
            b = json.loads((study["dir"] / "final" / run["run"] / "summary.json").read_text())
            assert (a["final_test_acc"], a["final_test_loss"]) == (b["final_test_acc"], b["final_test_loss"])
            assert a["env"]["parallel_runs"] == 4 and a["env"]["threads"] == 1  # 4 runs shared the machine


@pytest.mark.parametrize("exp", ["tuned_placement_mnist_mlp", "tuned_mnist_mlp", "tuned_fashion_mlp", pytest.param(
    "tuned_cifar10_cnn", marks=pytest.mark.skipif(not (DATA_DIR / "cifar10-jpeg.tar.gz").exists(),
                                                  reason="the CIFAR-10 JPEG mirror is not under the data root"))])
@pytest.mark.slow
def test_committed_studies_are_complete_under_their_presets(exp):
    """The committed reference studies match their presets: planned again from the preset and selected
    again from the committed tune records, every run the study would train is committed and finished;
    a study whose re-run is under way (IN_PROGRESS) has every tune run, and only final runs missing."""
    r = call_cli(["status", "--study", f"+exp={exp}", f"out_root={ROOT / 'results'}"], cwd=ROOT)
    if exp in IN_PROGRESS:
        missing = [line for line in r.stdout.splitlines() if line.startswith("missing")]
        assert r.returncode == 1 and missing and all(" final/" in line for line in missing), r.stdout[-3000:]
        assert len(missing) == IN_PROGRESS[exp], r.stdout[-3000:]
        return
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert r.stdout.splitlines()[-1].endswith("; nothing left to train")


# committed studies whose final runs are being re-run: {preset: final runs still missing}. Remove the
# entry when the study is complete again (results/<study>/sweep_times.txt says where it stands).
IN_PROGRESS = {"tuned_placement_mnist_mlp": 12}


@pytest.mark.slow
@needs_mnist
def test_tune_runs_never_evaluate_the_test_set_and_final_runs_record_predictions(study):
    from dropbn.record.predictions import read_predictions
    tune = [d for d in (study["dir"] / "tune").iterdir() if (d / "summary.json").is_file()]
    assert len(tune) == 4
    for run in tune:
        header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
        assert "val_acc" in header and not [k for k in header if k.startswith("test_")], run
        s = json.loads((run / "summary.json").read_text())
        assert s["final_test_acc"] is None and s["generalization_gap"] is None and s["best_test_acc"] is None
        p = read_predictions(run / "predictions.npz")
        assert p.labels("test") is None and p.get("val", "final") is not None
    for run in [d for d in (study["dir"] / "final").iterdir() if (d / "summary.json").is_file()]:
        s = json.loads((run / "summary.json").read_text())
        p = read_predictions(run / "predictions.npz")
        assert float((p.get("test", "final") == p.labels("test")).mean()) == s["final_test_acc"]


def test_rule_means_equal_to_float_rounding_are_tied(tmp_path):
    """tuned_placement_mnist_mlp's dropout_before_bn (all blocks): 0.9772 at lr 0.03 against
    0.9772000000000001 at lr 0.1, two seeds on 5,000 validation images. The same count of images:
    tied, so the lower validation loss (lr 0.03) wins; a real difference of one image still counts."""
    def run(name, acc, loss, val=5000):
        make_tune_run(tmp_path / name, [acc], val_loss=[loss])
        s = json.loads((tmp_path / name / "summary.json").read_text())
        s["data_sizes"] = {"train": 55000, "val": val, "test": 10000}
        (tmp_path / name / "summary.json").write_text(json.dumps(s))

    run("lr=0.03,seed=0", 4880 / 5000, 0.12)   # mean 0.9763999999999999
    run("lr=0.03,seed=1", 4884 / 5000, 0.125)
    run("lr=0.1,seed=0", 4882 / 5000, 0.22)     # mean 0.9764: the same 9,764 images, a hair "better"
    run("lr=0.1,seed=1", 4882 / 5000, 0.23)
    lr003, lr01 = (4880 / 5000 + 4884 / 5000) / 2, (4882 / 5000 + 4882 / 5000) / 2
    assert lr01 > lr003 and lr01 - lr003 < 1e-15  # raw floats would pick lr 0.1, against the val loss
    order = [("0.03", [0, 1]), ("0.1", [0, 1])]
    ranked = S.score_variant(tmp_path, cands(order), "val_acc")
    assert [p.point["optim.lr"] for p in ranked] == ["0.03", "0.1"]
    ranked = S.score_variant(tmp_path, cands(order[::-1]), "val_acc")  # whatever the search order
    assert [p.point["optim.lr"] for p in ranked] == ["0.03", "0.1"]
    run("lr=0.3,seed=0", 4883 / 5000, 0.30)     # one image more over the two seeds: better
    run("lr=0.3,seed=1", 4882 / 5000, 0.30)
    ranked = S.score_variant(tmp_path, cands([*order, ("0.3", [0, 1])]), "val_acc")
    assert [p.point["optim.lr"] for p in ranked] == ["0.3", "0.03", "0.1"]
