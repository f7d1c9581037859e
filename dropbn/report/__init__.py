"""`dropbn report`: run folders -> tidy table -> statistics, claims check, tables and figures.

collect.py  folders -> one row per run (+ per-epoch curves), configurations and labels
stats.py    mean ± 95% CI, Welch / Levene tests, the verdict rule (pure functions)
tables.py   per-configuration statistics, the comparison table, claims, optional sections
figures.py  matplotlib figures (PNG bytes)
render.py   report.md, tables/*.csv|.tex, runs.csv, figures/*.png, written atomically
cli.py      argument parsing
"""
