"""Sizes are estimated before anything is allocated: an impossible size is one line, exit
2, nothing written, at once; the estimates follow the sizes and the solvers' memory
options; a signal is acted on during the imports, while a program compiles, and when
Python drops the KeyboardInterrupt."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import controldl as cdl
from controldl import compilation, early_signals
from controldl.cli import main
from controldl.solvers import memory as M
from controldl.solvers.checkpoint import Interrupt


def _refused(argv, tmp_path, capsys):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    code = main([*argv, "--out", str(out)])
    elapsed = time.perf_counter() - t0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, captured.err
    assert captured.out == ""  # refused before the problem is even described
    assert list(tmp_path.iterdir()) == []
    return lines[0], elapsed


def test_a_huge_width_is_refused_before_allocating(tmp_path, capsys):
    line, elapsed = _refused(["train", "--width", "100000"], tmp_path, capsys)
    assert line.startswith("controldl: error: adam needs about ")
    assert "TiB" in line and "L = 20, N = 450, d = 100000" in line
    assert "the parameters with the optimizer's copies" in line
    assert "way out: --width" in line
    assert elapsed < 5


def test_a_huge_number_of_layers_is_refused_before_allocating(tmp_path, capsys):
    line, elapsed = _refused(["train", "--layers", "100000000"], tmp_path, capsys)
    assert "the states kept for backpropagation, 4 × (L + 1) × N × d numbers" in line
    assert "way out: --layers" in line and "or less" in line
    assert elapsed < 5
    line, _ = _refused(["compare", "--layers", "100000000", "--solvers", "emsa"], tmp_path,
                       capsys)
    assert "emsa needs about" in line


def test_the_way_out_that_is_offered_fits(monkeypatch):
    """E-MSA keeps 10 copies of the states while it iterates and 4 at the final
    evaluation: with a budget in between, --checkpoint-every is the way out, and the
    estimate with it fits."""
    problem = cdl.Problem(cdl.data.ring(1000, seed=0), width=8, layers=400)
    emsa = cdl.EMSA()
    sizes = M.Sizes.of(problem)
    full = emsa.memory_estimate(sizes).total()
    monkeypatch.setattr(M, "available_memory_bytes", lambda: 0.6 * full)
    with pytest.raises(ValueError, match=r"way out: --checkpoint-every 20, or") as err:
        M.check_fits(problem, emsa)
    assert "the states, costates and Hamiltonian terms of every layer" in str(err.value)
    import dataclasses

    remat = dataclasses.replace(emsa, checkpoint_every=20)
    assert remat.memory_estimate(sizes).total() <= 0.6 * full
    M.check_fits(problem, remat)  # fits: no error
    # gd's final full-batch gradient keeps every state: rematerialization cannot help it
    gd = cdl.GradientDescent("adam")
    monkeypatch.setattr(M, "available_memory_bytes",
                        lambda: 0.9 * gd.memory_estimate(sizes).total())
    with pytest.raises(ValueError) as err:
        M.check_fits(problem, gd)
    assert "--checkpoint-every" not in str(err.value) and "--layers" in str(err.value)


def test_estimates_grow_with_the_sizes_each_solver_depends_on():
    s = M.Sizes(N=1000, n=2, d=10, L=100, m=1, features=10, per_layer=110)
    newton = cdl.solver_class("pmp-newton")()
    base = newton.memory_estimate(s)
    hessian = next(p for p in base.parts if p.what == "the Hessian blocks of the layers")
    assert hessian.count == 6 * 101 * 110 ** 2  # (d(d+1))² per layer
    blocked = cdl.solver_class("pmp-newton")(layer_block=1).memory_estimate(s)
    assert blocked.total() < base.total()
    casadi = cdl.solver_class("casadi")
    single, multiple = casadi(hessian="exact"), casadi(transcription="multiple")
    assert single.memory_estimate(s).host and multiple.memory_estimate(s).host
    n_v = 100 * 110 + 11
    dense = next(p for p in single.memory_estimate(s).parts if "dense Hessian" in p.what)
    assert dense.count == 2 * n_v ** 2
    assert (multiple.memory_estimate(s.resized(N=2000)).total()
            > multiple.memory_estimate(s).total())
    gd = cdl.GradientDescent("adam", dtype="float32")
    assert gd.memory_estimate(s.resized(L=200)).total() > gd.memory_estimate(s).total()


# --------------------------------------------------------------------------- signals


def test_a_signal_while_compiling_stops_at_once():
    """A compilation (here a 1.5 s sleep, which releases the GIL as XLA does) runs in a
    worker; the main thread's handler acts within a poll interval."""
    interrupt = Interrupt()
    interrupt.immediate = True
    previous = signal.signal(signal.SIGINT, interrupt)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            compilation.interruptible(lambda: time.sleep(1.5))
        assert time.perf_counter() - t0 < 1.0
        assert compilation.compiling_in_background()
    finally:
        signal.signal(signal.SIGINT, previous)
        timer.cancel()
    while compilation.compiling_in_background():
        time.sleep(0.05)
    assert interrupt.signal == signal.SIGINT
    assert compilation.interruptible(lambda: 7) == 7


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_dropped_keyboard_interrupt_still_ends_with_130(tmp_path, capsys, monkeypatch):
    """Python drops an exception raised in a finalizer ("Exception ignored"); the command
    keeps the record of the signal and ends with 130 anyway."""
    from controldl.cli import train

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler raises here: dropped

    def run(args):
        Finalized()
        gc.collect()
        return 0

    monkeypatch.setattr(train, "run", run)
    assert main(["train", "--out", str(tmp_path / "x")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "controldl: interrupted"


def test_a_signal_during_the_imports_of_the_command_ends_with_130():
    code = ("import os, signal, sys\n"
            "sys.argv[0] = 'controldl'\n"
            "import controldl\n"  # installs the recorder: this process is the command
            "os.kill(os.getpid(), signal.SIGINT)\n"  # as if during the imports
            "from controldl.cli import main\n"
            "sys.exit(main())\n")
    proc = subprocess.run([sys.executable, "-c", code, "train", "--out", "/nonexistent/x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["controldl: interrupted"]


def test_only_the_command_records_early_signals():
    assert early_signals.is_command("/usr/bin/controldl", ["python", "/usr/bin/controldl"])
    assert early_signals.is_command("-m", ["python", "-m", "controldl", "train"])
    assert early_signals.is_command("-m", ["python", "-X", "dev", "-mcontroldl"])
    assert not early_signals.is_command("-m", ["python", "-m", "pytest", "controldl"])
    assert not early_signals.is_command("run.py", ["python", "run.py", "-m", "controldl"])
    assert not early_signals.is_command("-c", ["python", "-c", "import controldl"])
    code = ("import signal; before = signal.getsignal(signal.SIGINT); import controldl; "
            "assert signal.getsignal(signal.SIGINT) is before; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
