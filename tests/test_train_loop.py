"""The training loop in-process: overfitting, accumulation, non-finite losses, skipped items,
multi-clip evaluation, the step sampler, label spaces."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mbt.train.loop as loop
from mbt.data.annotations import Annotations, Item
from mbt.data.dataset import SkippedItem
from mbt.data.sampling import StepBatchSampler
from mbt.models.config import ConfigError
from mbt.models.mbt import MBT
from mbt.train.checkpoint import load_checkpoint
from mbt.train.data import check_same_classes, resolve_label_space
from mbt.train.distributed import init_distributed
from mbt.train.evaluate import evaluate
from mbt.train.loop import NonFiniteLossError, Trainer, UnreadableDataError, train
from mbt.train.metrics import classification_metrics
from mbt.train.precision import resolve_amp
from mbt.train.run_folder import RunFolder
from mbt.train.synthetic import SyntheticAVDataset

from .tiny_experiment import tiny_config, train_losses

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(cfg, path, resume=False) -> Trainer:
    return Trainer(cfg, RunFolder(path), init_distributed("cpu"), resume=resume, progress=False)


def test_overfits_a_tiny_batch(tmp_path):
    cfg = tiny_config("dataset.synthetic_items=8", "train.epochs=60", "train.mixup_alpha=0",
                      "train.label_smoothing=0", "model.stochastic_depth=0", "train.warmup_epochs=0",
                      "train.lr=0.5", "model.multi_label=false", "train.log_every=10", "train.checkpoint_every=1000")
    trainer = _trainer(cfg, tmp_path)
    data = trainer.train_set

    class SameNoise(type(data)):  # the same 8 examples every epoch
        def __getitem__(self, key):
            return super().__getitem__((0, key[1]))

    data.__class__ = SameNoise
    trainer.run()
    losses = train_losses(tmp_path)
    assert losses[0] > 0.3 and losses[-1] < 1e-3, losses


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    base = ("train.mixup_alpha=0", "model.stochastic_depth=0", "train.epochs=2", "train.max_grad_norm=0.5")
    train(tiny_config(*base), tmp_path / "a", progress=False)
    train(tiny_config(*base, "train.grad_accum_steps=2"), tmp_path / "b", progress=False)
    a, b = load_file(tmp_path / "a/final/model.safetensors"), load_file(tmp_path / "b/final/model.safetensors")
    assert any(not torch.equal(a[k], MBT(tiny_config().model).state_dict()[k]) for k in a)  # it trained
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config("train.checkpoint_every=2", "train.epochs=3")
    calls = {"n": 0}
    real_loss = loop.mbt_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(loop, "mbt_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 6 \(epoch 1\).*latest\.pt.*last good state"):
        train(cfg, tmp_path, progress=False)
    ck = load_checkpoint(tmp_path / "checkpoints/latest.pt")
    assert ck["step"] == 6
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert not (tmp_path / "final").exists()
    monkeypatch.setattr(loop, "mbt_loss", real_loss)  # the problem is gone: resume finishes the run
    results = train(cfg, tmp_path, resume=True, progress=False)
    assert results["steps"] == 12


def test_skipped_clips_are_counted_and_empty_batches_survive(tmp_path):
    bad = set(range(0, 32, 3))
    cfg = tiny_config("train.batch_size=4", "train.epochs=2")
    trainer = _trainer(cfg, tmp_path / "some")
    data = trainer.train_set

    damaged = {1, 4}

    class Broken(type(data)):
        def __getitem__(self, key):
            index = key[1]
            if index in bad:
                return SkippedItem(index, f"video{index}.mp4", "broken")
            damage = "2 decode error(s), 1 corrupt frame(s)" if index in damaged else ""
            return {**super().__getitem__(key), "path": f"video{index}.mp4", "damage": damage}

    class DamagedTest(type(trainer.eval_sets["test"])):
        def __getitem__(self, key):
            index = key[1]
            damage = "1 decode error(s)" if index in (0, 2) else ""
            return {**super().__getitem__(key), "path": f"test{index}.mp4", "damage": damage}

    data.__class__ = Broken
    trainer.eval_sets["test"].__class__ = DamagedTest
    results = trainer.run()
    assert results["skipped"]["train_clips_unreadable"] == len(bad)  # once per file, not per epoch
    assert results["skipped"]["train_clips_damaged"] == len(damaged)
    assert results["skipped"]["test_files_damaged"] == 2 and results["test"]["num_damaged_files"] == 2
    log_text = (tmp_path / "some/log.txt").read_text()
    assert f"skipped {len(bad)} unreadable training clips" in log_text
    assert "used 2 training clips decoded with concealed damage; first: video" in log_text
    assert "evaluated 2 test files decoded with concealed damage; first: test0.mp4: 1 decode error(s)" in log_text

    bad = set(range(32))  # every clip unreadable: no step is taken, and a run that read nothing fails
    trainer = _trainer(tiny_config("train.batch_size=4", "train.epochs=1"), tmp_path / "all")
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_set.__class__ = Broken
    with pytest.raises(UnreadableDataError, match=r"no training clip could be read in 8 steps\. The run stopped: "
                       r"32 distinct training files unreadable so far, 8 step\(s\) without a readable clip not "
                       r"taken; first causes: video\d+\.mp4: broken"):
        trainer.run()
    assert all(torch.equal(start[k], v) for k, v in trainer.model.state_dict().items())
    assert not (tmp_path / "all/final").exists() and not (tmp_path / "all/results.json").exists()


def test_unreadable_share_over_a_window_stops_the_run_and_empty_steps_are_not_taken(tmp_path):
    """Storage that goes away after 3 steps: step 4 reads nothing and is not taken (momentum
    would otherwise move the weights), step 5 brings the last 2 steps' unreadable share to 100%."""
    cfg = tiny_config("train.epochs=3", "train.checkpoint_every=1", "train.unreadable_window=2",
                      "train.max_unreadable_share=0.5", "dataset.skip_bad=true", "train.mixup_alpha=0")
    trainer = _trainer(cfg, tmp_path)
    reads = {"n": 0}

    class Outage(type(trainer.train_set)):
        def __getitem__(self, key):
            reads["n"] += 1
            if reads["n"] > 3 * 8:
                return SkippedItem(key[1], f"http://server/video{key[1]}.mp4", "connection refused")
            return super().__getitem__(key)

    trainer.train_set.__class__ = Outage
    with pytest.raises(UnreadableDataError, match=r"step 5: 16 of the 16 training clips of the last 2 steps \(100%\) "
                       r"could not be read, above train.max_unreadable_share=0.5\. The run stopped: \d+ distinct "
                       r"training files unreadable so far, 1 step\(s\) without a readable clip not taken; first "
                       r"causes: http://server/video\d+\.mp4: connection refused"):
        trainer.run()
    latest, previous = (load_checkpoint(tmp_path / f"checkpoints/{n}.pt") for n in ("latest", "previous"))
    assert (previous["step"], latest["step"]) == (3, 4) and latest["steps_without_clips"] == 1
    for k, v in previous["model"].items():
        assert torch.equal(v, latest["model"][k]), k
    assert latest["clips_trained"] == 24 and not (tmp_path / "final").exists()


