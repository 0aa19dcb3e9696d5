"""`count_flops` against the official code's measurements and against torch's own counter."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mbt
from mbt.cli import main
from mbt.models.flops import count_flops, flops_table

from .conftest import tiny_config, tiny_inputs

TUBELETS_32F = mbt.MBTConfig(temporal_encoding="3d_conv", num_frames=32)
# Scenic's compute_flops (XLA cost analysis / 2) on the official model code, spec §7
OFFICIAL_GFLOPS = [
    (TUBELETS_32F, 493.1),
    (TUBELETS_32F.replace(fusion_layer=12), 492.6),
    (TUBELETS_32F.replace(fusion_layer=0), 494.1),
    (TUBELETS_32F.replace(fusion="vanilla"), 686.9),
    (TUBELETS_32F.replace(fusion="vanilla", share_encoder=True, fusion_layer=0), 539.7),
    (mbt.MBTConfig(), 218.5),
    (mbt.MBTConfig(fusion_layer=12), 218.1),
    (mbt.MBTConfig(fusion="vanilla", fusion_layer=0), 482.2),
    (mbt.MBTConfig(modalities=("spectrogram",)), 37.4),
    (mbt.MBTConfig(modalities=("rgb",)), 180.7),
]


@pytest.mark.parametrize("cfg,official", OFFICIAL_GFLOPS)
def test_matches_official_measurements_within_one_percent(cfg, official):
    assert abs(count_flops(cfg).gflops - official) / official < 0.01


def test_paper_claim_bottleneck_costs_about_late_fusion():
    late = count_flops(mbt.MBTConfig(fusion_layer=12)).gflops
    bottleneck = count_flops(mbt.MBTConfig()).gflops
    cross = count_flops(mbt.MBTConfig(fusion="vanilla", fusion_layer=0)).gflops
    assert bottleneck / late < 1.01
    assert cross / late > 2.0


@pytest.mark.parametrize("changes", [
    {}, {"fusion": "vanilla"}, {"fusion": "vanilla", "share_encoder": True, "fusion_layer": 0},
    {"classifier": "gap", "representation_size": 10}, {"fusion_layer": 4},
    {"temporal_encoding": "temporal_sampling", "num_frames": 4, "n_sampled_frames": 2},
    {"modalities": ("rgb",)},
    {"spectrogram_patch_stride": (5, 4), "distillation_token": True, "head_norm": True, "modality_norm": True},
])
def test_equals_torch_flop_counter(changes):
    """Exactly the matmul/conv FLOPs torch counts on a real forward pass (the explicit
    attention path, which the counter can see; 3-channel spectrogram as Scenic feeds)."""
    cfg = tiny_config(**changes)
    model = mbt.MBT(cfg).eval()
    inputs = tiny_inputs(cfg, batch=1)
    if "spectrogram" in inputs:
        inputs["spectrogram"] = inputs["spectrogram"][:, None].expand(-1, 3, -1, -1)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(inputs, output_attentions=True)
    assert counter.get_total_flops() == count_flops(cfg).flops


def test_table_and_cli(capsys):
    rows = {r["variant"]: r for r in flops_table()}
    assert rows["bottleneck (Lf=8)"]["gflops"] == pytest.approx(217.2, abs=0.1)
    assert main(["flops", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gflops"] == pytest.approx(217.2, abs=0.1)
    assert main(["flops", "--set", "model.fusion_layer=0", "--set", "model.fusion=vanilla", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gflops"] == pytest.approx(478.9, abs=0.1)
    assert main(["flops", "--table"]) == 0
    assert "cross-attention (Lf=0)" in capsys.readouterr().out
    assert main(["flops", "--set", "model.fusion_layer=13"]) == 1
    assert "fusion_layer" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["flops"], ["bench"], ["data", "stats", "x.csv", "--format", "csv"],
                                  ["data", "prepare", "x.csv", "--format", "csv", "--out", "o", "--mode", "val"]])
def test_set_takes_one_syntax_everywhere(argv, capsys):
    """--set SECTION.FIELD=VALUE in every verb: a bare field (the old syntax of these verbs)
    or another section is an error that says what to write, before any work."""
    section = "model" if argv[0] in ("flops", "bench") else "data"
    assert main([*argv, "--set", "num_frames=4"]) == 1
    assert f"write {section}.FIELD=VALUE, e.g. {section}.num_frames=4" in capsys.readouterr().err
    assert main([*argv, "--set", "train.lr=0.1"]) == 1
    assert f"e.g. {section}.lr=0.1" in capsys.readouterr().err


def test_cli_takes_presets_and_model_folders(tmp_path, capsys):
    assert main(["flops", "--preset", "audioset-mini", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gflops"] == pytest.approx(217.2, abs=0.1)
    mbt.MBT(tiny_config()).save_pretrained(tmp_path)
    assert main(["flops", "--preset", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == count_flops(tiny_config()).macs
    assert main(["flops", "--preset", "no-such-preset"]) == 1
    assert "unknown preset" in capsys.readouterr().err


def test_one_fusion_schedule_and_one_variant_table():
    cfg = tiny_config()  # bottleneck from layer 2 of 4
    assert cfg.fusion_schedule(train=True) == ("separate", "separate", "bottleneck", "bottleneck")
    no_bottlenecks_at_test = cfg.replace(test_with_bottlenecks=False)
    assert no_bottlenecks_at_test.fusion_schedule(train=False) == ("separate",) * 4
    assert no_bottlenecks_at_test.fusion_schedule(train=True)[2:] == ("bottleneck", "bottleneck")
    assert count_flops(no_bottlenecks_at_test) == count_flops(no_bottlenecks_at_test.replace(fusion_layer=4))
    assert cfg.replace(fusion="vanilla").fusion_schedule()[2:] == ("cross", "cross")
    assert cfg.replace(fusion="vanilla", share_encoder=True).fusion_schedule()[2:] == ("joint", "joint")
    assert cfg.replace(modalities=("rgb",)).fusion_schedule(train=True) == ("separate",) * 4
    # the variants scale MBT-B's fusion layer 8 of 12 to the depth; late fusion is the last layer
    assert mbt.models.fusion_variant("bottleneck", cfg).fusion_layer == 3
    assert mbt.models.fusion_variant("vanilla", cfg, fusion_layer=1).fusion_layer == 1
    assert mbt.models.fusion_variant("late", cfg, fusion_layer=1).fusion_layer == 4
    early = mbt.models.fusion_variant("early", cfg)
    assert (early.fusion, early.share_encoder, early.fusion_layer) == ("vanilla", True, 0)
    with pytest.raises(mbt.ConfigError, match="fusion variant: unknown 'mid'"):
        mbt.models.fusion_variant("mid", cfg)


def test_bench_and_demo_variants_come_from_the_one_table():
    from mbt.bench import VARIANTS, BenchConfig
    from mbt.demo.run import VARIANTS as DEMO_VARIANTS

    assert set(VARIANTS) <= set(mbt.models.FUSION_VARIANTS)
    assert {name for name, _ in DEMO_VARIANTS.values()} <= set(mbt.models.FUSION_VARIANTS)
    bench = BenchConfig(size="tiny")
    assert bench.model_config("bottleneck").fusion_layer == round(bench.model_config("late").num_layers * 8 / 12)


def test_overlapping_spectrogram_patches_are_counted(capsys):
    """AST's audio tower: 16x16 patches at stride 10 over 1024x128 give 1,212 patch tokens
    (+ cls + distillation token), ViT-B; every token pays the blocks, every patch the kernel."""
    from mbt.bench import BenchConfig
    from mbt.models.flops import block_macs

    cfg = mbt.MBTConfig(modalities=("spectrogram",), spectrogram_size=(1024, 128), spectrogram_patch_stride=(10, 10),
                        spectrogram_channels=1, distillation_token=True)
    report = count_flops(cfg)
    assert report.embedding == 1212 * 768 * 16 * 16
    assert report.encoder == 12 * block_macs(cfg, 1214)
    assert report.head == 768 * 527
    argv = ["flops", "--json", "--set", "model.modalities=[spectrogram]", "model.spectrogram_size=[1024,128]",
            "model.spectrogram_patch_stride=[10,10]", "model.spectrogram_channels=1", "model.distillation_token=true"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == report.macs
    assert report.gflops > 3 * count_flops(mbt.MBTConfig(modalities=("spectrogram",))).gflops
    ast = BenchConfig(size="ast").model_config("bottleneck")  # `mbt bench --size ast`
    assert ast.num_tokens("spectrogram") == 1214
    assert count_flops(ast, modalities=("spectrogram",)).encoder == sum(
        block_macs(ast, 1214 + (ast.num_bottleneck_tokens if kind == "bottleneck" else 0))
        for kind in ast.fusion_schedule())


def test_small_models_print_readable_counts(capsys):
    """A small model's count is printed with the prefix that shows it (MFLOPs), not '0.0 GFLOPs',
    and the JSON and the table keep 4 significant digits."""
    from mbt.models.flops import format_count
    from mbt.train.presets import preset

    assert format_count(217.23e9) == "217.2 GFLOPs" and format_count(23_840_000) == "23.84 MFLOPs"
    assert format_count(950) == "950 FLOPs" and format_count(2e6, "floating-point operations", " ") == \
        "2 M floating-point operations"
    assert main(["flops", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    macs = count_flops(preset("tiny").model).macs
    assert 1e6 < macs < 1e9 and out.startswith(f"{macs / 1e6:.4g} MFLOPs (multiply-adds")
    assert main(["flops", "--preset", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gflops"] == pytest.approx(macs / 1e9, rel=1e-3)
    assert main(["flops", "--preset", "tiny", "--table"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert all(float(r.split()[-2]) > 0 for r in rows)  # no 0.0 GFLOPs rows
