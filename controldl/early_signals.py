"""Ctrl-C and SIGTERM while the ``controldl`` command imports its libraries.

Python raises ``KeyboardInterrupt`` wherever the main thread is when SIGINT arrives. While
JAX and its dependencies are imported that may be a garbage-collection callback or a
finalizer, where Python prints "Exception ignored" and goes on (the run then ends as if
nothing had happened, exit code 0), or an extension module's initialization (a crash).
So when this process *is* the ``controldl`` command (``python -m controldl`` or the
``controldl`` script; never when a program imports the library), the first line of
``import controldl`` installs a handler that only records SIGINT and SIGTERM, and the
command acts on what it recorded once the imports are done
(:func:`controldl.cli.main`: ``controldl: interrupted``, exit code 130).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence

COMMAND = "controldl"
RECEIVED: list[int] = []
"""The signals recorded while the command imported (in order)."""


def is_command(argv0: str, orig_argv: Sequence[str]) -> bool:
    """Whether the process runs the ``controldl`` command: its script (``argv[0]``) or
    ``python -m controldl`` (``-m controldl`` or ``-mcontroldl`` among the interpreter's
    own arguments)."""
    if os.path.basename(argv0) == COMMAND:
        return True
    args, i = list(orig_argv), 1
    while i < len(args):
        arg = args[i]
        if arg == "-m":
            return i + 1 < len(args) and args[i + 1] == COMMAND
        if arg.startswith("-m"):
            return arg[2:] == COMMAND
        if arg == "-c" or not arg.startswith("-"):  # a command or a script, not -m
            return False
        i += 2 if arg in ("-X", "-W") else 1  # the options that take a value
    return False


def _record(signum: int, frame: object) -> None:
    RECEIVED.append(signum)


def install() -> bool:
    """Record SIGINT and SIGTERM from now on, if this process is the command (and this
    is its main thread); whether it did."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not is_command(argv0, getattr(sys, "orig_argv", ())):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _record)
    return True
