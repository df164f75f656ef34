r"""The direct method's size, estimated from the problem before anything is built, and its
cap.

With ``N`` samples, ``L`` layers, a state of ``d`` numbers, ``P`` controls and readout
(``Formulation.n_controls`` plus ``m·(f + 1)``) and ``φ`` the flops of one layer on one
sample (dense: ``2d² + 4d``; conv: ``2k²C²·HW + 4C·HW``):

- **work of one evaluation** of ``J`` and its gradient, in CasADi's virtual machine:
  ``3·N·(L·φ + 2m·f)`` flops (a forward and a reverse pass); IPOPT evaluates it once or a
  few times per iteration (its line search), so this sets the time per iteration;
- **memory, single shooting**: the states of the samples, ``(L+1)·N·d`` numbers, kept
  :data:`STATE_COPIES` times by the reverse pass (:data:`CONV_STATE_COPIES` for the conv
  model, whose sum over the taps holds shifted copies), and with the exact Hessian three
  dense ``P × P`` matrices (CasADi's, IPOPT's copy, MUMPS' factor);
- **memory, multiple shooting**: ``N·L·d`` state variables and as many equality
  constraints; the KKT matrix holds the dynamics' Jacobian (``N·L·d·(δ_x + δ_θ)``
  nonzeros, δ the entries one state's update depends on: ``d`` and ``d + 1`` dense,
  ``k²C`` and ``k²C + 1`` conv) and the Lagrangian's exact Hessian (``N·L·(2d³ + d²)``
  dense), times :data:`KKT_FILL` for MUMPS' factor, and :data:`WORDS_PER_STATE` more for
  each state variable (the graph's nodes of every sample and layer, IPOPT's vectors).

:data:`DIRECT_CAP` (memory and work) is measured on the development box
(``benchmarks/casadi_scaling.py --cap``, docs/mnist.md): beyond it the direct method
refuses the problem with one line (:func:`check`) that names the cap and the way out, a
subset of the samples (with a warm start from a gradient solution of the whole set, the
direct method polishes it there). It is a limit of the direct method's practicality on
such a machine, separate from any check of the machine's free memory.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from controldl.problem import Problem

STATE_COPIES = 4
"""The states' copies an evaluation of ``J`` and its gradient holds (single shooting,
dense model): an assumption, not measured (a forward state, its cotangent, and the
activation's input and derivative)."""
CONV_STATE_COPIES = 14
"""The same for the conv model: measured, 0.86 MB of peak memory a sample between N = 100
and 400 on MNIST's conv problem (``benchmarks/casadi_scaling.py --cap``, docs/mnist.md)."""
KKT_FILL = 4
"""MUMPS' factor of the multiple-shooting KKT matrix over its nonzeros (assumed)."""
WORDS_PER_STATE = 900
"""Words a multiple-shooting state variable costs beyond the KKT matrix: measured, 1.57 GB
peak for the ring's 120,000 states (N = 2,000, L = 20; ``benchmarks/casadi_scaling.py
--cap``, docs/mnist.md)."""
BASE_BYTES = 600e6
"""Python, JAX, CasADi and IPOPT loaded, before the NLP (measured)."""


@dataclasses.dataclass(frozen=True)
class NlpSize:
    """The NLP of one problem and transcription: its variables and constraints, the
    estimated peak memory (bytes) and the work of one evaluation of ``J`` and its gradient
    (flops)."""

    transcription: str
    hessian: str
    samples: int
    variables: int
    constraints: int
    memory_bytes: float
    evaluation_flops: float

    def describe(self) -> str:
        return (f"{self.transcription} shooting, {self.samples:,} samples, "
                f"{self.variables:,} variables, about {self.memory_bytes / 1e9:.3g} GB and "
                f"{self.evaluation_flops / 1e9:.3g} GFLOP an evaluation")


@dataclasses.dataclass(frozen=True)
class DirectCap:
    """The direct method's cap: the largest estimated memory (bytes) and work of one
    evaluation (flops) it takes on."""

    memory_bytes: float
    evaluation_flops: float

    def describe(self) -> str:
        return (f"{self.memory_bytes / 1e9:g} GB and {self.evaluation_flops / 1e9:g} GFLOP "
                "an evaluation")


DIRECT_CAP = DirectCap(memory_bytes=6e9, evaluation_flops=6e9)
"""The direct method's cap on the development box (2 cores, 23 GB): at 6e9 flops an
evaluation an IPOPT iteration of MNIST's conv problem takes about a minute there (about
10 s a GFLOP, measured loaded), and 6 GB is a quarter of its memory (docs/mnist.md,
``benchmarks/casadi_scaling.py --cap``)."""


def layer_flops(form: Any) -> tuple[float, int, int]:
    """``(φ, δ_x, δ_θ)``: the flops of one layer on one sample, and how many state
    entries and controls one state entry's update depends on."""
    geo = form.geometry
    if geo is None:
        d = form.width
        return 2.0 * d * d + 4.0 * d, d, d + 1
    taps = geo.kernel_size ** 2 * geo.channels
    return 2.0 * taps * geo.channels * geo.pixels + 4.0 * form.width, taps, taps + 1


def estimate(problem: Problem, transcription: str, hessian: str) -> NlpSize:
    """The :class:`NlpSize` of ``problem`` transcribed by ``transcription`` with the
    (resolved) ``hessian``: from the formulation's sizes alone, nothing is built."""
    form = problem.formulation
    N, L, d, m, f = (problem.data.n_train, form.layers, form.width, form.n_outputs,
                     form.feature_dim)
    P = form.n_controls + (m * (f + 1) if form.train_readout else 0)
    phi, dx, dth = layer_flops(form)
    flops = 3.0 * N * (L * phi + 2.0 * m * f)
    if transcription == "multiple":
        states = N * L * d
        nnz = states * (dx + dth) + (N * L * (2.0 * d ** 3 + d * d) if hessian == "exact"
                                     else 0.0)
        memory = _fixed_bytes(form, transcription, hessian, P) + 8.0 * (
            KKT_FILL * nnz + WORDS_PER_STATE * states)
        return NlpSize(transcription, hessian, N, P + states, states, memory, flops)
    copies = STATE_COPIES if form.geometry is None else CONV_STATE_COPIES
    memory = _fixed_bytes(form, transcription, hessian, P) + 8.0 * copies * (L + 1) * N * d
    return NlpSize(transcription, hessian, N, P, 0, memory, flops)


def _fixed_bytes(form: Any, transcription: str, hessian: str, P: int) -> float:
    """The part of the memory estimate that does not grow with N."""
    dense = 3.0 * P * P if transcription == "single" and hessian == "exact" else 0.0
    return BASE_BYTES + 8.0 * (20.0 * P + dense)


def largest_subset(problem: Problem, transcription: str, hessian: str,
                   cap: DirectCap | None = None) -> int:
    """The most samples of this problem that fit ``cap`` (default :data:`DIRECT_CAP`;
    0: none): both estimates are affine in N, through their fixed part."""
    cap = DIRECT_CAP if cap is None else cap
    size = estimate(problem, transcription, hessian)
    form, N = problem.formulation, size.samples
    P = size.variables - size.constraints
    fixed = _fixed_bytes(form, transcription, hessian, P)
    counts = []
    for limit, total, base in ((cap.memory_bytes, size.memory_bytes, fixed),
                               (cap.evaluation_flops, size.evaluation_flops, 0.0)):
        per_sample = (total - base) / N
        counts.append(N if per_sample <= 0 else math.floor((limit - base) / per_sample))
    return max(0, min(counts))


def check(problem: Problem, transcription: str, hessian: str,
          cap: DirectCap | None = None) -> NlpSize:
    """The NLP's :class:`NlpSize`, or a ``ValueError`` of one line when it exceeds
    ``cap`` (default :data:`DIRECT_CAP`): the estimate, the cap and the way out (a subset
    of at most the samples that fit, warm-started from a gradient solution of the whole
    set)."""
    cap = DIRECT_CAP if cap is None else cap
    size = estimate(problem, transcription, hessian)
    if size.memory_bytes <= cap.memory_bytes and size.evaluation_flops <= cap.evaluation_flops:
        return size
    fit = largest_subset(problem, transcription, hessian, cap)
    way = (f"take a subset of at most {fit:,} samples (--n-samples {fit}), warm-started from "
           "a gradient solution of the whole set (--warm-start DIR) if you like, or use gd "
           "or emsa" if fit >= 2 else "no subset of it fits; use gd or emsa")
    raise ValueError(f"the direct method's NLP here ({size.describe()}) is beyond its cap "
                     f"of {cap.describe()} (controldl.solvers.direct.DIRECT_CAP); {way}")
