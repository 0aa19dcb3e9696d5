"""Experiment configs: presets resolve to the official numbers, the schedule follows Scenic's
formula, overrides and files are typed and name the bad key."""

import itertools
import math

import pytest
import torch

from mbt.models.config import PAPER_VIT, ConfigError
from mbt.train.config import ExperimentConfig
from mbt.train.optim import Schedule, build_optimizer, learning_rate
from mbt.train.presets import PRESETS, preset


def test_audioset_mini_preset_is_the_official_recipe():
    cfg = preset("audioset-mini")
    t, m = cfg.train, cfg.model
    assert (t.optimizer, t.lr, t.momentum, t.nesterov, t.weight_decay) == ("sgd", 0.5, 0.9, False, 0.0)
    assert (t.warmup_epochs, t.epochs, t.batch_size, t.max_grad_norm) == (2.5, 50, 64, 1.0)
    assert (t.label_smoothing, t.mixup_alpha, t.mixmod, t.seed, t.checkpoint_every) == (0.3, 0.5, False, 0, 500)
    assert t.balanced_sampling is False
    assert t.init_from == PAPER_VIT == "vit_base_patch16_224.orig_in21k"
    assert (m.hidden_size, m.num_layers, m.num_heads, m.mlp_dim) == (768, 12, 12, 3072)
    assert (m.fusion, m.fusion_layer, m.num_bottlenecks, m.classifier) == ("bottleneck", 8, 4, "token")
    assert (m.stochastic_depth, m.num_classes, m.multi_label) == (0.3, 527, True)
    assert cfg.data.num_test_clips == 4 and cfg.data.freq_mask_max_bins == 48 and cfg.data.time_mask_count == 0
    # the official step counts for the 20,361 balanced clips (spec §5)
    s = Schedule.from_config(t, 20361)
    assert (s.steps_per_epoch, s.total_steps, s.warmup_steps) == (318, 15900, 795)


def test_other_presets():
    epic = preset("epic-kitchens-100")
    assert epic.model.class_splits == (300, 97) and epic.model.split_names == ("noun", "verb")
    assert epic.model.num_classes == 397 and not epic.model.multi_label
    assert (epic.train.mixup_alpha, epic.train.label_smoothing, epic.train.lr) == (0.1, 0.2, 0.5)
    assert (epic.data.num_test_clips, epic.data.num_test_crops) == (4, 3)
    vgg = preset("vggsound")
    assert (vgg.model.num_classes, vgg.model.multi_label, vgg.dataset.test_split) == (309, False, "test")
    assert preset("audioset-500k").dataset.train == ("unbalanced_train_segments.csv",)
    assert preset("kinetics-sounds").model.num_classes == 31
    # every paper preset from ImageNet ViTs: a valid config with MBT-B (the others start from AST / CAV-MAE)
    for name in [n for n in PRESETS if n not in ("tiny", "audioset-ast", "vggsound-cavmae")]:
        cfg = preset(name)
        assert cfg.name == name and cfg.model.fusion_layer == 8 and cfg.train.epochs == 50
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset("nope")


