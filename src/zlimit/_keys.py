"""The keys of a :class:`~zlimit.Run`'s per-layer entries, written and read in one place.

Kernels and cross kernels are keyed ``{kind}{l}`` (kinds "h", "x", "dh"), novelty
``{side}{l}`` (the forward or backward Gaussian process of W^l, sides "fwd", "bwd"),
and basis statistics ``{stat}_{side}{l}``.
"""
from __future__ import annotations

import re

__all__ = ["key", "parse_key"]


def key(kind: str, layer: int, stat: str | None = None) -> str:
    """The key of a per-layer entry of a :class:`Run` — the one place keys are written.

    ``key("h", 2) == "h2"`` (``kernels``, ``cross``: kinds "h", "x", "dh");
    ``key("fwd", 3) == "fwd3"`` (``novelty``: the forward or backward Gaussian process
    of W^3); ``key("bwd", 2, "size") == "size_bwd2"`` (``bases``: stats "size",
    "dropped", "dropped_mass", "orthogonality").
    """
    return f"{kind}{layer}" if stat is None else f"{stat}_{kind}{layer}"


_KEY = re.compile(r"^(?:(?P<stat>[a-z_]+)_)?(?P<kind>dh|h|x|fwd|bwd)(?P<layer>[0-9]+)$")


def parse_key(k: str) -> tuple[str, int, str | None]:
    """(kind, layer, stat) of a key written by :func:`key`: ``parse_key("size_bwd2") == ("bwd", 2, "size")``.

    >>> parse_key("dh1"), parse_key("dropped_mass_fwd3")
    (('dh', 1, None), ('fwd', 3, 'dropped_mass'))
    """
    match = _KEY.match(k)
    if match is None:
        raise ValueError(f"{k!r} is not a zlimit Run key (e.g. 'h2', 'dh1', 'fwd3', 'size_bwd2')")
    return match["kind"], int(match["layer"]), match["stat"]
