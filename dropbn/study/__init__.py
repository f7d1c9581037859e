"""`dropbn study +exp=NAME [overrides]`: a fair comparison in one command.

Stages (each one resumable; a finished study run again trains nothing):
  tune    each variant (`study.variants`: config keys -> lists, their product) at every point
          of its search space (`study.search`, the same mapping form) with `study.tune_seeds`,
          trained on the training split minus `data.val_size` validation images;
  select  per variant, the point (and epoch) with the best mean validation metric
          (dropbn/study/selection.py states the rule) -> `<out_root>/<name>/selected.yaml`;
  final   each variant at its selected point with fresh seeds `study.final_seeds`,
          evaluated on the test set;
  report  `<out_root>/<name>/report/`: the comparison from final/ plus the tuned section.

Each stage runs as ordinary sweeps, one per variant, through `dropbn train -m` in a child
process, with the user's overrides (so the configured Hydra launcher, skip and resume work as
for any sweep): `out_root=<out_root>/<name> name=tune|final`; under a joblib launcher a stage's
sweeps share its n_jobs workers side by side, and under the SLURM launcher they are all submitted
at once (sweeps.run_packed); other launchers take them one after another. No study.* override is passed down,
and `study` is a non-result key (dropbn.record.identity.NON_RESULT_KEYS), so study.* never enters a run's
folder name or identity.

A search key that a variant's validation rejects (a dropout rate for reg=none) is skipped for
that variant (selected.yaml and the report say which keys applied to which variant); every
variant otherwise gets the same space and budget. `study.searcher=optuna` samples
`study.trials` points per variant with Optuna's TPE sampler from the same lists, storing the
search in `<out_root>/<name>/optuna.db` so an interrupted search resumes.

Modules: spec (the study.* settings), overrides (override text), plan (variants, search points, sweeps and run folders; nothing trained), sweeps (a stage's sweeps run
as child `dropbn train -m` processes, and the wait for other processes' runs), children (those child
processes and their signals), search_optuna (the Optuna searcher), stages (tune, select, final,
report). Hydra's compose API for planning is dropbn/config/compose.py; the command line (usage,
entry point) is dropbn/commands/study_cmd.py.
"""
