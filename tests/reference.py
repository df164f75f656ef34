"""The one NumPy oracle of the tests: the canonical problem of docs/design.md written out with
plain loops, independent of controldl (no import of it), for the tests to hold the library
against."""

from __future__ import annotations

import numpy as np


def np_activation(name: str, u: np.ndarray) -> np.ndarray:
    return {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0),
            "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
            "softplus": lambda v: np.log1p(np.exp(v)), "identity": lambda v: v}[name](u)


def np_states(model: str, act: str, h: float, A, b, X0) -> list[np.ndarray]:
    """x(0..L) with x(t+1) = x(t) + h σ(A_t x(t) + b_t) (resnet), σ(A_t x(t) + b_t) (mlp)
    or x(t) + h (A_t σ(x(t)) + b_t) (inside)."""
    xs = [X0]
    for t in range(A.shape[0]):
        x = xs[-1]
        if model == "inside":
            xs.append(x + h * (np_activation(act, x) @ A[t].T + b[t]))
            continue
        u = np_activation(act, x @ A[t].T + b[t])
        xs.append(x + h * u if model == "resnet" else u)
    return xs


def np_mean_loss(loss: str, z: np.ndarray, Y: np.ndarray) -> float:
    """(1/N) Σ_i ℓ(z_i, y_i), every loss written out."""
    if loss == "logistic":
        per = np.log(1.0 + np.exp(-(2.0 * Y - 1.0) * z)).sum(axis=1)
    elif loss == "cross_entropy":
        zmax = z.max(axis=1, keepdims=True)
        lse = (zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)))[:, 0]
        per = lse - (Y * z).sum(axis=1)
    elif loss == "sigmoid_mse":
        per = ((1.0 / (1.0 + np.exp(-z)) - Y) ** 2).sum(axis=1)
    elif loss == "squared":
        per = 0.5 * ((z - Y) ** 2).sum(axis=1)
    else:
        raise AssertionError(loss)
    return float(per.mean())


def np_cost_terms(form, A, b, W, c, X0, Y) -> dict[str, float]:
    """Every term of J as docs/design.md writes it, with plain loops."""
    h, L = form.horizon / form.layers, form.layers
    xs = np_states(form.model, form.activation, h, A, b, X0)
    err = [np_mean_loss(form.loss, x @ W.T + c, Y) for x in xs]
    terms = {
        "terminal": err[L],
        "l2": form.l2 / 2 * h * sum(np.sum(A[t] ** 2) + np.sum(b[t] ** 2) for t in range(L)),
        "l1": form.l1 * h * sum(np.sum(np.abs(A[t])) + np.sum(np.abs(b[t])) for t in range(L)),
        "smooth": form.smooth / (2 * h) * sum(np.sum((A[t + 1] - A[t]) ** 2)
                                              + np.sum((b[t + 1] - b[t]) ** 2)
                                              for t in range(L - 1)),
        "running": form.running * h * sum(err[t] for t in range(1, L + 1)),
        "readout_l2": form.readout_l2 / 2 * (np.sum(W ** 2) + np.sum(c ** 2)),
    }
    terms["total"] = sum(terms.values())
    return terms
