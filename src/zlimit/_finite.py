"""Finite-width MLPs trained by SGD, in μP and the other parametrizations of maths §5.

A finite network of width n is the object whose n → ∞ limit the engine computes.
:func:`train_finite` trains one, with the same :class:`~zlimit.MLP` description,
data, error signals and batch schedule as the limit, and returns a
:class:`~zlimit.Run` in the same layout (one group, G = 1).

Conventions (maths §1)
----------------------
Inputs ξ ∈ R^d, training inputs ξ_1..ξ_m, evaluation inputs ξ_{m+1..M}.
Width-n vectors are stored one input per column: ``h`` has shape (n, M).

    h^1 = W^1 ξ + b^1,   x^l = φ(h^l),   h^{l+1} = W^{l+1} x^l + b^{l+1},   f(ξ) = W^{L+1} x^L + b^{L+1}

with W^1 (n×d), W^l (n×n) for 2 ≤ l ≤ L, W^{L+1} (k×n), and biases b^l ∈ R^n,
b^{L+1} ∈ R^k when the model has them (maths §6; without them every b is 0). The
weights are plain weights: each parameter has its own init standard deviation and
SGD learning rate (table of maths §5, see :func:`layer_scales`, and the bias table
of §6, see :func:`bias_scales`), and the update uses the ordinary gradient ∇_p L of
the batch loss L = r·Σ_{i∈B_t} ℓ(f(ξ_i), y_i). With momentum β and weight decay λ
(maths §6, torch.optim.SGD with dampening 0 and decoupled decay) every parameter p
with learning rate η_p moves as v_p ← β v_p + ∇_p L, p ← ρ p − η_p v_p, ρ = 1 − ηλ.

Implementation notes
--------------------
The n×n matrices dominate the cost. Each hidden matrix is kept as
W = W_0 − Σ_k a_k b_kᵀ: the rank-|B_t| SGD updates are appended as columns and
folded into W_0 with one in-place BLAS ``gemm`` every few hundred columns. Each step
then reads every n×n matrix twice (forward and backward product), the least any
exact method can do, instead of three times plus a temporary n×n array. With
momentum or weight decay every step rewrites W anyway (W ← ρW − η_l v, v of full
rank), so the matrix is kept dense, with a dense velocity when β > 0
(:class:`_HeavyBall`); without them the low-rank path is exactly plain SGD.

Velocities are stored as the change they make, u_p = −η_p v_p, so that one step is
:func:`zlimit._model.accumulate` with G = −η_p ∇_p L: u ← βu − η_p ∇_p L, p ← ρp + u.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.linalg import get_blas_funcs

from ._activations import apply
from ._checkpoint import Session, Stopped, hook_step, restore_into, resume, stop_on_sigint
from ._driver import Backward, Forward, Recorder, assemble, run_sgd
from ._model import MLP, accumulate, check_model
from ._results import Run
from ._validate import check_choice, check_dtype, check_int, check_seed

__all__ = ["FiniteState", "train", "init_weights", "init_parameters", "layer_scales", "bias_scales",
           "PARAMETRIZATIONS"]

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

    Examples
    --------
    >>> import zlimit
    >>> model = zlimit.MLP(depth=2, lr=0.1)  # σ_l = 1, η_l = 0.1
    >>> layer_scales(model, d=4, width=100)  # μP: 1/√d, 1/√n, 1/n and η n/d, η, η/n
    ((0.5, 0.1, 0.01), (2.5, 0.1, 0.001))
    >>> layer_scales(model, d=4, width=100, parametrization="sp")
    ((0.5, 0.1, 0.1), (0.001, 0.001, 0.001))
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


def bias_scales(model: MLP, width: int, parametrization: str = "mup"
                ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Init standard deviations and SGD learning rates of the biases b^1..b^{L+1} (maths §6).

    A hidden bias is a weight of fan-in 1: it starts N(0, σ_{b,l}²) in every
    parametrization and takes its parametrization's W^1 learning rate with d = 1. With
    σ_{b,l} = ``model.bias_sigma[l-1]`` and η c_{b,l} = ``model.bias_eta[l-1]``
    (n = width):

    ======  ==================  ===========================  =====================
    param   init std            learning rate b^l, l <= L    learning rate b^{L+1}
    ======  ==================  ===========================  =====================
    mup     σ_{b,l}             η c_{b,l} · n                η c_{b,L+1}
    sp      σ_{b,l}             η c_{b,l} / n                η c_{b,L+1} / n
    ntp     σ_{b,l}             η c_{b,l}                    η c_{b,L+1}
    ip      σ_{b,l}             η c_{b,l} · n                η c_{b,L+1}
    ======  ==================  ===========================  =====================

    A model without biases gives zeros.

    Parameters
    ----------
    model : MLP
    width : int
        n.
    parametrization : {"mup", "sp", "ntp", "ip"}

    Returns
    -------
    stds, lrs : tuple of L+1 floats each

    Examples
    --------
    >>> import zlimit
    >>> model = zlimit.MLP(depth=2, lr=0.1, bias_std=1.0)  # one σ_b: the output bias starts at 0
    >>> bias_scales(model, 100, "mup")
    ((1.0, 1.0, 0.0), (10.0, 10.0, 0.1))
    """
    check_model(model)
    parametrization = check_choice("parametrization", parametrization, PARAMETRIZATIONS)
    n = check_int("width", width, 1)
    L, e = model.depth, model.bias_eta
    if parametrization in ("mup", "ip"):
        lrs = (*(v * n for v in e[:L]), e[L])
    elif parametrization == "sp":
        lrs = tuple(v / n for v in e)
    else:  # ntp
        lrs = e
    return model.bias_sigma, lrs


