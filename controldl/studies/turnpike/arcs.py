r"""The rate of an exponential turnpike, measured on the arc where Esteve et al.'s estimate
puts it, and a verdict over horizons.

**What the theorem states.** For the tracking problem (running term toward targets through a
fixed projector, L² penalty on the controls, dynamics homogeneous in the controls), the
optimal pairs satisfy, for every ``t ∈ [0, T]``,

``‖θ_T(t) − θ̄‖ + ‖x_T(t) − x̄‖ ≤ C·(e^{−μt} + e^{−μ(T−t)})``

with ``(θ̄, x̄)`` an optimal steady pair, ``‖·‖`` the Euclidean norms of the controls and of
the stacked states of the N samples, and **C, μ independent of T** (they may depend on the
data, the dynamics and the weights). So:

- the quantity is the sum, in absolute time ``t``; each term is bounded by the same right
  side, so the sum's rate is the slower of the two terms' rates;
- rescaling a norm (RMS over samples instead of the stacked norm) changes ``C``, not ``μ``;
- the bound is about the arc: near ``t = 0`` the profile may fall faster than ``e^{−μt}``
  (faster modes die out first), so ``μ`` is the rate of the *interior* of the entry arc,
  not of its first instants, and not of the flat long arc, where the profile sits at the
  level it reached;
- ``μ`` must come out the same at every long enough T.

**The window** (:class:`ArcRule`), chosen by levels of the profile, never by fractions of T,
so that a profile that does not depend on T gets the same window at every T. With
``m = min_t v(t)`` (the arc level), ``noise`` the level below which the caller's profile is
round-off (default 0), and ``v_top`` the entry maximum:

- after transients: where the entry arc rises again by more than ``rise`` above its running
  minimum (a second manoeuvre), ``v_top`` is the top of the last such rise; the estimate
  bounds the whole arc with one C, so a transient only moves C, and μ is the rate after it;
- the start: the first point after ``v_top`` where ``v − m ≤ start_level·(v_top − m)``
  (the plateau while the controls are large is not the arc's decay);
- above the floor: only points with ``v ≥ floor_factor·max(m, noise)``;
- the final arc's points above the floor stay in the window; the models carry its term.

**The models** (``scipy.optimize.least_squares`` on ``log v``, all parameters positive):

- one rate: ``a·e^{−μt} + b·e^{−μ(T−t)} + f`` (the theorem's shape);
- two rates: ``a₁e^{−μ₁t} + a₂e^{−μ₂t} + b·e^{−μ₂(T−t)} + f`` (μ₁ > μ₂).

Two rates are chosen when all of these hold: BIC (``n·ln(RSS/n) + k·ln n``) lower by at
least ``bic_margin`` (10: "very strong" on Kass & Raftery's scale), ``μ₁/μ₂ ≥
min_rate_ratio``, each entry term at least ``min_share`` of the model at some window point,
and the one-rate fit's RMS log residual above ``resolution`` (a single exponential that
fits within that is one rate, whatever BIC says about exact data).

The interval of ``μ`` is a moving-block bootstrap of the one-rate fit's log residuals
(blocks of ``⌈n^{1/3}⌉`` points keep the autocorrelation of a deterministic misfit).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize

MODELS: tuple[str, ...] = ("one_rate", "two_rates", "too_few_points")
"""What :func:`fit_arc` concludes about one profile."""

VERDICTS: tuple[str, ...] = ("exponential", "not_single_exponential", "no_arc")
"""The kinds of :func:`verdict` (turnpike.json's ``verdict.kind``)."""


@dataclasses.dataclass(frozen=True)
class ArcRule:
    """The window and model-selection rule of :func:`fit_arc` (module docstring).

    Defaults chosen on synthetic profiles (tests/test_turnpike.py) and checked on the ring
    (N = 80, 450) and the spiral of docs/turnpike.md.
    """

    start_level: float = 0.5
    floor_factor: float = 3.0
    min_depth: float = 10.0
    rise: float = 0.25
    bic_margin: float = 10.0
    min_rate_ratio: float = 1.5
    min_share: float = 0.1
    resolution: float = 0.02
    min_points: int = 6

    def __post_init__(self) -> None:
        if not 0.0 < self.start_level <= 1.0:
            raise ValueError(f"start_level must be in (0, 1], got {self.start_level}")
        for name in ("floor_factor", "min_depth", "min_rate_ratio"):
            if not getattr(self, name) >= 1.0:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("rise", "bic_margin", "min_share", "resolution"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_points < 5:
            raise ValueError(f"min_points must be >= 5, got {self.min_points}")


@dataclasses.dataclass(frozen=True)
class ArcFit:
    """One profile's arc (module docstring): ``model`` (one of :data:`MODELS`), ``rate`` μ
    and ``ci95`` of the one-rate fit when ``model == "one_rate"`` (else ``None``),
    ``single_rate`` (the one-rate fit whatever the model), ``rates`` (μ₁, μ₂ of the two-rate
    fit), ``delta_bic`` (one-rate BIC minus two-rate BIC), the ``window`` ``[t_start,
    t_end]`` and its ``n_points``, the ``arc_level`` m (the lowest value), ``depth``
    (``v_max/m``), ``arc_start`` (the first time after the window's start the profile is
    below ``floor_factor·m``), ``mid_value`` ``v(T/2)``, ``has_arc`` (``v(T/2) ≤
    v_max/min_depth``: the profile is near the turnpike at mid-horizon), ``rise`` and
    ``rise_time`` (the largest relative rise of the entry arc above its running minimum,
    and where), ``transient_time`` (the top of the last transient, where the window's decay
    starts; ``None`` without one), the one-rate fit's ``c1``, ``c2``, ``floor`` and
    ``rms_log_residual``, and a ``note``."""

    horizon: float
    model: str
    rate: float | None
    ci95: list[float] | None
    single_rate: float | None
    rates: list[float] | None
    delta_bic: float | None
    window: list[float] | None
    n_points: int
    arc_level: float | None
    depth: float | None
    arc_start: float | None
    mid_value: float | None
    has_arc: bool
    rise: float
    rise_time: float | None
    transient_time: float | None
    c1: float | None = None
    c2: float | None = None
    floor: float | None = None
    rms_log_residual: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- models


def one_rate(p: np.ndarray, t: np.ndarray, T: float) -> np.ndarray:
    """``a·e^{−μt} + b·e^{−μ(T−t)} + f`` with ``p = log(a, b, μ, f)``."""
    a, b, mu, f = np.exp(np.clip(p, -700.0, 700.0))
    return a * np.exp(-mu * t) + b * np.exp(-mu * (T - t)) + f


def two_rates(p: np.ndarray, t: np.ndarray, T: float) -> np.ndarray:
    """``a₁e^{−μ₁t} + a₂e^{−μ₂t} + b·e^{−μ₂(T−t)} + f`` with ``p = log(a₁, μ₁, a₂, μ₂, b,
    f)``."""
    a1, mu1, a2, mu2, b, f = np.exp(np.clip(p, -700.0, 700.0))
    return a1 * np.exp(-mu1 * t) + a2 * np.exp(-mu2 * t) + b * np.exp(-mu2 * (T - t)) + f


Model = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def _least_squares(model: Model, t: np.ndarray, logv: np.ndarray, T: float,
                   starts: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    """The best of ``least_squares`` runs on ``log model − log v``: (log-parameters, RSS)."""
    best, best_rss = starts[0], math.inf
    for p0 in starts:
        res = optimize.least_squares(lambda p: np.log(model(p, t, T)) - logv, p0,
                                     method="trf", max_nfev=3000)
        rss = float(2.0 * res.cost)
        if rss < best_rss:
            best, best_rss = res.x, rss
    return best, best_rss


def _one_rate_starts(t: np.ndarray, v: np.ndarray, T: float) -> list[np.ndarray]:
    lo = max(float(v.min()), 1e-300)
    slope = -np.polyfit(t, np.log(v), 1)[0] if len(t) > 1 else 1.0
    mus = {max(float(slope), 1e-3), 0.3, 1.0, 3.0}
    return [np.log([max(v[0], lo), 1e-3 * v[0] + 1e-300, mu, 0.1 * lo]) for mu in sorted(mus)]


def _two_rate_starts(p1: np.ndarray) -> list[np.ndarray]:
    a, b, mu, f = p1
    return [np.array([a, mu + math.log(k), a + math.log(0.5), mu + math.log(j), b, f])
            for k, j in ((3.0, 0.5), (1.5, 0.7), (6.0, 0.3))]


def _bic(rss: float, n: int, k: int) -> float:
    return n * math.log(max(rss, 1e-300) / n) + k * math.log(n)


def _bootstrap(t: np.ndarray, logv: np.ndarray, T: float, p: np.ndarray, n_boot: int,
               seed: int) -> tuple[list[float] | None, int]:
    """95 % interval of μ from a moving-block bootstrap of the one-rate log residuals."""
    n = len(t)
    b = max(2, math.ceil(n ** (1 / 3)))
    if n_boot < 2 or n < 2 * b:
        return None, b
    fitted = np.log(one_rate(p, t, T))
    resid = logv - fitted
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(n_boot):
        starts = rng.integers(0, n - b + 1, size=math.ceil(n / b))
        r = np.concatenate([resid[s:s + b] for s in starts])[:n]
        q, _ = _least_squares(one_rate, t, fitted + r, T, [p])
        rates.append(math.exp(q[2]))
    return [float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))], b


# --------------------------------------------------------------------------- one profile


@dataclasses.dataclass(frozen=True)
class _Window:
    keep: np.ndarray
    arc_level: float
    arc_start: float | None
    depth: float
    has_arc: bool
    rise: float
    rise_time: float | None
    transient_time: float | None


def _last_transient(seg: np.ndarray, rule: ArcRule) -> tuple[int | None, np.ndarray]:
    """The top of the last rise of ``seg`` by more than ``rule.rise`` above its running
    minimum (``None`` without one), and the relative rises."""
    ratio = seg / np.minimum.accumulate(seg) - 1.0
    rising = np.flatnonzero(ratio > rule.rise)
    if not len(rising):
        return None, ratio
    breaks = np.flatnonzero(np.diff(rising) > 1)
    first = int(rising[breaks[-1] + 1] if len(breaks) else rising[0])
    return first + int(np.argmax(seg[first: int(rising[-1]) + 1])), ratio


def _window(t: np.ndarray, v: np.ndarray, T: float, rule: ArcRule, noise: float) -> _Window:
    """The level-based window (after the last transient of the entry arc, above the floor),
    the arc, and the largest rise of the entry arc."""
    idx = np.arange(len(v))
    m = float(v.min())
    floor = rule.floor_factor * max(m, noise)
    k_peak = int(np.argmax(v[: int(np.argmin(v)) + 1]))
    below = np.flatnonzero((idx >= k_peak) & (v < floor))
    k_end = int(below[0]) if len(below) else int(np.argmin(v))
    top, ratio = _last_transient(v[k_peak: k_end + 1], rule)
    k_top = k_peak if top is None else k_peak + top
    level = m + rule.start_level * (v[k_top] - m)
    k_start = int(np.flatnonzero((idx >= k_top) & (v <= level))[0])
    after = np.flatnonzero((idx >= k_start) & (v < floor))
    k_rise = int(np.argmax(ratio))
    return _Window((idx >= k_start) & (v >= floor), m,
                   float(t[after[0]]) if len(after) else None, float(v[k_peak] / m),
                   bool(v[k_peak] >= rule.min_depth * np.interp(T / 2, t, v)),
                   float(ratio[k_rise]), float(t[k_peak + k_rise]) if ratio[k_rise] > 0 else None,
                   None if top is None else float(t[k_top]))


def _two_rate_choice(t: np.ndarray, logv: np.ndarray, T: float, p1: np.ndarray, rss1: float,
                     rule: ArcRule) -> tuple[bool, list[float], float]:
    """Fit two rates; whether the rule prefers them, (μ₁, μ₂) descending, ΔBIC."""
    n = len(t)
    p2, rss2 = _least_squares(two_rates, t, logv, T, _two_rate_starts(p1))
    a1, mu1, a2, mu2, _, _ = np.exp(np.clip(p2, -700.0, 700.0))
    total = two_rates(p2, t, T)
    shares = [float(np.max(a1 * np.exp(-mu1 * t) / total)),
              float(np.max(a2 * np.exp(-mu2 * t) / total))]
    delta = _bic(rss1, n, 4) - _bic(rss2, n, 6)
    rates = sorted([float(mu1), float(mu2)], reverse=True)
    two = (delta >= rule.bic_margin and rates[0] >= rule.min_rate_ratio * rates[1]
           and min(shares) >= rule.min_share and math.sqrt(rss1 / n) >= rule.resolution)
    return two, rates, float(delta)


def fit_arc(times: Sequence[float], values: Sequence[float], horizon: float,
            rule: ArcRule | None = None, n_boot: int = 100, seed: int = 0,
            noise: float = 0.0) -> ArcFit:
    """The arc of one profile ``v(t)`` (absolute times ``t``, horizon ``T``): window, one-
    and two-rate fits, and the model the rule chooses (module docstring). Values below
    ``noise`` are round-off to the caller (the sweep passes its stationarity tolerance)."""
    rule = rule or ArcRule()
    t, v = np.asarray(times, float), np.asarray(values, float)
    ok = np.isfinite(v) & (v > 0)
    t, v, T = t[ok], v[ok], float(horizon)
    empty = dict(horizon=T, rate=None, ci95=None, single_rate=None, rates=None,
                 delta_bic=None, window=None)
    if len(v) < rule.min_points:
        return ArcFit(model="too_few_points", n_points=len(v), arc_level=None, depth=None,
                      arc_start=None, mid_value=None, has_arc=False, rise=0.0, rise_time=None,
                      transient_time=None,
                      note=f"{len(v)} positive points; at least {rule.min_points} needed",
                      **empty)
    w = _window(t, v, T, rule, float(noise))
    tw, logv = t[w.keep], np.log(v[w.keep])
    n = len(tw)
    common = dict(n_points=n, arc_level=w.arc_level, depth=w.depth, arc_start=w.arc_start,
                  mid_value=float(np.interp(T / 2, t, v)), has_arc=w.has_arc, rise=w.rise,
                  rise_time=w.rise_time, transient_time=w.transient_time)
    if n < rule.min_points:
        return ArcFit(model="too_few_points", note=f"{n} window points",
                      **{**empty, "window": [float(tw[0]), float(tw[-1])] if n else None},
                      **common)
    p1, rss1 = _least_squares(one_rate, tw, logv, T, _one_rate_starts(tw, v[w.keep], T))
    c1, c2, mu, f = (float(x) for x in np.exp(np.clip(p1, -700.0, 700.0)))
    two, rates, delta = (_two_rate_choice(tw, logv, T, p1, rss1, rule)
                         if n >= rule.min_points + 2 else (False, None, None))
    model = "two_rates" if two else "one_rate"
    ci = _bootstrap(tw, logv, T, p1, n_boot, seed)[0] if model == "one_rate" else None
    return ArcFit(horizon=T, model=model, rate=mu if model == "one_rate" else None, ci95=ci,
                  single_rate=mu, rates=rates, delta_bic=delta,
                  window=[float(tw[0]), float(tw[-1])], c1=c1, c2=c2, floor=f,
                  rms_log_residual=math.sqrt(rss1 / n), **common)


# --------------------------------------------------------------------------- across horizons


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the fits of the ``longest`` horizons say (:func:`verdict`): ``kind`` (one of
    :data:`VERDICTS`), ``rate`` and ``ci95`` (``exponential`` only: the median of the
    horizons' μ and the union of their intervals), ``spread`` (``max μ / min μ − 1`` of the
    one-rate fits, where every horizon has one), ``tolerance``, the ``horizons`` judged,
    ``evidence`` (one line per finding) and ``summary`` (the line the command prints)."""

    kind: str
    rate: float | None
    ci95: list[float] | None
    spread: float | None
    tolerance: float
    horizons: list[float]
    evidence: list[str]
    summary: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _levels(use: Sequence[ArcFit], tolerance: float) -> list[str]:
    """The arc levels m(T), and how they fall with T. The estimate puts the profile at
    mid-horizon below ``2C·e^{−μT/2}``: levels that fall much slower than that (rate
    ``μ_m = −2·d ln m/dT`` below half the fitted μ) mean that the long arc is not one steady
    state but moves with T."""
    have = [f for f in use if f.arc_level is not None]
    line = "arc level (lowest value) " + ", ".join(f"{f.arc_level:.3g} at T = {f.horizon:g}"
                                                  for f in have)
    if len(have) < 2 or have[0].arc_level <= (1 + tolerance) * have[-1].arc_level:
        return [line]
    T = np.array([f.horizon for f in have])
    m = np.log([f.arc_level for f in have])
    power, mu_m = float(np.polyfit(np.log(T), m, 1)[0]), float(-2.0 * np.polyfit(T, m, 1)[0])
    mus = [f.single_rate for f in have if f.single_rate is not None]
    line += f": it falls with T (like T^{power:.2f}, or e^{{−{mu_m:.3g}·T/2}})"
    if mus and mu_m < 0.5 * float(np.median(mus)):
        line += (f", much slower than e^{{−μT/2}} with the fitted μ ≈ {np.median(mus):.2g}: "
                 "the long arc is not one steady state, it moves toward the steady set as T "
                 "grows")
    return [line]


def _no_arc_line(f: ArcFit, rule: ArcRule) -> str:
    if f.depth is None:
        return f"T = {f.horizon:g}: {f.note}"
    if f.has_arc:
        return (f"T = {f.horizon:g}: only {f.n_points} points between the start of the decay "
                f"and {rule.floor_factor:g}× the arc level: too few to measure a rate at this "
                "step")
    return (f"T = {f.horizon:g}: at mid-horizon the profile is still above 1/"
            f"{rule.min_depth:g} of its maximum (v(T/2) = {f.mid_value:.3g}, fall "
            f"{f.depth:.3g}× to the lowest value)")


def _shape_line(f: ArcFit, rule: ArcRule) -> str:
    return (f"T = {f.horizon:g}: two rates μ₁ = {f.rates[0]:.3g}, μ₂ = {f.rates[1]:.3g} fit "
            f"better than one (ΔBIC = {f.delta_bic:.1f} ≥ {rule.bic_margin:g}; one rate "
            f"{f.single_rate:.3g} leaves an RMS log residual {f.rms_log_residual:.3f})")


def _transient_line(fs: Sequence[ArcFit]) -> list[str]:
    have = [f for f in fs if f.transient_time is not None]
    if not have:
        return []
    return ["a second transient (the profile rises again, e.g. by "
            f"{max(f.rise for f in have):.0%}) at " + ", ".join(
                f"t = {f.transient_time:g} (T = {f.horizon:g})" for f in have)
            + ": the rate is measured after it"]


def verdict(fits: Sequence[ArcFit], longest: int = 3, tolerance: float = 0.2,
            rule: ArcRule | None = None, not_optimal: Mapping[float, str] | None = None
            ) -> Verdict:
    """The verdict over the ``longest`` horizons of ``fits`` (those of converged horizons).

    Of those, a horizon is set aside (with its reason in the evidence) when its solution is
    known not to be optimal (``not_optimal``: ``{T: why}``, e.g. from
    :func:`~controldl.studies.turnpike.starts.truncation_check`; the estimate is about
    optimal pairs, and profiles of different basins are not one family) or when it has an
    arc but too few window points to measure a rate at this step. Then, over the rest:

    - ``no_arc`` when fewer than two remain;
    - ``not_single_exponential`` when one of them is ``two_rates``;
    - ``no_arc`` when one of them has no arc (at ``T/2`` the profile has not fallen to
      ``1/min_depth`` of its maximum);
    - ``not_single_exponential`` when their one-rate μ differ by more than ``tolerance``
      (``max/min − 1``): one exponential per horizon, but not the same;
    - ``exponential`` otherwise.
    """
    rule = rule or ArcRule()
    not_optimal = dict(not_optimal or {})
    longest_fits = sorted(fits, key=lambda f: f.horizon)[-longest:]
    aside = [not_optimal[f.horizon] for f in longest_fits if f.horizon in not_optimal]
    aside += [_no_arc_line(f, rule) for f in longest_fits if f.horizon not in not_optimal
              and f.has_arc and f.model == "too_few_points"]
    use = [f for f in longest_fits if f.horizon not in not_optimal
           and not (f.has_arc and f.model == "too_few_points")]
    Ts = [f.horizon for f in use]
    where = "T = " + ", ".join(f"{T:g}" for T in Ts)

    def make(kind: str, lines: list[str], summary: str, rate: float | None = None,
             ci: list[float] | None = None, spread: float | None = None) -> Verdict:
        return Verdict(kind, rate, ci, spread, tolerance, Ts,
                       [*lines, *aside, *_transient_line(use), *_levels(use, tolerance)],
                       summary)

    if len(use) < 2:
        return make("no_arc", [f"{len(use)} horizon(s) to judge among the {len(longest_fits)}"
                               " longest converged: a rate independent of T needs at least "
                               "2"], "no turnpike arc at these horizons (fewer than 2 "
                    "horizons to compare)")
    bad = [f for f in use if f.model == "two_rates"]
    if bad:
        return make("not_single_exponential", [_shape_line(f, rule) for f in bad],
                    f"the decay is not a single exponential on this data ({where})")
    lacking = [f for f in use if not f.has_arc or f.model == "too_few_points"]
    if lacking:
        return make("no_arc", [_no_arc_line(f, rule) for f in lacking],
                    f"no turnpike arc at these horizons ({where})")
    mus = np.array([f.rate for f in use])
    spread = float(mus.max() / mus.min() - 1.0)
    rates = ", ".join(f"{f.rate:.3g}" for f in use)
    if spread > tolerance:
        return make("not_single_exponential",
                    [f"one rate per horizon, but it depends on T: μ = {rates} at {where} "
                     f"(spread {spread:.0%} > {tolerance:.0%})"],
                    f"the decay is not a single exponential on this data: μ depends on T "
                    f"({rates} at {where})", spread=spread)
    lo = [f.ci95[0] if f.ci95 else f.rate for f in use]
    hi = [f.ci95[1] if f.ci95 else f.rate for f in use]
    rate, ci = float(np.median(mus)), [float(min(lo)), float(max(hi))]
    return make("exponential", [f"one rate at every horizon: μ = {rates} at {where} "
                                f"(spread {spread:.0%} ≤ {tolerance:.0%})"],
                f"exponential turnpike, μ = {rate:.3g} [{ci[0]:.3g}, {ci[1]:.3g}], "
                f"T-independent within {spread:.0%} ({where})", rate, ci, spread)
