"""The training loop: one process per device (torchrun), one plain loop.

Per optimizer step: set the lr of the step, run `grad_accum_steps` micro-batches (mixup,
forward under autocast, the official loss, backward; DDP averages the gradients on the
last one, FSDP (`train.fsdp`) reduce-scatters them to their shards), unscale, clip by
global norm, check the loss is finite, step. The step never waits for an accelerator: loss,
gradient norm and finiteness add up on the device and are read at log, validation and
checkpoint steps only (docs/benchmarks.md, "GPU"). Each train log line reports the throughput
(`examples_per_s`) and `data_wait`, the fraction of step time spent waiting for the
DataLoader (near 0: the model never waits for data). Validation runs
every `eval_every` steps (or every epoch) and keeps the best model; checkpoints are
written every `checkpoint_every` steps and at the end; the test split is evaluated with
the final model, as the official code reports it.

Run folder:

    config.yaml          the resolved ExperimentConfig (enough to resume)
    log.txt              the log
    metrics.jsonl        one JSON record per train log line / evaluation
    curves.png           loss, learning rate and validation metrics, redrawn as the run goes
    tb/                  TensorBoard events (when tensorboard is installed); metrics.csv etc.: train.loggers
    checkpoints/latest.pt the last checkpoint; previous.pt the one before (checksummed, see checkpoint.py)
    best/                best validation model (save_pretrained format)
    final/               final model (save_pretrained format)
    eval/<split>/        predictions.jsonl / .npz of the final evaluations
    results.json         final metrics, best score, counts of skipped items

Only rank 0 writes the folder; with several nodes it must be on storage every node sees
(every process reads the checkpoint to resume).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.dataset import ClipError
from ..data.loader import build_loader, damaged_in, once_per_file, worker_message
from ..data.sampling import StepBatchSampler
from ..data.shards import ShardStream, build_stream_loader
from ..models.config import ConfigError
from ..models.mbt import MBT, host_sync_is_cheap
from ..models.pretrained import save_pretrained
from .checkpoint import (
    LATEST,
    PREVIOUS,
    load_resume_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import ExperimentConfig
from .data import build_dataset, check_same_classes, load_split_annotations, resolve_label_space, weights_chosen_on
from .distributed import (
    Dist,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    broadcast_parameters,
    full_state_dict,
    fully_shard_blocks,
    init_distributed,
    shutdown,
)
from .evaluate import EvalResult, autocast, evaluate, json_safe, write_predictions
from .losses import drop_modality, mbt_loss, mixup
from .metrics import primary_metric
from .optim import Schedule, build_optimizer
from .precision import resolve_amp, resolve_compile
from .run_folder import MetricsLog, RunFolder, default_run_dir, setup_logging

log = logging.getLogger("mbt.train")


class NonFiniteLossError(RuntimeError):
    """The loss (or, without fp16 scaling, the gradient) became NaN or infinite."""


def _format(metrics: dict[str, float], keys: tuple[str, ...] = ()) -> str:
    shown = keys or tuple(k for k in metrics if not k.startswith("num_"))
    return " ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics)


def train(cfg: ExperimentConfig, run_dir: str | Path | None = None, *, resume: bool = False,
          progress: bool = True, datasets: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (default `runs/<name>-<time>`); with `resume`, continue
    the run saved there. Under torchrun every process calls this. Returns the results
    written to results.json.

    `datasets`: ready-made {'train': ..., 'val': ..., 'test': ...} datasets (with an
    `annotations` attribute, e.g. `mbt.data.dataset.InMemoryDataset`) used instead of
    those `cfg.dataset` describes."""
    d = init_distributed(cfg.train.device)
    try:
        if run_dir is None:
            run_dir = broadcast_object(str(default_run_dir(cfg.name)), d)
        return Trainer(cfg, RunFolder(run_dir), d, resume=resume, progress=progress, datasets=datasets).run()
    finally:
        for handler in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
            log.removeHandler(handler)
            handler.close()
        shutdown(d)


