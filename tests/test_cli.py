import subprocess
import sys

import cv2

from tests.conftest import ROOT


def tfa(*args, cwd=None):
    # Run outside the source tree, so the installed package (with tfanomaly.cli) is imported.
    return subprocess.run([sys.executable, "-m", "tfanomaly.cli.app", *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT / "tests", timeout=900)


def test_help_lists_commands():
    r = tfa("--help")
    assert r.returncode == 0
    for cmd in ("train", "eval", "export", "predict", "data"):
        assert cmd in r.stdout
    r = tfa("data", "--help")
    for cmd in ("synth", "pack", "inspect"):
        assert cmd in r.stdout


def test_user_errors_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  latent_dim: -3\n")
    r = tfa("train", "grdnet", "--config", bad)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {bad}: model.latent_dim: expected an integer > 0, got -3"
    assert "Traceback" not in r.stderr
    r = tfa("train", "nosuch", "--config", bad)
    assert r.returncode == 2 and "unknown family 'nosuch'" in r.stderr
    r = tfa("data", "inspect", "--config", ROOT / "configs" / "vials_demo.yaml", "--set", f"data.root={tmp_path / 'missing'}")
    assert r.returncode == 2 and "missing: no such dataset folder (data.root)" in r.stderr


def test_synth_and_inspect(tmp_path):
    r = tfa("data", "synth", "vials", "--out", tmp_path / "v", "--good", 2, "--defective", 1, "--runs", 1, "--frames", 4)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "v" / "images").glob("*.png"))) == 12
    r = tfa(
        "data",
        "inspect",
        "--config",
        ROOT / "configs" / "vials_demo.yaml",
        "--out",
        tmp_path / "grid.png",
        "--set",
        f"data.root={tmp_path / 'v'}",
        "--set",
        "data.frames_per_acquisition=4",
        "--set",
        "data.rank_images=[1,4]",
        "--set",
        "data.eval_frames=[0,1,2]",
        "--set",
        "data.eval_ranks=[]",
        "--set",
        "data.split.train_fraction=1.0",
    )
    assert r.returncode == 0, r.stderr
    assert "patches: 240 train, 60 test" in r.stdout  # 2 good acquisitions x (4 + 2) x 20; 1 defective x 3 x 20
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid is not None and grid.shape[0] > 64 * 4


def test_synth_kit_is_evaluation_only(tmp_path):
    r = tfa("data", "synth", "kit", "--out", tmp_path / "k", "--good", 1, "--defective", 1, "--runs", 1, "--frames", 4)
    assert r.returncode == 0, r.stderr
    assert "test kit of 2 products (1 good, 1 defective)" in r.stderr + r.stdout
    assert sorted(p.name for p in (tmp_path / "k" / "images").glob("*_f01.png")) == ["K001_r01_f01.png", "K002_r01_f01.png"]
    r = tfa(
        "data",
        "inspect",
        "--config",
        ROOT / "configs" / "vials_demo.yaml",
        "--out",
        tmp_path / "grid.png",
        "--set",
        f"data.root={tmp_path / 'k'}",
        "--set",
        "data.frames_per_acquisition=4",
        "--set",
        "data.rank_images=[1,4]",
        "--set",
        "data.eval_frames=[0,1,2]",
        "--set",
        "data.eval_ranks=[1]",
        "--set",
        "data.split.train_fraction=1.0",
    )
    assert "patches: 0 train, 160 test" in r.stdout, r.stdout + r.stderr  # 2 products x (3 frames + 1 rank) x 20
    r = tfa("data", "synth", "kit", "--out", tmp_path / "k0", "--seed", 0)
    assert r.returncode == 2 and "--seed 0 is the training data's seed" in r.stderr
