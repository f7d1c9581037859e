"""The run folder, torch-free: the contract that committed results depend on.

layout.py      file names, atomic writes, RunDir, the identity keys of a run's config
identity.py    the data's content fingerprint and the folder name of a run
lease.py       the run lock (files claim.<n>.json): one process at a time trains a run folder
summary.py     summary.json, typed
job_record.py  the run's .hydra/ record and its train.log
objective.py   what a finished run returns to a Hydra sweeper

Imports only dropbn.base.
"""
