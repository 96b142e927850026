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

import numpy as np
from scipy.linalg import get_blas_funcs

from ._activations import apply
from ._checkpoint import Session, Stopped, hook_step, restore_into, resume, stop_on_sigint
from ._driver import Backward, Forward, Recorder, assemble, run_sgd
from ._model import MLP, check_model
from ._results import Run
from ._validate import check_choice, check_dtype, check_int, check_seed

__all__ = ["FiniteState", "train", "init_weights", "layer_scales", "PARAMETRIZATIONS"]

PARAMETRIZATIONS = ("mup", "sp", "ntp", "ip")

# Columns of pending low-rank updates kept per hidden matrix before folding them into W_0.
_FOLD_COLUMNS = 256


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
    check_model(model)
    parametrization = check_choice("parametrization", parametrization, PARAMETRIZATIONS)
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
    dtype = check_dtype(dtype).name
    stds, _ = layer_scales(model, d, width, parametrization)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_seed("seed", seed))
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

    def snapshot(self) -> dict[str, np.ndarray]:
        """W_0 and the pending updates, exactly (folding them first would change the bits)."""
        return {"W": self.W, "A": self.A[:self.k], "B": self.B[:self.k]}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back a :meth:`snapshot` of the same run."""
        k = arrays["A"].shape[0]
        restore_into(arrays, {"W": self.W, "A": self.A[:k], "B": self.B[:k]}, "state")
        self.k = k


# -------------------------------------------------------------------- training
class FiniteState:
    """A width-n network as a :class:`zlimit._driver.State` (maths §1 with the §5 scalings).

    Width-n vectors are stored one input per column, (n, M); the driver sees rows,
    (M, n) transposed views, and E[Z Z'] is v·v'/n.

    Parameters
    ----------
    model : MLP
    X, X_eval : (m, d), (m_eval, d) float64 inputs.
    width : int
        n.
    seed : int
        Seed of the initial weights (:func:`init_weights`).
    parametrization : {"mup", "sp", "ntp", "ip"}
    dtype : {"float64", "float32"}
    fold : int
        Pending low-rank update columns kept per hidden matrix (:class:`_LowRankUpdated`).
    """

    exact_eval_cross = True

    def __init__(self, model: MLP, X: np.ndarray, X_eval: np.ndarray, width: int, seed: int = 0,
                 parametrization: str = "mup", dtype="float64", fold: int = _FOLD_COLUMNS):
        d, n = X.shape[1], width
        self.model, self.n, self.L = model, n, model.depth
        self.label = f" at width {n} ({parametrization})"
        _, lrs = layer_scales(model, d, n, parametrization)
        weights = init_weights(model, d, n, parametrization, np.random.default_rng(seed), dtype)
        self.W1 = np.ascontiguousarray(weights[0])  # (n, d)
        self.hidden = [_LowRankUpdated(W, max(fold, 1)) for W in weights[1:self.L]]  # W^2..W^L, (n, n)
        self.w_out = np.ascontiguousarray(weights[self.L][0])  # W^{L+1} as a vector (n,)
        self.lr = [np.dtype(dtype).type(v) for v in lrs]
        self.XiT = np.ascontiguousarray(np.concatenate([X, X_eval]).T.astype(dtype))  # (d, M)
        self.feats: dict[str, np.ndarray] = {}
        self.g: list = []

    def gram(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """v·v'/n for rows of width-n vectors."""
        return (a @ b.T) / self.n

    def forward(self, t: int) -> Forward:
        """h^1 = W^1 ξ, x^l = φ(h^l), h^{l+1} = W^{l+1} x^l, f = W^{L+1} x^L on all M inputs."""
        phi = self.model.activation.phi
        hs, xs = [], []
        h = self.W1 @ self.XiT  # (n, M)
        for l in range(1, self.L + 1):
            if l > 1:
                h = self.hidden[l - 2].dot(xs[-1])
            hs.append(h), xs.append(apply(phi, h))
        self.feats = {"h": hs, "x": xs}
        f = (self.w_out @ xs[-1]).astype(np.float64)  # (M,)
        return Forward([v.T for v in hs], [v.T for v in xs], f)

    def backward(self, batch: np.ndarray, chi: np.ndarray) -> Backward:
        """Plain gradients g^l = ∂f/∂h^l on the batch, (n, b), with the weights before update t:
        g^L = W^{L+1}ᵀ ⊙ φ'(h^L), g^{l-1} = (W^lᵀ g^l) ⊙ φ'(h^{l-1}). The recorded kernel is of
        dh^l = n g^l (the normalised dh of maths §1 in μP): dh·dh'/n = n g·g'."""
        dphi, hs = self.model.activation.dphi, self.feats["h"]
        g = [None] * (self.L + 1)
        g[self.L] = self.w_out[:, None] * apply(dphi, hs[self.L - 1][:, batch])
        for l in range(self.L, 1, -1):
            g[l - 1] = self.hidden[l - 2].tdot(g[l]) * apply(dphi, hs[l - 2][:, batch])
        self.g = g
        return Backward([self.n * (g[l].T @ g[l]) for l in range(1, self.L + 1)])

    def snapshot(self) -> dict[str, np.ndarray]:
        """The weights after a step, by name (for a checkpoint)."""
        out = {"W1": self.W1, "w_out": self.w_out}
        for l, W in enumerate(self.hidden, start=2):
            out.update((f"W{l}/{k}", v) for k, v in W.snapshot().items())
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back a :meth:`snapshot` of the same run (bit for bit)."""
        restore_into(arrays, {"W1": self.W1, "w_out": self.w_out}, "state")
        for l, W in enumerate(self.hidden, start=2):
            W.restore({k[len(f"W{l}/"):]: v for k, v in arrays.items() if k.startswith(f"W{l}/")})

    def update(self, batch: np.ndarray, chi: np.ndarray) -> None:
        """SGD on the batch loss r Σ_{i∈B_t} ℓ(f(ξ_i), y_i) with the per-layer learning rates of
        maths §5: W^l ← W^l − lr_l Σ_i χ_{t,i} g^l_i x^{l-1}_iᵀ (x^0 = ξ). In μP this is the §1 rule."""
        g, xs, lr = self.g, self.feats["x"], self.lr
        cb = chi[batch].astype(self.XiT.dtype)  # (b,)
        self.W1 -= (lr[0] * (g[1] * cb)) @ self.XiT[:, batch].T
        for l in range(2, self.L + 1):
            self.hidden[l - 2].subtract(lr[l - 1] * (g[l] * cb), xs[l - 2][:, batch])
        self.w_out -= lr[self.L] * (xs[self.L - 1][:, batch] @ cb)


def train(model: MLP, data, settings, on_step=None, checkpoint=None) -> Run:
    """Train one network (called by :func:`zlimit.train_finite` with validated data and
    settings, and a :class:`zlimit._checkpoint.Checkpoint` or None)."""
    s = settings
    fold = max(max((len(b) for b in data.batches), default=1), min(_FOLD_COLUMNS, s.width // 8))
    state = FiniteState(model, data.X, data.X_eval, s.width, s.seed, s.parametrization, s.dtype.name, fold)
    rec = Recorder(model.depth, s.steps, data.m, data.M, s.record_steps, outputs=model.outputs)
    session = Session(checkpoint)
    stored = session.begin(0)
    done = -1 if stored is None else resume(session, 0, state if stored[0] < s.steps else None, rec, stored)
    session.running(0, state, rec, done)
    hook = lambda t, state, rec: hook_step(session, 0, t, on_step)
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"), stop_on_sigint(session):
            run_sgd(state, model, data.y, list(data.batches), s.steps, rec, hook, start=done + 1)
    except Stopped:
        raise session.stopped_error() from None
    session.finish(0)
    meta = {"kind": "finite", "width": s.width, "parametrization": s.parametrization, "seed": s.seed,
            "steps": s.steps, "m": data.m, "m_eval": data.M - data.m, "dtype": s.dtype.name}
    return assemble(model, meta, [rec])
