"""Finite-width MLPs trained by SGD, in μP and the other parametrizations of maths §5.

A finite network of width n is the object whose n → ∞ limit the engine computes.
:func:`train_finite` trains one, with the same :class:`~zlimit.MLP` description,
data, error signals and batch schedule as the limit, and returns a
:class:`~zlimit.Run` in the same layout (one group, G = 1).

Conventions (maths §1)
----------------------
Inputs ξ ∈ R^d, training inputs ξ_1..ξ_m, evaluation inputs ξ_{m+1..M}.
Width-n vectors are stored one input per column: ``h`` has shape (n, M).

    h^1 = W^1 ξ,   x^l = φ(h^l),   h^{l+1} = W^{l+1} x^l,   f(ξ) = W^{L+1} x^L

with W^1 (n×d), W^l (n×n) for 2 ≤ l ≤ L and W^{L+1} (1×n). The weights are plain
weights: each layer has its own init standard deviation and SGD learning rate
(table of maths §5, see :func:`layer_scales`), and the update is the ordinary
gradient of the batch loss r·Σ_{i∈B_t} ℓ(f(ξ_i), y_i).

Implementation notes
--------------------
The n×n matrices dominate the cost. Each hidden matrix is kept as
W = W_0 − Σ_k a_k b_kᵀ: the rank-|B_t| SGD updates are appended as columns and
folded into W_0 with one in-place BLAS ``gemm`` every few hundred columns. Each step
then reads every n×n matrix twice (forward and backward product), the least any
exact method can do, instead of three times plus a temporary n×n array.
"""
from __future__ import annotations

import math
import operator

import numpy as np
from scipy.linalg import get_blas_funcs

from ._activations import apply
from ._errors import DivergenceError  # re-exported here: zlimit._finite.DivergenceError is zlimit.DivergenceError
from ._model import MLP, check_batches, check_data, check_int, error_signal, total_loss
from ._results import Run

__all__ = ["train_finite", "init_weights", "layer_scales", "DivergenceError", "PARAMETRIZATIONS", "DTYPES"]

PARAMETRIZATIONS = ("mup", "sp", "ntp", "ip")
DTYPES = ("float64", "float32")

# Columns of pending low-rank updates kept per hidden matrix before folding them into W_0.
_FOLD_COLUMNS = 256


# ---------------------------------------------------------------------- validation


def _check_parametrization(parametrization) -> str:
    if not isinstance(parametrization, str) or parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
    return parametrization


def _check_dtype(dtype) -> str:
    try:
        name = None if dtype is None else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return name


def _check_record_steps(record_steps, steps: int) -> tuple[int, ...]:
    values = np.atleast_1d(np.asarray(record_steps, dtype=object))
    if values.ndim != 1:
        raise ValueError(f"record_steps must be a sequence of step indices in [0, {steps}], got {record_steps!r}")
    out = {0}
    for s in values:
        if isinstance(s, (bool, np.bool_)):
            raise ValueError(f"record_steps entries must be integers in [0, {steps}], got {s!r}")
        try:
            s = operator.index(s)
        except TypeError:
            raise ValueError(f"record_steps entries must be integers in [0, {steps}], got {s!r}") from None
        if not 0 <= s <= steps:
            raise ValueError(f"record_steps entries must be integers in [0, steps = {steps}], got {s}")
        out.add(int(s))
    return tuple(sorted(out))


