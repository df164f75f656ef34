"""Copy the key figures of a full run into ``experiments/figures/`` (for the README),
reduced to a 256-colour palette so that each stays small.

    python -m experiments.collect_figures --run runs/full [--to experiments/figures]

Not an experiment: it only copies what ``experiments.run_all`` wrote. A missing figure is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

KEY_FIGURES = (  # (experiment, file) → experiments/figures/<experiment>_<file>
    ("layers", "layers_ring_mlp3.png"),
    ("layers", "layers_ring_resnet3.png"),
    ("layers", "layers_spiral_resnet2.png"),
    ("layers", "decision_regions.png"),
    ("layers", "two_initializations.png"),
    ("topology", "decision_regions.png"),
    ("topology", "grid_w2-free-big-steps.png"),
    ("solvers", "history_ring.png"),
    ("solvers", "history_digits-pca16.png"),
    ("solvers", "cost_vs_time_all.png"),
    ("scaling", "time_per_iteration.png"),
    ("turnpike", "overlay.png"),
    ("flat_start", "history.png"),
    ("noise", "decision_regions.png"),
    ("noise", "control_profiles.png"),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path, help="the --out of experiments.run_all")
    p.add_argument("--to", type=Path, default=Path(__file__).resolve().parent / "figures")
    args = p.parse_args(argv)
    missing = [f"{e}/{f}" for e, f in KEY_FIGURES if not (args.run / e / f).is_file()]
    if missing:
        p.error(f"missing in {args.run}: {', '.join(missing)}")
    args.to.mkdir(parents=True, exist_ok=True)
    for exp, name in KEY_FIGURES:
        target = args.to / f"{exp}_{name}"
        with Image.open(args.run / exp / name) as img:
            img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
                target, optimize=True)
        print(f"{target} ({target.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
