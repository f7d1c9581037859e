"""`dropbn report`: run folders -> tidy table -> statistics, claims check, tables and figures.

collect.py   folders (or a report's runs.csv) -> one row per run (+ per-epoch curves), configurations, labels
measures.py  which runs and values enter a claim, and one test per kind of quantity
claim_file.py  claims files (YAML, the default configs/claims/article.yaml) read and checked into a ClaimSet
registration.py  claims registered before the runs (sha256): confirmatory / exploratory / not pre-registered
arms.py      which configurations each claim compares (contexts, baselines, matched contrasts)
forms.py     intersection-union, equivalence (TOST), gap components, the second interval
claims.py    the claims table: claims per context, trainability rows, Holm family, verdicts, power
glance.py    the report's opening verdict table; forest.py its forest plot (figures/claims.png)
tables.py    per-configuration statistics, the comparison table, optional sections' tables
shift.py     variance shift (Li et al.): robust per-configuration summary, per-layer table, correlation
figures.py   matplotlib figures (PNG bytes)
markdown.py  markdown / LaTeX tables, number formatting and the wording of confidence intervals
sections.py  the report's sections (markdown + tables + figures each), and what they share (Context)
optional.py  sections that appear only when they apply (lr, data size, dropout rate, placement, diagnostics)
render.py    assembles the sections; writes report.md, tables/*.csv|.tex, runs.csv, figures/*.png atomically
study_report.py  a study's report: claims from final/, the tuned-hyperparameters section from tune/

The statistics are dropbn/stats/; the command line is dropbn/commands/report_cmd.py.

Never imports torch: run folders are read through dropbn.record.layout and dropbn.record.summary.
"""