def _draw_weights(rng: np.random.Generator, shapes, stds, dtype: str) -> list[np.ndarray]:
    out = []
    for shape, std in zip(shapes, stds):
        w = rng.standard_normal(shape)  # float64 draw, then scale and cast
        w *= std
        with np.errstate(over="ignore"):  # a huge std in float32: DivergenceError at step 0
            out.append(w.astype(dtype, copy=False))
    return out


def _shapes(depth: int, d: int, n: int, k: int) -> list[tuple[int, int]]:
    return [(n, d)] + [(n, n)] * (depth - 1) + [(k, n)]


def _generator(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_seed("seed", seed))


def init_weights(model: MLP, d: int, width: int, parametrization: str = "mup", seed=0,
                 dtype: str = "float64") -> list[np.ndarray]:
    """The initial weights that :func:`train_finite` draws for the same arguments.

    ``np.random.default_rng(seed)`` draws W^1, W^2, ..., W^{L+1} in this order, each as
    a float64 array of standard normals, multiplied by the init std of
    :func:`layer_scales` and cast to ``dtype``. The biases of a model with biases are
    drawn next from the same generator (:func:`init_parameters`).

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
        W^1 of shape (n, d), W^l of shape (n, n) for l = 2..L, W^{L+1} of shape (k, n)
        (k = ``model.outputs``).

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> model = zlimit.MLP(depth=2)
    >>> W = init_weights(model, d=3, width=100, seed=0)
    >>> [w.shape for w in W]
    [(100, 3), (100, 100), (1, 100)]
    >>> rng = np.random.default_rng(0)  # the same draws, by hand: standard normals times the stds
    >>> stds = layer_scales(model, 3, 100)[0]
    >>> all(np.array_equal(w, rng.standard_normal(w.shape) * s) for w, s in zip(W, stds))
    True
    """
    dtype = check_dtype(dtype).name
    stds, _ = layer_scales(model, d, width, parametrization)
    return _draw_weights(_generator(seed), _shapes(model.depth, d, width, model.outputs), stds, dtype)


