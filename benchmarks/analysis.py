"""Fits behind the benchmark's derived numbers: pure functions, numbers in, numbers out.

* ``loglog_slope``: exponent p of y ∝ x^p by least squares in log-log
  (``zlimit._stats.loglog_fit``), with its standard error (None below 3 points).
* ``per_step``: from per-group step durations and basis sizes, the median step time,
  K + J per step and the bytes a step must stream at ONE pass over the basis and the
  normals of both sides of every hidden matrix: (K + J)·2·N_g·itemsize, K and J the
  mean of the sizes at the start and at the end of the step.
* ``largest_T``: the largest T whose predicted wall time fits a budget, step cost
  a + b·(K + J) with K + J linear in t, both fitted, scaled to the measured wall time.
* Time to accuracy (``tta``): simulate needs N(ε) = N_0 (se_0/ε)² particles (se ∝
  N^{-1/2}), at least ``n_min``, in time wall_0·N/N_0. A Monte Carlo bias common to
  all groups is fitted as f̊_a(N) = f∞_a + c_a/N (``limit_vs_N``); with it the
  bias-aware N solves max_a |c_a|/N + se_a √(N_0/N) = ε. Finite nets: seed spread
  s_a/√n and seed-mean bias B_a/n per input (``finite_fit``), one seed t(n) = α + β n²
  (``seed_time_fit``); the cheapest (n, S) with max_a |B_a|/n + s_a/√(nS) ≤ ε
  (``cheapest_finite``) gives the finite time S·t(n).
"""
from __future__ import annotations

import math

import numpy as np

from zlimit._stats import loglog_fit


