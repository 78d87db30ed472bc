"""Top 5 % found on the real-data pools (Liang et al. 2021 metric), default agent vs baselines.

    python benchmarks/pool_benchmark.py [--seeds 10] [--problems p3ht,agnp] [--agents bo,gp-ei,random]

The same as ``sdl bench``: every agent starts from the same 5 random points per seed;
random search and a plain GP-EI loop run in this same command, so the printed
enhancement (EF) and acceleration (AF) factors are ratios measured in one run.
"""

import sys

from sdl.cli import app

if __name__ == "__main__":
    sys.exit(app(["bench", *sys.argv[1:]], prog_name="pool_benchmark"))
