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
    checkpoints/latest.pt the last checkpoint; previous.pt the one before (checksummed, see checkpoint.py);
                         with FSDP they hold the step and random states, and name step-<N>/, the
                         per-process shards of the weights and optimizer state (DCP)
    logs/rank<R>.txt     with several processes, each process's own log
    best/                best validation model (save_pretrained format)
    final/               final model (save_pretrained format)
    eval/<split>/        predictions.jsonl / .npz of the final evaluations
    results.json         final metrics, best score, counts of skipped items
    run.lock             who is writing the folder (`run_folder.run_lock`; empty when no run is)

Rank 0 writes the folder (every process its shards and its log); with several nodes it must
be on a filesystem every node sees (every process reads the checkpoint to resume).

`resume='auto'` (`--resume auto`) continues the run of the folder from its latest good
checkpoint when it holds one and starts it otherwise, so one command line serves the first
start, `torchrun --max-restarts` and a scheduler's requeue (`continues_run`).

With `dataset.skip_bad`, unreadable clips are left out and counted; a step none of whose clips
could be read is not taken, a share of unreadable clips above `train.max_unreadable_share`
over `train.unreadable_window` steps stops the run (`UnreadableDataError`), and so does a run
that read no clip at all: storage that went away is never a successful run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..data.loader import AVLoader, build_loader, once_per_file
from ..data.shards import ShardStream, build_stream_loader
from ..device import host_sync_is_cheap
from ..errors import ConfigError
from ..io import atomic_write
from ..models.mbt import MBT
from ..models.pretrained import save_pretrained
from .checkpoint import (
    LATEST,
    PREVIOUS,
    SHARDED,
    load_checkpoint,
    load_resume_checkpoint,
    read_shards,
    remove_shard_folders,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_shards,
)
from .config import ExperimentConfig
from .data import (
    build_dataset,
    check_same_classes,
    describe_weights_choice,
    load_split_annotations,
    resolve_label_space,
)
from .distributed import (
    Dist,
    all_gather_objects,
    all_reduce_ints,
    all_reduce_sum,
    barrier,
    broadcast_object,
    broadcast_parameters,
    full_state_dict,
    fully_shard_blocks,
    host_group,
    init_distributed,
    shutdown,
)
from .evaluate import EvalResult, evaluate, json_safe, write_predictions
from .init_from import init_from
from .losses import drop_modality, mbt_loss, mixup
from .metrics import primary_metric
from .optim import Schedule, build_optimizer
from .precision import autocast, resolve_amp, resolve_compile
from .run_folder import MetricsLog, RunFolder, default_run_dir, run_lock, setup_logging

log = logging.getLogger("mbt.train")


Resume = bool | Literal["auto"]
"""False: a new run; True: continue the run of the folder; 'auto': continue it when the folder
holds a checkpoint, else start it."""
KILL_AT_STEP = "MBT_TEST_KILL_AT_STEP"
"""Test-only: rank 0 SIGKILLs itself after this step in the first attempt of a torchrun job
(TORCHELASTIC_RESTART_COUNT 0 or unset), to test restarts."""


class NonFiniteLossError(RuntimeError):
    """The loss (or, without fp16 scaling, the gradient) became NaN or infinite."""


class UnreadableDataError(RuntimeError):
    """Too many training clips could not be read (skip_bad): the message has the counts and causes."""


def continues_run(folder: RunFolder, resume: Resume) -> bool:
    """Whether this run continues the one saved in `folder`: `resume=True` needs a checkpoint
    there, 'auto' continues one when there is one, False refuses a folder that holds one.
    (Which checkpoint, latest or previous, is `load_resume_checkpoint`'s choice.)"""
    saved = folder.latest.exists() or (folder.checkpoints / PREVIOUS).exists()
    if resume == "auto":
        return saved
    if resume and not saved:
        raise FileNotFoundError(f"{folder.latest}: no checkpoint to resume from")
    if not resume and saved:
        raise ConfigError(
            f"{folder.root} already holds a run (checkpoints/{LATEST}); pass --resume to continue it "
            "(--resume auto: continue it if there is one) or choose another run folder"
        )
    return bool(resume)


