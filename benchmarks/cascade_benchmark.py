"""Cascade benchmark (issue 14): beamline experiments to reach the same target with and
without a cheap UV-vis screen, over 10 seeds, through the real workflow engine.

    python benchmarks/cascade_benchmark.py --seeds 10 --budget 40 --target 0.8 --agent bo

See sdl/workflows/bench.py for what is measured.
"""

from sdl.workflows.bench import main

if __name__ == "__main__":
    main()
