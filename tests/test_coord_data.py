"""Comparison.coord_data: mup-style coordinate statistics (width, seed, t, layer, kind, l1, l2,
mean, std) of every run of a comparison.

References, independent of the code under test:
* the finite nets' actual features at t = 0 from a forward pass written here in numpy
  from the initial weights (``zlimit.init_weights``, the μP stds σ_1/√d and σ_l/√n of
  maths §5), with l1 = mean |v|, l2 = sqrt(mean v²), mean and std (ddof 0) over the n
  coordinates and all M inputs (training and evaluation);
* l2 at every step against the recorded kernel diagonal, sqrt(mean_a v_t(ξ_a)·v_t(ξ_a)/n);
* the limit at t = 0 against closed forms: h^1(ξ) ~ N(0, σ_1²‖ξ‖²/d), x = tanh(h),
  h^2 ~ N(0, σ_2² E[x^1(ξ)²]), the Gaussian integrals by Gauss–Hermite quadrature,
  within the Monte Carlo error of N particles;
* hand-made runs whose moments and kernels come from known vectors.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import zlimit
from zlimit.compare import COORD_COLUMNS, Comparison, _assemble, compare
from zlimit._results import Run

WIDTHS, SEEDS, STEPS, PARTICLES = [32, 96], [3, 7], 3, 4000
SIGMA = [1.3, 1.1, 0.9]  # σ_1, σ_2, σ_3 of a depth-2 model


@pytest.fixture(scope="module")
def problem():
    X, y = zlimit.datasets.gaussian(5, 4, seed=2)
    model = zlimit.MLP(depth=2, activation="tanh", lr=0.4, init_std=SIGMA)
    return model, X[:3], y[:3], X[3:]


@pytest.fixture(scope="module")
def cmp(problem) -> Comparison:
    model, X, y, X_eval = problem
    with warnings.catch_warnings():  # two widths give no convergence rate: tested in test_compare.py
        warnings.simplefilter("ignore", zlimit.MonteCarloWarning)
        return compare(model, X, y, X_eval=X_eval, widths=WIDTHS, seeds=SEEDS, steps=STEPS,
                       particles=PARTICLES, groups=2, progress=False)


def _hand_features(model, Xall: np.ndarray, width: int, seed: int) -> dict[str, np.ndarray]:
    """h^1 = W^1 ξ, x^l = tanh(h^l), h^2 = W^2 x^1 at t = 0, one column per input (n, M)."""
    W1, W2, _ = zlimit.init_weights(model, Xall.shape[1], width, "mup", seed=seed)
    h1 = W1 @ Xall.T
    x1 = np.tanh(h1)
    h2 = W2 @ x1
    return {"h1": h1, "x1": x1, "h2": h2, "x2": np.tanh(h2)}


def _row(cd, width, seed, t, layer, kind):
    sel = cd[(cd["width"] == width) & (cd["seed"] == seed) & (cd["t"] == t) & (cd["layer"] == layer)
             & (cd["kind"] == kind)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_columns_and_rows(cmp):
    cd = cmp.coord_data()
    assert tuple(cd.columns) == COORD_COLUMNS
    runs = 1 + len(WIDTHS) * len(SEEDS)
    assert len(cd) == runs * (STEPS + 1) * 2 * 2  # steps × layers 1, 2 × kinds h, x
    lim = cd[np.isinf(cd["width"])]
    assert set(lim["seed"]) == {-1} and len(lim) == (STEPS + 1) * 4
    assert sorted(set(cd["width"][np.isfinite(cd["width"])])) == WIDTHS
    assert set(cd["seed"]) == {-1, *SEEDS} and set(cd["kind"]) == {"h", "x"}
    assert [str(cd[c].dtype) for c in ("width", "seed", "t", "layer")] == ["float64", "int64", "int64", "int64"]
    only = cmp.coord_data(layers=2, kinds="x")
    assert set(only["layer"]) == {2} and set(only["kind"]) == {"x"} and len(only) == runs * (STEPS + 1)
    sub = cd[(cd["layer"] == 2) & (cd["kind"] == "x")].reset_index(drop=True)
    assert only.equals(sub)


def test_finite_rows_equal_hand_computed_features_at_t0(cmp, problem):
    """The issue's test: l1 and l2 (and mean, std) of both widths against the nets' own
    features, recomputed by hand from the initial weights."""
    model, X, _, X_eval = problem
    Xall = np.concatenate([X, X_eval])
    cd = cmp.coord_data()
    for w in WIDTHS:
        for s in SEEDS:
            for name, v in _hand_features(model, Xall, w, s).items():
                assert v.shape == (w, 5)
                row = _row(cd, w, s, 0, int(name[1]), name[0])
                np.testing.assert_allclose(
                    [row["l1"], row["l2"], row["mean"], row["std"]],
                    [np.abs(v).mean(), np.sqrt((v ** 2).mean()), v.mean(), v.std()], rtol=1e-12, atol=1e-15)


def test_l2_is_the_kernel_diagonal_at_every_step(cmp):
    cd = cmp.coord_data()
    for (w, s), run in list(cmp.finite.items()) + [((math.inf, -1), cmp.limit)]:
        for layer in (1, 2):
            for kind in ("h", "x"):
                diag = np.einsum("taa->ta", run.kernel_groups(layer, kind).mean(axis=0))
                got = cd[(cd["width"] == w) & (cd["seed"] == s) & (cd["layer"] == layer) & (cd["kind"] == kind)]
                np.testing.assert_allclose(got.sort_values("t")["l2"], np.sqrt(diag.mean(axis=1)), rtol=1e-12)
    # the features move: l2 at the last step differs from t = 0 (so the check above is not of a constant)
    row0, rowT = _row(cd, WIDTHS[0], SEEDS[0], 0, 2, "x"), _row(cd, WIDTHS[0], SEEDS[0], STEPS, 2, "x")
    assert abs(rowT["l2"] - row0["l2"]) > 1e-6


def _gauss(f, sd):
    """E[f(sd Z)], Z ~ N(0, 1), by 80-point Gauss–Hermite quadrature (exact to ~1e-15 here)."""
    z, w = np.polynomial.hermite_e.hermegauss(80)
    return float(np.sum(w * f(sd * z)) / math.sqrt(2 * math.pi))


def test_limit_rows_at_t0_against_gaussian_closed_forms(cmp, problem):
    model, X, _, X_eval = problem
    Xall = np.concatenate([X, X_eval])
    s1, s2 = model.sigma[0], model.sigma[1]
    sd1 = s1 * np.linalg.norm(Xall, axis=1) / math.sqrt(Xall.shape[1])       # per input
    ex1sq = np.array([_gauss(lambda z: np.tanh(z) ** 2, s) for s in sd1])
    sd2 = s2 * np.sqrt(ex1sq)
    expect = {  # (l1, l2) averaged over the inputs as coord_data does
        ("h", 1): (np.mean(sd1) * math.sqrt(2 / math.pi), np.sqrt(np.mean(sd1 ** 2))),
        ("x", 1): (np.mean([_gauss(lambda z: np.abs(np.tanh(z)), s) for s in sd1]), np.sqrt(ex1sq.mean())),
        ("h", 2): (np.mean(sd2) * math.sqrt(2 / math.pi), np.sqrt(np.mean(sd2 ** 2))),
        ("x", 2): (np.mean([_gauss(lambda z: np.abs(np.tanh(z)), s) for s in sd2]),
                   np.sqrt(np.mean([_gauss(lambda z: np.tanh(z) ** 2, s) for s in sd2]))),
    }
    cd = cmp.coord_data()
    for (kind, layer), (l1, l2) in expect.items():
        row = _row(cd, math.inf, -1, 0, layer, kind)
        # N = 4000 particles: a relative Monte Carlo error of ~1/sqrt(N) = 1.6% per input, less on average
        assert row["l1"] == pytest.approx(l1, rel=0.05), (kind, layer)
        assert row["l2"] == pytest.approx(l2, rel=0.05), (kind, layer)
        assert abs(row["mean"]) < 0.05 * l2 and row["std"] == pytest.approx(l2, rel=0.05)
    # pooled over the groups: the mean of the per-group moments
    mom = cmp.limit.moments["x2"]
    row = _row(cd, math.inf, -1, STEPS, 2, "x")
    assert row["l1"] == pytest.approx(mom[:, STEPS, :, 1].mean(), rel=1e-12)
    assert row["mean"] == pytest.approx(mom[:, STEPS, :, 0].mean(), rel=1e-12)


# ------------------------------------------------------------------ hand-made runs
def _run_of_vectors(model, vectors: np.ndarray, kind_meta: dict) -> Run:
    """A run whose every feature (both layers, both kinds) is ``vectors`` (G, T+1, M, n):
    moments and kernels computed here from the vectors."""
    G, T1, M, n = vectors.shape
    moments = np.stack([vectors.mean(axis=-1), np.abs(vectors).mean(axis=-1)], axis=-1)
    kernel = np.einsum("gtan,gtbn->gtab", vectors, vectors) / n
    keys = [f"{k}{l}" for k in ("h", "x") for l in (1, 2)]
    return Run(model=model, meta={**kind_meta, "steps": T1 - 1, "m": M, "m_eval": 0},
               outputs_groups=np.zeros((G, T1, M)), loss_groups=np.ones((G, T1)),
               error_signals_groups=np.zeros((G, T1 - 1, M)),
               kernels={k: kernel for k in keys}, moments={k: moments for k in keys})


def test_formulas_on_hand_made_runs_with_pooled_groups():
    """A limit of G = 3 groups is pooled: l1 = mean over groups, inputs and coordinates of
    |v|; l2² the same mean of v²; std² = l2² − mean²; a shifted finite vector has a
    nonzero mean, so std < l2."""
    rng = np.random.default_rng(5)
    model = zlimit.MLP(depth=2)
    T1, M = 3, 2
    lim_v = rng.standard_normal((3, T1, M, 50))
    fin_v = rng.standard_normal((1, T1, M, 40)) + 0.7
    limit = _run_of_vectors(model, lim_v, {"kind": "limit", "particles": 150, "groups": 3})
    finite = {(8, 0): _run_of_vectors(model, fin_v, {"kind": "finite", "width": 8, "seed": 0})}
    with pytest.warns(zlimit.MonteCarloWarning):
        cmp = _assemble(limit, finite, [8], [0], "mup", stacklevel=1)
    cd = cmp.coord_data()
    for width, seed, v in ((math.inf, -1, lim_v), (8.0, 0, fin_v)):
        for t in range(T1):
            vt = v[:, t]                                    # (G, M, n)
            row = _row(cd, width, seed, t, 2, "x")
            assert row["l1"] == pytest.approx(np.abs(vt).mean(), rel=1e-12)
            assert row["l2"] == pytest.approx(np.sqrt((vt ** 2).mean()), rel=1e-12)
            assert row["mean"] == pytest.approx(vt.mean(), rel=1e-12)
            assert row["std"] == pytest.approx(vt.std(), rel=1e-10)
    assert _row(cd, 8.0, 0, 1, 1, "h")["std"] < 0.9 * _row(cd, 8.0, 0, 1, 1, "h")["l2"]


def test_runs_without_moments_are_refused():
    """Runs of an older zlimit have no moments: coord_data says so instead of guessing."""
    rng = np.random.default_rng(0)
    model = zlimit.MLP(depth=2)
    limit = _run_of_vectors(model, rng.standard_normal((2, 2, 2, 10)), {"kind": "limit"})
    old = _run_of_vectors(model, rng.standard_normal((1, 2, 2, 10)), {"kind": "finite", "width": 4, "seed": 1})
    old.moments = {}
    with pytest.warns(zlimit.MonteCarloWarning):
        cmp = _assemble(limit, {(4, 1): old}, [4], [1], "mup", stacklevel=1)
    with pytest.raises(ValueError, match=r"^the run n = 4 \(seed 1\) has no recorded moments: it was saved by an "
                                         r"older zlimit; rerun") as info:
        cmp.coord_data()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"layers": 0}, r"layers\[0\] must be"),
    ({"layers": [1, 3]}, r"layers\[1\] must be"),
    ({"layers": [1, 1]}, "repeated"),
    ({"layers": "1"}, "layers"),
    ({"kinds": "dh"}, "kinds must be one of"),
    ({"kinds": ["h", 2]}, "kinds must be one of"),
    ({"kinds": []}, "kinds must name at least one"),
])
def test_bad_arguments(cmp, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cmp.coord_data(**kwargs)
