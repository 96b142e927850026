"""Shared hypothesis settings: no per-example deadline (the first example of a
property compiles numba kernels), derandomised so runs are reproducible."""
from hypothesis import HealthCheck, settings

settings.register_profile(
    "zlimit",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("zlimit")
