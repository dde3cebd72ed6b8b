"""Process-wide TensorFlow setup: logging, seeds, precision, strategy."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfanomaly.errors import UserError  # noqa: E402


def setup(cfg) -> None:
    """Seed everything and apply the precision policy of ``cfg``."""
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_global_policy(cfg.train.mixed_precision)


def local_devices() -> list[str]:
    """The devices MirroredStrategy replicates over: every GPU, or, on a machine
    without one, every logical CPU device (one unless the process split its CPU
    with ``tf.config.set_logical_device_configuration``, as the tests do)."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def split_cpu(n: int) -> None:
    """Split the CPU into ``n`` logical devices (before TensorFlow first uses it):
    MirroredStrategy then trains ``n`` replicas on one machine."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def strategy_for(cfg) -> tf.distribute.Strategy:
    kind = cfg.train.distribute
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(local_devices())
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role(cfg) -> tuple[bool, str]:
    """(is chief, name) of this process. Under ``train.distribute: multi_worker`` the
    task in ``TF_CONFIG`` decides: the chief is task ``chief`` 0, or ``worker`` 0 when
    the cluster names no chief (TensorFlow's rule). Every other run is its own chief."""
    if cfg.train.distribute != "multi_worker":
        return True, "chief"
    raw = os.environ.get("TF_CONFIG", "")
    try:
        conf = json.loads(raw) if raw else {}
        task = conf.get("task", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
        has_chief = bool(conf.get("cluster", {}).get("chief"))
    except (ValueError, AttributeError, TypeError):
        raise UserError(f"TF_CONFIG: expected JSON with cluster and task (type, index), got {raw[:200]!r}") from None
    chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
    return chief, f"{kind}-{index}"


def loopback_tf_configs(n: int) -> list[str]:
    """``TF_CONFIG`` of each worker of an n-worker job on this host (tests, bench/distributed.py): a
    cluster of loopback ports free now (bound to port 0, read back, released); worker 0 is the chief."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]}
    finally:
        for s in socks:
            s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(n)]
