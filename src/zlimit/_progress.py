"""Progress bars: one rule for every long loop of the package.

``progress=None`` (the default everywhere) means *automatic*: a bar is drawn when
standard error is a terminal or the code runs in a Jupyter kernel, and not when
output goes to a file or a pipe (a batch job's log, CI), where a bar only adds
carriage-return noise. ``True`` and ``False`` force it on or off.

In Jupyter the bar is a widget when ipywidgets is installed (``pip install
zlimit[notebook]``) and text otherwise. Unlike ``tqdm.auto``, nothing here warns
at import time when ipywidgets is missing.
"""
from __future__ import annotations

import sys

from ._validate import _is_bool, _show

__all__ = ["resolve", "bar"]


def _in_jupyter() -> bool:
    """True inside a Jupyter (IPython kernel) session."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def resolve(progress) -> bool:
    """Whether to draw a bar: ``progress`` itself, or for None whether stderr is a
    terminal or a Jupyter kernel runs the code.

    Examples
    --------
    >>> from zlimit._progress import resolve
    >>> resolve(True), resolve(False)
    (True, False)
    >>> resolve("yes")
    Traceback (most recent call last):
    ...
    ValueError: progress must be True, False or None (automatic: on when stderr is a terminal), got 'yes'
    """
    if progress is None:
        stream = sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)()) or _in_jupyter()
    if not _is_bool(progress):
        raise ValueError(f"progress must be True, False or None (automatic: on when stderr is a terminal), "
                         f"got {_show(progress)}")
    return bool(progress)


def _tqdm_class():
    if _in_jupyter():
        try:
            import ipywidgets  # noqa: F401  (tqdm.notebook draws with it)
            from tqdm.notebook import tqdm
            return tqdm
        except ImportError:
            pass
    from tqdm.std import tqdm
    return tqdm


def bar(iterable=None, *, progress: bool, **kwargs):
    """A tqdm bar, disabled unless ``progress`` (already resolved) is True.

    Parameters
    ----------
    iterable : iterable, optional
    progress : bool
        From :func:`resolve`.
    **kwargs
        Passed to tqdm (``total``, ``desc``, ``unit``, ...).

    Examples
    --------
    >>> from zlimit._progress import bar
    >>> with bar(total=3, progress=False, desc="quiet") as b:
    ...     b.update(3)
    >>> list(bar(range(3), progress=False))
    [0, 1, 2]
    """
    return _tqdm_class()(iterable, disable=not progress, **kwargs)
