"""A run's status words, defined once.

summary.json's `status` is completed, diverged or failed (running while a run trains, in
older records); a reader says unfinished for a run folder without a finished summary and
missing where there is no folder. Which of them count as ended is named here and nowhere else.
"""
from __future__ import annotations

COMPLETED, DIVERGED, FAILED = "completed", "diverged", "failed"
UNFINISHED, MISSING = "unfinished", "missing"
FINISHED = (COMPLETED, DIVERGED)   # a run that ended with a result: re-running it skips it
TERMINAL = (*FINISHED, FAILED)     # a run that ended (a failed one is trained again next time)
LOST = (DIVERGED, FAILED, MISSING, UNFINISHED)  # a tune run that gives the study's selection no score
