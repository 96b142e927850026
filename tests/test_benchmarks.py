"""Tests of benchmarks/: the --tiny run end to end, and the pure functions behind it.

The smoke test has no timing thresholds: only that the run finishes, and that the
file it writes has the expected keys with finite numbers. The fits of
benchmarks/analysis.py and the step timing of benchmarks/measure.py are checked
against closed forms; benchmarks/options.py's direction count against the engine's.
"""
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
import analysis  # noqa: E402
import measure  # noqa: E402


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_benchmark_tiny_writes_json(tmp_path):
    env = dict(os.environ, ZLIMIT_BENCH_TINY="1")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    res = json.loads(files[0].read_text())

    assert res["mode"] == "tiny"
    for key in ("machine", "versions", "git", "bandwidth", "threads", "problems", "S3", "tta", "targets",
                "assumptions"):
        assert key in res, key
    assert res["machine"]["cpu_count"] >= 1 and res["machine"]["mem_total_bytes"] > 0
    assert "cpu_model" in res["machine"]
    for lib in ("python", "numpy", "scipy", "numba"):
        assert res["versions"][lib]
    assert "revision" in res["git"]
    assert _finite(res["bandwidth"]["GBps_read_plus_write"]) and res["bandwidth"]["GBps_read_plus_write"] > 0

    for name in ("S1", "S2", "S1/1thr"):
        p = res["problems"][name]
        for key in ("wall_s", "step_first_s", "step_last_s", "peak_rss_bytes", "estimate_memory_bytes",
                    "frac_floor", "kj_last", "directions_max"):
            assert _finite(p[key]), (name, key, p.get(key))
        assert p["wall_s"] > 0 and p["peak_rss_bytes"] > 0 and p["estimate_memory_bytes"] > 0
    assert _finite(res["threads"]["speedup"])
    for key in ("N", "T"):
        assert _finite(res["S3"][key]["slope"])
    assert _finite(res["S3"]["N"]["slope_se"])  # 3 points in N; 2 in T give no se
    assert len(res["raw"]["S1"]["step_s_per_group"]) == res["problems"]["S1"]["groups"]
    assert _finite(res["S3"]["N"]["max_dev_per_particle"])
    assert _finite(res["S3"]["T"]["last_step_vs_K_exponent"])

    assert res["tta"]["limit"]["vs_N"] is not None  # S1 + two S3 runs at other N
    rows = res["tta"]["rows"]
    assert [r["eps"] for r in rows] == [1e-2, 3e-3, 1e-3]
    for r in rows:
        for key in ("sim_time_s", "finite_time_s", "ratio_finite_over_sim", "sim_time_bias_aware_s",
                    "ratio_bias_aware"):
            assert _finite(r[key]), (r["eps"], key, r[key])
    assert _finite(res["S2_T15"]["T_max"])
    assert {t["target"] for t in res["targets"]} >= {"S1 >= 50% of bandwidth floor", "2 threads >= 1.7x 1 thread",
                                                      "TTA ratio >= 3 at 1e-3", "S2 within 24 GiB"}
    assert "targets (measured, not asserted)" in proc.stdout


# ------------------------------------------------------------------ analysis: closed forms
def test_loglog_slope_exact_power_law():
    x = np.array([1.0, 2, 4, 8, 16])
    slope, se = analysis.loglog_slope(x, 3 * x**1.7)
    assert slope == pytest.approx(1.7, abs=1e-12) and se == pytest.approx(0, abs=1e-12)
    assert analysis.loglog_slope([1, 2], [5, 20]) == (pytest.approx(2.0), None)  # two points: no se
    assert analysis.loglog_slope([0, 1, 2, -1], [1, 1, 2, 3]) == (pytest.approx(1.0), None)  # x <= 0 dropped
    assert analysis.loglog_slope([3], [1]) == (None, None)


