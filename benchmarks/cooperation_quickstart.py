"""Does cooperation emerge in the quickstart (full condition)? Trains it for several seeds.

    python benchmarks/cooperation_quickstart.py [--seeds 3] [--window 20] [--set key=value ...]

For each seed, trains ``configs/quickstart.yaml`` (with any ``--set`` overrides) into
``runs/benchmarks/`` and reads back the logged ``coop/cooperation_rate``; prints the mean
cooperation rate over the first and the last ``window`` episodes per seed, their mean over seeds,
and the wall time per seed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from aligngym.agents.config import load_config
from aligngym.agents.train import train

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def cooperation_curve(run_dir: Path) -> np.ndarray:
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    return np.array([e.value for e in ea.Scalars("coop/cooperation_rate")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    starts, ends = [], []
    for seed in range(args.seeds):
        config = load_config(QUICKSTART, [*args.overrides, f"seed={seed}", "show_progress=false",
                                          "run_root=runs/benchmarks"])
        t0 = time.perf_counter()
        run_dir = train(config)
        seconds = time.perf_counter() - t0
        curve = cooperation_curve(run_dir)
        start, end = curve[: args.window].mean(), curve[-args.window:].mean()
        starts.append(start)
        ends.append(end)
        print(f"seed {seed}: cooperation {start:.2f} (first {args.window} episodes) -> {end:.2f} "
              f"(last {args.window} of {len(curve)}), {seconds:.0f} s", flush=True)
    print(f"mean over {args.seeds} seeds: {np.mean(starts):.2f} -> {np.mean(ends):.2f} "
          f"(min end {np.min(ends):.2f})")


if __name__ == "__main__":
    main()
