"""Claims as data (dropbn/report/claim_file.py) and their registration (registration.py).

A user's claims file run against a committed sweep gives p values, CIs and Holm-adjusted p values
equal to an independent Welch + Holm computation from the run folders' summary.json; a bad file is one
line naming the claim and the field (exit 2); a setting no run has is "not checked"; a registration
makes the unchanged claims confirmatory (the Holm family) and a changed one exploratory (raw p, no
verdict); a `dropbn train -m` sweep registers its report.claims before its first run.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as st

from dropbn.cli import main as cli_main
from dropbn.config.precheck import check_args
from dropbn.config import claims_file as CF
from dropbn.report import claims as C
from dropbn.config import registration as R
from dropbn.report.collect import read_runs_csv
from dropbn.report.tables import baselines

from .conftest import ROOT

SWEEP = ROOT / "results" / "srivastava_mnist_mlp"   # committed run folders: none vs dropout, 3 seeds each
USER = """\
claims:
  - id: U1
    text: Dropout raises final test accuracy
    a: {reg: dropout}
    b: baseline
    quantity: final_test_acc
    expect: greater
  - id: U2
    text: Dropout narrows the gap
    a: dropout
    b: {reg: none}
    quantity: generalization_gap
    expect: less
    margin: 0.5
  - id: U3
    text: Dropout keeps test accuracy within 1 pp
    a: reg=dropout
    b: baseline
    quantity: final_test_acc
    expect: equivalent
    margin: 1.0
  - id: U4
    text: Batch norm beats dropout (no batch-norm run in this sweep)
    a: {reg: batchnorm}
    b: {reg: dropout}
    quantity: final_test_acc
    expect: greater