def test_schedule_values():
    base, warm, total = 0.5, 795.0, 15900
    assert learning_rate(0, base, warm, total) == 0.0  # exactly zero at the first step
    assert learning_rate(1, base, warm, total) == pytest.approx(base / warm)
    assert learning_rate(400, base, warm, total) == pytest.approx(base * 400 / 795)
    assert learning_rate(795, base, warm, total) == pytest.approx(base)  # warmup end
    mid = 795 + (total - 795) / 2
    assert learning_rate(int(mid), base, warm, total) == pytest.approx(base / 2, rel=1e-3)
    last = learning_rate(total - 1, base, warm, total)
    assert 0 < last < 1e-7  # cosine reaches ~0 at the last step
    lrs = [learning_rate(s, base, warm, total) for s in range(795, total)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    # fractional warmup (2.5 epochs of an odd number of steps): Scenic divides by P - int(W)
    s = 7 + 5
    expected = 1.0 * 0.5 * (1 + math.cos(math.pi * ((s - 7.5) / (30 - 7))))
    assert learning_rate(s, 1.0, 7.5, 30) == pytest.approx(expected)


def test_schedule_errors_name_the_field():
    cfg = preset("audioset-mini").train
    with pytest.raises(ConfigError, match="train.batch_size"):
        Schedule.from_config(cfg, 10)


def test_overrides_are_typed_and_name_bad_keys():
    cfg = preset("audioset-mini")
    new = cfg.override(["train.lr=0.1", "model.fusion_layer=4", "train.max_grad_norm=null",
                        "dataset.root=/data/as", "train.betas=[0.8, 0.9]"])
    assert (new.train.lr, new.model.fusion_layer, new.train.max_grad_norm) == (0.1, 4, None)
    assert new.dataset.root == "/data/as" and new.train.betas == (0.8, 0.9)
    assert cfg.train.lr == 0.5  # the original is unchanged
    # fields that must agree change together
    epic = cfg.override(["model.num_classes=397", "model.class_splits=[300,97]", "model.multi_label=false"])
    assert epic.model.class_splits == (300, 97)
    bad = {
        "train.lrr=1": "train.lrr",
        "train.lr=fast": "train.lr",
        "train.epochs=2.5": "train.epochs",
        "model.fusion_layer=13": "model.fusion_layer",
        "train.amp=fp8": "train.amp",
        "train.mixmod=yes please": "train.mixmod",
        "nosection.x=1": "nosection",
        "train.lr": "expected KEY=VALUE",
    }
    for assignment, key in bad.items():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            cfg.override([assignment])


def test_cross_section_consistency():
    cfg = preset("audioset-mini")
    both = cfg.override(["data.num_frames=16", "model.num_frames=16", "model.n_sampled_frames=16"])
    assert both.model.num_frames == both.data.num_frames == 16
    with pytest.raises(ConfigError, match="mixmod"):
        cfg.override(["train.mixmod=true", "model.classifier=gap"])
    with pytest.raises(ConfigError, match="data.num_frames=16"):  # set in both sections, differently
        cfg.override(["data.num_frames=16", "model.num_frames=8"])


def test_one_geometry_either_section_moves_both():
    """The clip geometry is one setting: a change in `model` carries the data with it and a change
    in `data` carries the model, with what they imply (frames sampled, spectrogram frames)."""
    tiny = preset("tiny")
    assert (tiny.model.num_frames, tiny.model.n_sampled_frames) == (4, 4)
    cfg = tiny.override(["model.num_frames=8"])
    assert (cfg.model.num_frames, cfg.model.n_sampled_frames, cfg.data.num_frames) == (8, 8, 8)
    cfg = tiny.override(["data.num_frames=6", "data.image_size=64"])
    assert (cfg.model.num_frames, cfg.model.n_sampled_frames, cfg.model.image_size) == (6, 6, (64, 64))
    cfg = preset("audioset-mini").override(["data.audio_seconds=10"])
    assert cfg.model.spectrogram_size == (1000, 128) and cfg.data.num_spectrogram_frames == 1000
    cfg = preset("audioset-mini").override(["model.spectrogram_size=[400, 64]", "model.image_size=[160, 160]"])
    assert (cfg.data.audio_seconds, cfg.data.num_mel_bins, cfg.data.image_size) == (4.0, 64, 160)
    # a model sampling 4 of its 32 frames (tubelets: the sampling count is unused) keeps its count
    released = preset("audioset-mini-released").override(["model.num_frames=16"])
    assert (released.model.n_sampled_frames, released.data.num_frames) == (4, 16)
    # a model sampling some of its frames keeps its count, and says so
    subset = tiny.override(["model.num_frames=8", "model.n_sampled_frames=4"])
    with pytest.warns(UserWarning, match="model.n_sampled_frames stays 4"):
        cfg = subset.override(["data.num_frames=16"])
    assert (cfg.model.num_frames, cfg.model.n_sampled_frames) == (16, 4)


def test_preset_dataset_fields_drop_with_the_format():
    """A paper preset's AudioSet files and class list mean nothing to a folder of videos: a new
    `dataset.format` drops them, with a note, unless the same change sets them."""
    with pytest.warns(UserWarning, match=r"audioset fields of 'audioset-mini' are dropped: .*classes="):
        cfg = preset("audioset-mini").override(["dataset.format=folder", "dataset.train=[my/train]"])
    assert cfg.dataset.classes is None and cfg.dataset.train == ("my/train",) and cfg.dataset.test == ()
    assert cfg.dataset.val_fraction == 0.05  # not format-specific: kept
    with pytest.warns(UserWarning, match="train_split"):
        kept = preset("vggsound").override(["dataset.format=csv", "dataset.classes=mine.csv"])
    assert kept.dataset.classes == "mine.csv" and kept.dataset.test_split is None
    with pytest.warns(UserWarning, match="val_fraction=0.05"):
        shards = preset("audioset-mini").override(["dataset.format=shards", "dataset.train=/s/train"])
    assert shards.dataset.val_fraction == 0.0 and shards.dataset.classes is None
    same = preset("audioset-mini").override(["dataset.root=/data/as"])  # same format: all kept
    assert same.dataset.classes == "class_labels_indices.csv"


def test_yaml_round_trip_and_file_errors(tmp_path):
    cfg = preset("epic-kitchens-100").override(["train.lr=0.25"])
    path = tmp_path / "config.yaml"
    cfg.save(path)
    assert ExperimentConfig.load(path) == cfg
    cfg.save(tmp_path / "config.json")
    assert ExperimentConfig.load(tmp_path / "config.json") == cfg
    partial = tmp_path / "partial.yaml"
    partial.write_text("train:\n  lr: 0.05\n  epochs: 3\nmodel:\n  fusion_layer: 12\n")
    loaded = ExperimentConfig.load(partial, preset("vggsound"))
    assert (loaded.train.lr, loaded.train.epochs, loaded.model.fusion_layer) == (0.05, 3, 12)
    assert loaded.model.num_classes == 309  # the rest comes from the base
    partial.write_text("train:\n  learning_rate: 0.05\n")
    with pytest.raises(ConfigError, match=r"partial.yaml: train\.learning_rate: unknown key"):
        ExperimentConfig.load(partial)
    partial.write_text("train: [1, 2]\n")
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        ExperimentConfig.load(partial)


def test_optimizers():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    sgd = build_optimizer(model, preset("audioset-mini").train)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["dampening"] == 0 and not sgd.defaults["nesterov"]
    cfg = preset("audioset-mini").override(["train.optimizer=adamw", "train.weight_decay=0.05"]).train

    class WithSkip(torch.nn.Sequential):
        def no_weight_decay(self):
            return {n for n, p in self.named_parameters() if p.dim() <= 1}

    adamw = build_optimizer(WithSkip(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)), cfg)
    assert isinstance(adamw, torch.optim.AdamW)
    decayed = [g for g in adamw.param_groups if g["weight_decay"] == 0.05]
    assert [p.shape for p in decayed[0]["params"]] == [torch.Size([4, 4])]  # biases and norms skip decay