def test_multi_clip_evaluation_averages_logits_per_video():
    cfg = tiny_config("data.num_test_clips=3", "data.num_test_crops=2", "dataset.synthetic_items=6")
    torch.manual_seed(0)
    model = MBT(cfg.model)
    torch.nn.init.normal_(model.head.weight, std=1.0)  # a non-zero head
    data = SyntheticAVDataset(cfg.model, cfg.data, "test", 6)
    assert len(data) == 36
    result = evaluate(model, data, batch_size=5, dist=init_distributed("cpu"), multi_label=True, progress=False)
    model.eval()
    with torch.no_grad():
        expected = []
        for v in range(6):
            views = [data[v * 6 + k] for k in range(6)]
            inputs = {m: torch.stack([x[m] for x in views]) for m in cfg.model.modalities}
            expected.append(model(inputs).logits.mean(0).numpy())
    assert np.allclose(result.logits, np.stack(expected), atol=1e-5)
    assert result.video_ids == [data.items[v].video_id for v in range(6)]
    assert result.num_views.tolist() == [6] * 6
    labels = np.stack([data[v * 6]["label"].numpy() for v in range(6)])
    assert np.array_equal(result.labels, labels)
    assert result.metrics["mAP"] == pytest.approx(
        classification_metrics(np.stack(expected), labels, multi_label=True)["mAP"], abs=1e-6)


def test_step_sampler_gives_every_layout_the_same_global_batches():
    n, batch, spe = 40, 8, 5
    single = list(StepBatchSampler(n, batch, spe, seed=3))
    assert len(single) == spe and all(len(b) == batch for b in single)
    flat = [i for b in single for _, i in b]
    assert sorted(flat) == sorted(set(flat))  # an epoch is a permutation
    for world, accum in [(2, 1), (2, 2), (4, 2), (1, 4)]:
        parts = [list(StepBatchSampler(n, batch, spe, rank=r, world_size=world, grad_accum_steps=accum, seed=3))
                 for r in range(world)]
        for step in range(spe):
            got = sorted(i for r in range(world) for b in parts[r][step * accum : (step + 1) * accum] for _, i in b)
            assert got == sorted(i for _, i in single[step]), (world, accum, step)
    resumed = StepBatchSampler(n, batch, spe, seed=3)
    resumed.start_step = 3
    assert list(resumed) == single[3:]
    resumed.epoch = 1
    assert list(resumed) != single[3:] and all(e == 1 for b in resumed for e, _ in b)
    # class-balanced draws favour rare items
    weights = torch.tensor([10.0] + [1.0] * 39)
    drawn = [i for b in StepBatchSampler(n, batch, spe, seed=0, weights=weights) for _, i in b]
    assert drawn.count(0) > 3


