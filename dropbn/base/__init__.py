"""What every layer shares, with no dependency on any other dropbn package: the one-line errors
(errors.py), signal handling (signals.py), how many runs share this machine's cores (parallel.py)
and the facts about the built-in data sets (datasets.py). Torch-free."""