class Trainer:
    """State of one training run; `run()` does the work."""

    def __init__(self, cfg: ExperimentConfig, folder: RunFolder, d: Dist, *, resume: bool, progress: bool,
                 datasets: dict[str, Any] | None = None) -> None:
        self.folder, self.dist, self.resume, self.progress = folder, d, resume, progress
        if d.is_main:
            folder.root.mkdir(parents=True, exist_ok=True)
            if not resume and (folder.latest.exists() or (folder.checkpoints / PREVIOUS).exists()):
                raise ConfigError(
                    f"{folder.root} already holds a run (checkpoints/{LATEST}); pass --resume to continue it "
                    "or choose another run folder"
                )
            if resume and not (folder.latest.exists() or (folder.checkpoints / PREVIOUS).exists()):
                raise FileNotFoundError(f"{folder.latest}: no checkpoint to resume from")
        barrier(d)
        setup_logging(folder, d)
        tc = cfg.train
        self.amp_dtype, use_scaler = resolve_amp(tc.amp, d.device)
        self.micro_batch = tc.micro_batch_size(d.world_size)

        given = dict(datasets or {})
        train_ann = given["train"].annotations if "train" in given else load_split_annotations(cfg, "train")
        if train_ann is None:
            raise ConfigError("dataset.train: no training annotation file given")
        cfg, changes = resolve_label_space(cfg, train_ann)
        for line in changes:
            log.info("%s", line)
        for note in train_ann.notes:  # e.g. vggsound.csv read without a split: test rows in training
            log.warning("dataset.train: %s", note)
        self.cfg = cfg
        self.train_set = given["train"] if "train" in given else build_dataset(cfg, "train", train_ann)
        self.eval_sets: dict[str, Any] = {}
        for split in ("val", "test"):  # read now, so a bad file stops the run before training
            if split in given:
                check_same_classes(train_ann, given[split].annotations, split)
                self.eval_sets[split] = given[split]
                continue
            ann = None if datasets is not None else load_split_annotations(cfg, split)
            if ann is not None:
                check_same_classes(train_ann, ann, split)
                self.eval_sets[split] = build_dataset(cfg, split, ann)
        self.annotation_problems = len(train_ann.problems)
        self.stream = isinstance(self.train_set, ShardStream)
        self.num_examples = self.train_set.shards.num_samples if self.stream else len(self.train_set)
        self.schedule = Schedule.from_config(tc, self.num_examples)
        if d.is_main:
            cfg.save(folder.config)
        m = cfg.model
        self.primary = primary_metric(m.multi_label, m.class_splits, m.split_names)

        torch.manual_seed(tc.seed)
        self.model = MBT(cfg.model)
        if tc.init_from and not resume and d.is_main:  # DDP copies rank 0's weights to the others
            report = _init_from_vit(self.model, tc.init_from)
            log.info("initialised from %s: %s", tc.init_from, report)
        if tc.freeze:
            for name, p in self.model.named_parameters():
                p.requires_grad_(name.startswith(("head.", "pre_logits.")))
        self.model.to(d.device)
        if tc.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.fsdp = tc.fsdp and d.enabled
        if self.fsdp:  # rank 0 holds the initial weights: share them, then shard before the optimizer sees them
            broadcast_parameters(self.model, d)
            fully_shard_blocks(self.model, [blk for tower in self.model.towers.values() for blk in tower])
        self.optimizer = build_optimizer(self.model, tc)
        self.scaler = torch.amp.GradScaler(d.device.type, enabled=use_scaler)
        self.mix_rng = np.random.default_rng([tc.seed, d.rank])
        torch.manual_seed(int(np.random.SeedSequence([tc.seed, d.rank, 1]).generate_state(1)[0]))
        np.random.seed(np.random.SeedSequence([tc.seed, d.rank, 2]).generate_state(1)[0])

        self.step = 0
        self.best: dict[str, Any] | None = None
        self.last_val: EvalResult | None = None
        self.skipped: list[tuple[str, str]] = []  # unreadable training clips (this process; rank 0: + resumed)
        self.damaged: list[tuple[str, str]] = []  # training clips decoded with concealed damage (this run)
        self.data_wait = 0.0  # seconds spent waiting for the loader since the last log line
        # [loss, grad_norm, non-finite steps] summed on the device since the last log line: an
        # accelerator's queue of kernels is never drained to read them, except at read steps
        self.sums, self.steps_in_sums = torch.zeros(3, device=d.device), 0
        self.read_every_step = host_sync_is_cheap(d.device)
        if resume:
            self._load(folder.latest)

        self.ddp: DistributedDataParallel | None = None
        net: nn.Module = self.model
        if d.enabled and not self.fsdp:
            # a late-fusion bottleneck model never uses its bottleneck tokens in training
            unused = (self.model.bottleneck is not None and "bottleneck" not in m.fusion_schedule(train=True)
                      ) or tc.modality_dropout > 0
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[d.local_rank] if d.device.type == "cuda" else None,
                find_unused_parameters=unused,
            )
            net = self.ddp
        self.compile_mode = resolve_compile(tc.compile, d.device)
        self.net = net if self.compile_mode is None else torch.compile(net, mode=self.compile_mode)
        self.metrics_log = MetricsLog(folder, d.is_main, tc.loggers, cfg.to_dict())

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        """The checkpoint; collective (gathers every process's random state)."""
        rngs = all_gather_objects(rng_state(self.mix_rng), self.dist)
        skipped = once_per_file(s for part in all_gather_objects(self.skipped, self.dist) for s in part)
        if self.fsdp:  # full tensors on rank 0, optimizer state keyed by parameter names
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            model_state = full_state_dict(self.model)
            optimizer_state = get_optimizer_state_dict(
                self.model, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            model_state, optimizer_state = self.model.state_dict(), self.optimizer.state_dict()
        return {
            "step": self.step,
            "fsdp": self.fsdp,
            "model": model_state,
            "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "best": self.best,
            "skipped": skipped,
            "world_size": self.dist.world_size,
            "config": self.cfg.to_dict(),
        }

    def _save(self) -> None:
        state = self._state()
        if self.dist.is_main:
            save_checkpoint(state, self.folder.latest)
            log.info("checkpoint: step %d -> %s", self.step, self.folder.latest)
        barrier(self.dist)

    def _load(self, path: Path) -> None:
        stale = remove_stale_temporaries(path.parent) if self.dist.is_main else []
        if stale:
            log.info("removed %d unfinished checkpoint file(s) left by an interrupted write", len(stale))
        ck, path = load_resume_checkpoint(path.parent)
        if ck.get("fsdp", False) != self.fsdp:
            raise ConfigError(
                f"{path}: written {'with' if ck.get('fsdp') else 'without'} FSDP sharding; resume it with the same "
                f"train.fsdp and a world size {'> 1' if ck.get('fsdp') else 'of 1 or train.fsdp=false'}"
            )
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, ck["model"], options=options)
            set_optimizer_state_dict(self.model, self.optimizer, ck["optimizer"], options=options)
        else:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.step, self.best = int(ck["step"]), ck["best"]
        changed = _changed_keys(ck["config"], self.cfg.to_dict())
        if changed:
            log.warning("the config differs from the checkpoint's in %s; the resumed run is not an exact "
                        "continuation", changed)
        self.skipped = list(ck["skipped"]) if self.dist.is_main else []
        if ck["world_size"] == self.dist.world_size:
            set_rng_state(ck["rng"][self.dist.rank], self.mix_rng)
        else:
            log.warning("resuming with %d processes instead of %d: random states are not restored, so "
                        "stochastic-depth masks and mixup lambdas (not the data order or augmentation) "
                        "differ from an uninterrupted run",
                        self.dist.world_size, ck["world_size"])
        log.info("resumed from %s at step %d of %d", path, self.step, self.schedule.total_steps)

    # ------------------------------------------------------------------ training
    def _loader(self) -> tuple[DataLoader, StepBatchSampler]:
        """The loader of training micro-batches and its sampler (set `epoch` and `start_step`).
        The raw DataLoader is iterated: a micro-batch left empty by skipped clips still takes
        its place in the step, so every process runs the same steps."""
        tc, d = self.cfg.train, self.dist
        loader = build_loader(self.train_set, self.micro_batch, train=True, num_workers=tc.num_workers,
                              distributed=d.enabled, seed=tc.seed, balanced=tc.balanced_sampling,
                              grad_accum_steps=tc.grad_accum_steps, pin_memory=d.device.type == "cuda")
        assert loader.sampler.steps_per_epoch == self.schedule.steps_per_epoch
        return loader.loader, loader.sampler

    def _stream_batches(self, consumed: int) -> Iterator[dict[str, Any]]:
        """Micro-batches of the shard stream from this process's `consumed`-th on: passes over
        the shards back to back, each in its own order. (Epochs of the schedule count
        `num_examples // batch_size` steps and need not start with a pass.)"""
        stream: ShardStream = self.train_set
        loader = build_stream_loader(stream, self.micro_batch, self.cfg.train.num_workers).loader
        epoch = 0
        while True:
            stream.set_epoch(epoch)
            units = len(stream)
            if units == 0:
                raise ConfigError(
                    f"dataset.train: {len(stream.shards.urls)} shards cannot give every one of {self.dist.world_size} "
                    f"process(es) a batch of {self.micro_batch}; prepare smaller shards (mbt data prepare "
                    "--shard-size) or use fewer loader workers")
            if consumed < units:
                dropped = stream.dropped_in_epoch(epoch)
                if dropped and self.dist.is_main:
                    log.info("shard pass %d: %d of %d items left out, to give every process whole batches",
                             epoch, dropped, stream.shards.num_samples)
                stream.start_unit = consumed
                yield from loader
                consumed = 0
            else:
                consumed -= units
            epoch += 1

    def _micro_step(self, batch: dict[str, Any], sync: bool, micro: int = 0) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns its (unscaled) loss."""
        tc, m, d = self.cfg.train, self.cfg.model, self.dist
        context = self.ddp.no_sync() if (self.ddp is not None and not sync) else nullcontext()
        if self.fsdp:  # reduce-scatter the gradients on the last micro-batch only
            self.model.set_requires_gradient_sync(sync)
        with context:
            empty = batch["batch_size"] == 0
            if empty:  # every clip was unreadable: a zero-weight dummy example keeps DDP in step
                batch = self._dummy_batch()
            inputs = {k: batch[k].to(d.device, non_blocking=True) for k in m.modalities}
            labels = batch["label"].to(d.device, non_blocking=True)
            inputs, targets, _ = mixup(inputs, labels, tc.mixup_alpha, self.mix_rng, tc.mixmod)
            if tc.modality_dropout:
                inputs = drop_modality(inputs, tc.modality_dropout, np.random.default_rng([tc.seed, self.step, micro]))
            with autocast(d.device, self.amp_dtype):
                out = self.net(inputs)
            loss = mbt_loss(
                out.logits, out.modality_logits, targets, multi_label=m.multi_label,
                class_splits=m.class_splits, label_smoothing=tc.label_smoothing,
            )
            if empty:
                loss = loss * 0.0
            self.scaler.scale(loss / tc.grad_accum_steps).backward()
        return loss.detach()

    def _dummy_batch(self) -> dict[str, Any]:
        m = self.cfg.model
        batch: dict[str, Any] = {"label": torch.zeros(1, m.num_classes)}
        if "rgb" in m.modalities:
            batch["rgb"] = torch.zeros(1, m.num_frames, 3, *m.image_size)
        if "spectrogram" in m.modalities:
            batch["spectrogram"] = torch.zeros(1, *m.spectrogram_size)
        return batch

    def _clip(self) -> torch.Tensor:
        """Unscale, clip and (with `clip_per_replica`) average the gradients; returns the norm."""
        tc, d = self.cfg.train, self.dist
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = tc.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):  # FSDP: the norm of sharded gradients is a DTensor
            norm = norm.full_tensor()
        if self.ddp is not None and tc.clip_per_replica:  # DDP did not average: clipped locally first
            for p in params:
                torch_dist.all_reduce(p.grad)
                p.grad.div_(d.world_size)
        return norm

    def _train_step(self, batches: Any, read: bool) -> list[float] | None:
        """One optimizer step. Its loss, gradient norm and finiteness add up on the device;
        with `read` (log, validation, checkpoint and final steps, or every step where host
        reads are free) the sums since the last log line come to the host in one transfer,
        and a non-finite loss stops the run before this step's update. Returns the sums
        read ([loss, grad_norm, non-finite steps] over every process) or None."""
        tc, d = self.cfg.train, self.dist
        lr = self.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=d.device)
        for micro in range(tc.grad_accum_steps):
            tic = time.perf_counter()
            try:
                batch = next(batches)
            except ClipError as e:  # from a worker: its message first, not its traceback
                raise ClipError(worker_message(e)) from e
            self.data_wait += time.perf_counter() - tic
            if batch["skipped"]:
                self.skipped = once_per_file([*self.skipped, *batch["skipped"]])
            if any(batch.get("damage", ())):
                self.damaged = once_per_file([*self.damaged, *damaged_in(batch)])
            last = micro == tc.grad_accum_steps - 1
            loss_sum += self._micro_step(batch, sync=last and not tc.clip_per_replica, micro=micro)
        norm = self._clip().float().to(d.device)
        loss = loss_sum / tc.grad_accum_steps
        bad = ~torch.isfinite(loss)
        if not self.scaler.is_enabled():  # with fp16 scaling an infinite gradient is expected now and then
            bad = bad | ~torch.isfinite(norm)
        self.sums += torch.stack([loss, norm, bad.float()])
        self.steps_in_sums += 1
        sums = None
        if read or self.read_every_step:
            sums = all_reduce_sum(self.sums.clone(), d).tolist()  # every process takes the same decision
            if sums[2] > 0:
                self._non_finite(sums)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return sums

    def _due(self, step: int) -> tuple[bool, bool, bool]:
        """Whether a log line, a validation and a checkpoint are due after `step` steps."""
        tc, spe, total = self.cfg.train, self.schedule.steps_per_epoch, self.schedule.total_steps
        validate = (step % tc.eval_every == 0) if tc.eval_every else step % spe == 0
        return (step % tc.log_every == 0 or step == total, "val" in self.eval_sets and (validate or step == total),
                step % tc.checkpoint_every == 0 or step == total)

    def _non_finite(self, sums: list[float]) -> None:
        epoch = self.step // self.schedule.steps_per_epoch
        first = self.step - self.steps_in_sums + 1
        where = (f"{self.folder.latest} (it is the last good state; it is kept)"
                 if self.folder.latest.exists() else "none: no checkpoint was written before this step")
        span = "" if self.read_every_step or first == self.step else (
            f"; {int(sums[2])} non-finite step(s) since step {first}: on accelerators the loss is read only at "
            "log, validation and checkpoint steps, so those earlier updates were applied (never saved)")
        mean = self.steps_in_sums * self.dist.world_size
        raise NonFiniteLossError(
            f"non-finite training loss at step {self.step} (epoch {epoch}): loss={sums[0] / mean}, "
            f"grad_norm={sums[1] / mean}{span}. The update was not applied and the run stopped. Last checkpoint: "
            f"{where}. Try a lower train.lr, gradient clipping (train.max_grad_norm), or train.amp='off'; resume "
            "with --resume."
        )

    # ------------------------------------------------------------------ evaluation
    def _plain_model(self) -> MBT:
        """The model with whole weights on this process's device: itself, or under FSDP a
        gathered copy (collective)."""
        if not self.fsdp:
            return self.model
        with torch.device("meta"):
            model = MBT(self.cfg.model)
        model.load_state_dict(full_state_dict(self.model, everywhere=True), assign=True)
        return model

    def _evaluate(self, split: str, model: nn.Module | None = None) -> EvalResult:
        tc, m = self.cfg.train, self.cfg.model
        return evaluate(
            model or self.model, self.eval_sets[split], batch_size=tc.eval_batch_size or self.micro_batch,
            dist=self.dist, amp_dtype=self.amp_dtype, num_workers=tc.num_workers, multi_label=m.multi_label,
            class_splits=m.class_splits, split_names=m.split_names, desc=split, progress=self.progress,
        )

    def _write_predictions(self, split: str, result: EvalResult) -> None:
        m = self.cfg.model
        if self.dist.is_main:
            write_predictions(result, self.folder.eval_dir(split), class_names=m.label_names or
                              [str(i) for i in range(m.num_classes)], multi_label=m.multi_label,
                              class_splits=m.class_splits, split_names=m.split_names)

    def _validate(self) -> None:
        model = self._plain_model()
        result = self._evaluate("val", model)
        self.last_val = result
        if self.step == self.schedule.total_steps:
            self._write_predictions("val", result)
        score = result.metrics.get(self.primary, float("nan"))
        self.metrics_log.write("val", self.step, result.metrics)
        log.info("val step %d: %s", self.step, _format(result.metrics))
        if math.isfinite(score) and (self.best is None or score >= self.best["value"]):  # ties: the later model
            self.best = {"step": self.step, "metric": self.primary, "value": score}
            if self.dist.is_main:
                save_pretrained(model, self.folder.best, data_config=self.cfg.data,
                                extra={"weights_chosen_on": weights_chosen_on(self.cfg)})
                log.info("best %s %.4f: saved %s", self.primary, score, self.folder.best)
        barrier(self.dist)

    def run(self) -> dict[str, Any]:
        tc, d, schedule = self.cfg.train, self.dist, self.schedule
        spe, total = schedule.steps_per_epoch, schedule.total_steps
        log.info(
            "training %s: %d examples, %d steps/epoch, %d steps (%d epochs), warmup %.1f steps, global batch %d "
            "= %d processes x %d accumulation x %d, device %s, amp %s",
            self.cfg.name, self.num_examples, spe, total, tc.epochs, schedule.warmup_steps, tc.batch_size,
            d.world_size, tc.grad_accum_steps, self.micro_batch, d.device, self.amp_dtype or "off",
        )
        log.info("model: %s", "eager" if self.compile_mode is None else f"torch.compile, mode {self.compile_mode}")
        batches: Any = None  # the stream's generator, or each epoch's loader iterator
        if self.stream:
            batches = self._stream_batches(self.step * tc.grad_accum_steps)
        else:
            loader, sampler = self._loader()
        self.model.train()
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (self.progress and d.is_main))
        busy, seen = 0.0, 0  # seconds spent in training steps (not evaluation) since the last log line
        resumed_at = self.step
        try:
            while self.step < total:
                epoch, start = divmod(self.step, spe)
                if not self.stream:
                    sampler.epoch, sampler.start_step = epoch, start
                    batches = iter(loader)
                for _ in range(start, spe):
                    tic = time.perf_counter()
                    first = self.compile_mode is not None and self.step == resumed_at
                    sums = self._train_step(batches, read=first or any(self._due(self.step + 1)))
                    busy += time.perf_counter() - tic
                    if first:
                        log.info("torch.compile (mode %s): the first step took %.1f s, compilation included",
                                 self.compile_mode, time.perf_counter() - tic)
                    seen += tc.batch_size
                    bar.update(1)
                    if self._due(self.step)[0]:
                        mean = self.steps_in_sums * d.world_size
                        record = {"loss": sums[0] / mean, "lr": schedule.lr(self.step - 1),
                                  "grad_norm": sums[1] / mean, "epoch": self.step / spe,
                                  "examples_per_s": seen / max(busy, 1e-9),
                                  "data_wait": self.data_wait / max(busy, 1e-9)}
                        self.metrics_log.write("train", self.step, record)
                        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.3g}")
                        log.info("step %d/%d epoch %.2f %s", self.step, total, record["epoch"],
                                 _format(record, ("loss", "lr", "grad_norm", "examples_per_s", "data_wait")))
                        busy, seen, self.data_wait = 0.0, 0, 0.0
                        self.sums.zero_()
                        self.steps_in_sums = 0
                    _, validate, save = self._due(self.step)
                    if validate:
                        self._validate()
                    if save:
                        self._save()
        finally:
            bar.close()
            if self.stream:
                batches.close()  # stops the stream's loader workers before the final evaluation
        return self._finish()

    def _finish(self) -> dict[str, Any]:
        d, folder = self.dist, self.folder
        final = self._plain_model()
        if d.is_main:
            final.save_pretrained(folder.final, data_config=self.cfg.data)
        results: dict[str, Any] = {"steps": self.step, "best": self.best, "final_model": str(folder.final)}
        if self.best is not None:
            results["best_model"] = str(folder.best)
            results["weights_chosen_on"] = weights_chosen_on(self.cfg)
        eval_damaged: dict[str, list[tuple[str, str]]] = {}
        if self.last_val is not None:
            results["val"] = json_safe(self.last_val.metrics)
            eval_damaged["val"] = self.last_val.damaged
        if "test" in self.eval_sets:  # the final model, as the official code reports
            result = self._evaluate("test", final)
            self.metrics_log.write("test", self.step, result.metrics)
            log.info("test (%d videos): %s", len(result.video_ids), _format(result.metrics))
            results["test"] = json_safe(result.metrics)
            self._write_predictions("test", result)
            eval_damaged["test"] = result.damaged
        skipped = once_per_file(s for part in all_gather_objects(self.skipped, d) for s in part)
        damaged = once_per_file(s for part in all_gather_objects(self.damaged, d) for s in part)
        dropped = {s: len(getattr(ds, "dropped", [])) for s, ds in {"train": self.train_set, **self.eval_sets}.items()}
        results["skipped"] = {
            "train_clips_unreadable": len(skipped),
            "train_clips_damaged": len(damaged),
            "missing_files_left_out": dropped,
            "annotation_rows_skipped_train": self.annotation_problems,
            **{f"{split}_files_damaged": len(files) for split, files in eval_damaged.items()},
        }
        if skipped:
            log.warning("skipped %d unreadable training clips (skip_bad); first: %s", len(skipped),
                        "; ".join(f"{p}: {r}" for p, r in skipped[:3]))
        if damaged:
            log.warning("used %d training clips decoded with concealed damage; first: %s", len(damaged),
                        "; ".join(f"{p}: {r}" for p, r in damaged[:3]))
        for split, files in eval_damaged.items():
            if files:
                log.warning("evaluated %d %s files decoded with concealed damage; first: %s", len(files), split,
                            "; ".join(f"{p}: {r}" for p, r in files[:3]))
        if any(dropped.values()):
            log.warning("left out items whose media file is missing: %s", dropped)
        if d.is_main:
            with open(folder.results, "w") as f:
                json.dump(results, f, indent=2)
            log.info("results: %s", folder.results)
        self.metrics_log.close()
        barrier(d)
        return results


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(prefix + key)
    return out


def _init_from_vit(model: MBT, source: str) -> dict[str, Any]:
    from ..weights.vit import init_from_vit

    return init_from_vit(model, source)
