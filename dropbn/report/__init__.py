"""`dropbn report`: run folders -> tidy table -> statistics, claims check, tables and figures.

collect.py   folders -> one row per run (+ per-epoch curves), configurations and labels
stats.py     mean ± 95% CI, Welch / Levene tests, the verdict rule (pure functions)
tables.py    per-configuration statistics, the comparison table, claims, optional sections' tables
figures.py   matplotlib figures (PNG bytes)
markdown.py  markdown / LaTeX tables and number formatting
sections.py  the report's sections (markdown + tables + figures each), and what they share (Context)
optional.py  sections that appear only when they apply (lr, data size, dropout rate, placement, diagnostics)
render.py    assembles the sections; writes report.md, tables/*.csv|.tex, runs.csv, figures/*.png atomically
cli.py       argument parsing

Never imports torch: run folders are read through dropbn.runs and dropbn.summary.
"""
