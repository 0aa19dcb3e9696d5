"""The training step never makes the host wait for an accelerator: no op whose result the
host must read (`.item()`, `nonzero`, boolean masks, ...) between log steps."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mbt
import mbt.models.mbt as mbt_model
import mbt.train.loop as loop
import mbt.train.optim as optim
from mbt.train.distributed import init_distributed
from mbt.train.loop import Trainer
from mbt.train.run_folder import RunFolder

from .conftest import tiny_config as tiny_model_config
from .tiny_experiment import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

aten = torch.ops.aten
SYNCING = {
    aten._local_scalar_dense.default,  # .item(), float(t), bool(t), int(t)
    aten.is_nonzero.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten.equal.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor,
    aten.allclose.default,
}
"""Ops whose output size or value the host must know: on an accelerator each one waits
for every kernel queued before it."""


class SyncCounter(TorchDispatchMode):
    """Records the ops that would synchronise an accelerator (while `active`)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.active = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.active:
            bool_index = func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()))
            if func in SYNCING or bool_index:
                self.ops.append(str(func))
        return func(*args, **kwargs)


def test_the_counter_sees_the_ops_that_synchronise():
    x = torch.randn(4)
    with SyncCounter() as c:
        x.sum().item()
        float(x.max())
        _ = x[x > 0]
        (x > 0).nonzero()
        if x.sum() > -100:
            pass
        _ = x + 1  # not one
    assert len(c.ops) == 5, c.ops


@pytest.fixture
def accelerator_path(monkeypatch):
    """The code path of an accelerator, taken on the CPU."""
    monkeypatch.setattr(mbt_model, "host_sync_is_cheap", lambda device: False)
    monkeypatch.setattr(loop, "host_sync_is_cheap", lambda device: False)
    monkeypatch.setattr(optim, "FUSED_DEVICES", ("cuda", "cpu"))


def _counted_steps(trainer: Trainer) -> list[tuple[bool, list[str]]]:
    """Wraps the trainer's step: per step, (whether it was a read step, the syncing ops seen)."""
    steps: list[tuple[bool, list[str]]] = []
    real = trainer._train_step

    def counted(batches, read):
        counter = SyncCounter()

        class LoaderUnwatched:  # on a GPU host the loader's work is on the CPU, in its workers
            def __next__(self):
                counter.active = False
                try:
                    return next(batches)
                finally:
                    counter.active = True

        with counter:
            out = real(LoaderUnwatched(), read)
        steps.append((read or trainer.read_every_step, counter.ops))
        return out

    trainer._train_step = counted
    return steps


CASES = {
    "bottleneck token": (),
    "vanilla gap, mixmod off, adamw": ("model.fusion=vanilla", "model.classifier=gap", "train.optimizer=adamw"),
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_no_host_sync_between_log_steps(tmp_path, accelerator_path, overrides):
    cfg = tiny_config("train.epochs=2", "train.log_every=5", "train.checkpoint_every=7", "model.dropout_rate=0.1",
                      "model.attention_dropout_rate=0.1", "model.stochastic_depth=0.5", *overrides)
    trainer = Trainer(cfg, RunFolder(tmp_path), init_distributed("cpu"), resume=False, progress=False)
    assert not trainer.read_every_step
    steps = _counted_steps(trainer)
    trainer.run()
    assert len(steps) == 8
    assert [read for read, _ in steps] == [False, False, False, False, True, False, True, True]
    assert [ops for read, ops in steps if not read] == [[]] * 5


def test_an_item_in_the_step_is_caught(tmp_path, accelerator_path, monkeypatch):
    real_loss = loop.mbt_loss

    def logged(*args, **kwargs):
        loss = real_loss(*args, **kwargs)
        print(loss.item())
        return loss

    monkeypatch.setattr(loop, "mbt_loss", logged)
    trainer = Trainer(tiny_config("train.epochs=1"), RunFolder(tmp_path), init_distributed("cpu"), resume=False,
                      progress=False)
    steps = _counted_steps(trainer)
    trainer.run()
    assert all(ops == ["aten._local_scalar_dense.default"] for _, ops in steps)


VARIANTS = {
    "bottleneck token": {},
    "bottleneck gap": {"classifier": "gap"},
    "vanilla": {"fusion": "vanilla"},
    "early shared": {"fusion": "vanilla", "fusion_layer": 0, "share_encoder": True},
    "late": {"fusion_layer": 4},
    "late gap": {"fusion_layer": 4, "classifier": "gap"},
}


@pytest.mark.parametrize("changes", VARIANTS.values(), ids=VARIANTS.keys())
def test_training_forward_and_backward_run_on_the_meta_device(changes):
    """The meta device has no data: any op that needs a value on the host fails there."""
    cfg = tiny_model_config(stochastic_depth=0.5, dropout_rate=0.1, attention_dropout_rate=0.1, **changes)
    with torch.device("meta"):
        model = mbt.MBT(cfg).train()
        inputs = {"rgb": torch.randn(2, cfg.num_frames, 3, *cfg.image_size),
                  "spectrogram": torch.randn(2, *cfg.spectrogram_size)}
    out = model(inputs)
    out.logits.sum().backward()
    assert out.logits.device.type == "meta"
    unused = {"bottleneck"} if cfg.fusion_layer >= cfg.num_layers else set()  # late fusion never uses them
    assert all(p.grad is not None for n, p in model.named_parameters() if n not in unused)


def test_a_non_finite_loss_between_read_steps_stops_at_the_next_one(tmp_path, accelerator_path, monkeypatch):
    """On accelerators the loss is read at log, validation and checkpoint steps: a NaN in
    between stops the run at the next read step, before any checkpoint holds it."""
    from mbt.train.checkpoint import load_checkpoint
    from mbt.train.loop import NonFiniteLossError

    calls = {"n": 0}
    real_loss = loop.mbt_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 7 else loss  # step 7 of 12: not a read step

    monkeypatch.setattr(loop, "mbt_loss", poisoned)
    cfg = tiny_config("train.checkpoint_every=3", "train.log_every=4", "train.epochs=3")
    trainer = Trainer(cfg, RunFolder(tmp_path), init_distributed("cpu"), resume=False, progress=False)
    with pytest.raises(NonFiniteLossError, match=r"step 7 \(epoch 1\).*2 non-finite step\(s\) since step 4"):
        trainer.run()
    assert calls["n"] == 8  # the NaN weights of step 7 make step 8 (a read step) non-finite too: stopped there
    ck = load_checkpoint(tmp_path / "checkpoints/latest.pt")
    assert ck["step"] == 6 and all(torch.isfinite(v).all() for v in ck["model"].values())