def loglog_slope(x, y) -> tuple[float | None, float | None]:
    """(slope, standard error) of log y against log x over the pairs with x, y > 0 finite.

    ``zlimit._stats.loglog_fit`` on those pairs, with None (JSON null) where a measurement
    gives no fit: fewer than 2 usable pairs or one distinct x (no slope), 2 pairs (no se).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return None, None
    fit = loglog_fit(x[ok], y[ok])
    return fit.slope, (None if math.isnan(fit.slope_se) else fit.slope_se)


def per_step(durations, sizes, particles_per_group: int, itemsize: int) -> dict:
    """Step statistics of one run.

    durations : (G, T) seconds of steps 0..T-1 of each group.
    sizes : (G, T) directions held after each step, summed over bases (Σ K + J).
    """
    D, S = np.asarray(durations, float), np.asarray(sizes, float)
    start = np.concatenate([np.zeros((S.shape[0], 1)), S[:, :-1]], axis=1)  # empty before step 0
    kj = (start + S) / 2
    return {"groups_seen": int(D.shape[0]), "steps_timed": int(D.shape[1]),
            "step_s_median": np.median(D, axis=0).tolist(),
            "kj_per_step": np.median(kj, axis=0).tolist(),
            "bytes_total": float(kj.sum() * 2 * particles_per_group * itemsize),
            "busy_s": float(D.sum())}


def largest_T(steps, kj, wall: float, budget: float, cap: int = 10**7) -> dict | None:
    """Largest T with scale·Σ_{t<T} [a + b(k0 + dk·t)] <= budget (a, b, k0, dk fitted)."""
    steps, kj = np.asarray(steps, float), np.asarray(kj, float)
    if len(steps) < 3 or len(kj) != len(steps):
        return None
    b, a = np.polyfit(kj, steps, 1)  # step time vs K+J
    dk, k0 = np.polyfit(np.arange(len(kj)), kj, 1)  # K+J vs t
    b, dk = max(float(b), 0.0), max(float(dk), 0.0)  # cost never falls with K

    def cost(T):
        return T * (a + b * k0) + b * dk * T * (T - 1) / 2

    measured = cost(len(steps))
    if not (measured > 0 and math.isfinite(measured)):
        return None
    scale = wall / measured
    lo, hi = 0, 1
    while scale * cost(hi) <= budget and hi < cap:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # cost increases in T for T >= 1
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if scale * cost(mid) <= budget else (lo, mid)
    return {"T_max": int(lo), "fit_step_s": [float(a), b], "fit_kj": [float(k0), dk], "budget_s": budget,
            "scale": scale, "capped": hi >= cap}


def limit_vs_N(N, F, se) -> dict | None:
    """Per input a, weighted least squares f̊_a(N) = f∞_a + c_a/N; N (P,), F and se (P, M)."""
    if len(N) < 3:
        return None
    order = np.argsort(N)
    Ns = np.asarray(N, float)[order]
    F = np.asarray(F, float)[order]
    S = np.maximum(np.asarray(se, float)[order], 1e-12)
    A = np.stack([np.ones_like(Ns), 1.0 / Ns], 1)
    f_inf, f_se, c, c_se, chi2 = [], [], [], [], []
    for a in range(F.shape[1]):
        w = 1.0 / S[:, a] ** 2
        cov = np.linalg.inv(A.T @ (A * w[:, None]))
        p = cov @ (A.T @ (w * F[:, a]))
        f_inf.append(float(p[0])), f_se.append(math.sqrt(cov[0, 0]))
        c.append(float(p[1])), c_se.append(math.sqrt(cov[1, 1]))
        chi2.append(float((w * (F[:, a] - A @ p) ** 2).sum()))
    z = np.abs(np.array(c)) / np.maximum(np.array(c_se), 1e-300)
    return {"N": Ns.tolist(), "f_inf": f_inf, "f_inf_se": f_se, "c": c, "c_se": c_se,
            "max_abs_z_c": float(np.max(z)), "chi2_dof": float(np.mean(chi2) / max(len(Ns) - 2, 1))}


def sim_particles(eps: float, se0: float, N0: float, n_min: float) -> tuple[float, float]:
    """(N(ε) = N0 (se0/ε)², max(N(ε), n_min))."""
    n_eps = N0 * (se0 / eps) ** 2 if se0 > 0 else float(n_min)
    return n_eps, max(n_eps, n_min)


def bias_aware_particles(eps: float, c, se, N0: float, n_min: float, n_max: float = 1e15) -> float | None:
    """Smallest N >= n_min with max_a |c_a|/N + se_a √(N0/N) <= ε (bisection in log N)."""
    c, se = np.abs(np.asarray(c, float)), np.asarray(se, float)
    err = lambda N: float(np.max(c / N + se * math.sqrt(N0 / N)))
    if err(n_min) <= eps:
        return float(n_min)
    if err(n_max) > eps:
        return None
    lo, hi = math.log(n_min), math.log(n_max)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if err(math.exp(mid)) <= eps else (mid, hi)
    return math.exp(hi)


def finite_fit(widths, outputs, f_ref, se_ref) -> dict:
    """Seed spread s_a/√n and seed-mean bias B_a/n against the limit f_ref ± se_ref.

    widths (W,); outputs: per width an (S, M) array of f_T per seed.
    """
    widths = np.asarray(widths, float)
    f_ref, se_ref = np.asarray(f_ref, float), np.asarray(se_ref, float)
    Fs = [np.asarray(F, float) for F in outputs]
    means = np.array([F.mean(0) for F in Fs])
    sds = np.array([F.std(0, ddof=1) if len(F) > 1 else np.full(F.shape[1], np.nan) for F in Fs])
    Ss = np.array([len(F) for F in Fs], float)
    w = np.maximum(Ss - 1, 0)[:, None]  # pooled over widths: sd_a(n)² n = s_a²
    s_a = np.sqrt(np.nansum(w * sds**2 * widths[:, None], 0) / np.maximum(w.sum(), 1))
    x = 1.0 / widths[:, None]
    Wt = 1.0 / np.maximum(s_a[None, :] ** 2 / widths[:, None] / Ss[:, None] + se_ref[None, :] ** 2, 1e-300)
    B_a = (Wt * x * (means - f_ref)).sum(0) / (Wt * x**2).sum(0)
    B_se = 1.0 / np.sqrt((Wt * x**2).sum(0))
    # the limit's se is common to all widths, so this chi² is approximate; >> 1: the 1/n model does not fit
    chi2 = (Wt * (means - f_ref - B_a[None, :] * x) ** 2).sum(0) / max(len(widths) - 1, 1)
    return {"s_a": s_a.tolist(), "B_a": B_a.tolist(), "B_a_se": B_se.tolist(), "chi2_dof": float(np.mean(chi2)),
            "means": means.tolist(), "sds": sds.tolist()}


def seed_time_fit(widths, seconds) -> tuple[float, float]:
    """(α, β) of t(n) = α + β n², least squares in relative error, α >= 0, β > 0."""
    widths, secs = np.asarray(widths, float), np.asarray(seconds, float)
    A = np.stack([np.ones_like(widths), widths**2], 1) / secs[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(A, np.ones_like(secs), rcond=None)
    return max(float(alpha), 0.0), max(float(beta), 1e-30)


def cheapest_finite(eps: float, B_a, s_a, alpha: float, beta: float, grid) -> tuple[float, int, int] | None:
    """(S·t(n), n, S): the cheapest width n of ``grid`` and seeds S with max_a |B_a|/n + s_a/√(nS) <= ε."""
    B_a, s_a = np.abs(np.asarray(B_a, float)), np.asarray(s_a, float)
    best = None
    for n in grid:
        slack = eps - B_a / n
        if np.any(slack <= 0):
            continue
        S = max(1, int(np.ceil(np.max((s_a / np.sqrt(n) / slack) ** 2) * (1 - 1e-12))))
        cost = S * (alpha + beta * n * n)
        if best is None or cost < best[0]:
            best = (float(cost), int(n), S)
    return best


def tta(f_lim, se_lim, N0: int, wall0: float, n_min: float, widths, outputs, seconds, mem_total: int,
        epsilons, sweep=None) -> dict:
    """Time to accuracy of simulate against finite seed-means (module doc).

    f_lim, se_lim (M,): the limit at N0 (wall time wall0). widths, outputs, seconds: per
    finite width, (S, M) outputs and seconds per seed. sweep: (N, f, se) of runs at other
    N, same problem and T; with 3 or more the finite nets are compared with f∞.
    """
    f_lim, se_lim = np.asarray(f_lim, float), np.asarray(se_lim, float)
    se0 = float(se_lim.max())
    vsN = limit_vs_N(*zip(*sweep)) if sweep and len(sweep) >= 3 else None
    f_ref, se_ref = (np.array(vsN["f_inf"]), np.array(vsN["f_inf_se"])) if vsN else (f_lim, se_lim)
    fit = finite_fit(widths, outputs, f_ref, se_ref)
    alpha, beta = seed_time_fit(widths, seconds)
    n_max = int(math.sqrt(0.5 * mem_total / (8 * 2)))  # two n×n float64 hidden matrices in half the memory
    grid = np.unique(np.geomspace(min(widths), max(n_max, max(widths)), 200).astype(int))
    measured = [{"width": int(n), "seeds": len(F), "seconds_per_seed": float(s),
                 "max_abs_err": float(np.max(np.abs(np.mean(F, 0) - f_ref))),
                 "max_abs_err_vs_N0": float(np.max(np.abs(np.mean(F, 0) - f_lim))),
                 "max_seed_sd": float(np.nanmax(sd))}
                for n, F, s, sd in zip(widths, outputs, seconds, fit["sds"])]
    rows = []
    for eps in epsilons:
        n_eps, n_use = sim_particles(eps, se0, N0, n_min)
        t_sim = wall0 * n_use / N0
        n_bias = bias_aware_particles(eps, vsN["c"], se_lim, N0, n_min) if vsN else None
        t_bias = None if n_bias is None else wall0 * n_bias / N0
        best = cheapest_finite(eps, fit["B_a"], fit["s_a"], alpha, beta, grid)
        cost, n, S = best if best else (None, None, None)
        rows.append({"eps": eps, "sim_N": n_eps, "sim_N_used": n_use, "sim_time_s": t_sim,
                     "sim_N_bias_aware": n_bias, "sim_time_bias_aware_s": t_bias,
                     "finite_time_s": cost, "finite_width": n, "finite_seeds": S,
                     "ratio_finite_over_sim": None if cost is None else cost / t_sim,
                     "ratio_bias_aware": None if (cost is None or t_bias is None) else cost / t_bias})
    return {"eps": list(epsilons),
            "limit": {"se0_max": se0, "N0": N0, "wall0_s": wall0, "N_min": n_min, "vs_N": vsN,
                      "reference": "f_inf (extrapolated in N)" if vsN else "f at N0"},
            "finite_fit": {"alpha_s": alpha, "beta_s": beta, "n_max": n_max,
                           **{k: fit[k] for k in ("s_a", "B_a", "B_a_se", "chi2_dof")}},
            "finite_measured": measured, "rows": rows}
