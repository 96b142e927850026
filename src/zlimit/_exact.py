"""The exact infinite-width μP limit of deep linear MLPs (maths §4, φ(x) = x).

For a linear activation every Z random variable of maths §2 is a linear combination
of independent standard normals ("base normals") with deterministic coefficients.
A Z is therefore stored as a coefficient vector over a growing list of base normals:

* E[Z Z'] is the dot product of the two coefficient vectors;
* E[γ Z] for a base normal γ is the coefficient of γ in Z, which by Stein's lemma is
  E[∂Z/∂γ]; for linear φ this is exactly the derivative the Ż terms need.

The Gaussian processes Ẑ of each hidden matrix are built as in maths §3, with E the
dot product: an orthonormal basis (Gram–Schmidt) of the span of the vectors seen so
far, one fresh base normal per new direction. Nothing is sampled; the trajectory is
deterministic linear algebra.

The extensions of maths §6 ride on the same algebra. Each hidden bias b^l has a base
normal of its own, Z^{b^l_0} = σ_{b,l} e_new, and its Z^{b^l_t} is added to Z^{h^l_t} of
every input; the output bias is k deterministic numbers added to f̊. The k readout
rows Ŵ^c are k base normals; with k > 1 the backward pass runs on the error-weighted
vector Σ_c χ_{t,i,c} Z^{Ŵ^c_t} and χ ≡ 1 in the hidden updates. Momentum β and decoupled
weight decay ρ = 1 − ηλ use the closed form of §6: the initial parts (Z^{h^1_0}, the
W^l_0 products Ẑ + Ż, Z^{b^l_0}) scale by ρ^t, and every update history row r entered at
step s counts with the weight ω_{t−s} its gradient has in the accumulator at step t
(:func:`_ages`). Ŵ and the output bias follow the in-place recursion instead
(:func:`zlimit._model.accumulate`). With β = 0, ρ = 1, k = 1 and no biases the weights
are exactly 1 and every product is the plain SGD one, bit for bit.

Evaluation inputs never influence training. The training trajectory is computed
first, with no knowledge of them. The evaluation inputs are then replayed step by
step: the Ẑ of an evaluation vector takes its coordinates on the *final* training
basis of its process (all steps) plus a persistent basis of evaluation directions,
orthogonal to every training vector. Every Ẑ family then has the exact covariance
σ_l² E[Z^x Z^{x'}] over all pairs of vectors, training or evaluation, at any two
steps, so cross-step kernels that involve evaluation inputs are exact too.
"""
from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from ._driver import Backward, Forward, Recorder, assemble, diverged, run_sgd
from ._gaussian import orthonormalise, project
from ._model import MLP, accumulate
from ._progress import bar as progress_bar
from ._mpi import Shard
from ._keys import key
from ._results import Run

__all__ = ["simulate_exact", "ExactState"]

#: A vector adds a Gram–Schmidt direction when ‖ρ‖ > _TOL · ‖x‖ (maths §3).
_TOL = 1e-10
#: E[a b] of coefficient vectors: their dot product (the inner product of maths §4)
_DOT = Shard(1)
#: First guess of the number of base normals; doubled (and the pass rerun) when short.
_FIRST_WIDTH = 256


class _Full(Exception):
    """More base normals or directions are needed than were allocated."""


# --------------------------------------------------------------------------- algebra
class _Normals:
    """Allocator of base normals: index k of a coefficient vector is the k-th N(0, 1).

    Parameters
    ----------
    capacity : int
        Largest number of base normals (the length of the coefficient vectors).
    start : int
        First free index.
    """

    def __init__(self, capacity: int, start: int = 0):
        self.capacity = capacity
        self.size = start

    def new(self, k: int) -> np.ndarray:
        """Indices of k fresh independent standard normals; :class:`_Full` when out of room."""
        if self.size + k > self.capacity:
            raise _Full
        idx = np.arange(self.size, self.size + k)
        self.size += k
        return idx


def _embed(coords: np.ndarray, idx: np.ndarray, width: int, scale: float) -> np.ndarray:
    """Coefficient rows scale · Σ_k coords[:, k] e_{idx[k]} of length ``width``."""
    out = np.zeros((coords.shape[0], width))
    out[:, idx] = scale * coords
    return out


