"""Print the record files of every finished run under the given folders, and each study's
selected.yaml, one path a line: what to commit of a sweep or study that is still running.

    git add $(python scripts/finished_records.py results/tuned_mnist_mlp)

A run still training is left out (its summary.json is not written until it ends), so a commit
never holds half a run; re-running the sweep later trains only what is missing.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dropbn.study.selection import SELECTED  # noqa: E402
from dropbn.record.scan import finished_records  # noqa: E402


def main(folders: list[str]) -> int:
    if not folders:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for folder in map(Path, folders):
        if not folder.is_dir():
            print(f"{folder}: not a folder", file=sys.stderr)
            return 2
        for p in finished_records(folder):
            print(p)
        if (folder / SELECTED).is_file():
            print(folder / SELECTED)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
