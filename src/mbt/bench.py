"""`mbt bench`: speed, memory and hardware efficiency of MBT's fusion variants.

Each measurement ("case": a fusion variant, eval or train, a batch size, a precision,
with or without activation checkpointing / `torch.compile`) times whole steps, the way
the trainer and the evaluator run them:

- eval: `model(inputs)` under `torch.inference_mode()` (and autocast);
- train: mixup (alpha 0.5), forward under autocast, the official loss, backward,
  gradient clipping and the optimizer step of `mbt.train.optim.build_optimizer` (SGD
  with momentum or AdamW; fused on CUDA).

Achieved FLOP/s count the model's own multiply-adds (`mbt.models.flops.count_flops`,
x2 for FLOPs; a training step is 3 forward passes, so checkpointing's recomputation is
not counted as useful work). In training, stochastic depth skips the residual branches
an example drops; only the branches computed are counted (`step_gflop`; the model's full
count is `model_gflop`). They are compared with the machine's own limit measured in
the same process, round by round: a large square matmul in the step's compute precision
(fp32, or bf16 under bf16 autocast; `torch.mm`, and on CPU also oneDNN's, the faster of
the two on AMD CPUs), and on GPUs also the card's dense bf16 peak from its datasheet.
Machines are shared and noisy, so every round times the matmul and the step back to back
and the report gives medians over rounds of times and of per-round ratios.

Peak memory counts torch's own allocations over one extra step after the timed ones: on
CUDA through `torch.cuda.max_memory_allocated`, on CPU through the profiler's record of
every allocation and free (`profile_memory=True`; the process's resident set is no
measure, since glibc keeps freed blocks and library code pages count in it). The peak is
what lives before the step (weights, optimizer state, inputs) plus the highest the step
allocates on top (activations, gradients, temporaries). Isolated processes also report
the resident-set peak, which includes what the allocator keeps.

`compare_cases` runs several cases interleaved in one process, for ratios between them
(e.g. bottleneck vs late fusion) that machine load hits alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .bench_cases import AMPS, MODES, SIZES, VARIANTS
from .errors import ConfigError
from .models.config import MBTConfig, fusion_variant
from .models.flops import count_flops
from .models.mbt import MLP, Attention
from .train.precision import autocast

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "17179869184", "MALLOC_TRIM_THRESHOLD_": "17179869184"}
"""Set in the environment of isolated measurement processes. By default glibc serves
every allocation above a (moving) threshold with its own mmap and returns it at free;
the large fp32 activations of a backward pass then cost page faults and zeroing of
fresh pages on every step, and how many of them do depends on the threshold's history,
so step times swing 1-5x between runs. With both thresholds at 16 GiB the heap keeps
and reuses freed memory: repeatable times, and a resident-set peak that is the heap's
peak. It is a property of the benchmark process, not something the library sets."""

GPU_DENSE_BF16_TFLOPS = {
    "H200": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.5, "H100": 989.4, "GH200": 989.4,
    "B200": 2250.0, "A100": 312.0, "A800": 312.0, "L40S": 362.1, "L40": 181.0, "L4": 121.0,
    "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2, "RTX 6000 Ada": 364.2,
}
"""Datasheet dense (no sparsity) bf16 tensor-core TFLOP/s, matched by substring of the
device name in this order (H100 SXM is plain 'H100'). `--peak-tflops` overrides it."""


@dataclass
class Case:
    """One measurement."""

    variant: str = "bottleneck"
    """A fusion variant of `VARIANTS`."""
    mode: str = "eval"
    """'eval' (inference forward) or 'train' (forward, loss, backward, clip, optimizer step)."""
    batch: int = 1
    """Clips per step."""
    amp: str = "off"
    """'off' (fp32), 'bf16' autocast, 'fp16' autocast (CUDA; with loss scaling in training)."""
    grad_checkpointing: bool = False
    """Recompute each block in the backward pass (training only)."""
    compile: bool = False
    """`torch.compile` the model."""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant: unknown {self.variant!r}; expected one of {list(VARIANTS)}")
        if self.mode not in MODES:
            raise ConfigError(f"mode: expected one of {list(MODES)}, got {self.mode!r}")
        if self.amp not in AMPS:
            raise ConfigError(f"amp: expected one of {list(AMPS)}, got {self.amp!r}")
        if self.batch < 1:
            raise ConfigError(f"batch: must be >= 1, got {self.batch}")

    @property
    def name(self) -> str:
        extras = [self.amp] if self.amp != "off" else []
        extras += ["ckpt"] if self.grad_checkpointing else []
        extras += ["compile"] if self.compile else []
        return f"{self.variant} {self.mode} b{self.batch}" + (f" ({', '.join(extras)})" if extras else "")


@dataclass
class BenchConfig:
    """What to measure, on which machine settings."""

    size: str = "tiny"
    """A model size of `SIZES`."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Further `MBTConfig` changes applied on top of the size (e.g. a mid size for memory)."""
    rounds: int = 5
    """Timed rounds per case; the report gives medians."""
    warmup: int = 1
    """Untimed steps before the rounds (first-call allocation, compilation)."""
    min_round_s: float = 0.2
    """Each round repeats the step until it lasts at least this long (tiny models)."""
    optimizer: str = "sgd"
    """'sgd' (momentum, the official recipe) or 'adamw', as `TrainConfig.optimizer`."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    threads: int | None = None
    """Intra-op CPU threads (None: torch's default, one per core)."""
    matmul_size: int | None = None
    """Side of the square reference matmul; None: 4096 on CPU, 8192 on CUDA."""
    peak_tflops: float | None = None
    """The device's dense peak (TFLOP/s) in the step's precision; None: the GPU datasheet
    table for bf16, nothing on CPU (the measured matmul is the CPU's limit)."""
    isolate: bool = True
    """Run each case in a fresh subprocess (needed for CPU peak memory)."""
    malloc_env: bool = True
    """Set `MALLOC_ENV` in those subprocesses: repeatable times. The heap then keeps freed
    blocks, so on CPU its fragmentation adds to the peak (about 0.1 GB of a 4 GB training
    peak, 0.4 GB of a 2.5 GB checkpointed one at paper size): measure memory with it off."""
    seed: int = 0
    """Seed of weights and inputs."""
    sync_check: bool = False
    """On CUDA, run two training steps after the warmup under
    `torch.cuda.set_sync_debug_mode("error")`: any host synchronisation in the step
    (`.item()`, `nonzero`, a copy to the host) fails them. Reported as `host_sync`."""

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ConfigError(f"size: unknown {self.size!r}; expected one of {list(SIZES)}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer: expected 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.rounds < 1 or self.warmup < 0:
            raise ConfigError("rounds must be >= 1 and warmup >= 0")

    def model_config(self, variant: str) -> MBTConfig:
        """The model of `variant` at this size. Fusion starts at 8/12 of the depth, as
        MBT-B's layer 8."""
        fields = {**SIZES[self.size], **self.model_overrides}
        layers = fields.get("num_layers", MBTConfig.num_layers)
        base = MBTConfig(**{**fields, "fusion_layer": layers})
        return fusion_variant(variant, base)

    def torch_device(self) -> torch.device:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: 'cuda' asked for but no CUDA device is available")
        use_cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        return torch.device("cuda" if use_cuda else "cpu")


# ---------------------------------------------------------------------------- machine
def _proc_status_mb() -> dict[str, float]:
    """The memory lines of /proc/self/status in MiB (empty off Linux)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if value.strip().endswith("kB"):
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def _rss_anon_mb(peak: bool = False) -> float | None:
    """The process's anonymous resident memory in MiB, or its peak: the resident-set
    high-water mark (VmHWM) less the file-backed and shared pages resident now (library
    code that new kernels touch counts in the resident set too; it only grows, so this is
    a lower bound of the anonymous peak). None off Linux."""
    status = _proc_status_mb()
    if not peak:
        return status.get("RssAnon")
    if "VmHWM" not in status:
        return None
    return status["VmHWM"] - status.get("RssFile", 0.0) - status.get("RssShmem", 0.0)


def step_memory(runner: StepRunner) -> dict[str, Any]:
    """Memory of one more step of `runner`, in MiB: `persistent_mb` (weights, optimizer
    state, inputs: live before the step), `step_peak_mb` (the most the step allocates on
    top: activations, gradients, temporaries) and `peak_mb`, their sum."""
    device = runner.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        runner.step()
        torch.cuda.synchronize(device)
        step_peak = torch.cuda.max_memory_allocated(device) - start
        kind = "torch.cuda.max_memory_allocated"
    else:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            runner.step()
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
        live = step_peak = 0
        for _, nbytes in events:
            live += nbytes
            step_peak = max(step_peak, live)
        kind = "torch CPU allocations (profiler)"
    persistent = runner.persistent_bytes()
    return {"kind": kind, "persistent_mb": round(persistent / 2**20, 1), "step_peak_mb": round(step_peak / 2**20, 1),
            "peak_mb": round((persistent + step_peak) / 2**20, 1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Machine, versions and load: what a reader needs to compare numbers."""
    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    env: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "malloc_env": {k: os.environ[k] for k in MALLOC_ENV if k in os.environ},
    }
    if device is not None and device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def gpu_peak_tflops(name: str) -> float | None:
    """Datasheet dense bf16 TFLOP/s of a GPU by name (None when unknown)."""
    for key, value in GPU_DENSE_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


class MatmulReference:
    """A large square matmul in one precision, timed on demand between the steps of a
    case: the machine's attainable FLOP/s. `torch.mm` is the reference (MKL for fp32 on
    CPU, cuBLAS on GPUs); on CPU oneDNN's matmul is timed too, since on AMD CPUs it is
    faster than MKL's and so the stricter limit ('best')."""

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> None:
        g = torch.Generator(device="cpu").manual_seed(seed)
        self.n, self.device = n, device
        self.a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        self.b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        self.out = torch.empty(n, n, device=device, dtype=dtype)
        self.flops = 2.0 * n**3
        self.kernels: dict[str, Callable[[], Any]] = {"torch.mm": lambda: torch.mm(self.a, self.b, out=self.out)}
        if device.type == "cpu" and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                                                      "_linear_pointwise"):
            self.kernels["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(self.a, self.b, None, "none", [], "")
        self()  # first calls: library initialisation, page faults

    def __call__(self) -> dict[str, float]:
        """Seconds of one matmul by each kernel."""
        out = {}
        with torch.inference_mode():
            for name, kernel in self.kernels.items():
                _sync(self.device)
                tic = time.perf_counter()
                kernel()
                _sync(self.device)
                out[name] = time.perf_counter() - tic
        return out


def matmul_tflops(n: int = 4096, dtype: torch.dtype = torch.float32, device: str = "cpu",
                  rounds: int = 5) -> dict[str, float]:
    """Median TFLOP/s of an n x n x n matmul by each kernel of `MatmulReference`."""
    ref = MatmulReference(n, dtype, torch.device(device))
    times = [ref() for _ in range(rounds)]
    return {k: ref.flops / statistics.median(t[k] for t in times) / 1e12 for k in ref.kernels}


# ---------------------------------------------------------------------------- one case
class StepRunner:
    """A model, inputs and (for training) optimizer for one case; `step()` runs one step."""

    def __init__(self, case: Case, bench: BenchConfig, device: torch.device) -> None:
        from .models.mbt import MBT
        from .train.config import TrainConfig
        from .train.optim import build_optimizer
        from .train.precision import resolve_amp

        self.case, self.device = case, device
        self.cfg = cfg = bench.model_config(case.variant)
        g = torch.Generator().manual_seed(bench.seed)
        torch.manual_seed(bench.seed)
        self.model = MBT(cfg).to(device)
        self.model.train(case.mode == "train")
        if case.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.net: Callable[..., Any] = torch.compile(self.model) if case.compile else self.model
        b = case.batch
        self.inputs = {
            "rgb": torch.randn(b, cfg.num_frames, 3, *cfg.image_size, generator=g).to(device),
            "spectrogram": torch.randn(b, *cfg.spectrogram_size, generator=g).to(device),
        }
        self.labels = (torch.rand(b, cfg.num_classes, generator=g) < 0.01).float().to(device)
        self.mix_rng = np.random.default_rng(bench.seed)
        self.amp_dtype, use_scaler = resolve_amp(case.amp, device)
        self.optimizer = None
        if case.mode == "train":  # a small lr keeps random-data training finite over many steps
            tc = TrainConfig(optimizer=bench.optimizer, lr=1e-4, init_from=None)
            self.optimizer = build_optimizer(self.model, tc)
            self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        passes = 3 if case.mode == "train" else 1
        report = count_flops(cfg, train=case.mode == "train")
        self.flops = 2.0 * report.macs * b * passes
        """FLOPs of a step with every residual branch computed."""
        self.params = sum(p.numel() for p in self.model.parameters())
        # stochastic depth computes a branch only for the examples that keep it: count those
        self._fixed_flops = 2.0 * (report.macs - report.encoder) * b * passes
        self._branch_macs, self._counting = 0, False
        self.executed_flops: list[float] = []
        """FLOPs of every training step run so far, counting the branches computed."""
        for module in self.model.modules():
            if isinstance(module, (Attention, MLP)):
                module.register_forward_pre_hook(self._count_branch)

    def _count_branch(self, module: Any, args: tuple[Any, ...]) -> None:
        if self._counting:
            n, s, d = args[0].shape
            self._branch_macs += (n * (4 * s * d * d + 2 * s * s * d) if isinstance(module, Attention)
                                  else n * 2 * s * d * module.fc1.out_features)

    def persistent_bytes(self) -> int:
        """Bytes that live between steps: weights (and their cached low-precision copies),
        optimizer state, inputs and labels."""
        tensors = [*self.model.parameters(), *self.inputs.values(), self.labels]
        tensors += [m.__dict__["_lowp_weight"][1] for m in self.model.modules() if "_lowp_weight" in m.__dict__]
        if self.optimizer is not None:
            tensors += [t for st in self.optimizer.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def step(self) -> None:
        if self.optimizer is None:
            with torch.inference_mode(), autocast(self.device, self.amp_dtype):
                self.net(self.inputs)
            return
        from .train.losses import mbt_loss, mixup

        cfg = self.cfg
        inputs, targets, _ = mixup(self.inputs, self.labels, 0.5, self.mix_rng)
        self._branch_macs, self._counting = 0, True
        with autocast(self.device, self.amp_dtype):
            out = self.net(inputs)
        self._counting = False  # checkpointing's recomputation in the backward pass is not counted
        self.executed_flops.append(self._fixed_flops + 6.0 * self._branch_macs)
        loss = mbt_loss(out.logits, out.modality_logits, targets, multi_label=cfg.multi_label,
                        class_splits=cfg.class_splits, label_smoothing=0.3)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def timed(self, repeats: int) -> float:
        """Seconds per step over `repeats` back-to-back steps."""
        _sync(self.device)
        tic = time.perf_counter()
        for _ in range(repeats):
            self.step()
        _sync(self.device)
        return (time.perf_counter() - tic) / repeats

    def round(self, repeats: int) -> dict[str, float]:
        """`timed(repeats)` with the FLOPs of an average step of those."""
        start = len(self.executed_flops)
        step_s = self.timed(repeats)
        done = self.executed_flops[start:]
        return {"step_s": step_s, "step_flops": sum(done) / len(done) if done else self.flops}


def _reference(case: Case, bench: BenchConfig, device: torch.device) -> MatmulReference:
    dtype = {"off": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[case.amp]
    n = bench.matmul_size or (8192 if device.type == "cuda" else 4096)
    return MatmulReference(n, dtype, device, bench.seed)


def _peak_tflops(case: Case, bench: BenchConfig, device: torch.device) -> float | None:
    if bench.peak_tflops is not None:
        return bench.peak_tflops
    if device.type == "cuda" and case.amp in ("bf16", "fp16"):
        return gpu_peak_tflops(torch.cuda.get_device_name(device))
    return None


def measure_case(case: Case, bench: BenchConfig) -> dict[str, Any]:
    """Time `case` in this process: per round, the reference matmul then the step (repeated
    to last `min_round_s`); then the memory of one more step (`step_memory`)."""
    device = bench.torch_device()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    ref = _reference(case, bench, device)
    base = _rss_anon_mb()
    runner = StepRunner(case, bench, device)
    for _ in range(bench.warmup):
        runner.timed(1)
    host_sync = sync_check(runner) if bench.sync_check and case.mode == "train" and device.type == "cuda" else None
    repeats = max(1, math.ceil(bench.min_round_s / runner.timed(1)))
    rounds = []
    for _ in range(bench.rounds):
        ref_s = ref()
        rounds.append({**runner.round(repeats), "matmul_s": ref_s})
    memory = step_memory(runner)
    rss_peak = _rss_anon_mb(peak=True)
    if device.type == "cpu" and base is not None and rss_peak is not None:
        memory["rss_peak_mb"] = round(rss_peak - base, 1)  # meaningful in a fresh process only
    result = summarize(case, runner.flops, ref.flops, rounds, _peak_tflops(case, bench, device))
    result.update(
        size=bench.size,
        model_overrides=bench.model_overrides,
        optimizer=bench.optimizer if case.mode == "train" else None,
        params_m=round(runner.params / 1e6, 2),
        steps_per_round=repeats,
        matmul_n=ref.n,
        memory=memory,
        host_sync=host_sync,
        env={**environment(device), "device": str(device), "load_start": load_start},
    )
    return result


def sync_check(runner: StepRunner, steps: int = 2) -> str:
    """'none' when `steps` training steps run under `torch.cuda.set_sync_debug_mode("error")`,
    else the error of the first operation that synchronised with the host."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(steps):
            runner.step()
    except RuntimeError as e:
        return str(e).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
    return "none"


def summarize(case: Case, step_flops: float, matmul_flops: float, rounds: list[dict[str, float]],
              peak_tflops: float | None = None) -> dict[str, Any]:
    """Medians of a case's rounds (each {'step_s': seconds, 'matmul_s': {kernel: seconds}},
    and 'step_flops' where a step computed less than the model's `step_flops`).
    `fraction_of_matmul` is the median over rounds of (step FLOP/s) / (torch.mm FLOP/s) in
    the same round; `fraction_of_best_matmul` the same against the fastest matmul kernel."""
    step_s = statistics.median(r["step_s"] for r in rounds)
    executed = [r.get("step_flops", step_flops) for r in rounds]
    achieved = [f / r["step_s"] for f, r in zip(executed, rounds, strict=True)]
    reference = [matmul_flops / r["matmul_s"]["torch.mm"] for r in rounds]
    best = [matmul_flops / min(r["matmul_s"].values()) for r in rounds]
    out: dict[str, Any] = {
        **dataclasses.asdict(case),
        "case": case.name,
        "step_s": step_s,
        "s_per_clip": step_s / case.batch,
        "clips_per_s": case.batch / step_s,
        "step_gflop": statistics.mean(executed) / 1e9,
        "model_gflop": step_flops / 1e9,
        "achieved_tflops": statistics.median(achieved) / 1e12,
        "matmul_tflops": statistics.median(reference) / 1e12,
        "fraction_of_matmul": statistics.median(a / r for a, r in zip(achieved, reference, strict=True)),
        "best_matmul_tflops": statistics.median(best) / 1e12,
        "fraction_of_best_matmul": statistics.median(a / r for a, r in zip(achieved, best, strict=True)),
        "peak_tflops": peak_tflops,
        "fraction_of_peak": None if not peak_tflops else statistics.median(achieved) / 1e12 / peak_tflops,
        "rounds": rounds,
    }
    return out


# ---------------------------------------------------------------------------- many cases
def run_isolated(case: Case, bench: BenchConfig, timeout: float | None = None) -> dict[str, Any]:
    """`measure_case` in a fresh `python -m mbt.bench` process (with `MALLOC_ENV` unless
    `bench.malloc_env` is off)."""
    payload = json.dumps({"case": dataclasses.asdict(case), "bench": dataclasses.asdict(bench)})
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    if bench.malloc_env:
        env.update(MALLOC_ENV)
    proc = subprocess.run([sys.executable, "-m", "mbt.bench", "--worker", payload], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench case {case.name!r} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(cases: Sequence[Case], bench: BenchConfig, progress: Callable[[str], None] | None = None,
              ) -> list[dict[str, Any]]:
    """Measure every case, each in its own process when `bench.isolate`."""
    results = []
    for case in cases:
        if progress:
            progress(f"measuring {case.name} ...")
        results.append(run_isolated(case, bench) if bench.isolate else measure_case(case, bench))
    return results


def compare_cases(cases: Sequence[Case], bench: BenchConfig) -> dict[str, Any]:
    """Run `cases` interleaved in this process (each round: the matmul, then one timed
    step of every case, in rotating order) and report each case's median step time, the
    median per-round throughput ratio to the first case, and its `step_memory`."""
    device = bench.torch_device()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    refs = {amp: _reference(Case(amp=amp), bench, device) for amp in {c.amp for c in cases}}
    runners = [StepRunner(c, bench, device) for c in cases]
    for r in runners:
        for _ in range(bench.warmup):
            r.timed(1)
    repeats = [max(1, math.ceil(bench.min_round_s / r.timed(1))) for r in runners]
    times: list[list[dict[str, float]]] = [[] for _ in runners]
    matmul: dict[str, list[dict[str, float]]] = {amp: [] for amp in refs}
    for k in range(bench.rounds):
        for amp, ref in refs.items():
            matmul[amp].append(ref())
        order = list(range(len(runners)))
        order = order[k % len(order):] + order[:k % len(order)]
        for i in order:
            times[i].append(runners[i].round(repeats[i]))
    out = []
    for i, (case, runner) in enumerate(zip(cases, runners, strict=True)):
        rounds = [{**t, "matmul_s": m} for t, m in zip(times[i], matmul[case.amp], strict=True)]
        row = summarize(case, runner.flops, refs[case.amp].flops, rounds, _peak_tflops(case, bench, device))
        row["speed_vs_first"] = statistics.median(
            (case.batch / t["step_s"]) / (cases[0].batch / t0["step_s"])
            for t, t0 in zip(times[i], times[0], strict=True))
        row["memory"] = step_memory(runner)
        row["matmul_n"] = refs[case.amp].n
        out.append(row)
    return {"cases": out, "size": bench.size, "env": environment(device)}


# ---------------------------------------------------------------------------- bf16 vs fp32
def amp_agreement(bench: BenchConfig, variant: str = "bottleneck", clips: int = 8, batch: int = 1,
                  dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    """Eval logits under autocast vs fp32 on generated patterned clips
    (`mbt.train.synthetic`: class pictures and spectral bands under noise), with a random
    (not zero) head so that classes differ: top-1 agreement, top-5 overlap, and the
    largest logit difference relative to the spread of the fp32 logits; plus the speed
    ratio of the two, timed alternately in this process."""
    from .data.config import DataConfig
    from .models.mbt import MBT
    from .train.synthetic import SyntheticAVDataset

    device = bench.torch_device()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    cfg = bench.model_config(variant)
    torch.manual_seed(bench.seed)
    model = MBT(cfg).to(device).eval()
    with torch.no_grad():  # the head starts at zero: give it the scale of a trained one
        torch.nn.init.normal_(model.head.weight, std=cfg.hidden_size**-0.5)
    data = DataConfig(num_frames=cfg.num_frames, image_size=cfg.image_size[0],
                      audio_seconds=cfg.spectrogram_size[0] / 100, num_mel_bins=cfg.spectrogram_size[1])
    dataset = SyntheticAVDataset(cfg, data, "val", clips, seed=bench.seed)
    ref_logits, low_logits, t_ref, t_low = [], [], [], []
    for start in range(0, clips, batch):
        items = [dataset[i] for i in range(start, min(start + batch, clips))]
        inputs = {m: torch.stack([it[m] for it in items]).to(device) for m in ("rgb", "spectrogram")}
        with torch.inference_mode():
            if start == 0:  # warm-up of both paths
                model(inputs)
                with torch.autocast(device.type, dtype=dtype):
                    model(inputs)
            for precise in ((True, False) if (start // batch) % 2 == 0 else (False, True)):
                _sync(device)
                tic = time.perf_counter()
                if precise:
                    ref_logits.append(model(inputs).logits.float().cpu())
                else:
                    with torch.autocast(device.type, dtype=dtype):
                        low_logits.append(model(inputs).logits.float().cpu())
                _sync(device)
                (t_ref if precise else t_low).append(time.perf_counter() - tic)
    ref, low = torch.cat(ref_logits), torch.cat(low_logits)
    diff = (low - ref).abs()
    top5 = [len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in
            zip(ref.topk(5, dim=1).indices, low.topk(5, dim=1).indices, strict=True)]
    return {
        "variant": variant,
        "size": bench.size,
        "clips": clips,
        "batch": batch,
        "dtype": str(dtype).replace("torch.", ""),
        "top1_agreement": float((ref.argmax(1) == low.argmax(1)).float().mean()),
        "top5_overlap": float(sum(top5) / len(top5)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "logit_std": float(ref.std()),
        "max_diff_over_std": float(diff.max() / ref.std()),
        "speedup": statistics.median(a / b for a, b in zip(t_ref, t_low, strict=True)),
        "fp32_s_per_clip": statistics.median(t_ref) / batch,
        "amp_s_per_clip": statistics.median(t_low) / batch,
        "env": environment(device),
    }


# ---------------------------------------------------------------------------- output
def format_row(r: dict[str, Any]) -> str:
    peak = "" if r.get("fraction_of_peak") is None else f"  {100 * r['fraction_of_peak']:.1f}% of peak"
    mem = r.get("memory", {}).get("peak_mb")
    mem_s = "" if mem is None else f"  peak mem {mem:,.0f} MiB"
    return (f"{r['case']:<30} {r['s_per_clip']:9.4f} s/clip {r['clips_per_s']:9.2f} clips/s "
            f"{r['achieved_tflops'] * 1e3:8.1f} GFLOP/s = {100 * r['fraction_of_matmul']:5.1f}% of torch.mm "
            f"({r['matmul_tflops'] * 1e3:.1f}), {100 * r['fraction_of_best_matmul']:5.1f}% of the best matmul "
            f"({r['best_matmul_tflops'] * 1e3:.1f}){peak}{mem_s}")


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table (one row per case)."""
    lines = [
        "| case | s/clip | clips/s | GFLOP/step | achieved GFLOP/s | torch.mm GFLOP/s | fraction of torch.mm "
        "| best matmul GFLOP/s | fraction of best | fraction of peak | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        peak = "" if r.get("fraction_of_peak") is None else f"{100 * r['fraction_of_peak']:.1f}%"
        mem = r.get("memory", {}).get("peak_mb")
        lines.append(
            f"| {r['case']} | {r['s_per_clip']:.3g} | {r['clips_per_s']:.3g} | {r['step_gflop']:.4g} "
            f"| {r['achieved_tflops'] * 1e3:.1f} | {r['matmul_tflops'] * 1e3:.1f} "
            f"| {100 * r['fraction_of_matmul']:.1f}% | {r['best_matmul_tflops'] * 1e3:.1f} "
            f"| {100 * r['fraction_of_best_matmul']:.1f}% | {peak} | {'' if mem is None else f'{mem:,.0f}'} |")
    return "\n".join(lines)


def cases_from(variants: Sequence[str], modes: Sequence[str], eval_batches: Sequence[int],
               train_batches: Sequence[int], amps: Sequence[str], checkpointing: Sequence[bool],
               compile: bool = False) -> list[Case]:
    """The cross product of the options (checkpointing only applies to training)."""
    cases = []
    for variant in variants:
        for mode in modes:
            for batch in (eval_batches if mode == "eval" else train_batches):
                for amp in amps:
                    for ckpt in (checkpointing if mode == "train" else (False,)):
                        cases.append(Case(variant, mode, batch, amp, ckpt, compile))
    return cases


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep library prints off stdout, which carries the worker's JSON answer."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


def _worker(payload: str) -> int:
    data = json.loads(payload)
    case = Case(**data["case"])
    bench = BenchConfig(**data["bench"])
    with _stdout_to_stderr():
        result = measure_case(case, bench)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    sys.exit("usage: mbt bench ... (python -m mbt.bench --worker JSON is internal)")