def test_loglog_slope_standard_error():
    # log y = 2 log x + d·(1, -1, -1, 1): residuals orthogonal to (1, u), so the slope is
    # exactly 2 and se = sqrt(SSE/(n-2)/Sxx) = sqrt(4d²/2/5)
    u, d = np.arange(4.0), 0.1
    slope, se = analysis.loglog_slope(np.exp(u), np.exp(2 * u + d * np.array([1, -1, -1, 1])))
    assert slope == pytest.approx(2.0, abs=1e-12) and se == pytest.approx(d * math.sqrt(0.4), rel=1e-12)


def test_per_step():
    D = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    S = np.array([[10.0, 20.0, 20.0], [30.0, 30.0, 40.0]])  # held after each step; 0 before step 0
    out = analysis.per_step(D, S, particles_per_group=100, itemsize=8)
    kj = np.array([[5, 15, 20], [15, 30, 35]])
    assert out["step_s_median"] == [2.0, 3.0, 4.0] and out["kj_per_step"] == [10.0, 22.5, 27.5]
    assert out["bytes_total"] == kj.sum() * 2 * 100 * 8 and out["busy_s"] == 18.0
    assert (out["groups_seen"], out["steps_timed"]) == (2, 3)


def test_largest_T():
    # step t costs 2 + 2t: a = 1, b = 0.5 on K+J = 2 + 4t; T steps cost T² + T
    t = np.arange(5)
    kj, steps = 2 + 4 * t, 2 + 2 * t
    out = analysis.largest_T(steps, kj, wall=30.0, budget=110.0)
    assert out["T_max"] == 10 and out["scale"] == pytest.approx(1)
    assert out["fit_step_s"] == pytest.approx([1, 0.5]) and out["fit_kj"] == pytest.approx([2, 4])
    assert analysis.largest_T(steps, kj, wall=60.0, budget=110.0)["T_max"] == 6  # twice as slow: T² + T <= 55
    assert analysis.largest_T(steps[:2], kj[:2], 1.0, 1.0) is None


def test_limit_vs_N_recovers_f_inf_and_c():
    N = np.array([100.0, 200, 400, 800])
    f_inf, c = np.array([1.0, -2.0]), np.array([3.0, 5.0])
    out = analysis.limit_vs_N(N, f_inf + c / N[:, None], np.full((4, 2), 0.01))
    assert out["f_inf"] == pytest.approx(f_inf, abs=1e-10) and out["c"] == pytest.approx(c, abs=1e-7)
    assert out["chi2_dof"] == pytest.approx(0, abs=1e-12)
    assert analysis.limit_vs_N(N[:2], np.zeros((2, 2)), np.ones((2, 2))) is None


def test_simulate_particles():
    assert analysis.sim_particles(1e-3, 1e-2, 1000, 500) == (pytest.approx(1e5), pytest.approx(1e5))
    assert analysis.sim_particles(1e-1, 1e-2, 1000, 500) == (pytest.approx(10), 500)  # raised to n_min
    # no bias: N0 (se/ε)²; no noise: |c|/ε; both: the error is ε at the answer
    assert analysis.bias_aware_particles(1e-3, [0.0], [1e-2], 1000, 10) == pytest.approx(1e5, rel=1e-9)
    assert analysis.bias_aware_particles(1e-3, [-2.0], [0.0], 1000, 10) == pytest.approx(2e3, rel=1e-9)
    N = analysis.bias_aware_particles(1e-3, [2.0, 1.0], [1e-2, 2e-2], 1000, 10)
    assert max(2.0 / N + 1e-2 * math.sqrt(1000 / N), 1.0 / N + 2e-2 * math.sqrt(1000 / N)) == pytest.approx(1e-3)
    assert analysis.bias_aware_particles(1e-3, [0.0], [1e-5], 1000, 10) == 10  # n_min already enough


def _seeds(mean, sd):
    """Two seeds with exactly this mean and sample sd (ddof = 1)."""
    return np.stack([mean + sd / math.sqrt(2), mean - sd / math.sqrt(2)])


