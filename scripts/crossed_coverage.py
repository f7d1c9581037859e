"""Coverage of the seeds x test-images interval (dropbn/stats/crossed.py) against the seed-only Welch
interval, by simulation: python scripts/crossed_coverage.py  (about 20 s; docs/uncertainty.md quotes its output).

Each repetition draws a test set (image difficulty shared by both arms plus an arm-specific part) and
seeds per arm (a run effect plus run x image noise); a run gets an image right when its latent score is
above 0, so the population difference of the arms' accuracies is known exactly. Prints, per setting:
the coverage of the crossed interval and that of the seed-only Welch interval. The simulation is the
one tests/test_crossed.py runs in CI at 200 repetitions.
"""
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_crossed import simulate  # noqa: E402

# 5 seeds per arm by default; more or less seed, arm-image and run x image noise; 3 and 8 seeds
SETTINGS = [{}, {"sd_seed": 0.3}, {"sd_arm_img": 0.3}, {"sd_run_img": 1.5}, {"seeds": 3}, {"seeds": 8},
            {"sd_arm_img": 2.0, "sd_run_img": 0.2}]

if __name__ == "__main__":
    warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
    print("setting | crossed coverage | seed-only coverage   (1,000 repetitions, 500 images)")
    for kw in SETTINGS:
        crossed, seed_only = simulate(**{"reps": 1000, "images": 500, "seeds": 5, **kw})
        print(f"{kw or 'default'} | {crossed:.3f} | {seed_only:.3f}")
