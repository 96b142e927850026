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

Evaluation inputs never influence training. The training trajectory is computed
first, with no knowledge of them. The evaluation inputs are then replayed step by
step: the Ẑ of an evaluation vector takes its coordinates on the *final* training
basis of its process (all steps) plus a persistent basis of evaluation directions,
orthogonal to every training vector. Every Ẑ family then has the exact covariance
σ_l² E[Z^x Z^{x'}] over all pairs of vectors, training or evaluation, at any two
steps, so cross-step kernels that involve evaluation inputs are exact too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from ._errors import DivergenceError
from ._model import MLP, check_batches, check_data, error_signal, total_loss
from ._results import Run

__all__ = ["simulate_exact"]

#: A vector adds a Gram–Schmidt direction when ‖ρ‖ > _TOL · ‖x‖ (maths §3).
_TOL = 1e-10
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


def _project(basis: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates on, and residuals off, an orthonormal basis (maths §3).

    Classical Gram–Schmidt with one reorthogonalisation. ``basis`` may be narrower
    than ``X``: its vectors are zero beyond its width.

    Parameters
    ----------
    basis : (K, w) orthonormal rows u_k.
    X : (b, W) rows x, W >= w.

    Returns
    -------
    C : (b, K), c_k = E[Z^x Z^{u_k}]
    R : (b, W), ρ = Z^x − Σ_k c_k Z^{u_k}
    """
    w = basis.shape[1]
    R = np.array(X, dtype=np.float64, copy=True)
    C = np.zeros((X.shape[0], basis.shape[0]))
    if basis.shape[0] == 0:
        return C, R
    for _ in range(2):
        c = R[:, :w] @ basis.T
        R[:, :w] -= c @ basis
        C += c
    return C, R


def _orthonormalise(R: np.ndarray, scale: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gram–Schmidt of the rows of R among themselves, in order (maths §3).

    Row j opens a new direction u = ρ_j/‖ρ_j‖ when ‖ρ_j‖ > tol · scale[j].

    Parameters
    ----------
    R : (b, W) rows already orthogonal to the earlier basis.
    scale : (b,) the norms ‖x_j‖ of the original vectors.
    tol : relative tolerance.

    Returns
    -------
    Q : (k, W) new orthonormal directions, k <= b
    C : (b, k) coordinates of each row on Q
    rho : (b,) ‖ρ_j‖ of each row against the earlier basis and the earlier rows
    """
    b = R.shape[0]
    Q = np.zeros_like(R)
    C = np.zeros((b, b))
    rho = np.zeros(b)
    k = 0
    for j in range(b):
        r = R[j].copy()
        for _ in range(2):
            if k:
                c = Q[:k] @ r
                r -= c @ Q[:k]
                C[j, :k] += c
        rho[j] = np.sqrt(r @ r)
        if rho[j] > tol * scale[j] and rho[j] > 0.0:
            Q[k] = r / rho[j]
            C[j, k] = rho[j]
            k += 1
    return Q[:k], C[:, :k], rho


def _embed(coords: np.ndarray, idx: np.ndarray, width: int, scale: float) -> np.ndarray:
    """Coefficient rows scale · Σ_k coords[:, k] e_{idx[k]} of length ``width``."""
    out = np.zeros((coords.shape[0], width))
    out[:, idx] = scale * coords
    return out


def _gram(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """E[Z^a Z^b] for coefficient rows, zero-padding the narrower of A and B."""
    w = min(A.shape[1], B.shape[1])
    return A[:, :w] @ B[:, :w].T


def _pad(A: np.ndarray, width: int) -> np.ndarray:
    """Coefficient rows extended by zeros to ``width`` (new normals not loaded)."""
    out = np.zeros((A.shape[0], width))
    out[:, : A.shape[1]] = A
    return out


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
    def g(self) -> np.ndarray:
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
        C_old, R = _project(self.u, X)
        Q, C_new, rho = _orthonormalise(R, scale, _TOL)
        self._grow(Q)
        coords = np.hstack([C_old, C_new])
        return _embed(coords, self.g, self.out_width, self.sigma), rho

    def coordinates(self, X: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates on the first k directions (all by default) and residuals."""
        return _project(self.basis[: self.size if k is None else k], X)

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
    return _orthonormalise(R, scale, _TOL)[2]


def _eval_zhat(train: _Process, extra: _Process, X: np.ndarray, width: int) -> np.ndarray:
    """Ẑ of evaluation vectors, jointly exact with every training Ẑ of the process.

    Z^x = Σ_k c_k Z^{u_k} + ρ with u_k the final training basis (all steps) and ρ
    orthogonal to every training vector; ρ is expanded on the persistent basis of
    evaluation directions ``extra`` (growing it when needed). Then
    Ẑ^x = σ (Σ_k c_k g_k + Σ_e c_e g_e) has Cov σ² E[Z^x Z^{x'}] with every vector
    of the process. No training quantity loads a g_e.
    """
    C, R = train.coordinates(X)
    Zhat = _embed(C, train.g, width, train.sigma)
    Zhat += extra.add(R, scale=np.sqrt(np.einsum("ij,ij->i", X, X)))[0]
    return Zhat


# ----------------------------------------------------------------------- layers
class _Hidden:
    """The hidden matrix W^l (2 <= l <= L): its two processes and its update history.

    The history rows are χ_{s,i} Z^{dh^l_s(ξ_i)} and Z^{x^{l-1}_s(ξ_i)} for
    i ∈ B_s, in the order of the steps s.
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

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Z^{h^l_t(ξ_a)} for the training inputs (maths §2, forward pass).

        Z^{h^l_t} = Ẑ^{W^l x} + Ż^{W^l x} − η_l Σ_{s<t} Σ_i χ_{s,i} Z^{dh^l_s(ξ_i)} E[Z^{x^{l-1}_s(ξ_i)} Z^x],
        with Ż^{W^l x} = σ_l Σ_j Z^{v_j} E[γ_j Z^x] over the backward directions of
        steps < t (those in the basis now).

        Returns
        -------
        h : (m, width)
        rho : (m,) novelty of each row in the forward process
        """
        zdot = self.bwd.stein(x)  # Ż^{W^l x}
        update = -self.eta * ((x @ self.hx[: self.rows].T) @ self.hd[: self.rows])
        zhat, rho = self.fwd.add(x)  # Ẑ^{W^l x}
        self.at_step.append((self.fwd.size, self.bwd.size, self.rows))
        return zhat + zdot + update, rho

    def backward(self, dh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Z^{dx^{l-1}_t(ξ_i)} for i ∈ B_t (maths §2, backward pass).

        Z^{dx^{l-1}_t} = Ẑ^{W^{lT} dh} + Ż^{W^{lT} dh} − η_l Σ_{s<t} Σ_j χ_{s,j} Z^{x^{l-1}_s(ξ_j)} E[Z^{dh^l_s(ξ_j)} Z^{dh}],
        with Ż^{W^{lT} y} = σ_l Σ_k Z^{u_k} E[g_k Z^y] over the forward directions of
        steps <= t.

        Returns
        -------
        dx : (|B_t|, width)
        rho : (|B_t|,) novelty of each row in the backward process
        """
        zdot = self.fwd.stein(dh)  # Ż^{W^{lT} dh}
        update = -self.eta * ((dh @ self.hd[: self.rows].T) @ self.hx[: self.rows])
        zhat, rho = self.bwd.add(dh)  # Ẑ^{W^{lT} dh}
        return zhat + zdot + update, rho

    def remember(self, chi_b: np.ndarray, dh: np.ndarray, x_b: np.ndarray) -> None:
        """Append χ_{t,i} Z^{dh^l_t(ξ_i)} and Z^{x^{l-1}_t(ξ_i)}, i ∈ B_t, to the history."""
        b = dh.shape[0]
        self.hd[self.rows:self.rows + b] = chi_b[:, None] * dh
        self.hx[self.rows:self.rows + b] = x_b
        self.rows += b

    def forward_eval(self, x: np.ndarray, s: int, extra: _Process, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Z^{h^l_s(ξ_e)} for evaluation inputs at step s, after training.

        The same equation as :meth:`forward`, with the Ż sum and the update history
        cut at step s, and Ẑ from :func:`_eval_zhat`. The novelty is measured as
        for training rows: against the forward basis at step s and the earlier rows.
        """
        K, J, rows = self.at_step[s]
        w = self.fwd.basis.shape[1]
        h = _eval_zhat(self.fwd, extra, x, width)  # Ẑ^{W^l x}
        h[:, :w] += self.bwd.stein(x, J)  # Ż^{W^l x}, backward directions of steps < s
        h[:, :w] -= self.eta * ((x[:, :w] @ self.hx[:rows].T) @ self.hd[:rows])
        return h, _novelty(self.fwd, x, K)


@dataclass
class _Trace:
    """The training trajectory, everything the evaluation replay needs."""

    width: int
    inputs: _Process
    h1_0: np.ndarray  # (m, width) Z^{h^1_0(ξ_i)}
    hd1: np.ndarray  # (rows, width) χ_{s,i} Z^{dh^1_s(ξ_i)}
    hd1_input: np.ndarray  # (rows,) i of each row
    hd1_rows: list  # rows at the forward pass of each step
    w_hat: list  # Z^{Ŵ_t}, t = 0..T
    hidden: list
    features: list  # features[t][l-1] = Z^{h^l_t(ξ_i)}, (m, width); kept steps only unless needed
    outputs: np.ndarray
    loss: np.ndarray
    chi: np.ndarray
    kernels: dict = field(default_factory=dict)
    cross: dict = field(default_factory=dict)
    novelty: dict = field(default_factory=dict)


# ---------------------------------------------------------------------- training
def _capacities(model: MLP, m: int, d: int, batches: list, steps: int) -> tuple[int, int, int]:
    """Most directions per forward process, per backward process, and base normals in all.

    Every vector entered adds at most one direction: m per forward pass, |B_t| per
    backward pass. Linear features are usually of much lower rank, so the runs
    allocate fewer base normals and grow on demand (:func:`_grown`).
    """
    k_cap = m * (steps + 1)
    j_cap = int(sum(len(b) for b in batches))
    return k_cap, j_cap, min(m, d) + 1 + (model.depth - 1) * (k_cap + j_cap)


def _new_records(model: MLP, steps: int, m: int, M: int, R: int) -> tuple[dict, dict, dict]:
    """NaN-filled kernel, cross-kernel and novelty arrays in the layout of :class:`Run`."""
    kernels, cross, novelty = {}, {}, {}
    for l in range(1, model.depth + 1):
        kernels[f"h{l}"] = np.full((steps + 1, M, M), np.nan)
        kernels[f"dh{l}"] = np.full((steps, m, m), np.nan)
        cross[f"h{l}"] = np.full((R, steps + 1, M, M), np.nan)
        if l >= 2:
            novelty[f"fwd{l}"] = np.full((steps + 1, M), np.nan)
            novelty[f"bwd{l}"] = np.full((steps + 1, M), np.nan)
    return kernels, cross, novelty


def _grown(run, upper: int):
    """``run(width)`` with width = _FIRST_WIDTH, doubled up to ``upper`` while it is short."""
    width = min(upper, _FIRST_WIDTH)
    while True:
        try:
            return run(width)
        except _Full:
            if width >= upper:
                raise RuntimeError("simulate_exact ran out of base normals; this is a bug") from None
            width = min(2 * width, upper)


def _train(model: MLP, X: np.ndarray, y: np.ndarray, batches: list, steps: int,
           record_steps: tuple, M: int, keep_all: bool, width: int) -> _Trace:
    """Maths §2 for the training inputs, steps 0..T, in exact coefficient arithmetic.

    Evaluation inputs are not seen here; only the record arrays are sized for M.
    ``width`` is the number of base normals allocated (:class:`_Full` if short).
    """
    m, d = X.shape
    L = model.depth
    k_cap, j_cap, _ = _capacities(model, m, d, batches, steps)
    normals = _Normals(width)
    # Z^{h^1_0(ξ_i)}: Cov σ_1² ξ_i·ξ_j/d, through an orthonormal basis of the input span
    inputs = _Process(model.sigma[0] / np.sqrt(d), d, min(m, d), normals, width)
    h1_0 = inputs.add(X)[0]
    # Z^{Ŵ_0} ~ N(0, σ_{L+1}²), its own base normal
    w_hat = np.zeros(width)
    w_hat[normals.new(1)] = model.sigma[L]
    hidden = [_Hidden(l, model, normals, width, k_cap, j_cap) for l in range(2, L + 1)]
    K1 = X @ X.T / d  # ξ_i·ξ_a/d
    hd1, hd1_input, hd1_rows = np.zeros((j_cap, width)), np.zeros(j_cap, dtype=np.int64), []
    kernels, cross, novelty = _new_records(model, steps, m, M, len(record_steps))
    trace = _Trace(width, inputs, h1_0, hd1, hd1_input, hd1_rows, [], hidden, [],
                   np.full((steps + 1, M), np.nan), np.full(steps + 1, np.nan), np.zeros((steps, m)),
                   kernels, cross, novelty)
    rows = 0
    for t in range(steps + 1):
        # forward pass: Z^{h^1_t(ξ_a)} = Z^{h^1_0(ξ_a)} − η_1 Σ_{s<t} Σ_i χ_{s,i} (ξ_i·ξ_a/d) Z^{dh^1_s(ξ_i)}
        hd1_rows.append(rows)
        h = h1_0 - model.eta[0] * (K1[hd1_input[:rows]].T @ hd1[:rows])
        hs = [h]  # Z^{x^l_t} = φ(Z^{h^l_t}) = Z^{h^l_t}
        for layer in hidden:
            h, novelty[f"fwd{layer.layer}"][t, :m] = layer.forward(hs[-1])
            hs.append(h)
        trace.w_hat.append(w_hat)
        f = hs[-1] @ w_hat  # f̊_t(ξ_a) = E[Z^{Ŵ_t} Z^{x^L_t(ξ_a)}]
        if not np.all(np.isfinite(f)):
            raise DivergenceError(f"f̊ became non-finite at step {t}; use a smaller lr (now {model.lr}) or lr_mult")
        trace.outputs[t, :m], trace.loss[t] = f, total_loss(model, f, y)
        _record_train(trace, t, hs, record_steps, keep_all)
        if t == steps:
            break
        batch = batches[t]
        chi = error_signal(model, f, y, batch)  # χ̊_{t,i}
        trace.chi[t] = chi
        # backward pass: Z^{dx^L_t(ξ_i)} = Z^{Ŵ_t}; Z^{dh^l_t} = Z^{dx^l_t} φ' = Z^{dx^l_t}
        dx = np.repeat(w_hat[None, :], len(batch), axis=0)
        dhs = [None] * L
        for l in range(L, 0, -1):
            dhs[l - 1] = dx
            kernels[f"dh{l}"][t][np.ix_(batch, batch)] = dx @ dx.T
            if l >= 2:
                dx, novelty[f"bwd{l}"][t, batch] = hidden[l - 2].backward(dx)
        # updates: Z^{Ŵ_{t+1}} = Z^{Ŵ_t} − η_{L+1} Σ_i χ_{t,i} Z^{x^L_t(ξ_i)}, and the histories
        chi_b = chi[batch]
        w_hat = w_hat - model.eta[L] * (chi_b @ hs[-1][batch])
        hd1[rows:rows + len(batch)] = chi_b[:, None] * dhs[0]
        hd1_input[rows:rows + len(batch)] = batch
        rows += len(batch)
        for layer in hidden:
            layer.remember(chi_b, dhs[layer.layer - 1], hs[layer.layer - 2][batch])
    return trace


def _record_train(trace: _Trace, t: int, hs: list, record_steps: tuple, keep_all: bool) -> None:
    """Training blocks of the step-t kernels and of the cross kernels against kept steps."""
    m = hs[0].shape[0]
    trace.features.append(hs if (keep_all or t in record_steps) else None)
    for l, h in enumerate(hs, start=1):
        trace.kernels[f"h{l}"][t, :m, :m] = h @ h.T  # E[Z^{h^l_t(ξ_a)} Z^{h^l_t(ξ_b)}]
        for r, s in enumerate(record_steps):
            if s <= t:
                trace.cross[f"h{l}"][r, t, :m, :m] = trace.features[s][l - 1] @ h.T


# -------------------------------------------------------------------- evaluation
def _evaluate(model: MLP, trace: _Trace, X: np.ndarray, X_eval: np.ndarray, steps: int,
              record_steps: tuple, cap: int) -> None:
    """Replay steps 0..T for the evaluation inputs and fill their outputs and kernels.

    Uses only the training trace; the ``cap`` evaluation base normals live beyond
    the training ones, so no training coefficient vector ever loads them.
    """
    m, d = X.shape
    me = X_eval.shape[0]
    width = trace.width + cap
    normals = _Normals(width, start=trace.width)
    # Z^{h^1_0(ξ_e)}: coordinates on the training input basis + evaluation input directions
    extra_in = _Process(trace.inputs.sigma, d, min(me, d), normals, width)
    h1_0 = _eval_zhat(trace.inputs, extra_in, X_eval, width)
    extras = [_Process(layer.sigma, width, me * (steps + 1), normals, width) for layer in trace.hidden]
    K1e = X @ X_eval.T / d  # ξ_i·ξ_e/d
    w = trace.width
    kept = {}
    for t in range(steps + 1):
        rows = trace.hd1_rows[t]
        h = h1_0.copy()
        h[:, :w] -= model.eta[0] * (K1e[trace.hd1_input[:rows]].T @ trace.hd1[:rows])
        hs = [h]
        for layer, extra in zip(trace.hidden, extras):
            h, trace.novelty[f"fwd{layer.layer}"][t, m:] = layer.forward_eval(hs[-1], t, extra, width)
            hs.append(h)
        trace.outputs[t, m:] = _gram(hs[-1], trace.w_hat[t][None, :])[:, 0]  # f̊_t(ξ_e)
        if t in record_steps:
            kept[t] = hs
        _record_eval(trace, t, hs, kept, record_steps, m)


def _record_eval(trace: _Trace, t: int, hs: list, kept: dict, record_steps: tuple, m: int) -> None:
    """Evaluation rows and columns of the step-t kernels and cross kernels."""
    for l, h in enumerate(hs, start=1):
        key = f"h{l}"
        tr = trace.features[t][l - 1]
        K = trace.kernels[key][t]
        K[m:, m:] = h @ h.T
        K[:m, m:] = _gram(tr, h)
        K[m:, :m] = K[:m, m:].T
        for r, s in enumerate(record_steps):
            if s <= t:
                tr_s, ev_s = trace.features[s][l - 1], kept[s][l - 1]
                C = trace.cross[key][r, t]
                C[:m, m:] = _gram(tr_s, h)
                C[m:, :m] = _gram(ev_s, tr)
                C[m:, m:] = _gram(ev_s, h)


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


def _check_record_steps(record_steps, steps: int) -> tuple[int, ...]:
    try:
        values = sorted({0, *(int(s) for s in record_steps)})
    except (TypeError, ValueError):
        raise ValueError(f"record_steps must be a sequence of integers, got {record_steps!r}") from None
    if values[0] < 0 or values[-1] > steps:
        raise ValueError(f"record_steps must lie in [0, steps = {steps}], got {tuple(record_steps)}")
    return tuple(values)


def simulate_exact(model: MLP, X, y, *, steps: int, X_eval=None, batches=None, record_steps=(0,)) -> Run:
    """The exact infinite-width μP limit of a deep linear MLP (maths §4), no sampling.

    Every Z of maths §2 is a linear combination of independent standard normals with
    deterministic coefficients; the recursions of §2 (forward, backward, Ż by Stein's
    lemma, updates) are run on the coefficient vectors, and the Gaussian processes
    of the hidden matrices are built by Gram–Schmidt as in §3 with E the dot product.

    Parameters
    ----------
    model : MLP
        Must have ``activation="linear"``; any depth L >= 1.
    X : array_like (m, d), y : array_like (m,)
        Training inputs and targets.
    steps : int
        T, the number of SGD steps.
    X_eval : array_like (m_eval, d), optional
        Evaluation inputs: observed at every step, never trained on, and never
        influencing the training trajectory.
    batches : list of index arrays, optional
        One per step (see :func:`zlimit.batch_schedule`); None is full batch.
    record_steps : sequence of int
        Steps s for the cross kernels E[Z_s(ξ_a) Z_t(ξ_b)] (0 is always kept).

    Returns
    -------
    Run
        G = 1 and ``meta["kind"] == "exact"`` (standard errors are zero):
        ``outputs`` f̊_t, ``loss``, ``error_signals`` χ̊, kernels "h{l}", "x{l}"
        (equal for linear φ) and "dh{l}", cross kernels, and the novelty ‖ρ‖ of every
        vector entered into the processes of W^l ("fwd{l}", "bwd{l}", l >= 2).

    Raises
    ------
    ValueError
        For a nonlinear activation, invalid data, batches or record_steps.
    DivergenceError
        When f̊ becomes non-finite.

    Examples
    --------
    >>> import numpy as np, zlimit
    >>> from zlimit._exact import simulate_exact
    >>> model = zlimit.MLP(depth=1, activation="linear", lr=0.5)
    >>> run = simulate_exact(model, np.array([[1.0]]), np.array([1.0]), steps=1)
    >>> float(run.outputs[1, 0])  # (η_1 σ_2² + η_2 σ_1²) ξ·ξ/d y = 1.0
    1.0
    """
    _check_linear(model)
    X, y, X_eval = check_data(model, X, y, X_eval)
    batches = check_batches(batches, X.shape[0], steps)
    steps = int(steps)
    record_steps = _check_record_steps(record_steps, steps)
    m, me = X.shape[0], X_eval.shape[0]
    M = m + me
    upper = _capacities(model, m, X.shape[1], batches, steps)[2]
    upper_eval = min(me, X.shape[1]) + (model.depth - 1) * me * (steps + 1)
    # the products here are small: one BLAS thread avoids thread start-up and contention
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(limits=1, user_api="blas"):
        trace = _grown(lambda w: _train(model, X, y, batches, steps, record_steps, M, me > 0, w), upper)
        if me:
            _grown(lambda c: _evaluate(model, trace, X, X_eval, steps, record_steps, c), upper_eval)
    if not np.all(np.isfinite(trace.outputs)):
        raise DivergenceError(f"f̊ became non-finite; use a smaller lr (now {model.lr}) or lr_mult")
    kernels, cross = {}, {}
    for l in range(1, model.depth + 1):  # Z^{x^l} = Z^{h^l} for φ(x) = x
        kernels[f"h{l}"] = trace.kernels[f"h{l}"][None]
        kernels[f"x{l}"] = trace.kernels[f"h{l}"][None].copy()
        kernels[f"dh{l}"] = trace.kernels[f"dh{l}"][None]
        cross[f"h{l}"] = trace.cross[f"h{l}"][None]
        cross[f"x{l}"] = trace.cross[f"h{l}"][None].copy()
    meta = {"kind": "exact", "method": "exact", "steps": steps, "m": m, "m_eval": me, "seed": None}
    return Run(model=model, meta=meta,
               outputs_groups=trace.outputs[None],
               loss_groups=trace.loss[None],
               error_signals_groups=trace.chi[None],
               kernels=kernels, cross=cross, record_steps=record_steps,
               novelty={k: v[None] for k, v in trace.novelty.items()})