def test_finite_fit_and_seed_time():
    widths = np.array([100.0, 400.0])
    f_ref, B, s = np.array([0.5, -1.0]), np.array([2.0, -3.0]), np.array([1.0, 4.0])
    outputs = [_seeds(f_ref + B / n, s / math.sqrt(n)) for n in widths]
    fit = analysis.finite_fit(widths, outputs, f_ref, np.zeros(2))
    assert fit["B_a"] == pytest.approx(B) and fit["s_a"] == pytest.approx(s)
    assert fit["chi2_dof"] == pytest.approx(0, abs=1e-12)
    n = np.array([64.0, 128, 256, 512])
    assert analysis.seed_time_fit(n, 0.3 + 2e-6 * n**2) == (pytest.approx(0.3), pytest.approx(2e-6))


def test_cheapest_finite():
    # ε = 0.1, s = 1: S(n) = ceil(100/n); free seeds cost α, wide nets β n²
    assert analysis.cheapest_finite(0.1, [0.0], [1.0], 1.0, 0.0, [10, 100]) == (1.0, 100, 1)
    assert analysis.cheapest_finite(0.1, [0.0], [1.0], 0.0, 1e-4, [10, 100]) == (pytest.approx(0.1), 10, 10)
    # bias 1/n: n = 10 cannot reach 0.1; n = 20 leaves 0.05, so S = 1/(20·0.05²) = 20
    assert analysis.cheapest_finite(0.1, [1.0], [1.0], 1.0, 0.0, [10, 20]) == (20.0, 20, 20)
    assert analysis.cheapest_finite(0.1, [1.0], [1.0], 1.0, 0.0, [5, 10]) is None


def test_tta_synthetic():
    # unbiased finite nets with seed spread 1/√n, one seed 1e-4 n² s, widths 100..400
    # (memory for 400 at most): the cheapest is n = 100 with S = 1/(100 ε²) seeds of 1 s;
    # simulate needs N0 (se0/ε)² = 1e-1/ε² particles at 2 s per 1000, 2e-4/ε² s: ratio 50.
    widths = [100, 400]
    outputs = [_seeds(np.zeros(2), np.ones(2) / math.sqrt(n)) for n in widths]
    out = analysis.tta(np.zeros(2), [0.01, 0.005], 1000, 2.0, 500, widths, outputs,
                       [1e-4 * n * n for n in widths], mem_total=32 * 400**2, epsilons=(1e-2, 1e-3))
    assert out["finite_fit"]["n_max"] == 400 and out["limit"]["vs_N"] is None
    for row, eps in zip(out["rows"], (1e-2, 1e-3)):
        assert row["sim_N_used"] == pytest.approx(1e-1 / eps**2) and row["sim_time_s"] == pytest.approx(2e-4 / eps**2)
        assert (row["finite_width"], row["finite_seeds"]) == (100, round(1 / (100 * eps**2)))
        assert row["finite_time_s"] == pytest.approx(1e-2 / eps**2)
        assert row["ratio_finite_over_sim"] == pytest.approx(50)
        assert row["sim_N_bias_aware"] is None
    # with a sweep in N (no bias, f̊ exactly f∞): the bias-aware N is the se-only one
    sweep = [(N, np.zeros(2), [0.01 * math.sqrt(1000 / N), 0.005 * math.sqrt(1000 / N)]) for N in (500, 1000, 2000)]
    out = analysis.tta(np.zeros(2), [0.01, 0.005], 1000, 2.0, 500, widths, outputs,
                       [1e-4 * n * n for n in widths], mem_total=32 * 400**2, epsilons=(1e-3,), sweep=sweep)
    assert out["limit"]["vs_N"]["c"] == pytest.approx([0, 0], abs=1e-9)
    assert out["rows"][0]["sim_N_bias_aware"] == pytest.approx(1e5, rel=1e-6)