def _gram(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """E[Z^a Z^b] for coefficient rows, zero-padding the narrower of A and B."""
    w = min(A.shape[1], B.shape[1])
    return A[:, :w] @ B[:, :w].T


def _ages(beta: float, rho: float, steps: int) -> np.ndarray:
    """ω_j, j = 0..T: the weight, in its accumulator, of a gradient entered j updates ago (maths §6).

    A history row r enters with v_r = a_r = 0; each update then does v_r ← β v_r + [r new],
    a_r ← ρ a_r + v_r (:func:`zlimit._model.accumulate`), so ω_0 = 0 and
    ω_j = Σ_{i<j} ρ^{j−1−i} β^i: exactly 1 for every j >= 1 when β = 0 and ρ = 1.

    >>> _ages(0.5, 1.0, 3).tolist()
    [0.0, 1.0, 1.5, 1.75]
    """
    omega = np.zeros(steps + 1)
    a, v = np.zeros(1), np.zeros(1)
    for j in range(1, steps + 1):
        accumulate(a, v, float(j == 1), beta, rho)
        omega[j] = a[0]
    return omega


def _gaussian_moments(h: np.ndarray) -> np.ndarray:
    """(E[Z], E|Z|) = (0, sqrt(2/π) sqrt(E[Z²])) of coefficient rows h (r, width): (r, 2).

    Every Z of a linear network is a combination of independent standard normals with
    deterministic coefficients — biases included, Z^{b^l_0} being one more base normal,
    and with momentum and decay, which only reweight them — so it is a centred Gaussian
    of variance E[Z²] = ‖h‖², and E|Z| = sqrt(2/π)·sd.

    >>> _gaussian_moments(np.array([[3.0, 4.0]])).round(6).tolist()  # sd 5: 5·sqrt(2/π)
    [[0.0, 3.989423]]
    """
    out = np.zeros((h.shape[0], 2))
    out[:, 1] = np.sqrt(2.0 / np.pi) * np.sqrt(np.einsum("ij,ij->i", h, h))
    return out


def _readout_eval(h: np.ndarray, w_hat: np.ndarray) -> np.ndarray:
    """E[Z^{Ŵ^c} Z^{x^L}] for rows h that may be wider than Ŵ: (r,) for k = 1, (r, k) for k > 1."""
    f = _gram(h, np.atleast_2d(w_hat))
    return f[:, 0] if w_hat.ndim == 1 else f


# ----------------------------------------------------------------- Gaussian processes
class _Process:
    """One Gaussian process Ẑ with its Gram–Schmidt basis (maths §3, E = dot product).

    Cov(Ẑ^x, Ẑ^{x'}) = σ² x·x', with x·x' = E[Z^x Z^{x'}] for coefficient vectors
    (hidden matrices) or the Euclidean product of R^d (input layer, σ = σ_1/√d).

    Parameters
    ----------
    sigma : float
        σ of the process.
    width : int
        Length of the vectors it is fed.
    capacity : int
        Largest number of directions.
    normals : _Normals
        Where the fresh normal of each new direction comes from.
    out_width : int
        Length of the coefficient vectors Ẑ it returns.
    """

    def __init__(self, sigma: float, width: int, capacity: int, normals: _Normals, out_width: int):
        self.sigma = sigma
        self.normals = normals
        self.out_width = out_width
        capacity = min(capacity, normals.capacity)  # each direction has its own normal
        self.basis = np.zeros((capacity, width))
        self.idx = np.zeros(capacity, dtype=np.int64)
        self.size = 0

    @property
    def u(self) -> np.ndarray:
        """Z^{u_k}, the orthonormal directions, shape (K, width)."""
        return self.basis[: self.size]

    @property
    def normal_idx(self) -> np.ndarray:
        """Indices of the base normals g_k of the directions, shape (K,)."""
        return self.idx[: self.size]

    def _grow(self, Q: np.ndarray) -> None:
        k = Q.shape[0]
        if self.size + k > self.basis.shape[0]:
            raise _Full
        self.basis[self.size:self.size + k] = Q
        self.idx[self.size:self.size + k] = self.normals.new(k)
        self.size += k

    def add(self, X: np.ndarray, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Enter the rows of X into the process and return their Ẑ (maths §3).

        c_k = E[Z^x Z^{u_k}], ρ = Z^x − Σ c_k Z^{u_k}; a new direction u = ρ/‖ρ‖ with
        a fresh normal when ‖ρ‖ exceeds the tolerance; Ẑ = σ (Σ_k c_k g_k + ‖ρ‖ g_new).

        Parameters
        ----------
        X : (b, width) rows.
        scale : (b,), optional
            Norms the tolerance is relative to; ‖x‖ by default.

        Returns
        -------
        Zhat : (b, out_width) coefficient rows
        rho : (b,) novelty ‖ρ‖ of each row
        """
        if scale is None:
            scale = np.sqrt(np.einsum("ij,ij->i", X, X))
        C_old, R = self.coordinates(X)
        Q, C_new, rho, _ = orthonormalise(R, _TOL, scale, _DOT)  # Gram–Schmidt with E the dot product
        self._grow(Q)
        coords = np.hstack([C_old, C_new.T])
        return _embed(coords, self.normal_idx, self.out_width, self.sigma), rho

    def coordinates(self, X: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates (b, K) on the first k directions (all by default) and residuals (b, W)
        (:func:`zlimit._gaussian.project` with E the dot product)."""
        C, R = project(self.basis[: self.size if k is None else k], np.asarray(X, dtype=np.float64), _DOT)
        return C.T, R

    def stein(self, Y: np.ndarray, k: int | None = None) -> np.ndarray:
        """σ Σ_k Z^{u_k} E[g_k Z^y] over the first k directions (maths §3 Ż).

        E[g_k Z^y] is the coefficient of g_k in Z^y (Stein's lemma, linear φ).
        Returns rows of this process's vector width.
        """
        k = self.size if k is None else k
        return self.sigma * (Y[:, self.idx[:k]] @ self.basis[:k])


def _novelty(process: _Process, X: np.ndarray, k: int) -> np.ndarray:
    """‖ρ‖ of each row of X against the first k directions and the earlier rows."""
    scale = np.sqrt(np.einsum("ij,ij->i", X, X))
    _, R = process.coordinates(X, k)
    return orthonormalise(R, _TOL, scale, _DOT)[2]


def _eval_zhat(train: _Process, extra: _Process, X: np.ndarray, width: int) -> np.ndarray:
    """Ẑ of evaluation vectors, jointly exact with every training Ẑ of the process.

    Z^x = Σ_k c_k Z^{u_k} + ρ with u_k the final training basis (all steps) and ρ
    orthogonal to every training vector; ρ is expanded on the persistent basis of
    evaluation directions ``extra`` (growing it when needed). Then
    Ẑ^x = σ (Σ_k c_k g_k + Σ_e c_e g_e) has Cov σ² E[Z^x Z^{x'}] with every vector
    of the process. No training quantity loads a g_e.
    """
    C, R = train.coordinates(X)
    Zhat = _embed(C, train.normal_idx, width, train.sigma)
    Zhat += extra.add(R, scale=np.sqrt(np.einsum("ij,ij->i", X, X)))[0]
    return Zhat


# ----------------------------------------------------------------------- layers
class _Hidden:
    """The hidden matrix W^l (2 <= l <= L): its two processes and its update history.

    The history rows are g_{s,i} Z^{dh^l_s(ξ_i)} and Z^{x^{l-1}_s(ξ_i)} for
    i ∈ B_s, in the order of the steps s, with g = χ for k = 1 and g = 1 for k > 1
    (maths §6). At step t row r counts with the weight a_r = ω_{t−s_r} of
    :func:`_ages`: the accumulator A_l of maths §6 is Σ_r a_r (dh row) ⊗ (x row).
    """

    def __init__(self, layer: int, model: MLP, normals: _Normals, width: int, k_cap: int, j_cap: int):
        self.layer = layer
        self.sigma = model.sigma[layer - 1]
        self.eta = model.eta[layer - 1]
        self.fwd = _Process(self.sigma, width, k_cap, normals, width)
        self.bwd = _Process(self.sigma, width, j_cap, normals, width)
        self.hd = np.zeros((j_cap, width))
        self.hx = np.zeros((j_cap, width))
        self.rows = 0
        self.at_step: list[tuple[int, int, int]] = []  # (K, J, history rows) at forward time

    def forward(self, x: np.ndarray, a: np.ndarray, decay: float) -> tuple[np.ndarray, np.ndarray]:
        """Z^{h^l_t(ξ_a)} for the training inputs, bias not included (maths §2 forward pass, §6).

        Z^{h^l_t} = ρ^t (Ẑ^{W^l x} + Ż^{W^l x}) − η_l Σ_r a_r g_r Z^{dh^l_{s_r}} E[Z^{x^{l-1}_{s_r}} Z^x]
        over the history rows r, with Ż^{W^l x} = σ_l Σ_j Z^{v_j} E[γ_j Z^x] over the
        backward directions of steps < t (those in the basis now).

        Parameters
        ----------
        x : (m, width) Z^{x^{l-1}_t(ξ_a)}.
        a : (rows,) the weights a_r of the history rows at step t.
        decay : ρ^t.

        Returns
        -------
        h : (m, width)
        rho : (m,) novelty of each row in the forward process
        """
        zdot = self.bwd.stein(x)  # Ż^{W^l x}
        update = -self.eta * (((x @ self.hx[: self.rows].T) * a) @ self.hd[: self.rows])
        zhat, rho = self.fwd.add(x)  # Ẑ^{W^l x}
        self.at_step.append((self.fwd.size, self.bwd.size, self.rows))
        return decay * (zhat + zdot) + update, rho

    def backward(self, dh: np.ndarray, a: np.ndarray, decay: float) -> tuple[np.ndarray, np.ndarray]:
        """Z^{dx^{l-1}_t(ξ_i)} for i ∈ B_t (maths §2 backward pass, §6).

        Z^{dx^{l-1}_t} = ρ^t (Ẑ^{W^{lT} dh} + Ż^{W^{lT} dh})
                         − η_l Σ_r a_r Z^{x^{l-1}_{s_r}} E[g_r Z^{dh^l_{s_r}} Z^{dh}],
        with Ż^{W^{lT} y} = σ_l Σ_k Z^{u_k} E[g_k Z^y] over the forward directions of
        steps <= t; ``a`` and ``decay`` as in :meth:`forward`.

        Returns
        -------
        dx : (|B_t|, width)
        rho : (|B_t|,) novelty of each row in the backward process
        """
        zdot = self.fwd.stein(dh)  # Ż^{W^{lT} dh}
        update = -self.eta * (((dh @ self.hd[: self.rows].T) * a) @ self.hx[: self.rows])
        zhat, rho = self.bwd.add(dh)  # Ẑ^{W^{lT} dh}
        return decay * (zhat + zdot) + update, rho

    def remember(self, g: np.ndarray, dh: np.ndarray, x_b: np.ndarray) -> None:
        """Append g_{t,i} Z^{dh^l_t(ξ_i)} and Z^{x^{l-1}_t(ξ_i)}, i ∈ B_t, to the history."""
        b = dh.shape[0]
        self.hd[self.rows:self.rows + b] = g[:, None] * dh
        self.hx[self.rows:self.rows + b] = x_b
        self.rows += b

    def forward_eval(self, x: np.ndarray, s: int, a: np.ndarray, decay: float, extra: _Process,
                     width: int) -> tuple[np.ndarray, np.ndarray]:
        """Z^{h^l_s(ξ_e)} for evaluation inputs at step s, after training, bias not included.

        The same equation as :meth:`forward`, with the Ż sum and the update history
        cut at step s, the weights ``a`` and ``decay`` = ρ^s of step s, and Ẑ from
        :func:`_eval_zhat`. The novelty is measured as for training rows: against the
        forward basis at step s and the earlier rows.
        """
        K, J, rows = self.at_step[s]
        w = self.fwd.basis.shape[1]
        h = _eval_zhat(self.fwd, extra, x, width)  # Ẑ^{W^l x}
        h[:, :w] += self.bwd.stein(x, J)  # Ż^{W^l x}, backward directions of steps < s
        h *= decay
        h[:, :w] -= self.eta * (((x[:, :w] @ self.hx[:rows].T) * a) @ self.hd[:rows])
        return h, _novelty(self.fwd, x, K)


# ---------------------------------------------------------------------- training
def _capacities(model: MLP, m: int, d: int, batches: list, steps: int) -> tuple[int, int, int]:
    """Most directions per forward process, per backward process, and base normals in all.

    Every vector entered adds at most one direction: m per forward pass, |B_t| per
    backward pass; the input layer needs rank(Ξ) <= min(m, d), the readout k and the
    hidden biases L more (maths §6). Linear features are usually of much lower rank, so
    the runs allocate fewer base normals and grow on demand (:func:`_grown`).
    """
    k_cap = m * (steps + 1)
    j_cap = int(sum(len(b) for b in batches))
    L = model.depth
    return k_cap, j_cap, min(m, d) + model.outputs + L * model.has_bias + (L - 1) * (k_cap + j_cap)


def _grown(run, upper: int):
    """``run(width)`` with width = _FIRST_WIDTH, doubled up to ``upper`` while it is short."""
    width = min(upper, _FIRST_WIDTH)
    while True:
        try:
            return run(width)
        except _Full:
            if width >= upper:
                raise RuntimeError("the exact limit ran out of base normals; this is a bug") from None
            width = min(2 * width, upper)


class ExactState:
    """Maths §2 and §6 for the training inputs in exact coefficient arithmetic: a
    :class:`zlimit._driver.State` whose features are coefficient vectors over ``width``
    base normals (rows), with E[Z Z'] the dot product.

    Evaluation inputs are not seen here (the forward pass returns the m training
    rows); :func:`_evaluate` replays them afterwards from what this state kept:
    the readout (Z^{Ŵ_t}, b^{L+1}_t) of every step (``readouts``), the features of every
    step (``features``, kept steps only unless ``keep_all``), the first-layer history,
    each hidden layer's history and the step of every history row (:meth:`weights`).
    Raises :class:`_Full` when ``width`` base normals are too few.
    """

    exact_eval_cross = True
    label = ""

    def __init__(self, model: MLP, X: np.ndarray, batches: list, steps: int, record_steps: tuple,
                 keep_all: bool, width: int):
        m, d = X.shape
        L, k = model.depth, model.outputs
        self.model, self.width, self.record_steps, self.keep_all = model, width, record_steps, keep_all
        k_cap, j_cap, _ = _capacities(model, m, d, batches, steps)
        normals = _Normals(width)
        # Z^{h^1_0(ξ_i)}: Cov σ_1² ξ_i·ξ_j/d, through an orthonormal basis of the input span
        self.inputs = _Process(model.sigma[0] / np.sqrt(d), d, min(m, d), normals, width)
        self.h1_0 = self.inputs.add(X)[0]
        # Z^{Ŵ^c_0} ~ N(0, σ_{L+1}²), c = 1..k, a base normal each; (width,) when k = 1
        w_hat = np.zeros((k, width))
        w_hat[np.arange(k), normals.new(k)] = model.sigma[L]
        self.w_hat = w_hat[0] if k == 1 else w_hat
        self.w_vel = np.zeros_like(self.w_hat)  # −η_{L+1} × the velocity of S (maths §6)
        self.b_out = np.zeros(k)  # b^{L+1}_t, deterministic, starts at 0
        self.b_vel = np.zeros_like(self.b_out)
        # Z^{b^l_0} ~ N(0, σ_{b,l}²), l = 1..L, a base normal each (maths §6); none without biases
        self.b0 = None
        if model.has_bias:
            self.b0 = np.zeros((L, width))
            self.b0[np.arange(L), normals.new(L)] = model.bias_sigma[:L]
        self.hidden = [_Hidden(l, model, normals, width, k_cap, j_cap) for l in range(2, L + 1)]
        self.K1 = X @ X.T / d  # ξ_i·ξ_a/d
        self.hd1 = np.zeros((j_cap, width))  # g_{s,i} Z^{dh^1_s(ξ_i)}
        self.hd1_input = np.zeros(j_cap, dtype=np.int64)  # i of each row
        self.row_step = np.zeros(j_cap, dtype=np.int64)  # s of each row
        self.hd1_rows: list[int] = []  # rows at the forward pass of each step
        self.rows = 0
        self.rho = model.decay
        self.omega = _ages(model.momentum, model.decay, steps)
        self.readouts: list = []  # (Z^{Ŵ_t}, b^{L+1}_t), t = 0..T
        self.features: list = []  # features[t][l-1] = Z^{h^l_t(ξ_i)}, (m, width); kept steps only unless keep_all
        self.t = 0  # the step of the last forward pass
        self.hs = self.dhs = self.a = self.g = None

    gram = staticmethod(lambda a, b: _gram(a, b))

    def weights(self, t: int) -> np.ndarray:
        """a_r = ω_{t−s_r} of the history rows at step t's passes (maths §6, :func:`_ages`)."""
        rows = self.hd1_rows[t]
        return self.omega[t - self.row_step[:rows]]

    def biased(self, h: np.ndarray, l: int, t: int, a: np.ndarray) -> np.ndarray:
        """``h`` + Z^{b^l_t}, added in place to its first ``width`` columns (maths §6), with

            Z^{b^l_t} = ρ^t Z^{b^l_0} − η c_{b,l} Σ_r a_r g_r Z^{dh^l_{s_r}}:

        the accumulator B^l of maths §6 read off the dh history of layer l with the
        weights ``a`` of step t. ``h`` unchanged without biases.
        """
        if self.b0 is None:
            return h
        hd = self.hd1 if l == 1 else self.hidden[l - 2].hd
        h[:, :self.width] += self.rho ** t * self.b0[l - 1] - self.model.bias_eta[l - 1] * (a @ hd[:a.size])
        return h

    def first_layer(self, h1_0: np.ndarray, K1: np.ndarray, t: int, a: np.ndarray) -> np.ndarray:
        """Z^{h^1_t(ξ_a)} = ρ^t Z^{h^1_0(ξ_a)} − η_1 Σ_r a_r g_r (ξ_{i_r}·ξ_a/d) Z^{dh^1_{s_r}} + Z^{b^1_t}
        (maths §2, §6) for rows ``h1_0`` (possibly wider) with ``K1`` = ξ_i·ξ_a/d (m, ·)."""
        h = self.rho ** t * h1_0
        h[:, :self.width] -= self.model.eta[0] * ((K1[self.hd1_input[:a.size]].T * a) @ self.hd1[:a.size])
        return self.biased(h, 1, t, a)

    def forward(self, t: int) -> Forward:
        """Z^{h^1_t} by :meth:`first_layer`, Z^{h^l_t} by :meth:`_Hidden.forward` plus the
        bias (:meth:`biased`), Z^{x^l} = Z^{h^l} (φ(x) = x),
        f̊^c_t(ξ_i) = E[Z^{Ŵ^c_t} Z^{x^L_t(ξ_i)}] + b^{L+1}_{t,c} (maths §2, §6), and the
        moments of the centred Gaussians Z^{h^l_t} (:func:`_gaussian_moments`)."""
        self.hd1_rows.append(self.rows)
        a, decay = self.weights(t), self.rho ** t
        hs, novelty = [self.first_layer(self.h1_0, self.K1, t, a)], {}
        for layer in self.hidden:
            h, novelty[layer.layer] = layer.forward(hs[-1], a, decay)
            hs.append(self.biased(h, layer.layer, t, a))
        self.readouts.append((self.w_hat, self.b_out))
        self.features.append(hs if (self.keep_all or t in self.record_steps) else None)
        self.t, self.hs, self.a = t, hs, a
        f = hs[-1] @ self.w_hat.T
        moments = np.stack([_gaussian_moments(h) for h in hs])
        return Forward(hs, hs, f + self.b_out if self.model.has_bias else f, novelty,
                       moments=np.stack([moments, moments], axis=1))

    def backward(self, batch: np.ndarray, chi: np.ndarray) -> Backward:
        """Z^{dx^L_t(ξ_i)} = Z^{Ŵ_t} with g = χ in the updates (k = 1, maths §2), or the
        error-weighted Σ_c χ_{t,i,c} Z^{Ŵ^c_t} with g = 1 (k > 1, maths §6);
        Z^{dh^l_t} = Z^{dx^l_t} φ' = Z^{dx^l_t}; Z^{dx^{l-1}_t} by :meth:`_Hidden.backward`."""
        chi_b = chi[batch]
        if chi.ndim == 1:
            dx, self.g = np.repeat(self.w_hat[None, :], len(batch), axis=0), chi_b
        else:
            dx, self.g = chi_b @ self.w_hat, np.ones(len(batch))
        decay = self.rho ** self.t
        dhs, novelty = [None] * self.model.depth, {}
        for l in range(self.model.depth, 0, -1):
            dhs[l - 1] = dx
            if l >= 2:
                dx, novelty[l] = self.hidden[l - 2].backward(dx, self.a, decay)
        self.dhs = dhs
        return Backward([dh @ dh.T for dh in dhs], novelty)

    def update(self, batch: np.ndarray, chi: np.ndarray) -> None:
        """Ŵ^c ← ρ Ŵ^c − η_{L+1} V, V ← β V + Σ_i χ_{t,i,c} Z^{x^L_t(ξ_i)}; b^{L+1} likewise with
        Σ_i χ_{t,i,c} (maths §6, in place: :func:`zlimit._model.accumulate`); and the rows
        g_{t,i} Z^{dh^l_t(ξ_i)}, Z^{x^{l-1}_t(ξ_i)} of step t appended to the histories."""
        model, chi_b, b, rows = self.model, chi[batch], len(batch), self.rows
        self.w_hat = self.w_hat.copy()  # the readouts of earlier steps are kept
        accumulate(self.w_hat, self.w_vel, -model.eta[-1] * (chi_b.T @ self.hs[-1][batch]), model.momentum, self.rho)
        if model.has_bias:
            self.b_out = self.b_out.copy()
            accumulate(self.b_out, self.b_vel, -model.bias_eta[-1] * chi_b.sum(axis=0), model.momentum, self.rho)
        self.hd1[rows:rows + b] = self.g[:, None] * self.dhs[0]
        self.hd1_input[rows:rows + b] = batch
        self.row_step[rows:rows + b] = self.t
        self.rows += b
        for layer in self.hidden:
            layer.remember(self.g, self.dhs[layer.layer - 1], self.hs[layer.layer - 2][batch])


# -------------------------------------------------------------------- evaluation
def _evaluate(model: MLP, state: ExactState, rec: Recorder, X: np.ndarray, X_eval: np.ndarray, steps: int,
              cap: int) -> None:
    """Replay steps 0..T for the evaluation inputs and fill their outputs and kernels in ``rec``.

    The same equations as the training inputs at every step s: the history weights
    and ρ^s of step s (:meth:`ExactState.weights`), the same bias vectors Z^{b^l_s} and
    the readout of step s. Uses only the training state; the ``cap`` evaluation base
    normals live beyond the training ones, so no training coefficient vector ever loads them.
    """
    m, d = X.shape
    me = X_eval.shape[0]
    width = state.width + cap
    normals = _Normals(width, start=state.width)
    # Z^{h^1_0(ξ_e)}: coordinates on the training input basis + evaluation input directions
    extra_in = _Process(state.inputs.sigma, d, min(me, d), normals, width)
    h1_0 = _eval_zhat(state.inputs, extra_in, X_eval, width)
    extras = [_Process(layer.sigma, width, me * (steps + 1), normals, width) for layer in state.hidden]
    K1e = X @ X_eval.T / d  # ξ_i·ξ_e/d
    kept = {}
    for t in range(steps + 1):
        a, decay = state.weights(t), state.rho ** t
        hs = [state.first_layer(h1_0, K1e, t, a)]
        for layer, extra in zip(state.hidden, extras):
            h, rec.novelty[key("fwd", layer.layer)][t, m:] = layer.forward_eval(hs[-1], t, a, decay, extra, width)
            hs.append(state.biased(h, layer.layer, t, a))
        w_hat, b_out = state.readouts[t]
        f = _readout_eval(hs[-1], w_hat)  # f̊_t(ξ_e)
        rec.outputs[t, m:] = f + b_out if model.has_bias else f
        if not np.all(np.isfinite(rec.outputs[t, m:])):
            raise diverged("output f of an evaluation input", t, state, model)
        if t in rec.record_steps:
            kept[t] = hs
        _record_eval(state, rec, t, hs, kept, m)


def _record_eval(state: ExactState, rec: Recorder, t: int, hs: list, kept: dict, m: int) -> None:
    """Evaluation rows and columns of the step-t kernels, cross kernels and moments (kind h;
    x equals h)."""
    for l, h in enumerate(hs, start=1):
        rec.moments[key("h", l)][t, m:] = _gaussian_moments(h)
        tr = state.features[t][l - 1]
        K = rec.kernels[key("h", l)][t]
        K[m:, m:] = h @ h.T
        K[:m, m:] = _gram(tr, h)
        K[m:, :m] = K[:m, m:].T
        if not np.all(np.isfinite(K[m:])):
            raise diverged(f"layer-{l} features h of an evaluation input", t, state, state.model)
        for r, s in enumerate(rec.record_steps):
            if s <= t:
                tr_s, ev_s = state.features[s][l - 1], kept[s][l - 1]
                C = rec.cross[key("h", l)][r, t]
                C[:m, m:] = _gram(tr_s, h)
                C[m:, :m] = _gram(ev_s, tr)
                C[m:, m:] = _gram(ev_s, h)
        rec.copy_h_to_x(t, l)


# ------------------------------------------------------------------------ public
def _check_linear(model: MLP) -> None:
    act = model.activation
    ok = act.name == "linear"
    if ok:
        for v in (-1.5, 0.0, 0.7):
            ok = ok and float(act.phi(v)) == v and float(act.dphi(v)) == 1.0
    if not ok:
        raise ValueError(
            f'method="exact" needs activation="linear" (φ(x) = x), got activation {act.name!r}; '
            'use method="mc" for nonlinear activations'
        )


def simulate_exact(model: MLP, data, settings, on_step=None) -> Run:
    """The exact infinite-width μP limit of a deep linear MLP (maths §4), no sampling.

    Called by :func:`zlimit.simulate` with ``method="exact"`` and validated ``data`` and
    ``settings``. Every Z of maths §2 is a linear combination of independent standard
    normals with deterministic coefficients; the recursions of §2 (forward, backward,
    Ż by Stein's lemma, updates) run on the coefficient vectors through
    :func:`zlimit._driver.run_sgd`, and the Gaussian processes of the hidden matrices
    are built by Gram–Schmidt as in §3 with E the dot product.

    Returns
    -------
    Run
        G = 1 and ``error_model == "exact"`` (standard errors are zero): ``outputs``
        f̊_t, ``loss``, ``error_signals`` χ̊, kernels "h{l}", "x{l}" (equal for linear
        φ) and "dh{l}", cross kernels, the moments of the centred Gaussian features
        (E[Z] = 0, E|Z| = sqrt(2/π)·sqrt(E[Z²])), and the novelty ‖ρ‖ of every vector entered into
        the processes of W^l ("fwd{l}", "bwd{l}", l >= 2).

    Raises
    ------
    ValueError
        For a nonlinear activation.
    DivergenceError
        When f̊ becomes non-finite.

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> model = zlimit.MLP(depth=1, activation="linear", lr=0.5)
    >>> run = zlimit.simulate(model, np.array([[1.0]]), np.array([1.0]), steps=1, method="exact")
    >>> float(run.outputs[1, 0])  # (η_1 σ_2² + η_2 σ_1²) ξ·ξ/d y = 1.0
    1.0
    """
    _check_linear(model)
    X, X_eval, steps, record_steps = data.X, data.X_eval, settings.steps, settings.record_steps
    batches = list(data.batches)
    m, me = data.m, data.M - data.m
    reported = [-1]  # steps already reported: a rerun with more base normals does not repeat them

    def hook(t, state, rec):
        if t > reported[0]:
            reported[0] = t
            bar.update(1)
            if on_step is not None:
                on_step(0, t)

    def train(width):
        state = ExactState(model, X, batches, steps, record_steps, me > 0, width)
        rec = Recorder(model.depth, steps, m, data.M, record_steps, processes=True, outputs=model.outputs)
        return state, run_sgd(state, model, data.y, batches, steps, rec, hook)

    upper = _capacities(model, m, X.shape[1], batches, steps)[2]
    upper_eval = min(me, X.shape[1]) + (model.depth - 1) * me * (steps + 1)
    # the products here are small: one BLAS thread avoids thread start-up and contention
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(limits=1, user_api="blas"), \
            progress_bar(total=steps + 1, progress=settings.progress, desc="zlimit.simulate (exact)", unit="step") as bar:
        state, rec = _grown(train, upper)
        if me:
            _grown(lambda c: _evaluate(model, state, rec, X, X_eval, steps, c), upper_eval)
    meta = {"kind": "exact", "method": "exact", "steps": steps, "m": m, "m_eval": me, "seed": None}
    return assemble(model, meta, [rec], error_model="exact")
