"""`dropbn diagnose RUN_DIR [RUN_DIR ...]`: BN variance shift, BN folding and inference timing of finished
runs (dropbn/train/diagnostics.py), written into each run's summary.json."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..base.errors import DropbnError
from ..record.layout import CHECKPOINT
from ..record.reader import read_summary
from ..record.scan import run_folders
from ..record.states import COMPLETED
from ..train.device import set_threads
from ..config.validation import complete
from ..train.diagnostics import diagnose_run


def _describe(d: dict) -> str:
    inf = d["inference"]
    parts = []
    vs = d["variance_shift"]
    if vs:
        parts.append(f"median var ratio: train {vs['train_worst_median_ratio']:.3f} ({vs['train_worst_layer']}), "
                     f"test {vs['worst_median_ratio']:.3f} ({vs['worst_median_layer']}); "
                     f"acc {vs['test_acc']:.4f} -> {vs['test_acc_recalibrated']:.4f} with BN statistics "
                     f"re-estimated")
    parts.append(f"{inf['bn_layers_folded']} BN folded (diff {inf['fold_max_abs_diff']:.1e})")
    parts.append(f"b256 {inf['batch256_ms']['as_trained']:.2f}/{inf['batch256_ms']['folded']:.2f} ms, "
                 f"b1 {inf['batch1_ms']['as_trained']:.3f}/{inf['batch1_ms']['folded']:.3f} ms")
    return "; ".join(parts)



def main(argv=None) -> int:
    """`dropbn diagnose RUN_DIR [RUN_DIR ...]`."""
    ap = argparse.ArgumentParser(
        prog="dropbn diagnose",
        description="Compute BN variance shift, BN folding and inference timing for finished runs "
                    "and write them into each run's summary.json (key 'diagnostics').")
    ap.add_argument("dirs", nargs="+", metavar="RUN_DIR",
                    help="run folders, or folders searched recursively for runs (checkpoint.pt)")
    ap.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    ap.add_argument("--skip-done", action="store_true", help="skip runs that already have diagnostics")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's, usually all cores); "
                         "timings are only meaningful on an otherwise idle machine")
    args = ap.parse_args(argv)
    set_threads(args.threads)

    missing = [d for d in args.dirs if not Path(d).exists()]
    if missing:
        raise DropbnError(f"no such folder: {missing[0]}")
    runs = [f for f in run_folders(args.dirs, checkpoints=True) if (f / CHECKPOINT).is_file()]
    todo, skipped = [], []
    for r in runs:
        s = read_summary(r)
        if not s or s.get("status") != COMPLETED:
            skipped.append((r, "not completed"))
        elif args.skip_done and s.get("diagnostics"):
            skipped.append((r, "already has diagnostics"))
        else:
            todo.append(r)
    for r, why in skipped:
        print(f"skip {r} ({why})", file=sys.stderr)
    if not todo:
        print(f"dropbn diagnose: nothing to do ({len(runs)} run folders found, {len(skipped)} skipped)",
              file=sys.stderr)
        return 0
    failed, cache = 0, {}
    bar = tqdm(todo, desc="diagnose", unit="run", dynamic_ncols=True)
    for r in bar:
        bar.set_postfix_str(r.name, refresh=True)
        try:
            d = diagnose_run(r, args.device, cache, complete=complete_recorded)
        except Exception as e:  # one broken run (or missing data set) should not stop the others
            failed += 1
            tqdm.write(f"FAILED {r}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        tqdm.write(f"{r}: {_describe(d)}")
    bar.close()
    if failed:
        raise DropbnError(f"diagnostics failed for {failed} of {len(todo)} runs (see above)")
    return 0


def complete_recorded(cfg):
    """A run's recorded config with the model and reg keys added since it was written (their defaults)."""
    cfg.model, cfg.reg = complete(cfg.model, "model"), complete(cfg.reg, "reg")
    return cfg
