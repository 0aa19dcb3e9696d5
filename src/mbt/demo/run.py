"""`mbt demo`: train small MBT variants on generated audio-visual clips and compare them.

The clips (`mbt.demo.synth`) are real mp4 files read through the library's own pipeline
(PyAV decoding, log-mel, `AVDataset`), decoded once into memory, then each variant is
trained by the library's trainer and evaluated on held-out clips. Written to the output
folder: `results.json` / `results.md` (the table), `curves.png` (training loss and
validation accuracy), `accuracy.png` (bar chart), `model/` (the best bottleneck model in
`save_pretrained` format, ready for `mbt predict`), `runs/<variant>/` (each run folder).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..data.annotations import load_annotations
from ..data.config import DataConfig
from ..data.dataset import AVDataset, InMemoryDataset
from ..models.config import MBTConfig, fusion_variant
from ..models.flops import count_flops
from ..models.mbt import MBT
from ..train.config import DatasetConfig, ExperimentConfig, TrainConfig
from ..train.presets import preset
from .synth import SynthConfig, generate

VARIANTS: dict[str, tuple[str, int | None]] = {
    "audio only": ("audio-only", None),
    "video only": ("video-only", None),
    "late fusion": ("late", None),
    "cross-attention": ("vanilla", 2),
    "bottleneck (MBT)": ("bottleneck", 2),
}
"""The compared models: their shown names, the `FUSION_VARIANTS` entry and its fusion
layer, applied to `DemoConfig.model`."""


def _demo_model() -> MBTConfig:
    return preset("tiny").model


def _demo_data() -> DataConfig:
    return preset("tiny").data


def _demo_train() -> TrainConfig:
    return replace(preset("tiny").train, checkpoint_every=10_000, num_workers=0, device="cpu")


@dataclass
class DemoConfig:
    """The demo's settings: the 'tiny' preset's model (width 64, 4 layers), recipe and
    training, variants of which train in about a minute each on two CPU cores."""

    out: str = "mbt-demo"
    """Output folder."""
    data: SynthConfig = field(default_factory=SynthConfig)
    """The generated data set."""
    model: MBTConfig = field(default_factory=_demo_model)
    """The MBT the variants start from (fusion from layer 2 of 4)."""
    recipe: DataConfig = field(default_factory=_demo_data)
    """How clips become inputs: 4 frames over the 2 s clip at 64x64, 2 s of 64-bin log-mel."""
    train: TrainConfig = field(default_factory=_demo_train)
    """AdamW, lr 3e-3 with warmup and cosine decay, 10 epochs of batch 32."""
    variants: tuple[str, ...] = tuple(VARIANTS)
    """Which variants to train."""
    cache_dir: str | None = None
    """Where the generated clips are kept (default `$MBT_CACHE` or `~/.cache/mbt`)."""
    workers: int = 2
    """Processes decoding clips."""


def run_demo(cfg: DemoConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Generate (or reuse) the clips, train every variant, write the report; returns it."""
    cfg = cfg or DemoConfig()
    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    root = generate(cfg.data, cfg.cache_dir, progress=progress, workers=cfg.workers)
    datasets, recipe = _load(root, cfg, progress)
    timings = {"data_s": time.perf_counter() - start}

    rows, runs = [], {}
    for name in cfg.variants:
        model_cfg = fusion_variant(VARIANTS[name][0], cfg.model, VARIANTS[name][1])
        experiment = ExperimentConfig(
            model=model_cfg, data=recipe, dataset=DatasetConfig(format="csv"), train=cfg.train,
            name=_slug(name),
        )
        run_dir = out / "runs" / _slug(name)
        shutil.rmtree(run_dir, ignore_errors=True)
        picked = {k: v.with_modalities(model_cfg.modalities) for k, v in datasets.items()}
        if progress:
            print(f"\n== {name}", flush=True)
        tic = time.perf_counter()
        from ..train.loop import train

        results = train(experiment, run_dir, progress=progress, datasets=picked)
        seconds = time.perf_counter() - tic
        runs[name] = run_dir
        with torch.device("meta"):
            params = sum(p.numel() for p in MBT(model_cfg).parameters())
        rows.append({
            "variant": name,
            "accuracy": round(100 * results["test"]["top1"], 1),
            "best_val_accuracy": round(100 * (results.get("best") or {}).get("value", float("nan")), 1),
            "gflops": round(count_flops(model_cfg).gflops, 3),
            "params_k": round(params / 1e3, 1),
            "train_s": round(seconds, 1),
        })
    timings["total_s"] = time.perf_counter() - start

    best_name = "bottleneck (MBT)" if "bottleneck (MBT)" in runs else rows[-1]["variant"]
    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(runs[best_name] / "best", model_dir)
    report = {
        "rows": rows,
        "model": str(model_dir),
        "data": str(root),
        "clips": {k: len(v) for k, v in datasets.items()},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(rows) + "\n")
    plot_curves(runs, out / "curves.png")
    plot_accuracy(rows, out / "accuracy.png")
    return report


