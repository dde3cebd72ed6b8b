import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import vial_cfg
from tfanomaly.data.pipeline import Data, pack


def first_batches(cfg, n=2):
    ds = Data(cfg).train_dataset(batch_size=4)
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def test_training_batches_are_deterministic_for_a_seed(vial_data):
    a = first_batches(vial_cfg(vial_data, "seed=3"))
    b = first_batches(vial_cfg(vial_data, "seed=3"))
    c = first_batches(vial_cfg(vial_data, "seed=4"))
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    batch = a[0]
    assert batch["image"].shape == (4, 32, 32, 1) and batch["perturb_mask"].shape == (4, 32, 32, 1)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_a_pack_for_three_workers_shards_by_file(vial_data, tmp_path):
    """``data pack --workers 3``: the training shards are a multiple of 3 in number and of equal size
    (within one patch); input pipeline i of 3 reads files i, i + 3, ...: the three shares are disjoint,
    together they are the whole pack, and each is the same for a seed."""
    from tfanomaly.data.pipeline import pack_files, shard_bounds
    from tfanomaly.errors import DataError

    cfg = vial_cfg(vial_data)
    info = pack(cfg, tmp_path / "pack", shard_size=70, workers=3)
    n, shards = info["subsets"]["train"]["patches"], info["subsets"]["train"]["shards"]
    assert shards % 3 == 0 and shards >= -(-n // 70) and info["workers"] == 3
    sizes = np.diff(shard_bounds(n, 70, 3))
    assert len(sizes) == shards and sizes.max() - sizes.min() <= 1 and sizes.min() > 0
    packed = vial_cfg(vial_data, f"data.tfrecords={tmp_path / 'pack'}", "data.shuffle_buffer=1")

    def key(e):
        return (e["product"], *(int(e[k]) for k in ("run", "frame", "rank", "vial", "region")))

    whole = [key(e) for e in Data(packed).patches("train", True).as_numpy_iterator()]
    assert len(whole) == len(set(whole)) == n
    shares = []
    for i in range(3):
        files = pack_files(packed, "train", (3, i))
        assert len(files) == shards // 3
        got = [key(e) for e in Data(packed).patches("train", True, shuffle=True, shard=(3, i)).as_numpy_iterator()]
        again = [key(e) for e in Data(packed).patches("train", True, shuffle=True, shard=(3, i)).as_numpy_iterator()]
        assert got == again  # deterministic for the seed
        shares.append(set(got))
    assert sum(len(s) for s in shares) == n and set().union(*shares) == set(whole)  # disjoint and complete
    batch = next(iter(Data(packed).train_dataset(batch_size=2, shard=(3, 1))))
    assert batch["image"].shape == (2, 32, 32, 1)
    with pytest.raises(DataError, match=rf"{shards} train shards for {shards + 1} workers.*--workers {shards + 1}"):
        pack_files(packed, "train", (shards + 1, 0))


def test_augmentation_off_and_perturbation_off_give_the_patch(vial_data):
    cfg = vial_cfg(vial_data, "augment.enabled=false", "perturb.enabled=false", "data.shuffle_buffer=1")
    data = Data(cfg)
    batch = next(iter(data.train_dataset(batch_size=3)))
    raw = [e["image"] for e in data.patches("train", True).take(3).as_numpy_iterator()]
    np.testing.assert_allclose(batch["image"].numpy(), np.stack(raw) / 255.0, atol=1e-7)
    np.testing.assert_array_equal(batch["perturbed"].numpy(), batch["image"].numpy())


def test_tfrecord_pack_round_trip(vial_data, tmp_path):
    cfg = vial_cfg(vial_data)
    info = pack(cfg, tmp_path / "pack", shard_size=50)
    direct = Data(cfg)
    assert info["subsets"]["train"]["patches"] == direct.count("train", True)
    assert info["subsets"]["test"]["patches"] == direct.count("test", False)
    assert info["subsets"]["train"]["shards"] == -(-info["subsets"]["train"]["patches"] // 50)
    packed_cfg = vial_cfg(vial_data, f"data.tfrecords={tmp_path / 'pack'}")
    packed = Data(packed_cfg)
    a = list(direct.patches("test", False).as_numpy_iterator())
    b = list(packed.patches("test", False).as_numpy_iterator())
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in ("image", "mask", "label", "product", "run", "frame", "vial", "region"):
            np.testing.assert_array_equal(x[k], y[k])
    assert not list((tmp_path / "pack").glob(".*tmp"))
    batch = next(iter(packed.train_dataset(batch_size=4)))
    assert batch["image"].shape == (4, 32, 32, 1)


def test_eval_dataset_keeps_ids(vial_data):
    data = Data(vial_cfg(vial_data))
    batch = next(iter(data.eval_dataset(batch_size=16)))
    assert set(batch) >= {"image", "mask", "label", "product", "run", "frame", "vial", "region"}
    assert batch["image"].dtype == tf.float32 and float(tf.reduce_max(batch["image"])) <= 1.0


def test_rot90_moves_the_mask_with_the_image():
    import numpy as np
    import tensorflow as tf

    from tfanomaly.config import load_config
    from tfanomaly.data.augment import augment

    aug = load_config(None, ["augment.rotation=0", "augment.rot90=true", "augment.vflip=false", "augment.hflip=false"]).augment
    img = np.zeros((16, 16, 1), np.float32)
    img[2:5, 9:14] = 1.0
    seen = set()
    for s in range(12):
        a, m = augment(tf.constant(img), tf.constant(img), tf.constant([7, s], tf.int64), aug)
        a, m = a.numpy(), m.numpy()
        np.testing.assert_array_equal(a, m)
        k = [k for k in range(4) if np.array_equal(a, np.rot90(img, k))]
        assert len(k) == 1
        seen.add(k[0])
    assert seen == {0, 1, 2, 3}


def test_interpolation_setting_reaches_the_resize(tmp_path):
    import cv2
    import numpy as np
    import tensorflow as tf

    from tfanomaly.config import load_config
    from tfanomaly.data.pipeline import Data

    raw = np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)
    (tmp_path / "good").mkdir()
    cv2.imwrite(str(tmp_path / "good" / "a.png"), raw)
    out = {}
    for method in ("bilinear", "bicubic"):
        cfg = load_config(None, ["data.source=folder", f"data.root={tmp_path}", "data.image_size=[16, 16]", f"data.interpolation={method}", "data.split.train_fraction=1.0"])
        out[method] = next(Data(cfg).patches("train", True).as_numpy_iterator())["image"]
        want = tf.image.resize(raw[..., None].astype(np.float32), [16, 16], method).numpy()
        np.testing.assert_array_equal(out[method], np.clip(np.round(want), 0, 255).astype(np.uint8))
    assert not np.array_equal(out["bilinear"], out["bicubic"])


def test_shift_moves_image_and_mask_by_whole_pixels_within_the_bound():
    import numpy as np
    import tensorflow as tf

    from tfanomaly.config import load_config
    from tfanomaly.data.augment import augment

    aug = load_config(None, ["augment.rotation=0", "augment.shift=[0.25, 0.125]", "augment.vflip=false", "augment.hflip=false"]).augment
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(16, 16, 1)).astype(np.float32)
    seen = set()
    for s in range(40):
        a, m = augment(tf.constant(img), tf.constant(img), tf.constant([3, s], tf.int64), aug)
        a, m = a.numpy(), m.numpy()
        np.testing.assert_array_equal(a, m)  # the mask moves with the image
        padded = np.pad(img, [(4, 4), (2, 2), (0, 0)], mode="reflect")  # numpy's reflect = TF's REFLECT
        hits = [(dy, dx) for dy in range(-4, 5) for dx in range(-2, 3) if np.array_equal(a, padded[4 - dy : 20 - dy, 2 - dx : 18 - dx])]
        assert len(hits) == 1  # a whole-pixel translation within 0.25 x 16 = 4 rows and 0.125 x 16 = 2 columns
        seen.add(hits[0])
    assert {dy for dy, _ in seen} >= {-4, 4} and {dx for _, dx in seen} == {-2, -1, 0, 1, 2}
    with pytest.raises(Exception, match="augment.shift"):
        load_config(None, ["augment.shift=[0.5, 0]"])
