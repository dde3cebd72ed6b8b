"""tf.distribute: N replicas train as one process does on the same global batch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, write_img

FAMILIES = ["grdnet", "ganomaly", "autoencoder", "adgan", "cyclegan"]


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """12 good and 4 defective 32x32 textured images (the defective half trains CycleGAN-AD)."""
    root = tmp_path_factory.mktemp("replicas")
    rng = np.random.default_rng(5)
    for i in range(12):
        write_img(root / "good" / f"g{i}.png", (110 + rng.normal(0, 20, (32, 32))).clip(0, 255).astype(np.uint8))
    for i in range(4):
        img = (110 + rng.normal(0, 20, (32, 32))).clip(0, 255).astype(np.uint8)
        img[8:14, 8:14] = 250
        write_img(root / "bad" / f"b{i}.png", img)
    return root


def replicas_run(family, root, out):
    """The default-strategy and two-replica trajectories of one family (a child
    process, killed by the timeout if it hangs)."""
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "_replicas.py"), family, str(root), str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# Relative tolerance on steps 2-4 of every logged term. GRD-Net's GAN amplifies the ~1e-4
# differences of a synchronized batch norm (sum / sum of squares over replicas) within three
# updates: its small latent distance ``enc`` and D's loss move by up to 15% (measured), while the
# generator's total loss stays within 1%.
TRAJECTORY_RTOL = {"grdnet": 0.25}
MAIN_LOSS_RTOL = 0.02


@pytest.mark.parametrize("family", FAMILIES)
def test_mirrored_two_replicas_train_as_one_process(family, small_folder, tmp_path):
    """MirroredStrategy over two logical CPU devices, batch 4 = 2 x 2, against one
    process on batch 4, same seed: the first step's logs (same weights, same images;
    GRD-Net updates D before it logs G) agree to 1e-3 relative; the next three steps
    to 2% (the generator's or network's main loss in every family, and every term of
    the four families other than GRD-Net; see TRAJECTORY_RTOL)."""
    res = replicas_run(family, small_folder, tmp_path)
    assert res["replicas"] == 2
    one, two = res["default"], res["mirrored"]
    assert set(one) == set(two) and one
    main = "g_loss" if "g_loss" in one else "loss"
    for k in one:
        a, b = np.array(one[k]), np.array(two[k])
        assert len(a) == len(b) == 4, k
        np.testing.assert_allclose(b[0], a[0], rtol=1e-3, atol=1e-6, err_msg=f"{family} {k}: first step")
        rtol = MAIN_LOSS_RTOL if k == main else TRAJECTORY_RTOL.get(family, MAIN_LOSS_RTOL)
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-3, err_msg=f"{family} {k}: trajectory")