# ------------------------------------------------------------------ measure: step times from on_step
def test_step_durations_per_thread():
    # thread A runs group 0 then group 2, thread B group 1; simulate starts at 10.0
    events = [(0, 0, "A", 11.0), (1, 0, "B", 12.0), (0, 1, "A", 13.0), (1, 1, "B", 15.0),
              (2, 0, "A", 16.0), (2, 1, "A", 20.0)]
    D = measure.step_durations(events[::-1], 10.0, 2)
    assert D.tolist() == [[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]
    bases = {"size_fwd2": np.array([[1, 2]]), "size_bwd2": np.array([[3, 4]]), "dropped_fwd2": np.array([[9, 9]])}
    assert measure.basis_sizes(bases).tolist() == [[4.0, 6.0]]


# ------------------------------------------------------------------ options: the norms of novelty
def test_options_directions_match_the_bases():
    """Counting residuals above basis_tol·‖v‖ (x^{l-1} forward, dh^l backward) gives the
    directions the engine opened: run.bases sizes at T. The x norm for bwd did not."""
    import options
    import zlimit
    from problems import problem
    from zlimit._results import key, parse_key

    model, X, y = problem("S1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tol in (1e-3, 0.3):
            run = zlimit.simulate(model, X, y, steps=4, particles=2000, groups=2, basis_tol=tol, progress=False)
            sizes = {key(side, l): float(v[:, -1].mean())
                     for (side, l, stat), v in ((parse_key(k), v) for k, v in run.bases.items()) if stat == "size"}
            assert options.directions(run) == sizes


def _tiny(script: str, tmp_path) -> dict:
    """Run benchmarks/<script> --tiny with this checkout's zlimit; the JSON it writes."""
    out = tmp_path / "res.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_checkpoint_benchmark_tiny_writes_json(tmp_path):
    """benchmarks/checkpoint.py --tiny: three kinds of run, a final file that exists, JSON written."""
    res = _tiny("checkpoint.py", tmp_path)
    assert set(res["median_s"]) == {"none", "inf", "every"}
    assert all(_finite(v) and v > 0 for v in res["median_s"].values())
    assert res["file_bytes"] > 0 and _finite(res["seconds_per_write"])


def test_extensions_benchmark_tiny_writes_json(tmp_path):
    """benchmarks/extensions.py --tiny: every variant runs, JSON written with finite figures."""
    res = _tiny("extensions.py", tmp_path)
    assert set(res["median_s"]) == {"plain", "biases", "xent10", "momentum", "decay", "all"}
    assert all(_finite(v) and v > 0 for v in res["median_s"].values())
    assert res["ratio"]["plain"] == 1.0 and all(v >= 1 for v in res["directions_max"].values())


def test_scaling_benchmark_tiny_writes_json(tmp_path):
    """benchmarks/scaling.py --tiny: mpiexec with R = 1 and 2, strong and weak rows, per-rank
    memory and reductions, the latency fit and the cost model, all positive and finite. mpi4py
    and mpiexec come with the test extra (the mpich wheel): without them this fails, as
    tests/test_mpi.py does."""
    res = _tiny("scaling.py", tmp_path)
    assert {"strong", "weak", "no_mpi", "memory", "communication", "latency", "model", "sites"} <= set(res)
    assert [r["ranks"] for r in res["strong"]] == [1, 2] == [r["ranks"] for r in res["weak"]]
    for r in res["strong"] + res["weak"] + [res["no_mpi"]]:
        assert _finite(r["wall_s"]) and r["wall_s"] > 0
    assert all(_finite(r[k]) and r[k] > 0 for r in res["strong"] for k in ("speedup", "efficiency"))
    assert len(res["memory"]) == len(res["communication"]) == 6  # 1 + 2 ranks, strong and weak
    for r in res["memory"]:
        assert all(_finite(r[k]) and r[k] > 0 for k in ("peak_rss_bytes", "estimate_memory_bytes"))
    for r in res["communication"]:
        assert all(_finite(r[k]) and r[k] > 0 for k in ("comm_s", "comm_fraction", "reductions_per_step",
                                                          "bytes_per_step"))
    for fit in res["latency"].values():
        assert all(_finite(fit[k]) and fit[k] > 0 for k in ("alpha_s", "beta_s_per_byte"))
    model = res["model"]
    assert all(_finite(model[k]) and model[k] > 0 for k in ("compute_1_step_s", "reductions_per_step"))
    for tables in model["tables"].values():
        for rows in tables.values():
            assert [r["ranks"] for r in rows] == [1, 2, 4, 8, 16, 32, 64]
            assert all(_finite(r[k]) and r[k] > 0 for r in rows for k in ("step_s", "speedup", "efficiency"))
