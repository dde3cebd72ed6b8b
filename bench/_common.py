"""Helpers shared by the bench/ scripts (run as ``python bench/NAME.py``)."""


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
