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
