import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tfanomaly.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def vial_data(tmp_path_factory):
    """A small synthetic vial dataset: 3 good + 2 defective products, 2 runs, 4 frames."""
    from tfanomaly.data.synth import synth_vials

    out = tmp_path_factory.mktemp("vials")
    synth_vials(out, good=3, defective=2, runs=2, frames=4, seed=1)
    return out


def vial_cfg(root, *extra):
    return load_config(
        None,
        [
            f"data.root={root}",
            "data.image_size=[32, 32]",
            "data.frames_per_acquisition=4",
            "data.rank_images=[1, 4]",
            "data.eval_frames=[0, 2]",
            "perturb.max_scale=3",
            "model.widths=[16, 32]",
            "model.stem_width=16",
            "model.disc_widths=[16, 32]",
            "model.unet_widths=[16, 32]",
            "model.latent_dim=16",
            "model.ssim_window=7",
            "train.batch_size=8",
            *extra,
        ],
    )


def write_img(path, arr):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def shipped_configs(family):
    """Names of the configs/ files of one family."""
    return sorted(p.name for p in (ROOT / "configs").glob("*.yaml") if f"family: {family}" in p.read_text())


def assert_one_train_step(model, size, channels, batch=2):
    """One compiled train step on random images: passes the oneDNN guard and gives finite losses."""
    import tensorflow as tf

    from tfanomaly import guards

    guards.check_model(model)
    x = tf.random.uniform([batch, size, size, channels])
    data = {"image": x, "perturbed": x, "perturb_mask": tf.zeros([batch, size, size, 1]), "noise": tf.zeros_like(x), "abnormal": x[::-1]}  # the defective domain of two-domain families (CycleGAN-AD)
    out = tf.function(model.train_step)(data)
    assert all(np.isfinite(float(v)) for v in out.values())


def save_run(model, cfg, run, thresholds=None):
    """A run directory as `tfanomaly train` leaves it (model.keras + config.yaml [+ eval/thresholds.json])."""
    from tfanomaly.run import Run

    assert not Path(run).exists()
    return Run.write(run, model, cfg, thresholds).path


# ---------------------------------------------------------------- the C++ binary (built once per test session)


@pytest.fixture(scope="session")
def binary(tmp_path_factory):
    """tfanomaly-infer built against the TensorFlow of the Python running the tests."""
    import shutil
    import subprocess
    import sys

    if not shutil.which("cmake") or not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("cmake or a C++ compiler is missing: the C++ inference test needs both")
    build = tmp_path_factory.mktemp("cppbuild")
    cmd = ["cmake", "-S", str(ROOT / "cpp_inference"), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}"]
    if CPP_SANITIZE:  # TFANOMALY_CPP_SANITIZE=1 pytest -k cpp: the C++ tests against an ASan + UBSan build
        cmd.append("-DTFANOMALY_SANITIZE=ON")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return build / "tfanomaly-infer"


def stop_group(child) -> None:
    """SIGKILL a child started with ``start_new_session=True`` and everything it started; wait for it.
    Call it in ``finally`` too, so a failing test never leaves a process behind."""
    import signal

    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
    child.wait(30)


CPP_SANITIZE = os.environ.get("TFANOMALY_CPP_SANITIZE") == "1"
# TensorFlow's own start-up allocations live until exit: leak reports would be its, not ours
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


def run_cpp(binary, *args):
    """Runs the binary; fails the test on any sanitizer report (in a TFANOMALY_CPP_SANITIZE build)."""
    import subprocess

    r = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=600, env={**os.environ, **SANITIZER_ENV})
    assert "Sanitizer" not in r.stderr and "runtime error:" not in r.stderr, r.stderr[-3000:]
    return r


def error_lines(r):
    """The binary's own error lines (TensorFlow's start-up logging may precede them)."""
    return [line for line in r.stderr.splitlines() if line.startswith("error: ")]
