"""Smoke test of benchmarks/run.py: the tiny path runs and writes complete JSON.

No timing thresholds: only that the run finishes, and that the file it writes has
the expected keys with finite numbers.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run.py"


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
                    "frac_floor", "frac_floor_alg", "kj_last"):
            assert _finite(p[key]), (name, key, p.get(key))
        assert p["wall_s"] > 0 and p["peak_rss_bytes"] > 0 and p["estimate_memory_bytes"] > 0
    assert _finite(res["threads"]["speedup"])
    for key in ("N", "T"):
        assert _finite(res["S3"][key]["slope"])
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