def _load(root: Path, cfg: DemoConfig, progress: bool) -> tuple[dict[str, InMemoryDataset], DataConfig]:
    """Decode every clip once (middle clip = the whole 2 s clip), then normalise the
    spectrograms with the training set's statistics."""
    raw = replace(cfg.recipe, spec_mean=0.0, spec_std=1.0)
    datasets = {}
    for split, mode in (("train", "val"), ("val", "val"), ("test", "test")):
        ann = load_annotations("csv", [str(root / f"{split}.csv")], classes=str(root / "classes.txt"))
        datasets[split] = InMemoryDataset(AVDataset(ann, raw, mode), num_workers=cfg.workers, progress=progress,
                                          desc=f"decode {split}")
    specs = torch.stack([item["spectrogram"] for item in datasets["train"].items])
    mean, std = float(specs.mean()), float(specs.std())
    for ds in datasets.values():
        for item in ds.items:
            item["spectrogram"] = (item["spectrogram"] - mean) / std
    return datasets, replace(cfg.recipe, spec_mean=round(mean, 4), spec_std=round(std, 4))


def _slug(name: str) -> str:
    return name.split(" (")[0].replace(" ", "-")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | test accuracy (%) | GFLOPs | parameters (K) | training time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['accuracy']:.1f} | {r['gflops']:.3f} | {r['params_k']:.0f} | "
                     f"{r['train_s']:.0f} |")
    return "\n".join(lines)


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def plot_curves(runs: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run_dir in runs.items():
        records = _read_metrics(run_dir)
        train = [r for r in records if r["split"] == "train"]
        val = [r for r in records if r["split"] == "val"]
        ax_loss.plot([r["epoch"] for r in train], [r["loss"] for r in train], label=name)
        epochs = [r["step"] / (train[-1]["step"] / train[-1]["epoch"]) for r in val]
        ax_acc.plot(epochs, [100 * r["top1"] for r in val], marker="o", ms=3, label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy", ylim=(0, 101))
    ax_acc.axhline(100 / 3, color="grey", ls=":", lw=1)
    ax_acc.text(0.1, 100 / 3 + 1, "one modality's ceiling (33%)", color="grey", fontsize=8)
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_accuracy(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [r["variant"] for r in rows]
    values = [r["accuracy"] for r in rows]
    bars = ax.bar(names, values, color=["#8fb3d9", "#8fb3d9", "#c9c9c9", "#c9c9c9", "#e07b39"][: len(rows)])
    for bar, v in zip(bars, values, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, v + 1, f"{v:.1f}", ha="center", fontsize=9)
    ax.axhline(100 / 9, color="grey", ls=":", lw=1)
    ax.set(ylabel="held-out accuracy (%)", ylim=(0, 105), title="9 classes = 3 patterns x 3 sounds")
    ax.tick_params(axis="x", labelsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
