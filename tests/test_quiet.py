"""Quiet by default: progress bars only where someone watches, and no warning at import.

``progress=None`` (the default) draws a bar only when stderr is a terminal or in a
Jupyter kernel (zlimit._progress); under pytest's capture stderr is not a terminal.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import zlimit

MODEL = zlimit.MLP(depth=2, activation="tanh", lr=0.1)
X, Y = zlimit.datasets.gaussian(3, 4, seed=0)


def test_no_bar_when_stderr_is_not_a_terminal(capfd):
    assert not sys.stderr.isatty()
    zlimit.train_finite(MODEL, X, Y, width=8, steps=3)
    zlimit.simulate(MODEL, X, Y, steps=2, particles=400, groups=2)
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_train_finite_draws_a_bar_when_asked(capfd):
    calls = []
    zlimit.train_finite(MODEL, X, Y, width=8, steps=3, progress=True, on_step=lambda g, t: calls.append((g, t)))
    err = capfd.readouterr().err
    assert "zlimit.train_finite" in err and "4/4" in err  # T + 1 = 4 steps, all done
    assert calls == [(0, 0), (0, 1), (0, 2), (0, 3)]  # the user's hook still sees every step


def test_an_on_step_that_raises_stops_training_before_the_bar_moves(capfd):
    """The user's on_step runs first: when it raises at step 1 the exception propagates
    unchanged, training stops there, and the bar shows only step 0 done."""
    stop = RuntimeError("enough")
    calls = []

    def on_step(group, t):
        calls.append(t)
        if t == 1:
            raise stop

    with pytest.raises(RuntimeError) as info:
        zlimit.train_finite(MODEL, X, Y, width=8, steps=5, progress=True, on_step=on_step)
    assert info.value is stop and calls == [0, 1]
    err = capfd.readouterr().err
    assert "1/6" in err and "2/6" not in err


@pytest.mark.parametrize("bad", ["yes", 1, 0.0, np.array([True])])
def test_train_finite_refuses_a_progress_that_is_not_a_bool(bad):
    with pytest.raises(ValueError, match=r"^progress must be True, False or None"):
        zlimit.train_finite(MODEL, X, Y, width=8, steps=1, progress=bad)


# A Jupyter kernel without ipywidgets, in a fresh interpreter: IPython.get_ipython()
# returns a shell whose config names IPKernelApp, ipykernel's shell module is loaded
# (what tqdm.auto looks for), and importing ipywidgets fails. The script prints the
# module of zlimit's bar and the warnings raised while importing zlimit and drawing it,
# then those of tqdm.auto, which the package once used, in the same kernel.
JUPYTER_WITHOUT_WIDGETS = textwrap.dedent("""
    import sys, types, warnings
    shell = types.SimpleNamespace(config={"IPKernelApp": {"connection_file": "kernel.json"}})
    sys.modules["IPython"] = types.SimpleNamespace(get_ipython=lambda: shell)
    sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
    sys.modules["ipywidgets"] = None  # import ipywidgets raises ImportError

    def shown(caught):
        return [f"{w.category.__name__}: {w.message}" for w in caught]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import zlimit, zlimit._progress
        assert zlimit._progress.resolve(None)  # automatic progress is on in Jupyter
        b = zlimit._progress.bar(total=2, progress=True, desc="zlimit.test")
        b.update(2)
        b.close()
    print(type(b).__module__)
    print(shown(caught))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from tqdm.auto import tqdm
        tqdm(total=2).close()
    print(shown(caught))
""")


def test_import_and_bars_in_jupyter_without_ipywidgets_do_not_warn():
    """tqdm.auto warns there (TqdmWarning: IProgress not found); the package's bar falls
    back to tqdm.std text without a warning."""
    proc = subprocess.run([sys.executable, "-c", JUPYTER_WITHOUT_WIDGETS], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    module, ours, auto = proc.stdout.splitlines()
    assert (module, ours) == ("tqdm.std", "[]")
    assert "zlimit.test" in proc.stderr and "2/2" in proc.stderr
    assert "TqdmWarning: IProgress not found" in auto, auto  # the scenario is live


def test_progress_false_draws_nothing_even_on_a_terminal(capsys, monkeypatch):
    """progress=False is obeyed all the way down: the finite nets that paper_figure and
    compare train draw no bar of their own, even where one would show (a terminal)."""
    from zlimit.compare import compare

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    zlimit.train_finite(MODEL, X, Y, width=8, steps=1)  # automatic: on, on a terminal
    assert "zlimit.train_finite" in capsys.readouterr().err
    compare(MODEL, X, Y, widths=[8, 16], seeds=2, steps=1, particles=200, groups=2, progress=False)
    zlimit.paper_figure(steps=1, widths=[8], seeds=1, particles=200, groups=2, parametrizations=["mup"],
                        progress=False)
    assert capsys.readouterr().err == ""
