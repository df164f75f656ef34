"""The ``controldl`` command line: ``train``, ``compare``, ``turnpike``, ``plot``.

Every bad input ends in one line on stderr and exit code 2; nothing is written then.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

from controldl import early_signals
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


class _Stop:
    """The handler of SIGINT and SIGTERM outside a solve (inside one, the solve's own
    handler stops it at the next iteration and saves what it has): it records the signal
    and raises ``KeyboardInterrupt``. Python drops an exception raised inside a garbage-
    collection callback or a finalizer ("Exception ignored"), so the command also checks
    the record before it ends."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        raise KeyboardInterrupt

    def install(self) -> dict[int, object]:
        """Install for SIGINT and SIGTERM (main thread only); the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}


def _end_now_if_compiling() -> None:
    """The command's process ends at once (exit code 130) when an interrupted compilation
    still runs in its worker thread: the interpreter would wait for it to finish, and
    cannot stop it (a thread inside XLA is not cancelled safely)."""
    from controldl.compilation import compiling_in_background

    if compiling_in_background():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


def main(argv: list[str] | None = None) -> int:
    stop = _Stop()
    previous = stop.install()
    try:
        if early_signals.RECEIVED:  # recorded while the command imported its libraries
            raise KeyboardInterrupt
        configure_process()
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # to start more processes
        code = int(args.run(args) or 0)
        if stop.received:  # a KeyboardInterrupt that Python dropped
            raise KeyboardInterrupt
        return code
    except (CLIError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"controldl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("controldl: interrupted", file=sys.stderr)
        if argv is None:
            _end_now_if_compiling()
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
