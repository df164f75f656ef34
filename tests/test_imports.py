"""Importing controldl changes no global setting of the user's process."""

import subprocess
import sys
import textwrap


def test_import_leaves_float64_and_matplotlib_backend_alone():
    code = textwrap.dedent("""
        import matplotlib
        matplotlib.use("svg")
        import jax
        before = (jax.config.jax_enable_x64, matplotlib.get_backend(),
                  jax.config.jax_compilation_cache_dir)
        import controldl, controldl.plotting, controldl.plotting.turnpike, controldl.solvers
        after = (jax.config.jax_enable_x64, matplotlib.get_backend(),
                 jax.config.jax_compilation_cache_dir)
        assert before == after, (before, after)
        assert before[0] is False, before
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_enable_compilation_cache_honours_the_environment(tmp_path, monkeypatch):
    from controldl import compilation

    monkeypatch.setenv(compilation.CACHE_ENV, "off")
    assert compilation.cache_dir_from_env() is None
    monkeypatch.setenv(compilation.CACHE_ENV, str(tmp_path / "c"))
    assert compilation.cache_dir_from_env() == tmp_path / "c"
    assert compilation.cache_dir_from_env("off") is None
    monkeypatch.delenv(compilation.CACHE_ENV)
    assert compilation.cache_dir_from_env() == compilation.default_cache_dir()