def test_tiny_preset_is_the_demo_setting():
    from mbt.demo.run import DemoConfig

    cfg = preset("tiny")
    assert cfg.model.hidden_size == 64 and cfg.train.init_from is None and cfg.data.image_size == 64
    assert DemoConfig().model == cfg.model and DemoConfig().recipe == cfg.data


def test_compile_setting_is_auto_and_compiles_on_cuda_only():
    from mbt.train.precision import resolve_compile

    cfg = ExperimentConfig()
    assert cfg.train.compile == "auto"
    assert resolve_compile("auto", torch.device("cpu")) is None
    assert resolve_compile("auto", torch.device("cuda")) == "default"
    assert resolve_compile(True, torch.device("cpu")) == "default"
    assert resolve_compile(False, torch.device("cuda")) is None
    assert resolve_compile("max-autotune-no-cudagraphs", torch.device("cuda")) == "max-autotune-no-cudagraphs"
    assert cfg.override(["train.compile=true"]).train.compile is True
    assert cfg.override(["train.compile=max-autotune-no-cudagraphs"]).train.compile == "max-autotune-no-cudagraphs"
    with pytest.raises(ConfigError, match="compile: expected true, false, 'auto'.*got 'fastest'"):
        cfg.override(["train.compile=fastest"])


def test_data_geometry_comes_from_the_model():
    from mbt.data.config import DataConfig
    from mbt.models.config import MBTConfig

    model = preset("tiny").model.replace(num_frames=6, n_sampled_frames=6, image_size=(48, 48),
                                          spectrogram_size=(300, 32))
    data = DataConfig(frame_rate=2.0).sized_for(model)
    assert (data.num_frames, data.image_size, data.num_spectrogram_frames, data.num_mel_bins) == (6, 48, 300, 32)
    assert data.audio_seconds == 3.0 and data.frame_rate == 2.0
    ExperimentConfig(model=model, data=data)  # agrees by construction
    audio = DataConfig().sized_for(model.replace(modalities=("spectrogram",)))
    assert (audio.num_frames, audio.image_size, audio.num_mel_bins) == (8, 224, 32)  # rgb fields untouched
    with pytest.raises(ConfigError, match=r"model\.image_size=\[48, 64\]"):
        DataConfig().sized_for(MBTConfig(image_size=(48, 64), patch_size=(16, 16)))
    # every preset sets its geometry once, in the model
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.data == cfg.data.sized_for(cfg.model)