"""


def holm(p):
    p = np.asarray(p, float)
    order = np.argsort(p)
    adj = np.minimum(1, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(adj)
    out[order] = adj
    return out


def arms(column: str) -> tuple[np.ndarray, np.ndarray]:
    """(dropout, none) values of a summary.json column, in pp, read straight from the run folders."""
    out = {"dropout": [], "none": []}
    for s in SWEEP.glob("*/summary.json"):
        d = json.loads(s.read_text())
        assert d["status"] == "completed"
        out["none" if s.parent.name.startswith("reg.dropout=0,") else "dropout"].append(100 * d[column])
    return np.array(out["dropout"]), np.array(out["none"])


def report(tmp_path, *args) -> Path:
    out = tmp_path / "report"
    cli_main(["report", *[str(a) for a in args], "--out", str(out), "--no-progress"])
    return out


def test_user_claims_against_a_committed_sweep_match_welch_and_holm(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(USER)
    out = report(tmp_path, SWEEP, "--claims", f)
    cl = pd.read_csv(out / "tables/claims.csv", na_values=["n/a"])
    assert list(cl.columns[:len(C.COLUMNS)]) == C.COLUMNS  # the former columns first, in order
    assert list(cl["claim"]) == ["U1", "U2", "U3"] and set(cl["registration"]) == {"not pre-registered"}
    rows = cl.set_index("claim")
    p = {}
    for cid, col in (("U1", "final_test_acc"), ("U2", "generalization_gap")):
        a, b = arms(col)
        t = st.ttest_ind(a, b, equal_var=False)
        lo, hi = t.confidence_interval(0.95)
        r = rows.loc[cid]
        assert r["test"] == "Welch" and (r["n_a"], r["n_b"]) == (len(a), len(b))
        assert r["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-9)
        assert (r["diff_ci_low"], r["diff_ci_high"]) == pytest.approx((lo, hi), abs=1e-9)
        assert r["p_value"] == pytest.approx(t.pvalue, rel=1e-9)
        p[cid] = t.pvalue
    a, b = arms("final_test_acc")   # U3: TOST, p = the larger one-sided p
    tost = max(st.ttest_ind(a + 1.0, b, equal_var=False, alternative="greater").pvalue,
               st.ttest_ind(a - 1.0, b, equal_var=False, alternative="less").pvalue)
    assert rows.loc["U3", "p_value"] == pytest.approx(tost, rel=1e-9) and rows.loc["U3", "test"].startswith("TOST")
    p["U3"] = tost
    expected = dict(zip(p, holm(list(p.values()))))
    for cid, ph in expected.items():
        assert rows.loc[cid, "p_holm"] == pytest.approx(ph, rel=1e-9)
    assert rows.loc["U3", "verdict"] == ("equivalent" if expected["U3"] < 0.05 else "inconclusive")
    # the gap row carries its train and test components; the U2 minimal effect is its margin
    ta, tb = arms("final_train_acc")
    assert rows.loc["U2", "train_diff"] == pytest.approx(ta.mean() - tb.mean(), abs=1e-9)
    assert rows.loc["U2", "min_effect"] == 0.5 and "gap components" in rows.loc["U2", "note"]
    md = (out / "report.md").read_text()
    assert "- claim U4: no 'batchnorm' configuration in these runs" in md  # a valid setting no run has
    assert "## Verdicts at a glance" in md and md.index("Verdicts at a glance") < md.index("## Claims check")
    assert (out / "figures/claims.png").stat().st_size > 10_000


@pytest.mark.parametrize("change, message", [
    ({"quantity": "accuracy"}, "claim U1: quantity: unknown quantity 'accuracy'"),
    ({"a": {"optim.lrr": 0.1}}, "claim U1: a: unknown config key 'optim.lrr'"),
    ({"expect": "bigger"}, "claim U1: expect: 'bigger': allowed: greater, less, equivalent"),
    ({"expect": "equivalent"}, "claim U1: margin: equivalent needs a margin"),
    ({"b": {"optim.lr": -1}}, "claim U1: b: optim.lr=-1"),
])
def test_a_bad_claims_file_is_one_line_naming_claim_and_field(tmp_path, capsys, change, message):
    doc = yaml.safe_load(USER)
    doc["claims"][0].update(change)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(SystemExit) as e:
        cli_main(["report", str(SWEEP), "--claims", str(f), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    f.write_text("claims: [id: U1\n")  # not YAML
    with pytest.raises(CF.ClaimFileError, match=r"bad.yaml: not valid YAML at line"):
        CF.load([f])
    assert not (tmp_path / "r").exists()


def test_registration_makes_unchanged_claims_confirmatory_and_changed_ones_exploratory():
    coll = read_runs_csv(ROOT / "results/compare_mnist_mlp/report/runs.csv")
    base = baselines(coll, ("reg", "none"))
    article = CF.load()
    reg = R.read(R.record(article, "the runs"), "test")
    assert reg.claims.sha256() == article.sha256() == reg.record["sha256"]
    plain = C.claims(coll, base, article).df
    conf = C.claims(coll, base, article, reg.digests).df
    assert set(conf["registration"]) == {"confirmatory"} and set(plain["registration"]) == {"not pre-registered"}
    assert conf["p_holm"].tolist() == pytest.approx(plain["p_holm"].tolist(), nan_ok=True)  # one family either way
    doc = yaml.safe_load(CF.default_file().read_text())
    doc["claims"][4]["text"] += " (edited after the runs)"   # claim 4
    edited = CF.parse(doc, "edited.yaml", article.min_effects)
    df = C.claims(coll, base, edited, reg.digests).df.set_index("claim")
    assert df.loc["4", "registration"] == "exploratory" and math.isnan(df.loc["4", "p_holm"])
    assert df.loc["4", "verdict"].startswith("exploratory: ") and "raw p" in df.loc["4", "verdict"]
    confirmatory = df[df["registration"] == "confirmatory"]
    assert len(confirmatory) == len(df) - 1
    # timing rows of runs that shared the machine are no tests: out of the family, p_holm empty
    unequal = confirmatory["verdict"] == C.UNEQUAL
    assert unequal.any() and confirmatory.loc[unequal, "p_holm"].isna().all()
    family = confirmatory[~unequal]
    assert family["p_holm"].tolist() == pytest.approx(list(holm(family["p_value"])), nan_ok=True)
    bad = dict(reg.record, sha256="0" * 64)
    with pytest.raises(Exception, match="does not match its sha256"):
        R.read(bad, "selected.yaml")


def test_a_sweep_registers_report_claims_before_its_first_run(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(USER)
    args = ["-m", "reg=none,dropout", f"out_root={tmp_path}", "name=sw", f"report.claims=[{f}]"]
    assert check_args(args) == 2
    path = tmp_path / "sw" / R.SWEEP_FILE
    reg = R.find([tmp_path / "sw"])
    assert reg is not None and [c.id for c in reg.claims.claims] == ["U1", "U2", "U3", "U4"]
    first = path.read_text()
    run = tmp_path / "sw" / "reg=none"  # once a run of the sweep exists, the registration stays
    run.mkdir()
    (run / "summary.json").write_text("{}")
    f.write_text(USER.replace("Dropout raises", "Dropout lifts"))
    check_args(args)
    assert path.read_text() == first
    shutil.rmtree(run)  # no run yet: a new call registers the file as it is now
    check_args(args)
    assert "Dropout lifts" in path.read_text()
    with pytest.raises(CF.ClaimFileError, match="nope.yaml: cannot read"):
        check_args(["-m", "reg=none,dropout", f"out_root={tmp_path}", "name=sw2", "report.claims=[nope.yaml]"])