def init_parameters(model: MLP, d: int, width: int, parametrization: str = "mup", seed=0,
                    dtype: str = "float64") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The initial weights and biases that :func:`train_finite` draws (maths §6).

    One generator ``np.random.default_rng(seed)`` draws the weights exactly as
    :func:`init_weights`, then, for a model with biases, b^1, ..., b^{L+1} in this
    order, each as float64 standard normals multiplied by the init std of
    :func:`bias_scales` (0 gives zeros, drawn all the same) and cast to ``dtype``.

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
    weights : list of L+1 arrays, as :func:`init_weights`
    biases : list of L+1 arrays, b^l of shape (n,) for l = 1..L and b^{L+1} of shape
        (k,); empty for a model without biases.

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> model = zlimit.MLP(depth=2, bias_std=0.5)  # hidden biases N(0, 0.25), the output bias 0
    >>> weights, biases = init_parameters(model, d=3, width=100, seed=0)
    >>> [b.shape for b in biases], float(biases[2][0])
    ([(100,), (100,), (1,)], 0.0)
    >>> all(np.array_equal(a, b) for a, b in zip(weights, init_weights(model, 3, 100, seed=0)))
    True
    >>> init_parameters(zlimit.MLP(depth=2), d=3, width=100)[1]  # no biases
    []
    """
    rng = _generator(seed)
    weights = init_weights(model, d, width, parametrization, rng, dtype)
    if not model.has_bias:
        return weights, []
    stds, _ = bias_scales(model, width, parametrization)
    shapes = [(width,)] * model.depth + [(model.outputs,)]
    return weights, _draw_weights(rng, shapes, stds, check_dtype(dtype).name)


# ------------------------------------------------------------ hidden matrices
def _add_outer(gemm, C: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float, beta: float) -> None:
    """C ← β C + α A Bᵀ in place, for C-ordered C (n, n) and A, B (n, b): one BLAS gemm on
    the Fortran view Cᵀ ← β Cᵀ + α B Aᵀ, without an n×n temporary."""
    res = gemm(alpha, B, A, beta=beta, c=C.T, trans_b=True, overwrite_c=True)
    if not np.shares_memory(res, C):  # the wrapper had to copy: write back
        C[...] = res.T


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
        _add_outer(self._gemm, self.W, self.A[:k].T, self.B[:k].T, -1.0, 1.0)
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


class _HeavyBall:
    """A dense n×n matrix trained with momentum and decoupled weight decay (maths §6).

    :meth:`subtract` takes the step whose plain-SGD change is −A Bᵀ (A Bᵀ = η_l ∇_W L):
    with β > 0 the velocity U = −η_l v moves as U ← β U − A Bᵀ and W ← ρ W + U; with
    β = 0, W ← ρ W − A Bᵀ. Each is a BLAS gemm plus, with β > 0, two in-place n×n
    passes: O(n² b) per step, exact, and no n×n temporary.
    """

    def __init__(self, W0: np.ndarray, beta: float, rho: float) -> None:
        self.W = np.ascontiguousarray(W0)
        self.beta, self.rho = beta, rho
        self.U = np.zeros_like(self.W) if beta else None
        self._gemm = get_blas_funcs("gemm", (self.W,))

    def dot(self, X: np.ndarray) -> np.ndarray:
        """W X for X of shape (n, c)."""
        return self.W @ X

    def tdot(self, G: np.ndarray) -> np.ndarray:
        """Wᵀ G for G of shape (n, c)."""
        return self.W.T @ G

    def subtract(self, A: np.ndarray, B: np.ndarray) -> None:
        """One heavy-ball step with plain-SGD change −A Bᵀ, A and B of shape (n, b)."""
        if self.U is None:
            _add_outer(self._gemm, self.W, A, B, -1.0, self.rho)
            return
        _add_outer(self._gemm, self.U, A, B, -1.0, self.beta)
        if self.rho != 1.0:
            self.W *= self.rho
        self.W += self.U

    def snapshot(self) -> dict[str, np.ndarray]:
        """W and, with momentum, the velocity."""
        return {"W": self.W} if self.U is None else {"W": self.W, "U": self.U}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back a :meth:`snapshot` of the same run."""
        restore_into(arrays, self.snapshot(), "state")


