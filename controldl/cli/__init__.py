"""The ``controldl`` command line: ``train``, ``compare``, ``turnpike``, ``plot``.

Every bad input ends in one line on stderr and exit code 2; nothing is written then.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading

from controldl.cli.common import CLIError, Parser

SUBCOMMANDS: tuple[str, ...] = ("train", "compare", "turnpike", "plot")


def configure_process() -> None:
    """The command line's own choices for its process: float64, a file-only matplotlib
    backend and JAX's persistent compilation cache (``CONTROLDL_CACHE_DIR`` moves it,
    ``off`` disables it). A library import makes none of these."""
    import jax
    import matplotlib

    from controldl.compilation import enable_compilation_cache

    jax.config.update("jax_enable_x64", True)
    matplotlib.use("Agg")
    try:
        enable_compilation_cache()
    except ValueError as exc:  # an unusable cache directory: run without the cache
        print(f"controldl: {exc}; compiling without the persistent cache", file=sys.stderr)


def build_parser() -> Parser:
    parser = Parser(
        prog="controldl",
        description="Train residual networks as discrete optimal control problems: gradient "
                    "descent (optax), Pontryagin's MSA / E-MSA (JAX) and a direct method "
                    "(CasADi + IPOPT), on the same problem.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"controldl.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"controldl.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM outside a solve: the same path as Ctrl-C (inside one, the solve's own
    handler stops it at the next iteration and saves what it has)."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    configure_process()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start more processes
    previous = signal.signal(signal.SIGTERM, _terminated) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        return int(args.run(args) or 0)
    except (CLIError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"controldl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("controldl: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