# ------------------------------------------------------------- parametrizations
def layer_scales(model: MLP, d: int, width: int, parametrization: str = "mup"
                 ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Init standard deviations and SGD learning rates of W^1..W^{L+1} (maths §5).

    The table of maths §5, with σ_l = ``model.sigma[l-1]`` and η_l = ``model.eta[l-1]``
    in place of sqrt(2) and η (n = width, d = input dimension):

    ======  ==============================  ==============================
    param   init std (W^1, W^l, W^{L+1})    learning rate (W^1, W^l, W^{L+1})
    ======  ==============================  ==============================
    mup     σ_1/√d, σ_l/√n, σ_{L+1}/n       η_1·n/d, η_l,   η_{L+1}/n
    sp      σ_1/√d, σ_l/√n, σ_{L+1}/√n      η_1/n,   η_l/n, η_{L+1}/n
    ntp     σ_1/√d, σ_l/√n, σ_{L+1}/√n      η_1/d,   η_l/n, η_{L+1}/n
    ip      σ_1/√d, σ_l/n,  σ_{L+1}/n       η_1·n/d, η_l,   η_{L+1}/n
    ======  ==============================  ==============================

    The μP row is maths §1 written in plain weights.

    Parameters
    ----------
    model : MLP
    d : int
        Input dimension.
    width : int
        n.
    parametrization : {"mup", "sp", "ntp", "ip"}

    Returns
    -------
    stds, lrs : tuple of L+1 floats each
    """
    parametrization = _check_parametrization(parametrization)
    d = check_int("d", d, 1)
    n = check_int("width", width, 1)
    L = model.depth
    s, e = model.sigma, model.eta
    hidden_std = [s[l] / (n if parametrization == "ip" else math.sqrt(n)) for l in range(1, L)]
    out_std = s[L] / (math.sqrt(n) if parametrization in ("sp", "ntp") else n)
    stds = (s[0] / math.sqrt(d), *hidden_std, out_std)
    if parametrization in ("mup", "ip"):
        lrs = (e[0] * n / d, *e[1:L], e[L] / n)
    elif parametrization == "sp":
        lrs = tuple(v / n for v in e)
    else:  # ntp
        lrs = (e[0] / d, *(v / n for v in e[1:L]), e[L] / n)
    return stds, lrs


def _draw_weights(rng: np.random.Generator, shapes, stds, dtype: str) -> list[np.ndarray]:
    out = []
    for shape, std in zip(shapes, stds):
        w = rng.standard_normal(shape)  # float64 draw, then scale and cast
        w *= std
        out.append(w.astype(dtype, copy=False))
    return out


def _shapes(depth: int, d: int, n: int) -> list[tuple[int, int]]:
    return [(n, d)] + [(n, n)] * (depth - 1) + [(1, n)]


def init_weights(model: MLP, d: int, width: int, parametrization: str = "mup", seed=0,
                 dtype: str = "float64") -> list[np.ndarray]:
    """The initial weights that :func:`train_finite` draws for the same arguments.

    ``np.random.default_rng(seed)`` draws W^1, W^2, ..., W^{L+1} in this order, each as
    a float64 array of standard normals, multiplied by the init std of
    :func:`layer_scales` and cast to ``dtype``.

    Parameters
    ----------
    model : MLP
    d, width : int
        Input dimension and width n.
    parametrization : {"mup", "sp", "ntp", "ip"}
    seed : int or numpy.random.Generator
    dtype : {"float64", "float32"}

    Returns
    -------
    list of L+1 arrays
        W^1 of shape (n, d), W^l of shape (n, n) for l = 2..L, W^{L+1} of shape (1, n).
    """
    dtype = _check_dtype(dtype)
    stds, _ = layer_scales(model, d, width, parametrization)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return _draw_weights(rng, _shapes(model.depth, d, width), stds, dtype)


# ------------------------------------------------------------ hidden matrices
class _LowRankUpdated:
    """An n×n matrix W = W_0 − A_kᵀ B_k with k pending rank-one updates.

    ``A`` and ``B`` have shape (cap, n); rows 0..k-1 are the pending updates. When an
    update would overflow ``cap`` rows, the pending ones are folded into W_0 in place
    (W_0ᵀ ← W_0ᵀ − B_kᵀ A_k, one BLAS gemm on the Fortran view W_0ᵀ).
    """

    def __init__(self, W0: np.ndarray, cap: int) -> None:
        self.W = np.ascontiguousarray(W0)
        n = W0.shape[0]
        self.cap = cap
        self.A = np.empty((cap, n), dtype=W0.dtype)
        self.B = np.empty((cap, n), dtype=W0.dtype)
        self.k = 0
        self._gemm = get_blas_funcs("gemm", (self.W,))

    def dot(self, X: np.ndarray) -> np.ndarray:
        """W X for X of shape (n, c)."""
        out = self.W @ X
        if self.k:
            out -= self.A[:self.k].T @ (self.B[:self.k] @ X)
        return out

    def tdot(self, G: np.ndarray) -> np.ndarray:
        """Wᵀ G for G of shape (n, c)."""
        out = self.W.T @ G
        if self.k:
            out -= self.B[:self.k].T @ (self.A[:self.k] @ G)
        return out

    def subtract(self, A: np.ndarray, B: np.ndarray) -> None:
        """W ← W − A Bᵀ for A, B of shape (n, b), b <= cap."""
        b = A.shape[1]
        if self.k + b > self.cap:
            self.fold()
        self.A[self.k:self.k + b] = A.T
        self.B[self.k:self.k + b] = B.T
        self.k += b

    def fold(self) -> None:
        k = self.k
        if k == 0:
            return
        c = self.W.T  # Fortran-ordered view of the same memory
        res = self._gemm(-1.0, self.B[:k].T, self.A[:k].T, beta=1.0, c=c, trans_b=True, overwrite_c=True)
        if not np.shares_memory(res, self.W):  # the wrapper had to copy: write back
            self.W[...] = res.T
        self.k = 0

    def dense(self) -> np.ndarray:
        """The current W as a new array."""
        return self.W - self.A[:self.k].T @ self.B[:self.k]


# -------------------------------------------------------------------- training
def train_finite(model: MLP, X, y, *, width: int, steps: int, seed: int = 0, X_eval=None,
                 batches=None, parametrization: str = "mup", dtype="float64",
                 record_steps=(0,)) -> Run:
    """Train one finite-width network by SGD and record its trajectory.

    Parameters
    ----------
    model : MLP
        Depth L, activation φ, loss ℓ, reduction r, σ_l and η_l.
    X : array_like, shape (m, d)
        Training inputs.
    y : array_like, shape (m,)
        Training targets (labels ±1 for the logistic loss).
    width : int
        n >= 1.
    steps : int
        T >= 0, the number of SGD steps.
    seed : int
        Seed of ``np.random.default_rng`` for the initial weights (:func:`init_weights`).
    X_eval : array_like, shape (m_eval, d), optional
        Evaluation inputs; their outputs and features are recorded, and they never
        enter a batch.
    batches : sequence of T integer index arrays, optional
        B_t ⊂ {0..m-1}; default full batch. See :func:`zlimit.batch_schedule`.
    parametrization : {"mup", "sp", "ntp", "ip"}
        Init and per-layer learning rates of maths §5 (:func:`layer_scales`).
    dtype : {"float64", "float32"}
        Precision of weights and features. Losses, error signals and kernels are
        stored in float64.
    record_steps : sequence of int in [0, T]
        Steps s whose features are kept for the cross-step kernels; 0 is always
        added. Only these steps' features are held in memory.

    Returns
    -------
    Run
        With G = 1 and M = m + m_eval inputs (training first):

        * ``outputs_groups`` (1, T+1, M): f_t(ξ_a), the output before update t;
        * ``loss_groups`` (1, T+1): full training loss (:func:`zlimit._model.total_loss`);
        * ``error_signals_groups`` (1, T, m): χ_{t,i};
        * ``kernels["h{l}"]``, ``kernels["x{l}"]`` (1, T+1, M, M): v_t(ξ_a)·v_t(ξ_b)/n;
        * ``kernels["dh{l}"]`` (1, T, m, m): dh_t(ξ_i)·dh_t(ξ_j)/n of the backward
          vectors dh^l = n ∂f/∂h^l (the normalised dh of maths §1 in μP), NaN in rows
          and columns of inputs outside B_t;
        * ``cross["h{l}"]``, ``cross["x{l}"]`` (1, R, T+1, M, M): entry [0, r, t, a, b] =
          v_{s_r}(ξ_a)·v_t(ξ_b)/n for s_r = ``record_steps[r]``, NaN for t < s_r.

    Raises
    ------
    ValueError
        Invalid data, batches, width, parametrization, dtype or record_steps.
    DivergenceError
        The outputs, the training loss or a kernel became non-finite; the message
        names the step.

    Notes
    -----
    Cost per step: one product with each n×n matrix on the M inputs (forward) and
    one with its transpose on the |B_t| batch inputs (backward), O(n²(M + |B_t|))
    flops per hidden layer. Memory: the L−1 hidden matrices (n² each) plus
    2L·n·M numbers per recorded step.

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> from zlimit._finite import train_finite
    >>> model = zlimit.MLP(depth=2, activation="tanh", lr=0.1)
    >>> X = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2); y = np.array([1.0, -1.0])
    >>> run = train_finite(model, X, y, width=64, steps=5)
    >>> run.outputs.shape, run.kernel(1, "h").shape
    ((6, 2), (6, 2, 2))
    """
    if not isinstance(model, MLP):
        raise ValueError(f"model must be a zlimit.MLP, got {type(model).__name__}")
    X, y, X_eval = check_data(model, X, y, X_eval)
    m, d = X.shape
    m_eval = X_eval.shape[0]
    M = m + m_eval
    schedule = check_batches(batches, m, steps)
    T = int(steps)
    n = check_int("width", width, 1)
    parametrization = _check_parametrization(parametrization)
    dtype = _check_dtype(dtype)
    seed = check_int("seed", seed, 0)
    record = _check_record_steps(record_steps, T)
    L = model.depth
    phi, dphi = model.activation.phi, model.activation.dphi

    # Init (maths §5 table): W^1, ..., W^{L+1} in this order from one generator.
    _, lrs = layer_scales(model, d, n, parametrization)
    weights = init_weights(model, d, n, parametrization, np.random.default_rng(seed), dtype)
    W1 = np.ascontiguousarray(weights[0])                       # (n, d)
    cap = max(max((len(b) for b in schedule), default=1), min(_FOLD_COLUMNS, n // 8))
    hidden = [_LowRankUpdated(W, cap) for W in weights[1:L]]    # W^2..W^L, (n, n)
    w_out = np.ascontiguousarray(weights[L][0])                 # W^{L+1} as a vector (n,)
    lr = [np.dtype(dtype).type(v) for v in lrs]
    XiT = np.ascontiguousarray(np.concatenate([X, X_eval]).T.astype(dtype))  # (d, M)

    outputs = np.empty((T + 1, M))
    losses = np.empty(T + 1)
    chis = np.zeros((T, m))
    kernels = {f"{k}{l}": np.empty((T + 1, M, M)) for k in "hx" for l in range(1, L + 1)}
    kernels.update({f"dh{l}": np.full((T, m, m), np.nan) for l in range(1, L + 1)})
    cross = {f"{k}{l}": np.full((len(record), T + 1, M, M), np.nan) for k in "hx" for l in range(1, L + 1)}
    kept: dict[int, dict[str, np.ndarray]] = {}

    def diverged(t: int, what: str) -> DivergenceError:
        return DivergenceError(
            f"training diverged at step {t}: the {what} became non-finite (NaN or inf) at width {n} "
            f"({parametrization}); use a smaller learning rate (lr = {model.lr:g})"
        )

    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for t in range(T + 1):
            # Forward pass on all M inputs (maths §1): h^1 = W^1 ξ, x^l = φ(h^l),
            # h^{l+1} = W^{l+1} x^l, f = W^{L+1} x^L.
            feats: dict[str, np.ndarray] = {}
            h = W1 @ XiT                                        # (n, M)
            for l in range(1, L + 1):
                if l > 1:
                    h = hidden[l - 2].dot(feats[f"x{l - 1}"])
                feats[f"h{l}"] = h
                feats[f"x{l}"] = apply(phi, h)
            f = (w_out @ feats[f"x{L}"]).astype(np.float64)     # (M,)
            if not np.all(np.isfinite(f)):
                raise diverged(t, "outputs")
            outputs[t] = f
            losses[t] = total_loss(model, f[:m], y)
            if not math.isfinite(losses[t]):
                raise diverged(t, "training loss")

            # Feature kernels v_tᵀ v_t / n and cross-step kernels v_sᵀ v_t / n.
            if t in record:
                kept[t] = feats
            for key, v in feats.items():
                K = (v.T @ v) / n
                if not np.all(np.isfinite(K)):
                    raise diverged(t, f"features {key}")
                kernels[key][t] = K
                for r, s in enumerate(record):
                    if s <= t:
                        cross[key][r, t] = (kept[s][key].T @ v) / n
            if t == T:
                break

            # Error signal χ_{t,i} = r ℓ'(f_t(ξ_i), y_i) 1{i ∈ B_t} (maths §1).
            batch = schedule[t]
            chi = error_signal(model, f[:m], y, batch)
            chis[t] = chi
            cb = chi[batch].astype(dtype)                       # (b,)

            # Backward pass on the batch, plain gradients g^l = ∂f/∂h^l, shape (n, b):
            # g^L = W^{L+1}ᵀ ⊙ φ'(h^L), g^{l-1} = (W^{l}ᵀ g^l) ⊙ φ'(h^{l-1}).
            # All of them use the weights before update t.
            g = [None] * (L + 1)
            g[L] = w_out[:, None] * apply(dphi, feats[f"h{L}"][:, batch])
            for l in range(L, 1, -1):
                g[l - 1] = hidden[l - 2].tdot(g[l]) * apply(dphi, feats[f"h{l - 1}"][:, batch])
            ix = np.ix_(batch, batch)
            for l in range(1, L + 1):
                # dh^l = n g^l, so dh·dh'/n = n g·g'.
                kernels[f"dh{l}"][t][ix] = n * (g[l].T @ g[l])

            # SGD on the batch loss r Σ_{i∈B_t} ℓ(f(ξ_i), y_i) with the per-layer
            # learning rates of maths §5: W^l ← W^l − lr_l Σ_i χ_{t,i} g^l_i x^{l-1}_iᵀ
            # (x^0 = ξ). In μP this is exactly the §1 update rule.
            W1 -= (lr[0] * (g[1] * cb)) @ XiT[:, batch].T
            for l in range(2, L + 1):
                hidden[l - 2].subtract(lr[l - 1] * (g[l] * cb), feats[f"x{l - 1}"][:, batch])
            w_out -= lr[L] * (feats[f"x{L}"][:, batch] @ cb)

    meta = {"kind": "finite", "width": n, "parametrization": parametrization, "seed": seed,
            "steps": T, "m": m, "m_eval": m_eval, "dtype": dtype}
    return Run(
        model=model,
        meta=meta,
        outputs_groups=outputs[None],
        loss_groups=losses[None],
        error_signals_groups=chis[None],
        kernels={k: v[None] for k, v in kernels.items()},
        cross={k: v[None] for k, v in cross.items()},
        record_steps=record,
    )
