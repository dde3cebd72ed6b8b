"""Helpers shared by the bench/ scripts (run as ``python bench/NAME.py``)."""


def cpu_model() -> str:
    """CPU model, core count and vector ISA (AVX-512 and AMX flags, else AVX2) of this host, as every
    recorded timing states them."""
    import os
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(info.split())
    isa = sorted(f for f in flags if f.startswith(("avx512", "amx"))) or (["avx2"] if "avx2" in flags else [])
    return f"{name}, {os.cpu_count()} cores, {' '.join(isa) or 'no AVX2'}"


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmHWM: peak resident, VmRSS: resident now), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), MB."""
    return status_mb("VmHWM")


def interleaved_ms(steps: dict, batch, reps: int) -> dict:
    """Median ms per call of each train step in ``steps`` (name -> tf.function of a batch), after two
    warm-up calls each, timed in turns so that a noisy neighbour hits every step alike."""
    import time

    import numpy as np

    for step in steps.values():
        for _ in range(2):
            [v.numpy() for v in step(batch).values()]
    times = {k: [] for k in steps}
    for _ in range(reps):
        for k, step in steps.items():
            t = time.perf_counter()
            [v.numpy() for v in step(batch).values()]
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}
