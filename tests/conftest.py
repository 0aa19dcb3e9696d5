"""Shared test helpers: tiny model configs and inputs."""

from __future__ import annotations

import os

import pytest
import torch

import mbt

ASSETS = os.path.join(os.path.dirname(__file__), "assets")


def tiny_config(**overrides) -> mbt.MBTConfig:
    """A 4-layer, width-24 MBT with 32x32 frames and a 40x16 spectrogram."""
    base = dict(
        num_classes=7, hidden_size=24, num_layers=4, num_heads=4, mlp_dim=48, fusion_layer=2,
        patch_size=(8, 8), temporal_encoding="3d_conv", num_frames=4, image_size=(32, 32),
        spectrogram_size=(40, 16), stochastic_depth=0.0,
    )
    base.update(overrides)
    return mbt.MBTConfig(**base)


def tiny_inputs(cfg: mbt.MBTConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    if "rgb" in cfg.modalities:
        out["rgb"] = torch.rand(batch, cfg.num_frames, 3, *cfg.image_size, generator=g) * 2 - 1
    if "spectrogram" in cfg.modalities:
        out["spectrogram"] = torch.randn(batch, *cfg.spectrogram_size, generator=g)
    return out


def tamper_weights(folder, change) -> None:
    """Change a saved model's weights (`change(state)` in place) and give them a valid checksum, as a
    deliberate edit would: what the weight checks must catch is then not damage."""
    import hashlib
    import json
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["weights_sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (zero heads and cls tokens included) random values, so that
    tests exercise all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


@pytest.fixture
def assets() -> str:
    return ASSETS


@pytest.fixture()
def one_thread():
    """Tiny models and single-worker data on a busy 2-core machine: threads only add contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def run_folder(tmp_path):
    """A factory of run folders as training leaves them, built directly (no training): the tiny
    experiment's config.yaml, and checkpoints/latest.pt holding a fresh model's weights at step 1,
    passed first through `damage(state)` when given, to build the damaged folder a test is about."""
    from mbt.train.checkpoint import LATEST, save_checkpoint

    from .tiny_experiment import tiny_config

    def make(damage=None, name: str = "run"):
        cfg = tiny_config()
        run = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        cfg.save(run / "config.yaml")
        state = {"step": 1, "model": mbt.MBT(cfg.model).state_dict(), "config": cfg.to_dict()}
        if damage is not None:
            damage(state)
        save_checkpoint(state, run / "checkpoints" / LATEST)
        return run

    return make