def _format(metrics: dict[str, float], keys: tuple[str, ...] = ()) -> str:
    shown = keys or tuple(k for k in metrics if not k.startswith("num_"))
    return " ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics)


def train(cfg: ExperimentConfig, run_dir: str | Path | None = None, *, resume: Resume = False,
          progress: bool = True, datasets: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (default `runs/<name>-<time>`); with `resume`, continue
    the run saved there ('auto': when there is one). Under torchrun every process calls this.
    Returns the results written to results.json.

    `datasets`: ready-made {'train': ..., 'val': ..., 'test': ...} datasets (with an
    `annotations` attribute, e.g. `mbt.data.dataset.InMemoryDataset`) used instead of
    those `cfg.dataset` describes."""
    d = init_distributed(cfg.train.device)
    try:
        if run_dir is None:
            run_dir = broadcast_object(str(default_run_dir(cfg.name)), d)
        with run_lock(run_dir, enabled=d.is_main):  # a second run on this folder fails at once
            return Trainer(cfg, RunFolder(run_dir), d, resume=resume, progress=progress, datasets=datasets).run()
    except Exception as e:  # into this process's log files too (stderr gets it from the caller)
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "stopped: %s: %s", (type(e).__name__, e), None)
        for handler in log.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
        raise
    finally:
        for handler in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
            log.removeHandler(handler)
            handler.close()
        shutdown(d)


class Due(NamedTuple):
    """What a step is followed by (`Trainer._due`)."""

    log: bool
    validate: bool
    checkpoint: bool


class Trainer:
    """State of one training run; `run()` does the work. Setting up, in order: the run folder
    and logs, the data, the model and optimizer, the counters, the checkpoint when resuming,
    the wrapped network (DDP, torch.compile)."""

    def __init__(self, cfg: ExperimentConfig, folder: RunFolder, d: Dist, *, resume: Resume, progress: bool,
                 datasets: dict[str, Any] | None = None) -> None:
        self.folder, self.dist, self.progress = folder, d, progress
        self.resume = self._open_folder(resume)
        self._read_data(cfg, datasets)
        self._build_model()
        self._start_counters()
        if self.resume:
            self._load()
        self._wrap_model()
        self.metrics_log = MetricsLog(folder, d.is_main, cfg.train.loggers, cfg.to_dict())

    # ------------------------------------------------------------------ setup
    def _open_folder(self, resume: Resume) -> bool:
        """Create the run folder, decide (rank 0, for all) whether the run continues, start the logs."""
        d = self.dist
        if d.is_main:
            self.folder.root.mkdir(parents=True, exist_ok=True)
        continues = broadcast_object(continues_run(self.folder, resume) if d.is_main else None, d)
        if d.is_main and not continues:  # records of an attempt killed before its first checkpoint
            _forget_metrics_after(self.folder.metrics, 0)
        barrier(d)
        setup_logging(self.folder, d)
        return continues

    def _read_data(self, cfg: ExperimentConfig, datasets: dict[str, Any] | None) -> None:
        """The label space (from the training annotations), every split's dataset (read now, so
        a bad file stops the run before training), the schedule and the training loader; the
        resolved config is saved in the folder."""
        d, tc = self.dist, cfg.train
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
        for split in ("val", "test"):
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
        self.loader = self._train_loader()
        if d.is_main:
            cfg.save(self.folder.config)
        m = cfg.model
        self.primary = primary_metric(m.multi_label, m.class_splits, m.split_names)

    def _build_model(self) -> None:
        """The model (initialised, frozen, sharded as configured), its optimizer, gradient scaler
        and precision, and this process's random states."""
        tc, d = self.cfg.train, self.dist
        self.amp_dtype, use_scaler = resolve_amp(tc.amp, d.device)
        torch.manual_seed(tc.seed)
        self.model = MBT(self.cfg.model)
        if tc.init_from and not self.resume and d.is_main:  # DDP copies rank 0's weights to the others
            report = init_from(self.model, tc.init_from, self.cfg.data)
            log.info("initialised from %s: %s", tc.init_from, report)
            for key in ("model_differs", "data_differs"):
                if key in report:  # {field: [source, this run]}
                    log.warning("train.init_from: %s: %s", key.replace("_", " "), report[key])
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

    def _start_counters(self) -> None:
        """Step, best score, and the counts of a run at its start (a checkpoint replaces them)."""
        tc, d = self.cfg.train, self.dist
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.last_val: EvalResult | None = None
        # unreadable training files of the attempts before this one (rank 0; this attempt's: the loader's)
        self.resumed_skipped: list[tuple[str, str]] = []
        self.clips_trained = 0  # readable training clips of the steps taken (this process; rank 0: + resumed)
        self.steps_without_clips = 0  # steps not taken: none of their clips could be read (every process)
        # global (readable, unreadable) clips of the last steps; known with skip_bad or one process
        self.count_clips = self.cfg.dataset.skip_bad or not d.enabled
        self.counts_group = host_group(d) if self.cfg.dataset.skip_bad else None
        self.recent: deque[tuple[int, int]] = deque(maxlen=tc.unreadable_window)
        self.shards_in_latest: str | None = None  # the shard folder the committed latest.pt names
        self.kill_at = int(os.environ.get(KILL_AT_STEP, 0)) if d.is_main and os.environ.get(
            "TORCHELASTIC_RESTART_COUNT", "0") == "0" else 0
        # since the last log line: seconds in training steps and waiting for the loader, steps
        self.busy, self.data_wait, self.steps_since_log = 0.0, 0.0, 0
        # [loss, grad_norm, non-finite steps] summed on the device since the last log line: an
        # accelerator's queue of kernels is never drained to read them, except at read steps
        self.sums, self.steps_in_sums = torch.zeros(3, device=d.device), 0
        self.read_every_step = host_sync_is_cheap(d.device)

    def _wrap_model(self) -> None:
        """`self.net`, what the steps run: the model, in DDP with several processes (not FSDP),
        compiled as `train.compile` says."""
        tc, m, d = self.cfg.train, self.cfg.model, self.dist
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

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        """The checkpoint; collective (gathers every process's random state and counts; under
        FSDP every process writes its shards, see checkpoint.py)."""
        d = self.dist
        rngs = all_gather_objects(rng_state(self.mix_rng), d)
        skipped = self._skipped_files()
        state: dict[str, Any] = {
            "step": self.step,
            "fsdp": self.fsdp,
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "best": self.best,
            "skipped": skipped,
            "clips_trained": sum(all_gather_objects(self.clips_trained, d)),
            "steps_without_clips": self.steps_without_clips,
            "world_size": d.world_size,
            "config": self.cfg.to_dict(),
        }
        if self.fsdp:  # per-process shards, stored by parameter name: loadable at any world size
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
            state[SHARDED] = write_shards(self.folder.checkpoints, f"step-{self.step:08d}",
                                          {"model": model_state, "optimizer": optimizer_state["state"]}, d)
            state["optimizer_groups"] = optimizer_state["param_groups"]
        else:
            state["model"], state["optimizer"] = self.model.state_dict(), self.optimizer.state_dict()
        return state

    def _save(self) -> None:
        state = self._state()
        shards = state[SHARDED]["folder"] if SHARDED in state else None
        if self.dist.is_main:
            save_checkpoint(state, self.folder.latest)
            # the new latest.pt and previous.pt (the old latest) name at most these two
            remove_shard_folders(self.folder.checkpoints, {n for n in (shards, self.shards_in_latest) if n})
            log.info("checkpoint: step %d -> %s", self.step, self.folder.latest)
        self.shards_in_latest = shards
        barrier(self.dist)

    def _load(self) -> None:
        """Continue from the latest good checkpoint: rank 0 chooses it (latest.pt, or previous.pt
        when latest is damaged, shards verified), every process loads that one."""
        d, checkpoints = self.dist, self.folder.checkpoints
        chosen = None
        if d.is_main:
            stale = remove_stale_temporaries(checkpoints)
            if stale:
                log.info("removed %d unfinished checkpoint file(s) left by an interrupted write", len(stale))
            ck, path = load_resume_checkpoint(checkpoints)
            chosen = str(path)
        path = Path(broadcast_object(chosen, d))
        if not d.is_main:
            ck = load_checkpoint(path)
        if SHARDED in ck:  # any world size, sharded or not
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
            tensors = {"model": model_state, "optimizer": optimizer_state["state"]}
            read_shards(checkpoints, ck[SHARDED], tensors)
            set_state_dict(self.model, self.optimizer, model_state_dict=tensors["model"],
                           optim_state_dict={"state": tensors["optimizer"], "param_groups": ck["optimizer_groups"]})
            self.shards_in_latest = ck[SHARDED]["folder"]
        elif ck.get("fsdp", False) != self.fsdp:
            raise ConfigError(
                f"{path}: written {'with' if ck.get('fsdp') else 'without'} FSDP sharding as one file; resume it "
                f"with the same train.fsdp and a world size {'> 1' if ck.get('fsdp') else 'of 1 or train.fsdp=false'}"
            )
        elif self.fsdp:  # one file of full tensors (earlier versions), optimizer state keyed by names
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
        self.resumed_skipped = list(ck["skipped"]) if d.is_main else []
        # checkpoints of earlier versions did not count: every step then took a full batch
        trained = ck.get("clips_trained", self.step * self.cfg.train.batch_size)
        self.clips_trained = int(trained) if d.is_main else 0
        self.steps_without_clips = int(ck.get("steps_without_clips", 0))
        if ck["world_size"] == d.world_size:
            set_rng_state(ck["rng"][d.rank], self.mix_rng)
        else:
            log.warning("resuming with %d processes instead of %d: random states are not restored, so "
                        "stochastic-depth masks and mixup lambdas (not the data order or augmentation) "
                        "differ from an uninterrupted run",
                        d.world_size, ck["world_size"])
        log.info("resumed from %s at step %d of %d", path, self.step, self.schedule.total_steps)
        if d.is_main:
            dropped = _forget_metrics_after(self.folder.metrics, self.step)
            if dropped:
                log.info("%s: %d record(s) after step %d left out (those steps are run again)",
                         self.folder.metrics, dropped, self.step)

    # ------------------------------------------------------------------ training
    def _train_loader(self) -> AVLoader:
        """The loader of training micro-batches (map-style: its sampler's `epoch` and `start_step`
        place it; stream: see `_batches`). It counts skipped and damaged clips, and keeps a
        micro-batch left empty by skipped clips: it still takes its place in the step, so every
        process runs the same steps."""
        tc, d = self.cfg.train, self.dist
        if self.stream:
            loader = build_stream_loader(self.train_set, self.micro_batch, tc.num_workers)
        else:
            loader = build_loader(self.train_set, self.micro_batch, train=True, num_workers=tc.num_workers,
                                  distributed=d.enabled, seed=tc.seed, balanced=tc.balanced_sampling,
                                  grad_accum_steps=tc.grad_accum_steps, pin_memory=d.device.type == "cuda")
            assert loader.sampler.steps_per_epoch == self.schedule.steps_per_epoch
        loader.keep_empty = True
        return loader

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Training micro-batches from the current step on, epoch after epoch."""
        if self.stream:
            yield from self._stream_batches(self.step * self.cfg.train.grad_accum_steps)
            return
        epoch, start = divmod(self.step, self.schedule.steps_per_epoch)
        while True:
            self.loader.set_epoch(epoch)
            self.loader.sampler.start_step = start
            yield from self.loader
            epoch, start = epoch + 1, 0

    def _stream_batches(self, consumed: int) -> Iterator[dict[str, Any]]:
        """Micro-batches of the shard stream from this process's `consumed`-th on: passes over
        the shards back to back, each in its own order. (Epochs of the schedule count
        `num_examples // batch_size` steps and need not start with a pass.)"""
        stream: ShardStream = self.train_set
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
                yield from self.loader
                consumed = 0
            else:
                consumed -= units
            epoch += 1

    def _due(self, step: int) -> Due:
        """What is due after `step` steps: a log line, a validation, a checkpoint."""
        tc, spe, total = self.cfg.train, self.schedule.steps_per_epoch, self.schedule.total_steps
        validate = (step % tc.eval_every == 0) if tc.eval_every else step % spe == 0
        return Due(log=step % tc.log_every == 0 or step == total,
                   validate="val" in self.eval_sets and (validate or step == total),
                   checkpoint=step % tc.checkpoint_every == 0 or step == total)

    def _train_step(self, batches: Iterator[dict[str, Any]], read: bool) -> list[float] | None:
        """One optimizer step. Its loss, gradient norm and finiteness add up on the device;
        with `read` (log, validation, checkpoint and final steps, or every step where host
        reads are free) the sums since the last log line come to the host in one transfer,
        and a non-finite loss stops the run before this step's update. Returns the sums
        read ([loss, grad_norm, non-finite steps] over every process) or None."""
        tc, d = self.cfg.train, self.dist
        micro_batches = [self._next_batch(batches) for _ in range(tc.grad_accum_steps)]
        self.step_files = [p for b in micro_batches for p in b.get("path", [])]  # named if the loss is not finite
        kept = sum(b["batch_size"] for b in micro_batches)
        if self.count_clips:  # the same counts, and so the same decisions, on every process
            counts = all_reduce_ints([kept, sum(len(b["skipped"]) for b in micro_batches)], d, self.counts_group)
            self._check_unreadable_share(*counts)
            if counts[0] == 0:
                return self._skip_step(counts[1], read)
        self.clips_trained += kept
        lr = self.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=d.device)
        for micro, batch in enumerate(micro_batches):
            last = micro == tc.grad_accum_steps - 1
            loss_sum += self._micro_step(batch, sync=last and not tc.clip_per_replica, micro=micro)
        norm = self._unscale_and_clip_gradients().float().to(d.device)
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

    def _next_batch(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next micro-batch, its wait timed (the loader counts its skipped and damaged clips)."""
        tic = time.perf_counter()
        batch = next(batches)
        self.data_wait += time.perf_counter() - tic
        return batch

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

    def _unscale_and_clip_gradients(self) -> torch.Tensor:
        """Unscale, clip and (with `clip_per_replica`) average the gradients; returns their norm."""
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

    def _log_train(self, sums: list[float], bar: tqdm) -> None:
        """The log line and metrics record of the steps since the last one."""
        spe, total, d = self.schedule.steps_per_epoch, self.schedule.total_steps, self.dist
        mean = self.steps_in_sums * d.world_size or math.nan  # nan: no step taken since
        busy = max(self.busy, 1e-9)
        record = {"loss": sums[0] / mean, "lr": self.schedule.lr(self.step - 1), "grad_norm": sums[1] / mean,
                  "epoch": self.step / spe, "examples_per_s": self.steps_since_log * self.cfg.train.batch_size / busy,
                  "data_wait": self.data_wait / busy}
        self.metrics_log.write("train", self.step, record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.3g}")
        log.info("step %d/%d epoch %.2f %s", self.step, total, record["epoch"],
                 _format(record, ("loss", "lr", "grad_norm", "examples_per_s", "data_wait")))
        self.busy, self.data_wait, self.steps_since_log = 0.0, 0.0, 0
        self.sums.zero_()
        self.steps_in_sums = 0

    # ------------------------------------------------------------------ unreadable clips
    def _skip_step(self, unreadable: int, read: bool) -> list[float] | None:
        """A step none of whose clips could be read: no forward, no update; the step (the data
        position and the schedule) moves on."""
        self.steps_without_clips += 1
        if self.steps_without_clips == 1:
            log.warning("step %d: none of its %d clips could be read (skip_bad); the step is not taken "
                        "(steps without clips are counted in results.json)", self.step + 1, unreadable)
        self.step += 1
        return all_reduce_sum(self.sums.clone(), self.dist).tolist() if read or self.read_every_step else None

    def _check_unreadable_share(self, readable: int, unreadable: int) -> None:
        """Stop when the unreadable share of the last `unreadable_window` steps' clips passes
        `max_unreadable_share` (decided on global counts: every process stops together)."""
        tc = self.cfg.train
        self.recent.append((readable, unreadable))
        if len(self.recent) < tc.unreadable_window:
            return
        kept, lost = (sum(c) for c in zip(*self.recent, strict=True))
        if lost > tc.max_unreadable_share * (kept + lost):
            raise UnreadableDataError(self._unreadable_report(
                f"step {self.step + 1}: {lost} of the {kept + lost} training clips of the last {len(self.recent)} "
                f"steps ({lost / (kept + lost):.0%}) could not be read, above train.max_unreadable_share="
                f"{tc.max_unreadable_share}"))

    def _unreadable_report(self, what: str) -> str:
        """`what`, the counts and the first causes, and what to do; collective."""
        skipped = self._skipped_files()
        where = self.folder.latest if self.folder.latest.exists() else "none written yet"
        return (f"{what}. The run stopped: {len(skipped)} distinct training files unreadable so far, "
                f"{self.steps_without_clips} step(s) without a readable clip not taken; first causes: "
                + "; ".join(f"{p}: {r}" for p, r in skipped[:3])
                + f". Last checkpoint: {where}; once the data can be read again, continue with --resume.")

    def _skipped_files(self) -> list[tuple[str, str]]:
        """(path, reason) of the unreadable training files of every process and attempt, once
        each; collective."""
        here = all_gather_objects(once_per_file(self.loader.skipped), self.dist)
        return once_per_file([*self.resumed_skipped, *(s for part in here for s in part)])

    def _damaged_files(self) -> list[tuple[str, str]]:
        """(path, damage) of the training files decoded with concealed damage by every process
        in this attempt, once each; collective."""
        return once_per_file(s for part in all_gather_objects(self.loader.damaged, self.dist) for s in part)

    def _non_finite(self, sums: list[float]) -> None:
        epoch = self.step // self.schedule.steps_per_epoch
        first = self.step - self.steps_in_sums + 1
        where = (f"{self.folder.latest} (it is the last good state; it is kept)"
                 if self.folder.latest.exists() else "none: no checkpoint was written before this step")
        span = "" if self.read_every_step or first == self.step else (
            f"; {int(sums[2])} non-finite step(s) since step {first}: on accelerators the loss is read only at "
            "log, validation and checkpoint steps, so those earlier updates were applied (never saved)")
        mean = self.steps_in_sums * self.dist.world_size
        files = list(dict.fromkeys(self.step_files))
        batch = (f" The clips of step {self.step} on this process came from {len(files)} file(s): "
                 f"{', '.join(files[:8])}{' ...' if len(files) > 8 else ''}." if files else "")
        raise NonFiniteLossError(
            f"non-finite training loss at step {self.step} (epoch {epoch}): loss={sums[0] / mean}, "
            f"grad_norm={sums[1] / mean}{span}. The update was not applied and the run stopped. Last checkpoint: "
            f"{where}.{batch} Decoded inputs are checked to be finite, so look first at those files' content "
            "(extreme values), then at the optimisation: a lower train.lr, gradient clipping "
            "(train.max_grad_norm), or train.amp='off'; resume with --resume."
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
                                extra={"weights_chosen_on": describe_weights_choice(self.cfg)})
                log.info("best %s %.4f: saved %s", self.primary, score, self.folder.best)
        barrier(self.dist)

    def run(self) -> dict[str, Any]:
        """The loop: a step, then what is due after it (log line, validation, checkpoint)."""
        total = self.schedule.total_steps
        self._log_start()
        batches = self._batches()
        self.model.train()
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (self.progress and self.dist.is_main))
        compiling = self.compile_mode is not None  # the first step compiles
        try:
            while self.step < total:
                due = self._due(self.step + 1)
                tic = time.perf_counter()
                sums = self._train_step(batches, read=compiling or any(due))
                self.busy += time.perf_counter() - tic
                self.steps_since_log += 1
                bar.update(1)
                if compiling:
                    log.info("torch.compile (mode %s): the first step took %.1f s, compilation included",
                             self.compile_mode, time.perf_counter() - tic)
                    compiling = False
                if due.log:
                    self._log_train(sums, bar)
                if due.validate:
                    self._validate()
                if due.checkpoint:
                    self._save()
                if self.step == self.kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            if sum(all_gather_objects(self.clips_trained, self.dist)) == 0:
                raise UnreadableDataError(self._unreadable_report(
                    f"no training clip could be read in {self.step} steps"))
        finally:
            bar.close()
            batches.close()  # stops the stream's loader workers before the final evaluation
        return self._finish()

    def _log_start(self) -> None:
        tc, d, schedule = self.cfg.train, self.dist, self.schedule
        log.info(
            "training %s: %d examples, %d steps/epoch, %d steps (%d epochs), warmup %.1f steps, global batch %d "
            "= %d processes x %d accumulation x %d, device %s, amp %s",
            self.cfg.name, self.num_examples, schedule.steps_per_epoch, schedule.total_steps, tc.epochs,
            schedule.warmup_steps, tc.batch_size, d.world_size, tc.grad_accum_steps, self.micro_batch, d.device,
            self.amp_dtype or "off",
        )
        log.info("model: %s", "eager" if self.compile_mode is None else f"torch.compile, mode {self.compile_mode}")

    def _finish(self) -> dict[str, Any]:
        d, folder = self.dist, self.folder
        final = self._plain_model()
        if d.is_main:
            final.save_pretrained(folder.final, data_config=self.cfg.data)
        results: dict[str, Any] = {"steps": self.step, "best": self.best, "final_model": str(folder.final)}
        if self.best is not None:
            results["best_model"] = str(folder.best)
            results["weights_chosen_on"] = describe_weights_choice(self.cfg)
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
        skipped, damaged = self._skipped_files(), self._damaged_files()
        dropped = {s: len(getattr(ds, "dropped", [])) for s, ds in {"train": self.train_set, **self.eval_sets}.items()}
        results["skipped"] = {
            "train_clips_unreadable": len(skipped),
            "train_clips_damaged": len(damaged),
            "train_steps_without_clips": self.steps_without_clips,
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


def _forget_metrics_after(path: Path, step: int) -> int:
    """Drop the records of `path` (metrics.jsonl) after `step`, the final test records, and a line
    cut off by a kill: an attempt that ran past its last checkpoint logged steps that are run
    again. Returns how many lines were dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()

    def kept(line: str) -> bool:
        try:
            record = json.loads(line)
            return record["step"] <= step and record["split"] != "test"
        except (ValueError, KeyError, TypeError):
            return False

    keep = [line for line in lines if kept(line)]
    if len(keep) < len(lines):
        atomic_write(path, "".join(f"{line}\n" for line in keep).encode())
    return len(lines) - len(keep)


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
