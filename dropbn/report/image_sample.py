"""Accuracy claims with the test set treated as a sample: a second interval per claim row.

A claim's verdict rests on its seed-only interval (the runs' accuracies on one fixed test set;
pre-registered that way). For accuracy claims (final_test_acc, val_selected_test_acc) this module
adds the interval over seeds AND test images (dropbn/stats/crossed.py), from every run's
predictions.npz (record/predictions.py): it pairs the arms' runs image by image. Appended claims.csv
columns, in percentage points like the row:

    images_ci_low, images_ci_high   95% CI of a - b over seeds and test images
    images_p                        its two-sided p
    images_p_holm                   Holm within the same family, these p values in place of the
                                    seed-only ones of the rows that have them
    images_holds                    for a supported row: whether it is still supported (p_holm < alpha,
                                    same sign) under this interval: "yes" / "no"; "" otherwise
    images_note                     why a row has no such interval

No interval where a run of either arm has no predictions (trained before runs recorded them, or
reported from a runs.csv), diverged (it has no final predictions: the seed-only row counts it at
chance), or was scored on another test set (different test fingerprints).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import stats
from ..record.layout import PREDICTIONS
from ..record.predictions import read_predictions
from ..stats.crossed import correctness, crossed_difference

WHEN = {"final_test_acc": "final", "val_selected_test_acc": "picked"}  # quantity -> predictions taken
COLUMNS = ["images_ci_low", "images_ci_high", "images_p", "images_p_holm", "images_holds", "images_note"]


def _none(note: str) -> dict:
    return {"images_ci_low": math.nan, "images_ci_high": math.nan, "images_p": math.nan, "images_note": note}


def _matrix(g: pd.DataFrame, when: str, cache: dict):
    """(runs x test images correctness, labels' fingerprint) of an arm, or (None, why)."""
    if (g["status"] != "completed").any():
        return None, "a diverged run has no final predictions"
    rows, fps = [], set()
    for path in g["path"]:
        key = (str(path), when)
        if key not in cache:
            f = Path(str(path)) / PREDICTIONS
            try:
                p = read_predictions(f) if f.is_file() else None
            except ValueError:
                p = None
            cache[key] = None if p is None or p.get("test", when) is None else \
                (correctness(p.get("test", when)[None, :], p.labels("test"))[0], p.test_fingerprint)
        if cache[key] is None:
            return None, "runs without test predictions (trained before runs recorded them)"
        rows.append(cache[key][0])
        fps.add(cache[key][1])
    if len(fps) != 1:
        return None, "runs scored on different test sets"
    return np.vstack(rows), fps.pop()


def interval(ga: pd.DataFrame, gb: pd.DataFrame, quantity: str, cache: dict) -> dict:
    """The image-sample columns of one claim row comparing the runs `ga` (arm a) and `gb` (arm b)."""
    when = WHEN.get(quantity)
    if when is None:
        return {}
    if "path" not in ga:
        return _none("no run folders (read from a runs.csv)")
    a, fa = _matrix(ga, when, cache)
    b, fb = _matrix(gb, when, cache)
    if a is None or b is None:
        return _none(fa if a is None else fb)
    if fa != fb or a.shape[1] != b.shape[1]:
        return _none("the arms were scored on different test sets")
    r = crossed_difference(a, b)
    return {"images_ci_low": r.lo * 100, "images_ci_high": r.hi * 100, "images_p": r.p,
            "images_note": f"seed part of the SE {r.se_seeds * 100:.3f} pp, test-image part {r.se_images * 100:.3f} pp"}


def adjust(df: pd.DataFrame, family) -> None:
    """Fill images_p_holm and images_holds (in place) for the rows of the Holm family `family` (bools)."""
    fam = np.asarray(family, dtype=bool)
    p = df["p_value"].astype(float).where(df["images_p"].isna(), df["images_p"].astype(float))
    df["images_p_holm"] = math.nan
    df.loc[fam, "images_p_holm"] = stats.holm(p[fam])
    holds = []
    for _, r in df.iterrows():
        if r["verdict"] != stats.SUPPORTED or not math.isfinite(r["images_p"]):
            holds.append("")
            continue
        same_sign = (r["images_ci_low"] + r["images_ci_high"]) * r["diff"] > 0
        holds.append("yes" if r["images_p_holm"] < stats.ALPHA and same_sign else "no")
    df["images_holds"] = holds


def summary(df: pd.DataFrame) -> str:
    """One paragraph for the claims section: which supported accuracy claims hold with the test images
    as a sample."""
    rows = df[df["images_holds"].isin(["yes", "no"])]
    if not len(rows):
        missing = df[df["quantity"].isin(list(WHEN)) & df["images_note"].astype(str).ne("")]
        if len(missing):
            return ("**Test images as a sample.** No accuracy row has the interval over seeds and test images: "
                    f"{missing['images_note'].iloc[0]}.\n")
        return ""
    name = [c + ("" if x == "all" else f" [{x}]") for c, x in zip(rows["claim"], rows["context"])]
    held = [n for n, h in zip(name, rows["images_holds"]) if h == "yes"]
    lost = [n for n, h in zip(name, rows["images_holds"]) if h == "no"]
    out = (f"**Test images as a sample.** The verdicts above use the seed-only interval, on this one test set. "
           f"Treating the test images as a sample too (the 95% interval over seeds and images, "
           f"`images_*` columns of claims.csv; method: docs/uncertainty.md), "
           f"{len(held)} of the {len(rows)} supported accuracy rows still hold"
           + (f" ({', '.join(held)})" if held else "") + (f"; {', '.join(lost)} would not" if lost else "") + ".\n")
    return out
