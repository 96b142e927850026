"""The exact deep linear limit with the extensions of maths §6 (biases, k outputs, momentum,
weight decay) against independent references.

References used here, none of them the code under test:

* closed forms derived by hand in the comments: one step from initialisation at any
  depth with biases, k outputs and decay; several steps of a net in which a single layer
  trains (the others frozen but decaying), with momentum and decay;
* an oracle for any depth written here (:func:`parameter_oracle`) that follows the
  *parameters* of the finite network of §6, each with its velocity and decoupled decay,
  on Z coefficient vectors, and builds each Gaussian process of a hidden matrix as an
  isometric copy of the base normals. The code instead follows accumulators with a weight
  per history row, keeps §2's factored backward vector for k = 1, builds the processes by
  Gram–Schmidt and replays evaluation inputs after training;
* finite-width μP linear networks with every extension, plain numpy (§6 table),
  averaged over seeds, at growing width;
* exact symmetries: a class whose targets are 0 never moves, frozen zero biases are no
  biases, an evaluation copy of a training input follows it, a zero error signal adds nothing.

Notation: K_ia = ξ_i·ξ_a/d, σ_l = init_std[l-1], η_l = lr·lr_mult[l-1], σ_{b,l} and
η_{b,l} = lr·bias_lr_mult[l-1] for l = 1..L+1 (σ_{b,L+1} = 0), ρ = 1 − lr·weight_decay, β = momentum.

Momentum and decay weights (maths §6): a gradient G_s enters its velocity at step s;
after the update of step u >= s the velocity holds β^{u−s} G_s, and the accumulator
X ← ρ X + V has gained Σ_{u=s}^{t−1} ρ^{t−1−u} β^{u−s} G_s after the updates of steps
s..t−1. So step t (which reads the accumulators after t updates) sees G_s with weight

    ω_{t−s},   ω_j = Σ_{i=0}^{j−1} ρ^{j−1−i} β^i   (ω_1 = 1, ω_2 = ρ + β, ω_3 = ρ² + ρβ + β²).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.special
from threadpoolctl import threadpool_limits

import zlimit
from zlimit._results import key
from tolerance import assert_close, assert_within_se


def exact_limit(model, X, y, **kwargs):
    return zlimit.simulate(model, X, y, method="exact", progress=False, **kwargs)


def linear(depth, lr=0.3, sigma=None, mult=None, **kw):
    sigma = [1.1, 0.9, 1.2, 0.8][: depth + 1] if sigma is None else sigma
    mult = [1.2, 0.8, 1.1, 0.9][: depth + 1] if mult is None else mult
    return zlimit.MLP(depth=depth, activation="linear", lr=lr, init_std=sigma, lr_mult=mult, **kw)


def problem(seed, m=3, d=2, m_eval=2, k=1, loss="mse"):
    """Inputs, targets of the loss (reals (m,) or (m, k), classes, or ±1) and evaluation inputs."""
    rng = np.random.default_rng(seed)
    X, X_eval = rng.standard_normal((m, d)), rng.standard_normal((m_eval, d))
    if loss == "xent":
        y = rng.integers(0, k, m).astype(float)
    elif loss == "logistic":
        y = rng.choice([-1.0, 1.0], m)
    else:
        y = rng.standard_normal((m, k) if k > 1 else m)
    return X, y, X_eval


def loss_grad(loss, f, y):
    """∂ℓ/∂f written here: f − y (mse), softmax(f) − onehot(y) (xent), −y/(1 + e^{yf}) (logistic)."""
    if loss == "mse":
        return f - y
    if loss == "xent":
        g = scipy.special.softmax(f, axis=1)
        g[np.arange(len(y)), y.astype(int)] -= 1.0
        return g
    return -y / (1.0 + np.exp(y * f))


def chi_of(model, f, y, batch):
    """χ_{i(,c)} = r ∂ℓ/∂f^c 1{i ∈ B} (maths §1, §6), r = 1/|B| for "mean" (never 1/k)."""
    chi = np.zeros_like(f)
    r = 1.0 / len(batch) if model.reduction == "mean" else 1.0
    chi[batch] = r * loss_grad(model.loss.name, f[batch], y[batch])
    return chi


def omega(model, j):
    """ω_j of the module docstring, summed here term by term."""
    beta, rho = model.momentum, 1.0 - model.lr * model.weight_decay
    return sum(rho ** (j - 1 - i) * beta ** i for i in range(j))


def contract(chi, theta):
    """Σ_i χ_{i(,c)} θ_ia: (M,) for k = 1, (M, k) for k > 1."""
    return np.einsum("i...,ia->a...", chi, theta)


def sq(values):
    return np.square(np.asarray(values, dtype=float))


# ------------------------------------------------------------ one step, any depth
def one_step_kernel(model, K):
    """Θ with f̊^c_1(ξ_a) = −Σ_i χ_{0,i,c} Θ_ia after one step from init (L = depth):

        Θ = Σ_{l=1}^{L+1} ρ^{L+1−l} (Π_{k>l} σ_k²) (η_l C^{l−1} + η_{b,l}),
        C^0 = K,   C^l = ρ (σ_l² C^{l−1} + σ_{b,l}²).

    Derivation (maths §2, §6, φ = id, k = 1 first). At step 0 the forward world (input,
    bias and forward normals) is independent of the backward world (Ŵ_0 and backward
    normals); dh^l_0 is the same vector for every input, ‖dh^l_0‖² = Π_{k>l} σ_k², and
    x^l_0(ξ_i) = Ẑ^{W^l x^{l−1}_0} + b^l_0 lies in the forward world. Step 1 sees every
    parameter as ρ p_0 − η_p G_0 (one update: the velocity is G_0, β does not enter).
    Write c^l_ia = E[x^l_0(ξ_i) x^l_1(ξ_a)] and e^l_a = E[dh^l_0 x^l_1(ξ_a)].
    Layer 1: x^1_1(ξ_a) = ρ(h^1_0(ξ_a) + b^1_0) − Σ_i χ_i (η_1 K_ia + η_{b,1}) dh^1_0, so
    c^1 = ρ(σ_1² K + σ_{b,1}²) and e^1 = −Σ_i χ_i (η_1 K_ia + η_{b,1}) ‖dh^1_0‖².
    Layer l: x^l_1 = ρ (Ẑ + Ż)^{W^l x^{l−1}_1} − Σ_i χ_i (η_l c^{l−1}_ia + η_{b,l}) dh^l_0 + ρ b^l_0,
    with Ż = dh^l_0 e^{l−1} / ‖dh^l_0‖² (Stein: dh^{l−1}_0 = σ_l ‖dh^l_0‖ γ and
    Ż = σ_l (dh^l_0/‖dh^l_0‖) E[γ x^{l−1}_1]).
    Ẑ is a forward normal combination with Cov σ_l² E[x x']; it is independent of dh^l_0.
    Hence c^l = ρ(σ_l² c^{l−1} + σ_{b,l}²) and
    e^l = ρ e^{l−1} − Σ_i χ_i (η_l c^{l−1}_ia + η_{b,l}) ‖dh^l_0‖².
    Output: Ŵ_1 = ρ Ŵ_0 − η_{L+1} Σ χ_i x^L_0(ξ_i), b^{L+1}_1 = −η_{b,L+1} Σ χ_i, and dh^L_0 = Ŵ_0:
    f̊_1 = ρ e^L − Σ_i χ_i (η_{L+1} c^L_ia + η_{b,L+1}), which unrolls to the formula.
    k > 1: the backward vector is Σ_c χ_{i,c} Ŵ^c_0 with χ ≡ 1 in the updates. Every Z above
    is linear in it, and E[Ŵ^c_0 Ŵ^{c'}_0] = σ_{L+1}² δ_{cc'}. Output c therefore picks its
    own χ_{·,c} with the same Θ: one step is block diagonal across classes.
    """
    L, rho = model.depth, 1.0 - model.lr * model.weight_decay
    s2, sb2 = sq(model.init_std), sq(model.bias_sigma)
    C = [K]
    for l in range(1, L + 1):
        C.append(rho * (s2[l - 1] * C[-1] + sb2[l - 1]))
    return sum(rho ** (L + 1 - l) * np.prod(s2[l:]) * (model.eta[l - 1] * C[l - 1] + model.bias_eta[l - 1])
               for l in range(1, L + 2))


ONE_STEP = {  # name: MLP keyword arguments beyond depth, loss, reduction and outputs
    "defaults": dict(bias_std=None, bias_lr_mult=1.0, momentum=0.0, weight_decay=0.0),
    "bias": dict(bias_std=0.7, bias_lr_mult=[1.3, 0.6, 0.9, 1.4]),  # cut to depth + 1 entries
    "decay": dict(weight_decay=0.5),
    "all": dict(bias_std=0.8, bias_lr_mult=1.5, momentum=0.7, weight_decay=0.4),
}
LOSSES = [("mse", 1, "sum"), ("logistic", 1, "mean"), ("mse", 3, "mean"), ("xent", 3, "sum")]


@pytest.mark.parametrize("case,loss,k,reduction",
                         [("defaults", *c) for c in LOSSES[:2]] + [(n, *c) for n in list(ONE_STEP)[1:] for c in LOSSES])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_one_step_closed_form(case, loss, k, reduction, depth):
    kw = dict(ONE_STEP[case])
    if isinstance(kw.get("bias_lr_mult"), list):
        kw["bias_lr_mult"] = kw["bias_lr_mult"][: depth + 1]
    X, y, X_eval = problem(depth + 10 * k, m=3, d=3, m_eval=2, k=k, loss=loss)
    model = linear(depth, lr=0.35, loss=loss, reduction=reduction, outputs=k, **kw)
    batch = np.array([0, 2])
    run = exact_limit(model, X, y, steps=1, X_eval=X_eval, batches=[batch])
    f0 = np.zeros((3, k)) if k > 1 else np.zeros(3)
    chi = chi_of(model, f0, y, batch)  # f̊_0 = 0 (the output bias starts at 0)
    K = X @ np.vstack([X, X_eval]).T / 3
    expected = -contract(chi, one_step_kernel(model, K))
    assert run.outputs.shape == ((2, 5, k) if k > 1 else (2, 5))
    assert np.all(run.outputs[0] == 0.0)
    assert_close(run.error_signals[0], chi)
    assert_close(run.outputs[1], expected)


def test_defaults_are_the_plain_model():
    # The extension arguments at their defaults describe the same model, hence the same
    # run; and the run is the plain μP one of maths §2 (the "defaults" case above).
    X, y, X_eval = problem(3, m=3, d=2)
    plain = linear(3)
    explicit = linear(3, outputs=1, bias_std=None, bias_lr_mult=1.0, momentum=0.0, weight_decay=0.0)
    assert explicit == plain
    a, b = (exact_limit(mod, X, y, steps=3, X_eval=X_eval) for mod in (plain, explicit))
    assert np.array_equal(a.outputs, b.outputs) and np.array_equal(a.loss, b.loss)


# ------------------------------------------- one trained layer, several steps
def single_layer_kernel(model, K, layer, s, t):
    """θ(s, t) with f̊^c_t(ξ_a) = −Σ_{s<t} ω_{t−s} Σ_i χ_{s,i,c} θ(s, t)_ia when only layer
    ``layer`` = l trains (W^l and b^l; l = L+1 is Ŵ and the output bias); every other
    parameter is frozen (c = 0) but decays, p_t = ρ^t p_0:

        θ(s, t) = ρ^{(t+s)(L+1−l)} (Π_{k>l} σ_k²) (η_l C^{l−1}(s, t) + η_{b,l}),
        C^0 = K,   C^j(s, t) = E[x^j_s(ξ_i) x^j_t(ξ_a)] = ρ^{s+t} (σ_j² C^{j−1}(s, t) + σ_{b,j}²).

    Derivation (φ = id, k = 1; k > 1 as in :func:`one_step_kernel`). Layers below l are
    frozen: x^j_t = ρ^t (Ẑ^{W^j x^{j−1}_t} + b^j_0) with no Ż (they never load a backward
    normal), which gives C^j. Above l nothing updates, so the backward vectors are
    dh^L_s = Ŵ_s = ρ^s Ŵ_0 and dh^{j−1}_s = ρ^s Ẑ^{W^{jT} dh^j_s} (Ż = 0: the backward
    vectors never load a forward normal): dh^l_s = ρ^{s(L+1−l)} δ with one fixed vector δ,
    E[δ²] = Π_{k>l} σ_k². Layer l at step t gains the update −Σ_{s<t} ω_{t−s} Σ_i χ_{s,i}
    (η_l C^{l−1}(s, t)_ia + η_{b,l}) dh^l_s (the accumulators of W^l and b^l). Each layer j
    above, ρ^t W^j_0, carries it by its Ż term (Stein, as in :func:`one_step_kernel`):
    ρ^t σ_j² times it, along dh^j's fixed vector; the frozen Ŵ_t = ρ^t Ŵ_0 reads it with a
    further ρ^t. All other parts of x^L_t are independent of Ŵ_0 and centred. For l = L+1 the
    update is Ŵ's own, −η_{L+1} Σ ω χ x^L_s, read against x^L_t, plus the output bias.
    """
    L, rho = model.depth, 1.0 - model.lr * model.weight_decay
    s2, sb2 = sq(model.init_std), sq(model.bias_sigma)
    C = K
    for j in range(1, layer):
        C = rho ** (s + t) * (s2[j - 1] * C + sb2[j - 1])
    return rho ** ((t + s) * (L + 1 - layer)) * np.prod(s2[layer:]) * (
        model.eta[layer - 1] * C + model.bias_eta[layer - 1])


@pytest.mark.parametrize("depth,layer,k", [(1, 1, 1), (1, 2, 3), (2, 1, 3), (2, 2, 1), (2, 3, 1), (3, 2, 3)])
@pytest.mark.parametrize("beta,decay", [(0.0, 0.0), (0.6, 0.0), (0.0, 0.15), (0.5, 0.1)])
def test_single_trained_layer_over_several_steps(depth, layer, k, beta, decay):
    # Minibatches, evaluation inputs and four steps: the second step's velocity holds
    # β × the first gradient, every W_0, b_0 part decays by ρ^t.
    X, y, X_eval = problem(depth + layer, m=3, d=2, m_eval=2, k=k)
    mult = [0.0] * (depth + 1)
    mult[layer - 1] = 1.3
    bias_mult = [0.0] * (depth + 1)
    bias_mult[layer - 1] = 0.8
    model = linear(depth, lr=0.3, mult=mult, bias_std=0.6, bias_lr_mult=bias_mult, outputs=k, momentum=beta,
                   weight_decay=decay / 0.3, reduction="sum")  # lr·weight_decay = decay
    steps, m = 4, 3
    batches = [np.array([0, 1]), np.array([2]), np.array([0, 2]), np.array([1, 2])]
    run = exact_limit(model, X, y, steps=steps, X_eval=X_eval, batches=batches)
    K = X @ np.vstack([X, X_eval]).T / 2
    f, chis = [np.zeros_like(run.outputs[0])], []
    for t in range(1, steps + 1):
        chis.append(chi_of(model, f[-1][:m], y, batches[t - 1]))
        f.append(-sum(omega(model, t - s) * contract(chis[s], single_layer_kernel(model, K, layer, s, t))
                      for s in range(t)))
    assert_close(run.outputs, np.array(f))
    assert np.abs(run.outputs).max() > 0.05  # the outputs moved: the comparison is not of zeros


# ------------------------------------------------- the parameter oracle, any depth
class _Copy:
    """One Gaussian process of a hidden matrix W_0, as an isometric copy of the base normals.

    Ẑ^{W_0 x} = σ Σ_k x_k g_{F(k)}, with F(k) a fresh base normal given to base normal k
    the first time a fed vector loads it. This is centred Gaussian, linear in x, with
    Cov(Ẑ^{W_0 x}, Ẑ^{W_0 x'}) = σ² Σ_k x_k x'_k = σ² E[Z^x Z^{x'}], and its normals enter
    no other Z: the law of maths §2. (The code instead builds an orthonormal basis of the
    vectors seen, by Gram–Schmidt, maths §3.) Stein's lemma over the "basis" e_k with
    normals g_{F(k)} gives the Ż term of the other side of the matrix:
    σ Σ_k e_k E[g_{F(k)} Z^y] = σ² Σ_x Z^x E[∂Z^y/∂Ẑ^{W_0 x}].
    """

    def __init__(self, sigma, counter):
        self.sigma, self.counter, self.F = sigma, counter, {}

    def zhat(self, x):
        out = np.zeros_like(x)
        for k in np.flatnonzero(x):
            if k not in self.F:
                self.F[k] = next(self.counter)
            out[self.F[k]] = self.sigma * x[k]
        return out

    def stein(self, y):
        out = np.zeros_like(y)
        for k, g in self.F.items():
            out[k] = self.sigma * y[g]
        return out


class _Matrix:
    """A hidden W^l_t = c W^l_0 + Σ_j p_j u_j ⊗ v_j / n with the velocity Σ_j q_j u_j ⊗ v_j / n:
    W x = c (Ẑ^{W_0 x} + Ż^{W_0 x}) + Σ_j p_j u_j E[v_j x], Wᵀ y likewise (maths §2)."""

    def __init__(self, sigma, counter):
        self.fwd, self.bwd = _Copy(sigma, counter), _Copy(sigma, counter)
        self.c, self.terms = 1.0, []  # terms: [u, v, p, q]

    def dot(self, x):
        return self.c * (self.fwd.zhat(x) + self.bwd.stein(x)) + sum((p * (v @ x)) * u for u, v, p, _ in self.terms)

    def tdot(self, y):
        return self.c * (self.bwd.zhat(y) + self.fwd.stein(y)) + sum((p * (u @ y)) * v for u, v, p, _ in self.terms)

    def step(self, lr, beta, rho, dh, x):
        """v ← β v + Σ_i dh_i ⊗ x_i, W ← ρ W − lr v (the W^l_0 part decays through c)."""
        for term in self.terms:
            term[3] *= beta
        self.terms += [[u, v, 0.0, 1.0] for u, v in zip(dh, x)]
        self.c *= rho
        for term in self.terms:
            term[2] = rho * term[2] - lr * term[3]


def parameter_oracle(model, X, y, X_eval, batches, steps, capacity=4096):
    """The limit of maths §2 and §6 for any depth, φ = id, following the parameters of the
    finite network (§6: every parameter p has its own velocity, v ← β v + ∇p, p ← ρ p − η_p v)
    on Z coefficient vectors over base normals. Where the code keeps accumulators with a weight
    per update-history row and §2's factored backward vector for k = 1, this keeps each
    parameter, and the error-weighted backward vector for every k.

    Base normals: M for the inputs (Z^{W^1_0 ξ_a} = σ_1 Σ_j A_aj g_j, A Aᵀ = K over all M
    inputs, evaluation inputs included: they simply never enter a batch), one per hidden
    bias, one per readout row Ŵ^c_0, and the fresh normals of the :class:`_Copy` processes.
    W^1 is followed through the M vectors Z^{W^1_t ξ_a}: its step −(η_1/d) v ξᵀ moves them by
    −η_1 Σ_i K_ai (velocity of dh^1(ξ_i)). One step t:

        x^1 = Z^{W^1 ξ} + Z^{b^1},  x^l = W^l x^{l−1} + Z^{b^l},  f̊^c = E[Z^{Ŵ^c} x^L] + b^{L+1}_c,
        dh^L(ξ_i) = Σ_c χ_{t,i,c} Z^{Ŵ^c},  dh^{l−1} = W^{lT} dh^l   (weights before the step),
        ∇: W^1 ξ_a ← Σ_i K_ai dh^1_i,  b^l ← Σ_i dh^l_i,  W^l ← Σ_i dh^l_i ⊗ x^{l−1}_i,
           Ŵ^c ← Σ_i χ_{t,i,c} x^L_i,  b^{L+1}_c ← Σ_i χ_{t,i,c}.

    Returns outputs (T+1, M[, k]) and the features features[t][l-1] (M, capacity).
    """
    Xa = np.vstack([X, X_eval])
    m, d = X.shape
    M, k, L = len(Xa), model.outputs, model.depth
    K = Xa @ Xa.T / d
    lam, V = np.linalg.eigh(K)
    counter = itertools.count(M)
    p = {"W1": np.zeros((M, capacity)), "W": np.zeros((k, capacity)), "bout": np.zeros(k)}
    p["W1"][:, :M] = model.init_std[0] * V * np.sqrt(np.clip(lam, 0.0, None))
    for l in range(1, L + 1):
        p[f"b{l}"] = np.zeros(capacity)
        p[f"b{l}"][next(counter)] = model.bias_sigma[l - 1]
    p["W"][:, [next(counter) for _ in range(k)]] = model.init_std[L] * np.eye(k)
    lrs = {"W1": model.eta[0], "W": model.eta[L], "bout": model.bias_eta[L],
           **{f"b{l}": model.bias_eta[l - 1] for l in range(1, L + 1)}}
    vel = {name: np.zeros_like(a) for name, a in p.items()}
    hidden = [_Matrix(model.init_std[l - 1], counter) for l in range(2, L + 1)]
    beta, rho = model.momentum, 1.0 - model.lr * model.weight_decay
    outputs, features = [], []
    for t in range(steps + 1):
        xs = [p["W1"] + p["b1"]]
        for l, W in enumerate(hidden, start=2):
            xs.append(np.array([W.dot(x) for x in xs[-1]]) + p[f"b{l}"])
        f = xs[-1] @ p["W"].T + p["bout"]
        outputs.append(f if k > 1 else f[:, 0])
        features.append(xs)
        if t == steps:
            break
        B = batches[t]
        chi = chi_of(model, outputs[-1][:m], y, B).reshape(m, k)[B]
        dh = [chi @ p["W"]]
        for W in hidden[::-1]:
            dh.insert(0, np.array([W.tdot(g) for g in dh[0]]))
        grads = {"W1": K[:, B] @ dh[0], "W": chi.T @ xs[-1][B], "bout": chi.sum(0),
                 **{f"b{l}": dh[l - 1].sum(0) for l in range(1, L + 1)}}
        for name in p:
            vel[name] = beta * vel[name] + grads[name]
            p[name] = rho * p[name] - lrs[name] * vel[name]
        for l, W in enumerate(hidden, start=2):
            W.step(model.eta[l - 1], beta, rho, dh[l - 1], xs[l - 2][B])
    assert next(counter) < capacity
    return np.array(outputs), features


ALL = dict(bias_std=0.7, bias_lr_mult=[1.3, 0.6, 0.9, 1.4], momentum=0.6, weight_decay=0.75)


@pytest.mark.parametrize("depth,k,loss,reduction,extensions", [
    (1, 1, "mse", "mean", ALL),
    (1, 3, "xent", "sum", ALL),
    (2, 1, "logistic", "sum", dict(bias_std=1.1, bias_lr_mult=[0.5, 2.0, 1.0], weight_decay=1.5)),
    (2, 1, "mse", "mean", dict(momentum=0.7)),
    (2, 3, "mse", "mean", ALL),
    (2, 2, "mse", "sum", dict()),
    (3, 1, "mse", "mean", ALL),
    (3, 2, "mse", "sum", dict(momentum=0.5, weight_decay=1.0)),
    (3, 3, "xent", "mean", ALL),
])
def test_matches_the_parameter_oracle(depth, k, loss, reduction, extensions):
    # Minibatches, six steps, an evaluation input inside the training span and one outside
    # (d > m): outputs, loss, error signals, every layer's kernels and cross-step kernels.
    X, y, X_eval = problem(20 + depth + k, m=2, d=3, m_eval=2, k=k, loss=loss)
    X_eval[0] = 0.3 * X[0] - 1.2 * X[1]
    ext = dict(extensions)
    if "bias_lr_mult" in ext:
        ext["bias_lr_mult"] = ext["bias_lr_mult"][: depth + 1]
    model = linear(depth, lr=0.2, outputs=k, loss=loss, reduction=reduction, **ext)
    steps, record = 6, (0, 2, 5)
    batches = [np.array([0, 1]), np.array([0]), np.array([1]), np.array([0, 1]), np.array([1]), np.array([0])]
    run = exact_limit(model, X, y, steps=steps, X_eval=X_eval, batches=batches, record_steps=record)
    outputs, features = parameter_oracle(model, X, y, X_eval, batches, steps)
    assert_close(run.outputs, outputs)
    chi = [chi_of(model, outputs[t][:len(X)], y, batches[t]) for t in range(steps)]
    assert_close(run.error_signals, np.array(chi))
    for l in range(1, depth + 1):
        xs = [features[t][l - 1] for t in range(steps + 1)]
        assert_close(run.kernel(l, "h"), np.array([x @ x.T for x in xs]))
        for s in record:
            got = run.cross_kernel_groups(l, "h", s)[0]
            assert_close(got[s:], np.array([xs[s] @ x.T for x in xs[s:]]))
    assert np.abs(run.outputs[-1]).max() > 0.05


def test_classes_couple_from_the_second_step():
    # Step 1 is block diagonal (one_step_kernel): f̊^c_1 depends on class c's targets only.
    # From step 2 on, the features have moved along Σ_c χ_c Ŵ^c, so every class sees the
    # others' targets (here through E[Ŵ^0_1 x_2] with x_2 − x_1 ∝ Σ_c χ_{1,c} Ŵ^c_1 and
    # Ŵ^c_1 sharing the x_0 directions). Changing class 2's targets moves f̊^0_2, not f̊^0_1.
    for depth in (1, 2):
        X, y, X_eval = problem(4, m=3, d=2, m_eval=1, k=3)
        model = linear(depth, outputs=3, bias_std=0.5)
        y2 = y.copy()
        y2[:, 2] += 1.0
        a, b = (exact_limit(model, X, yy, steps=2, X_eval=X_eval) for yy in (y, y2))
        assert_close(a.outputs[1, :, :2], b.outputs[1, :, :2])
        assert np.abs(a.outputs[2, :, 0] - b.outputs[2, :, 0]).min() > 1e-3


# ---------------------------------------------------------------- symmetries
def test_a_class_with_zero_targets_is_the_single_output_net():
    # mse, k = 2, targets of class 1 all 0: f̊^1_0 = 0 so χ_{·,1} = 0, the weighted backward
    # vector is χ_{·,0} Ŵ^0, Ŵ^1 only decays and nothing loads its normal: f̊^1 stays 0
    # and class 0 follows the k = 1 net with the targets of class 0 (maths §6: the weighted
    # bookkeeping agrees with §2's factored one).
    X, y, X_eval = problem(6, m=3, d=3, m_eval=2)
    ext = dict(bias_std=0.6, bias_lr_mult=1.2, momentum=0.5, weight_decay=0.6)
    batches = zlimit.batch_schedule(3, 2, 5, seed=2)
    one = exact_limit(linear(3, **ext), X, y, steps=5, X_eval=X_eval, batches=batches)
    two = exact_limit(linear(3, outputs=2, **ext), X, np.column_stack([y, np.zeros(3)]), steps=5, X_eval=X_eval,
                      batches=batches)
    assert np.all(two.outputs[:, :, 1] == 0.0)
    assert_close(two.outputs[:, :, 0], one.outputs)
    for l in (1, 2, 3):
        assert_close(two.kernel(l, "h"), one.kernel(l, "h"))


def test_frozen_zero_biases_are_no_biases():
    X, y, X_eval = problem(7, m=3, d=2, m_eval=2, k=2)
    ext = dict(outputs=2, momentum=0.4, weight_decay=0.5)
    a = exact_limit(linear(2, **ext), X, y, steps=4, X_eval=X_eval)
    b = exact_limit(linear(2, bias_std=0.0, bias_lr_mult=0.0, **ext), X, y, steps=4, X_eval=X_eval)
    assert_close(b.outputs, a.outputs)


def test_a_zero_backward_vector_adds_nothing():
    # k = 3, mse, sum: input 0 has targets 0, so χ_{0,0,·} = 0 (f̊_0 = 0) and its weighted
    # backward vector is exactly 0 at step 0. It must add no Gram–Schmidt direction and
    # no NaN: novelty 0, and the run equals the one whose first batch leaves input 0 out
    # ("sum": the other inputs' χ do not change).
    X, y, X_eval = problem(8, m=3, d=3, m_eval=1, k=3)
    y[0] = 0.0
    model = linear(3, lr=0.1, outputs=3, reduction="sum", bias_std=0.5, momentum=0.3)
    rest = [np.array([0, 1, 2])] * 3
    a = exact_limit(model, X, y, steps=4, X_eval=X_eval, batches=[np.array([0, 1, 2])] + rest)
    b = exact_limit(model, X, y, steps=4, X_eval=X_eval, batches=[np.array([1, 2])] + rest)
    assert np.all(a.error_signals[0, 0] == 0.0)
    for l in (2, 3):
        assert a.novelty[key("bwd", l)][0, 0, 0] == 0.0
        assert np.all(np.isfinite(a.novelty[key("bwd", l)][0, :4, :3]))  # no backward pass at the last step
    assert np.all(np.isfinite(a.outputs))
    assert_close(a.outputs, b.outputs)
    assert np.abs(a.outputs[-1]).max() > 0.05


@pytest.mark.parametrize("depth,k", [(2, 1), (3, 3)])
def test_eval_copy_of_a_training_input_follows_it(depth, k):
    # Evaluation inputs follow the equations of the training inputs at every step: same
    # bias vectors, history weights, decay and readout. A copy of ξ_1 has ξ_1's outputs
    # and features throughout; an input outside the span (d > m) is replayed with them too.
    X, y, X_eval = problem(9, m=2, d=3, m_eval=1, k=k)
    model = linear(depth, lr=0.1, outputs=k, bias_std=0.7, bias_lr_mult=0.9, momentum=0.6, weight_decay=0.5)
    batches = [np.array([0]), np.array([1]), np.array([0, 1]), np.array([1])]
    run = exact_limit(model, X, y, steps=4, X_eval=np.vstack([X[1], X_eval]), batches=batches)
    assert_close(run.outputs[:, 2], run.outputs[:, 1], scale=1.0 + np.abs(run.outputs).max())
    for l in range(1, depth + 1):
        K = run.kernel(l, "h")
        assert_close(K[:, 2], K[:, 1], scale=1.0 + np.abs(K).max())
    train_only = exact_limit(model, X, y, steps=4, batches=batches)
    assert np.array_equal(train_only.outputs, run.outputs[:, :2])


# ------------------------------------------------------------- finite width
class _LowRank:
    """A width-n hidden matrix W_t = c W_0 + Σ_j p_j u_j v_jᵀ under heavy ball and decoupled
    decay (maths §6), its velocity Σ_j q_j u_j v_jᵀ kept on the same rank-one terms, so that
    no n×n update is formed. W_0 is float32 to keep the n×n draws and products cheap."""

    def __init__(self, W0):
        n = W0.shape[0]
        self.W0, self.c = W0, 1.0
        self.U, self.V, self.p, self.q = np.zeros((n, 0)), np.zeros((n, 0)), np.zeros(0), np.zeros(0)

    def dot(self, A):
        low = self.U @ (self.p[:, None] * (self.V.T @ A))
        return self.c * (self.W0 @ A.astype(np.float32)).astype(np.float64) + low

    def tdot(self, D):
        low = self.V @ (self.p[:, None] * (self.U.T @ D))
        return self.c * (self.W0.T @ D.astype(np.float32)).astype(np.float64) + low

    def step(self, lr, beta, rho, U, V):
        """v ← β v + U Vᵀ (the gradient), W ← ρ W − lr v."""
        self.U, self.V = np.hstack([self.U, U]), np.hstack([self.V, V])
        self.q = np.concatenate([beta * self.q, np.ones(U.shape[1])])
        self.p = np.concatenate([self.p, np.zeros(U.shape[1])])
        self.c *= rho
        self.p = rho * self.p - lr * self.q


def finite_linear_mup(model, X, y, X_eval, batches, steps, n, seed):
    """A width-n μP linear MLP with the extensions of maths §6, plain numpy and plain SGD rules.

    Init: W^1 ~ N(0, σ_1²/d), W^l ~ N(0, σ_l²/n), W^{L+1} (k×n) ~ N(0, σ_{L+1}²/n²),
    b^l ~ N(0, σ_{b,l}²), b^{L+1} = 0. Learning rates: η_1 n/d, η_l, η_{L+1}/n, η_{b,l} n,
    η_{b,L+1}. Gradient of Σ_{i∈B} r ℓ(f(ξ_i), y_i) by backprop; every parameter p:
    v ← β v + ∇p, p ← ρ p − lr_p v. Returns the outputs (T+1, M[, k]).
    """
    rng = np.random.default_rng(seed)
    L, d, k, m = model.depth, X.shape[1], model.outputs, X.shape[0]
    sig, eta, sb, eb = model.init_std, model.eta, model.bias_sigma, model.bias_eta
    beta, rho = model.momentum, 1.0 - model.lr * model.weight_decay
    acts0 = np.vstack([X, X_eval]).T  # (d, M)
    dense = [rng.standard_normal((n, d)) * (sig[0] / math.sqrt(d)), rng.standard_normal((k, n)) * (sig[L] / n)]
    hidden = [_LowRank(rng.standard_normal((n, n), dtype=np.float32) * np.float32(sig[l] / math.sqrt(n)))
              for l in range(1, L)]
    b = [rng.standard_normal(n) * sb[l] for l in range(L)] + [np.zeros(k)]
    lr_dense, lr_b = [eta[0] * n / d, eta[L] / n], [eb[l] * n for l in range(L)] + [eb[L]]
    v_dense, v_b = [np.zeros_like(w) for w in dense], [np.zeros_like(c) for c in b]
    outputs = []
    for t in range(steps + 1):
        acts = [acts0, dense[0] @ acts0 + b[0][:, None]]
        for l, W in enumerate(hidden, start=1):
            acts.append(W.dot(acts[-1]) + b[l][:, None])
        f = (dense[1] @ acts[-1] + b[L][:, None]).T  # (M, k)
        outputs.append(f if k > 1 else f[:, 0])
        if t == steps:
            break
        B = batches[t]
        delta = chi_of(model, outputs[-1][:m], y, B).reshape(m, k)[B].T  # ∂(loss)/∂f, (k, |B|)
        grads_dense, grads_b = [None, delta @ acts[L][:, B].T], [None] * (L + 1)
        grads_b[L] = delta.sum(1)
        delta = dense[1].T @ delta
        for l in range(L - 1, 0, -1):  # hidden[l-1] is W^{l+1}; delta = ∂(loss)/∂h^{l+1}
            grads_b[l] = delta.sum(1)
            below = hidden[l - 1].tdot(delta)  # with the weights before the step
            hidden[l - 1].step(eta[l], beta, rho, delta, acts[l][:, B])
            delta = below
        grads_b[0], grads_dense[0] = delta.sum(1), delta @ acts[0][:, B].T
        for params, vel, grads, lrs in ((dense, v_dense, grads_dense, lr_dense), (b, v_b, grads_b, lr_b)):
            for j, g in enumerate(grads):
                vel[j] = beta * vel[j] + g
                params[j] = rho * params[j] - lrs[j] * vel[j]
    return np.array(outputs)


def test_exact_is_the_limit_of_finite_width_nets_with_every_extension():
    # Maths §4 with §6: finite μP nets converge to the limit; the seed spread shrinks like
    # n^{-1/2} and the bias of the seed mean like n^{-1}. Depth 3, k = 2 classes, trained
    # biases, momentum and weight decay, minibatches, an evaluation input outside the
    # training span (d > m).
    X, y, X_eval = problem(11, m=2, d=3, m_eval=1, k=2)
    model = linear(3, lr=0.25, outputs=2, bias_std=0.8, bias_lr_mult=1.2, momentum=0.6, weight_decay=0.6)
    steps = 4
    batches = [np.array([0, 1]), np.array([0]), np.array([1]), np.array([0, 1])]
    limit = exact_limit(model, X, y, steps=steps, X_eval=X_eval, batches=batches).outputs[1:]
    seeds, rms = 12, []
    for n in (128, 512, 2048):
        with threadpool_limits(limits=1, user_api="blas"):
            finite = np.array([finite_linear_mup(model, X, y, X_eval, batches, steps, n, seed=100 + s)[1:]
                               for s in range(seeds)])
        dev = finite - limit
        rms.append(math.sqrt(np.mean(dev ** 2)))
    assert rms[-1] < 0.5 * rms[0], f"deviation does not fall with width: {rms}"
    assert_within_se(dev.mean(0), 0.0, dev.std(0, ddof=1) / math.sqrt(seeds), dof=seeds - 1)
    assert np.abs(limit[-1]).max() > 0.1
