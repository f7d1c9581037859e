"""Print the README's headline table from the committed reference reports.

    python scripts/headline_table.py [results]

Reads results/<study>/report/tables/per_configuration.csv (written by
`dropbn report`) of each study below and prints one Markdown row per configuration
with, for each study, final test accuracy and the train - test accuracy gap as
mean ± 95% CI. The current (tuned) studies stand in for the v1 compare_* ones.
"""
import sys
from pathlib import Path

import pandas as pd

STUDIES = [("tuned_mnist_mlp", "MNIST, MLP 2x1024, tuned"),
           ("tuned_fashion_mlp", "Fashion-MNIST, MLP 2x1024, tuned"),
           ("tuned_cifar10_cnn", "CIFAR-10 (JPEG q75 mirror, all 50k images), CNN, tuned")]


def cell(row, key, scale=100, digits=2):
    m, h, n = row[f"{key}_mean"], row[f"{key}_ci95"], int(row[f"{key}_n"])
    if n == 0 or pd.isna(m):
        return "–"
    return f"{m * scale:.{digits}f} ± {h * scale:.{digits}f}" if n > 1 else f"{m * scale:.{digits}f}"


def main(root="results"):
    frames = {}
    for name, label in STUDIES:
        p = Path(root) / name / "report" / "tables" / "per_configuration.csv"
        if p.exists():
            frames[label] = pd.read_csv(p).set_index("configuration")
    if not frames:
        sys.exit(f"no reports under {root}/: " + ", ".join(n for n, _ in STUDIES))
    configs = list(dict.fromkeys(c for f in frames.values() for c in f.index))
    head = "| configuration | " + " | ".join(f"{lab}: test acc. (%) | gap (pp)" for lab in frames) + " |"
    print(head)
    print("|---" * (1 + 2 * len(frames)) + "|")
    for c in configs:
        cells = []
        for f in frames.values():
            if c in f.index:
                cells += [cell(f.loc[c], "final_test_acc"), cell(f.loc[c], "generalization_gap")]
            else:
                cells += ["–", "–"]
        n = ", ".join(str(int(f.loc[c, "final_test_acc_n"])) for f in frames.values() if c in f.index)
        print(f"| {c} (n={n}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
