"""The solver options are declared once (dataclass fields made by
``controldl.solvers.options.option``): the validation, the command line's help and the
spec parser are generated from the declaration, for every registered solver."""

from __future__ import annotations

import dataclasses

import pytest

from controldl import solvers
from controldl.cli.common import solver_fields
from controldl.solvers.options import OPTION_KEY, parse_spec, solver_options

NAMES = solvers.available()


def _outside(info, integer: bool) -> list:
    """Values just outside the declared range (or a closed bound excluded)."""
    step = 1 if integer else 1e-9
    out = []
    if info.low is not None:
        out.append(info.low if info.open_low else info.low - step)
    if info.high is not None:
        out.append(info.high if info.open_high else info.high + step)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_every_option_is_declared_with_help(name):
    cls = solvers.solver_class(name)
    for field in dataclasses.fields(cls):
        info = field.metadata.get(OPTION_KEY)
        assert info is not None and info.help, f"{name}.{field.name} has no declaration"
        assert "Attributes:" not in (cls.__doc__ or "")


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_and_unknown_choices_are_refused(name):
    cls = solvers.solver_class(name)
    cls()  # the declared defaults pass
    for spec in solver_options(cls).values():
        integer = "int" in str(spec.annotation)
        for value in _outside(spec.info, integer):
            with pytest.raises(ValueError, match=spec.name):
                cls(**{spec.name: int(value) if integer else value})
        if spec.info.choices:
            with pytest.raises(ValueError, match=spec.name):
                cls(**{spec.name: "no-such-choice"})
            for choice in spec.info.choices:
                assert getattr(cls(**{spec.name: choice}), spec.name) == choice


def test_help_and_specs_come_from_the_declaration():
    fields = solver_fields()
    info = solver_options(solvers.solver_class("emsa"))["rho_factor"].info
    assert info.help in fields["rho_factor"]["help"] and "[> 1]" in fields["rho_factor"]["help"]
    with pytest.raises(ValueError, match="rho_factor must be > 1"):
        parse_spec("emsa:rho_factor=1")
    assert parse_spec("emsa:rho_factor=3").options == {"rho_factor": 3.0}


def test_one_vocabulary_of_names_with_suggestions():
    """Every registered solver and every optax optimizer is a name; an unknown one lists
    them all and suggests the closest; an optimizer's name is gradient descent with it."""
    names = solvers.names()
    assert names[:len(NAMES)] == NAMES and {"adam", "sgd", "lbfgs", "adamw"} <= set(names)
    assert solvers.resolve("adam") == ("gd", {"optimizer": "adam"})
    assert solvers.resolve("emsa") == ("emsa", {})
    for wrong, meant in [("emas", "emsa"), ("EMSA", "emsa"), ("ipopt", "casadi"),
                         ("pmp", "emsa"), ("adma", "adam"), ("lbgfs", "lbfgs"),
                         ("pmp-newtn", "pmp-newton")]:
        with pytest.raises(ValueError, match=f"did you mean '{meant}'") as err:
            solvers.make_solver(wrong)
        message = str(err.value)
        assert "\n" not in message and all(n in message for n in names), message
    with pytest.raises(ValueError, match="unknown solver 'zzz'. The solvers"):
        parse_spec("zzz:lr=1")
    assert parse_spec("lbfgs").make() == solvers.GradientDescent("lbfgs")
    with pytest.raises(ValueError, match="gradient descent with optimizer adam"):
        solvers.solver_class("adam")


def test_an_option_the_named_solver_does_not_have_is_refused_with_its_options():
    with pytest.raises(ValueError, match=r"solver 'lbfgs' has no option 'lr' \(its line search "
                                         r"chooses the step\); its options: optimizer, "
                                         r"record_every, grad_tol, dtype, devices, "
                                         r"checkpoint_every, return_best$"):
        parse_spec("lbfgs:lr=0.1")
    for spec in ("lbfgs:schedule=cosine", "lbfgs:batch_size=10", "adam:momentum=0.9"):
        with pytest.raises(ValueError, match="has no option"):
            parse_spec(spec)
    assert parse_spec("sgd:momentum=0.9").options == {"optimizer": "sgd", "momentum": 0.9}
    with pytest.raises(ValueError, match="solver 'adam' has no option 'rho'"):
        parse_spec("adam:rho=1")