# -------------------------------------------------------------------- training
class FiniteState:
    """A width-n network as a :class:`zlimit._driver.State` (maths §1 with the §5 scalings
    and the §6 extensions: biases, k outputs, momentum, weight decay).

    Width-n vectors are stored one input per column, (n, M); the driver sees rows,
    (M, n) transposed views, and E[Z Z'] is v·v'/n. The readout W^{L+1} is ``w_out``,
    a vector (n,) for k = 1 and a matrix (k, n) for k > 1.

    Parameters
    ----------
    model : MLP
    X, X_eval : (m, d), (m_eval, d) float64 inputs.
    width : int
        n.
    seed : int
        Seed of the initial weights and biases (:func:`init_parameters`).
    parametrization : {"mup", "sp", "ntp", "ip"}
    dtype : {"float64", "float32"}
    fold : int
        Pending low-rank update columns kept per hidden matrix (:class:`_LowRankUpdated`,
        the hidden matrices of plain SGD; with momentum or weight decay they are
        :class:`_HeavyBall`).
    """

    exact_eval_cross = True

    def __init__(self, model: MLP, X: np.ndarray, X_eval: np.ndarray, width: int, seed: int = 0,
                 parametrization: str = "mup", dtype="float64", fold: int = _FOLD_COLUMNS):
        d, n = X.shape[1], width
        self.model, self.n, self.L, self.k = model, n, model.depth, model.outputs
        self.label = f" at width {n} ({parametrization})"
        _, lrs = layer_scales(model, d, n, parametrization)
        _, bias_lrs = bias_scales(model, n, parametrization)
        weights, biases = init_parameters(model, d, n, parametrization, np.random.default_rng(seed), dtype)
        self.W1 = np.ascontiguousarray(weights[0])  # (n, d)
        self.hidden = [self._hidden(W, fold) for W in weights[1:self.L]]  # W^2..W^L, (n, n)
        self.w_out = np.ascontiguousarray(weights[self.L][0] if self.k == 1 else weights[self.L])
        self.biases = biases  # b^1..b^L (n,) and b^{L+1} (k,); empty without biases
        scalar = np.dtype(dtype).type
        self.lr = [scalar(v) for v in lrs]
        self.bias_lr = [scalar(v) for v in bias_lrs]
        # velocities u_p = −η_p v_p of W^1, W^{L+1} and the biases (the hidden ones live in _HeavyBall)
        self.velocity = {name: np.zeros_like(p) for name, p in self._vectors().items()} if model.momentum else {}
        with np.errstate(over="ignore"):  # huge inputs in float32: DivergenceError at step 0
            self.XiT = np.ascontiguousarray(np.concatenate([X, X_eval]).T.astype(dtype))  # (d, M)
        self.feats: dict[str, np.ndarray] = {}
        self.g: list = []

    def _hidden(self, W: np.ndarray, fold: int):
        """The representation of a hidden matrix: low-rank updates for plain SGD, else dense."""
        beta, rho = self.model.momentum, self.model.decay
        return _LowRankUpdated(W, max(fold, 1)) if beta == 0 and rho == 1 else _HeavyBall(W, beta, rho)

    def _vectors(self) -> dict[str, np.ndarray]:
        """The parameters outside the hidden matrices, by name: W1, w_out, b1..b{L+1}."""
        out = {"W1": self.W1, "w_out": self.w_out}
        out.update((f"b{l}", b) for l, b in enumerate(self.biases, start=1))
        return out

    def gram(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """v·v'/n for rows of width-n vectors."""
        return (a @ b.T) / self.n

    def forward(self, t: int) -> Forward:
        """h^1 = W^1 ξ + b^1, x^l = φ(h^l), h^{l+1} = W^{l+1} x^l + b^{l+1}, f = W^{L+1} x^L + b^{L+1}
        on all M inputs (maths §1, §6; no b without biases); f has shape (M,), or (M, k) for k > 1.
        The moments are the means of v and |v| over the n coordinates, which the recorder
        takes from the rows (``Forward.moments`` None)."""
        phi, b = self.model.activation.phi, self.biases
        hs, xs = [], []
        for l in range(1, self.L + 1):
            h = self.W1 @ self.XiT if l == 1 else self.hidden[l - 2].dot(xs[-1])  # (n, M)
            if b:
                h += b[l - 1][:, None]
            hs.append(h), xs.append(apply(phi, h))
        self.feats = {"h": hs, "x": xs}
        f = (self.w_out @ xs[-1]).T  # (M,) or (M, k)
        if b:
            f = f + b[self.L]
        return Forward([v.T for v in hs], [v.T for v in xs], np.ascontiguousarray(f, dtype=np.float64))

    def backward(self, batch: np.ndarray, chi: np.ndarray) -> Backward:
        """Plain gradients g^l on the batch, (n, b), with the weights before update t:
        g^{l-1} = (W^lᵀ g^l) ⊙ φ'(h^{l-1}) from g^L = W^{L+1}ᵀ ⊙ φ'(h^L), so g^l = ∂f/∂h^l, for
        k = 1; for k > 1 from the error-weighted g^L = (W^{L+1}ᵀ χ_b) ⊙ φ'(h^L), so g^l = ∂L/∂h^l
        (maths §6). The recorded kernel is of dh^l = n g^l (the normalised dh of maths §1 in
        μP): dh·dh'/n = n g·g'."""
        dphi, hs = self.model.activation.dphi, self.feats["h"]
        top = self.w_out[:, None] if self.k == 1 else self.w_out.T @ chi[batch].T.astype(self.XiT.dtype)
        g = [None] * (self.L + 1)
        g[self.L] = top * apply(dphi, hs[self.L - 1][:, batch])
        for l in range(self.L, 1, -1):
            g[l - 1] = self.hidden[l - 2].tdot(g[l]) * apply(dphi, hs[l - 2][:, batch])
        self.g = g
        return Backward([self.n * (g[l].T @ g[l]) for l in range(1, self.L + 1)])

    def snapshot(self) -> dict[str, np.ndarray]:
        """The parameters and velocities after a step, by name (for a checkpoint)."""
        out = self._flat()
        for l, W in enumerate(self.hidden, start=2):
            out.update((f"W{l}/{k}", v) for k, v in W.snapshot().items())
        return out

    def _flat(self) -> dict[str, np.ndarray]:
        """W^1, W^{L+1}, the biases and their velocities ("V/" + name), by name."""
        out = self._vectors()
        out.update((f"V/{k}", v) for k, v in self.velocity.items())
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back a :meth:`snapshot` of the same run (bit for bit)."""
        restore_into(arrays, self._flat(), "state")
        for l, W in enumerate(self.hidden, start=2):
            W.restore({k[len(f"W{l}/"):]: v for k, v in arrays.items() if k.startswith(f"W{l}/")})

    def update(self, batch: np.ndarray, chi: np.ndarray) -> None:
        """One step on the batch loss L = r Σ_{i∈B_t} ℓ(f(ξ_i), y_i) with the learning rates of
        maths §5 and §6, every parameter p ← ρ p − η_p v_p, v_p ← β v_p + ∇_p L (maths §6), from

            ∇_{W^l} L = Σ_i e^l_i x^{l-1}_iᵀ (x^0 = ξ),   ∇_{b^l} L = Σ_i e^l_i,
            ∇_{W^{L+1}_c} L = Σ_i χ_{t,i,c} x^L_i,      ∇_{b^{L+1}_c} L = Σ_i χ_{t,i,c},

        with e^l_i = ∂L/∂h^l(ξ_i): χ_{t,i} g^l_i for k = 1, g^l_i for k > 1. With β = 0 and ρ = 1
        this is plain SGD, W^l ← W^l − η_l ∇_{W^l} L; in μP the §1 rule."""
        g, xs, lr, L = self.g, self.feats["x"], self.lr, self.L
        cb = chi[batch].astype(self.XiT.dtype)  # (b,) or (b, k)
        e = [None] + ([gl * cb for gl in g[1:]] if self.k == 1 else g[1:])
        self._step("W1", (lr[0] * e[1]) @ self.XiT[:, batch].T)
        for l in range(2, L + 1):
            self.hidden[l - 2].subtract(lr[l - 1] * e[l], xs[l - 2][:, batch])
        self._step("w_out", lr[L] * (xs[L - 1][:, batch] @ cb).T)
        for l, (b_lr, _) in enumerate(zip(self.bias_lr, self.biases), start=1):  # none without biases
            self._step(f"b{l}", b_lr * (e[l].sum(axis=1) if l <= L else cb.reshape(len(batch), -1).sum(axis=0)))

    def _step(self, name: str, G: np.ndarray) -> None:
        """u ← β u − G, p ← ρ p + u for the parameter ``name``, its velocity u = −η_p v_p and
        G = η_p ∇_p L (maths §6); plain SGD p ← p − G, bit for bit, with β = 0 and ρ = 1."""
        np.negative(G, out=G)  # exact: accumulate adds
        accumulate(self._vectors()[name], self.velocity.get(name), G, self.model.momentum, self.model.decay)


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