def test_run_folder_rules(tmp_path):
    train(tiny_config("train.epochs=1"), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_config("train.epochs=1"), tmp_path / "run", progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        train(tiny_config("train.epochs=1"), tmp_path / "empty", resume=True, progress=False)
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert results["test"]["num_examples"] == 32 and results["test"]["num_views"] == 64
    assert (tmp_path / "run/best/model.safetensors").exists() and (tmp_path / "run/final/config.json").exists()
    assert (tmp_path / "run/eval/test/predictions.jsonl").read_text().count("\n") == 32


def test_label_space_comes_from_the_training_annotations():
    cfg = tiny_config()
    items = [Item(f"v{i}.mp4", (i % 3,)) for i in range(6)]
    ann = Annotations(items, ["a", "b", "c"], multi_label=False)
    new, changes = resolve_label_space(cfg, ann)
    assert (new.model.num_classes, new.model.multi_label, new.model.label_names) == (3, False, ("a", "b", "c"))
    assert any("model.num_classes: 5 -> 3" in c for c in changes)
    assert resolve_label_space(new, ann) == (new, [])
    with pytest.raises(ConfigError, match=r"dataset\.test: its class list"):
        check_same_classes(ann, Annotations(items, ["a", "c", "b"]), "test")


@pytest.mark.parametrize(
    "options",
    [
        ("train.amp=bf16", "train.grad_checkpointing=true"),
        ("train.optimizer=adamw", "train.lr=0.001", "train.weight_decay=0.05", "train.balanced_sampling=true"),
        ("train.mixmod=true", "train.clip_per_replica=true", "train.max_grad_norm=null"),
        ("model.classifier=gap", "model.multi_label=false", "train.label_smoothing=0"),
        ("model.num_classes=7", "model.class_splits=[4,3]", "model.split_names=[verb,noun]", "model.multi_label=false"),
        ("model.fusion_layer=2", "model.modalities=[rgb]"),
    ],
)
def test_options_train_and_evaluate(tmp_path, options):
    results = train(tiny_config("train.epochs=1", *options), tmp_path, progress=False)
    assert results["steps"] == 4 and all(np.isfinite(train_losses(tmp_path)))
    assert results["test"]["num_examples"] == 32
    if "model.class_splits=[4,3]" in options:
        assert {"verb_top1", "noun_mean_class_acc", "action_top1", "action_top5"} <= set(results["test"])
        assert "noun_top5" not in results["test"]  # 3 nouns: top-5 is not reported


def test_fp16_needs_cuda():
    with pytest.raises(ConfigError, match="train.amp: 'fp16' needs a CUDA device"):
        resolve_amp("fp16", torch.device("cpu"))
    assert resolve_amp("auto", torch.device("cpu")) == (None, False)
    assert resolve_amp("bf16", torch.device("cpu")) == (torch.bfloat16, False)


def test_init_from_a_local_vit_checkpoint(tmp_path):
    import timm
    from safetensors.torch import save_file

    vit = timm.create_model("vit_base_patch16_224", pretrained=False, embed_dim=32, depth=2, num_heads=2,
                            mlp_ratio=2, patch_size=8, img_size=16, num_classes=0)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, path)
    trainer = _trainer(tiny_config(f"train.init_from={path}"), tmp_path / "run")
    for tower in trainer.model.towers.values():
        assert torch.equal(tower[1].mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight)
    assert "initialised from" in (tmp_path / "run/log.txt").read_text()


def test_freeze_trains_only_the_head(tmp_path):
    results = train(tiny_config("train.epochs=1", "train.freeze=true", "model.representation_size=16"), tmp_path,
                    progress=False)
    assert results["steps"] == 4
    torch.manual_seed(0)  # the loop's initialisation (train.seed 0)
    start = MBT(tiny_config("model.representation_size=16").model).state_dict()
    final = load_file(tmp_path / "final/model.safetensors")
    trained = {k for k in final if not torch.equal(final[k], start[k])}
    assert trained == {"head.weight", "head.bias", "pre_logits.weight", "pre_logits.bias"}
