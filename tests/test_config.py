import pytest

from tests.conftest import ROOT
from tfanomaly.config import dump_config, load_config, to_dict
from tfanomaly.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_range_error_names_file_and_key(tmp_path):
    p = write(tmp_path, "family: grdnet\nmodel:\n  latent_dim: -3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: model.latent_dim: expected an integer > 0, got -3"


def test_unknown_key_and_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml: train.epochz: unknown key"):
        load_config(write(tmp_path, "train:\n  epochz: 3\n"))
    with pytest.raises(ConfigError, match=r"c.yaml: data.image_size\[1\]: expected an integer, got 'big'"):
        load_config(write(tmp_path, "data:\n  image_size: [64, big]\n"))
    with pytest.raises(ConfigError, match=r"data.source: expected a string one of 'vials'"):
        load_config(write(tmp_path, "data:\n  source: video\n"))
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+: not valid YAML"):
        load_config(write(tmp_path, "data:\n  root: [unclosed\n"))


def test_cross_checks_name_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"data.rank_images: expected ranks in \[1, 16\]"):
        load_config(write(tmp_path, "data:\n  rank_images: [1, 17]\n"))
    with pytest.raises(ConfigError, match=r"model.widths: 4 stages .* divisible by 16"):
        load_config(write(tmp_path, "data:\n  image_size: [40, 40]\nperturb:\n  max_scale: 2\n"))
    with pytest.raises(ConfigError, match=r"c.yaml: perturb.bands: expected strokes \+ bands <= 1 \(strokes is 0.5\), got 0.6"):
        load_config(write(tmp_path, "perturb:\n  strokes: 0.5\n  bands: 0.6\n"))


def test_overrides(tmp_path):
    p = write(tmp_path, "train:\n  epochs: 5\n")
    cfg = load_config(p, ["train.epochs=2", "model.widths=[8, 16]", "data.image_size=[32,32]", "perturb.max_scale=2", "data.root=x"])
    assert cfg.train.epochs == 2 and cfg.model.widths == [8, 16] and cfg.data.root == "x"
    with pytest.raises(ConfigError, match="train.nope: unknown key"):
        load_config(p, ["train.nope=1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(p, ["train.epochs"])


def test_resolved_config_round_trip(tmp_path):
    cfg = load_config(ROOT / "configs" / "vials.yaml", ["train.epochs=3"])
    again = write(tmp_path, dump_config(cfg))
    assert to_dict(load_config(again)) == to_dict(cfg)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.family and cfg.model is not None


def test_a_top_level_list_with_overrides_is_a_config_error(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list.yaml: expected a mapping at the top level, got list"):
        load_config(f, ["train.epochs=2"])
