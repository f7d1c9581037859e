"""Re-run every committed study's selection on its tune run records under the current rule, and say
where the choice differs from the one its selected.yaml recorded.

    python scripts/reselect.py [results]

Prints one line per variant: the recorded point, the point the current rule picks, and, where they
differ, the two points' mean validation scores (the rule: dropbn.study.selection). Exit code 1 when
any choice changed: that variant's final runs were trained at a point the rule no longer picks.
"""
from __future__ import annotations

import sys
from pathlib import Path

from dropbn.report.study_report import load_selected, rescore
from dropbn.study.selection import SELECTED, TUNE


def main(root: Path) -> int:
    changed = 0
    for sel_path in sorted(root.glob(f"*/{SELECTED}")):
        study = sel_path.parent
        sel = load_selected(study)
        ranked = rescore(sel, study / TUNE)
        for v in sel["variants"]:
            was, now = v["selected"]["point"], ranked[v["name"]][0]
            same = {k: str(x) for k, x in now.point.items()} == {k: str(x) for k, x in was.items()}
            line = f"{study.name}: {v['name']}: recorded {was}, rule picks {now.point}"
            if not same:
                changed += 1
                rec = next(p for p in ranked[v["name"]] if {k: str(x) for k, x in p.point.items()} ==
                           {k: str(x) for k, x in was.items()})
                line += (f"  CHANGED (recorded: {sel['select']} {rec.mean!r}, {rec.other!r}; "
                         f"now: {now.mean!r}, {now.other!r})")
            print(line)
    print(f"{changed} choice(s) changed")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "results")))
