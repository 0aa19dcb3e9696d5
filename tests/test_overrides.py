"""Typed `key=value` overrides of dataclass configs."""

from __future__ import annotations

import pytest

import mbt
from mbt.data import DataConfig
from mbt.overrides import OverrideError, apply_overrides


def test_values_take_the_field_type():
    cfg = apply_overrides(mbt.MBTConfig(), [
        "fusion_layer=4", "patch_size=[8, 8]", "share_encoder=true", "representation_size=null",
        "modalities=[rgb]", "stochastic_depth=0", "classifier=gap",
    ])
    assert cfg.fusion_layer == 4 and cfg.patch_size == (8, 8) and cfg.share_encoder is True
    assert cfg.modalities == ("rgb",) and cfg.stochastic_depth == 0.0 and cfg.classifier == "gap"
    data = apply_overrides(DataConfig(), ["scale_jitter=[1.0, 1.2]", "spec_mean=-4"])
    assert data.scale_jitter == (1.0, 1.2) and data.spec_mean == -4.0


@pytest.mark.parametrize("assignment,message", [
    ("fusion_lyer=4", "no field 'fusion_lyer'"),
    ("fusion_layer=four", "fusion_layer: expected an integer"),
    ("share_encoder=2", "share_encoder: expected true or false"),
    ("fusion_layer=99", "fusion_layer: must be in"),
    ("patch_size=[1, 2, 3]", "patch_size: expected 2 values"),
    ("fusion_layer", "expected KEY=VALUE"),
    ("num_classes.x=1", "not a section"),
])
def test_errors_name_the_key(assignment, message):
    with pytest.raises(OverrideError, match=message):
        apply_overrides(mbt.MBTConfig(), [assignment])


def test_fields_that_must_agree_change_together_in_any_order():
    cfg = apply_overrides(mbt.MBTConfig(), ["class_splits=[300, 97]", "num_classes=397", "multi_label=false"])
    assert (cfg.num_classes, cfg.class_splits, cfg.multi_label) == (397, (300, 97), False)


DOCUMENTED_VALUES = [
    ("train.amp", "off", "off"),
    ("train.amp", "bf16", "bf16"),
    ("train.init_from", "none", None),
    ("train.init_from", "null", None),
    ("train.max_grad_norm", "~", None),
    ("train.freeze", "true", True),
    ("train.freeze", "off", False),
    ("train.freeze", "yes", True),
    ("train.compile", "off", False),
    ("train.compile", "max-autotune", "max-autotune"),
    ("train.lr", "1e-4", 1e-4),
    ("train.epochs", "3", 3),
    ("train.betas", "[0.8, 0.9]", (0.8, 0.9)),
    ("train.betas", "(0.8, 0.9)", (0.8, 0.9)),
    ("dataset.classes", "'none'", "none"),
    ("dataset.train_split", "no", "no"),
    ("model.fusion_layer", "4", 4),
]


@pytest.mark.parametrize("key,text,expected", DOCUMENTED_VALUES)
def test_documented_values_read_the_same_in_set_and_yaml(key, text, expected, tmp_path):
    from mbt.train import ExperimentConfig

    section, field = key.split(".")
    by_set = ExperimentConfig().override([f"{key}={text}"])
    path = tmp_path / "config.yaml"
    path.write_text(f"{section}:\n  {field}: {text}\n")
    by_file = ExperimentConfig.load(path)
    assert getattr(getattr(by_set, section), field) == expected
    assert by_file == by_set


def test_a_saved_config_reads_back_the_same_here_and_in_yaml_1_1_readers(tmp_path):
    import yaml

    from mbt.train import ExperimentConfig

    cfg = ExperimentConfig().override(["train.amp=off", "dataset.train_split=no", "dataset.root='1e-4'",
                                       "dataset.classes='none'", "train.lr=1e-5"])
    path = tmp_path / "config.yaml"
    cfg.save(path)
    assert ExperimentConfig.load(path) == cfg
    plain = yaml.safe_load(path.read_text())  # what another YAML reader sees
    assert (plain["train"]["amp"], plain["dataset"]["train_split"], plain["dataset"]["root"],
            plain["dataset"]["classes"], plain["train"]["lr"]) == ("off", "no", "1e-4", "none", 1e-5)


@pytest.mark.parametrize("assignment,message", [
    ("train.amp=false", r"train\.amp: expected a string, got False"),
    ("train.freeze=maybe", r"train\.freeze: expected true or false"),
    ("train.lr=1e-4x", r"train\.lr: expected a number"),
    ("train.lr.x=1", r"train\.lr: 'lr' is not a section"),
    ("model=3", r"model: expected a mapping of MBTConfig fields"),
    ("=3", "expected KEY=VALUE"),
])
def test_experiment_overrides_refuse_by_key(assignment, message):
    from mbt.errors import ConfigError
    from mbt.train import ExperimentConfig

    with pytest.raises(ConfigError, match=message):
        ExperimentConfig().override([assignment])
