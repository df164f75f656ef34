"""``controldl plot DIR``: the figures of a saved solution."""

from __future__ import annotations

import argparse
from pathlib import Path

from controldl.cli.common import CLIError, add_overwrite_flag, check_out

HELP = "draw the figures of a saved solution directory"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help=HELP, description=HELP + ": the data carried through the "
                       "layers (layers.png), decision regions (decision_regions.png), a deformed "
                       "grid (deformed_grid.png), the controls over the layers (controls.png) "
                       "and the cost and accuracy histories (history.png).")
    p.add_argument("directory", metavar="DIR", help="a solution directory (arrays.npz, meta.json)")
    p.add_argument("--out", default=None,
                   help="where to write the PNGs: new, empty or earlier figures, which are "
                        "replaced (default DIR/figures)")
    p.add_argument("--layers-shown", default=None, metavar="T1,T2,...",
                   help="layers to draw in the layer-by-layer panels (default: 6 evenly spaced)")
    add_overwrite_flag(p, "figures directory")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controldl import plotting
    from controldl.solution import load

    solution = load(args.directory)
    shown = None
    if args.layers_shown:
        try:
            shown = [int(t) for t in args.layers_shown.split(",")]
        except ValueError:
            raise CLIError(f"--layers-shown expects integers, got {args.layers_shown!r}") from None
    out = Path(args.out) if args.out else Path(args.directory) / "figures"
    inputs = tuple(str(Path(args.directory) / name) for name in ("meta.json", "arrays.npz"))
    check_out(out, "figures", args, inputs)
    files = plotting.save_solution_figures(solution, out, layers=shown,
                                           overwrite=args.overwrite)
    for f in files:
        print(f)
    return 0
