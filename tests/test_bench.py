"""`mbt bench` at a tiny size on CPU: the fields it reports, FLOP/s fractions computed from
the measured times, activation memory that checkpointing reduces, interleaved ratios,
bf16-vs-fp32 agreement, and the trainer's data-wait fraction. (Speed targets live in
benchmarks/ and docs/benchmarks.md, never here.)"""

from __future__ import annotations

import json
import statistics

import pytest

from mbt.bench import BenchConfig, Case, amp_agreement, compare_cases, measure_case, summarize
from mbt.cli import main
from mbt.models.config import ConfigError
from mbt.models.flops import count_flops

from .tiny_experiment import tiny_config

QUICK = ["--rounds", "2", "--warmup", "1", "--min-round-s", "0.02", "--matmul-size", "256"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert main(["bench", "--size", "tiny", "--set", "model.mlp_dim=128", "--variants", "bottleneck",
                 "--eval-batch", "1", "--train-batch", "2", *QUICK, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_cli_reports_time_throughput_flops_and_memory_per_case(report, capsys):
    assert [r["case"] for r in report["cases"]] == ["bottleneck eval b1", "bottleneck train b2"]
    for r in report["cases"]:
        assert r["size"] == "tiny" and r["model_overrides"] == {"mlp_dim": 128} and len(r["rounds"]) == 2
        assert r["s_per_clip"] > 0 and r["clips_per_s"] == pytest.approx(1 / r["s_per_clip"])
        assert r["achieved_tflops"] > 0 and r["matmul_tflops"] > 0 and r["best_matmul_tflops"] >= r["matmul_tflops"]
        assert r["fraction_of_matmul"] > 0 and 0 < r["fraction_of_best_matmul"] <= r["fraction_of_matmul"]
        mem = r["memory"]
        assert mem["kind"] == "torch CPU allocations (profiler)"
        assert mem["persistent_mb"] > 0 and mem["step_peak_mb"] > 0
        assert mem["peak_mb"] == pytest.approx(mem["persistent_mb"] + mem["step_peak_mb"], abs=0.11)
        assert mem["rss_peak_mb"] > 0  # a fresh process per case: the resident set is its own
        assert r["env"]["torch_threads"] >= 1 and r["env"]["device"] == "cpu"
        assert r["env"]["malloc_env"]  # the thresholds were set in the case's process
    evaluation, train = report["cases"]
    assert evaluation["optimizer"] is None and train["optimizer"] == "sgd"
    assert train["memory"]["persistent_mb"] > 1.8 * evaluation["memory"]["persistent_mb"]  # + momentum


def test_flop_fractions_are_computed_from_the_measured_times(report):
    for r in report["cases"]:
        cfg = BenchConfig(size="tiny", model_overrides=r["model_overrides"]).model_config(r["variant"])
        assert cfg.mlp_dim == 128 and cfg.fusion_layer == 3
        train = r["mode"] == "train"
        flops = 2 * count_flops(cfg, train=train).macs * r["batch"] * (3 if train else 1)
        assert r["model_gflop"] == pytest.approx(flops / 1e9)
        ref = 2 * r["matmul_n"] ** 3
        rounds = r["rounds"]
        done = [x["step_flops"] for x in rounds]  # stochastic depth (0.3) skips branches in training only
        assert all(f < flops for f in done) if train else all(f == flops for f in done)
        assert r["step_gflop"] == pytest.approx(statistics.mean(done) / 1e9)
        assert r["fraction_of_matmul"] == pytest.approx(statistics.median(
            (f / x["step_s"]) / (ref / x["matmul_s"]["torch.mm"]) for f, x in zip(done, rounds, strict=True)))
        assert r["fraction_of_best_matmul"] == pytest.approx(statistics.median(
            (f / x["step_s"]) / (ref / min(x["matmul_s"].values())) for f, x in zip(done, rounds, strict=True)))
        assert r["s_per_clip"] == pytest.approx(statistics.median(x["step_s"] for x in rounds) / r["batch"])


def test_training_flops_count_the_branches_stochastic_depth_keeps():
    """Without stochastic depth a step computes exactly `count_flops`' multiply-adds (x3 for
    training); with it, the kept fraction of the encoder's branches."""
    import torch

    from mbt.bench import StepRunner

    def runner(rate: float) -> StepRunner:
        bench = BenchConfig(size="tiny", model_overrides={"stochastic_depth": rate})
        return StepRunner(Case(variant="bottleneck", mode="train", batch=4), bench, torch.device("cpu"))

    dense = runner(0.0)
    r = dense.round(2)
    assert r["step_flops"] == dense.flops and dense.executed_flops == [dense.flops] * 2
    sparse = runner(0.9)
    report = count_flops(sparse.cfg, train=True)
    encoder = 6.0 * report.encoder * 4
    done = [sparse.round(1)["step_flops"] for _ in range(4)]
    assert all(sparse.flops - encoder < f < sparse.flops for f in done) and len(set(done)) > 1


def test_summary_takes_the_median_of_per_round_ratios():
    rounds = [  # the machine slows down in round 2: the per-round ratio stays 0.5
        {"step_s": 2.0, "matmul_s": {"torch.mm": 1.0, "onednn": 0.5}},
        {"step_s": 8.0, "matmul_s": {"torch.mm": 4.0, "onednn": 4.0}},
        {"step_s": 3.0, "matmul_s": {"torch.mm": 1.0, "onednn": 1.5}},
    ]
    r = summarize(Case(batch=2), step_flops=100.0, matmul_flops=100.0, rounds=rounds, peak_tflops=1e-10)
    assert r["step_s"] == 3.0 and r["s_per_clip"] == 1.5
    assert r["fraction_of_matmul"] == pytest.approx(0.5)  # ratios 0.5, 0.5, 1/3
    assert r["fraction_of_best_matmul"] == pytest.approx(1 / 3)  # ratios 0.25, 0.5, 1/3
    assert r["achieved_tflops"] == pytest.approx(100 / 3 / 1e12)
    assert r["fraction_of_peak"] == pytest.approx(100 / 3 / 1e12 / 1e-10)


def test_checkpointing_reduces_measured_activation_memory():
    mid = {"hidden_size": 192, "num_layers": 6, "num_heads": 3, "mlp_dim": 768, "image_size": (112, 112),
           "spectrogram_size": (400, 128)}
    bench = BenchConfig(size="tiny", model_overrides=mid, rounds=1, warmup=1, min_round_s=0.0, matmul_size=128,
                        isolate=False)
    plain, ckpt = (measure_case(Case("bottleneck", "train", 4, grad_checkpointing=c), bench) for c in (False, True))
    assert plain["memory"]["persistent_mb"] == pytest.approx(ckpt["memory"]["persistent_mb"])
    # 6 layers x 2,376 tokens x 192 x ~20 stored values per token, plus the gradients
    assert plain["memory"]["step_peak_mb"] > 150
    assert ckpt["memory"]["step_peak_mb"] < 0.5 * plain["memory"]["step_peak_mb"]
    assert ckpt["step_gflop"] == plain["step_gflop"]  # the same work counted; recomputation is not


def test_interleaved_comparison_reports_ratios_to_the_first_case():
    bench = BenchConfig(size="tiny", rounds=2, warmup=1, min_round_s=0.02, matmul_size=256, isolate=False)
    result = compare_cases([Case("late", "train", 2), Case("bottleneck", "train", 2), Case("vanilla", "eval", 1)],
                           bench)
    late, bottleneck, vanilla = result["cases"]
    assert late["speed_vs_first"] == 1.0
    for r in (bottleneck, vanilla):
        expected = statistics.median((r["batch"] / x["step_s"]) / (2 / y["step_s"])
                                     for x, y in zip(r["rounds"], late["rounds"], strict=True))
        assert r["speed_vs_first"] == pytest.approx(expected)
    assert bottleneck["step_gflop"] > late["step_gflop"]  # the fused layer sees 5 more tokens
    assert all(r["memory"]["step_peak_mb"] > 0 for r in result["cases"])


def test_compile_and_bf16_training_paths_run(monkeypatch):
    """`--compile` traces the model with dynamo (here with the eager backend: inductor's code
    generation takes about a minute on this CPU and is torch's own), forward and backward;
    bf16 autocast training with checkpointing is timed against a bf16 matmul."""
    import functools

    import torch

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    bench = BenchConfig(size="tiny", rounds=1, warmup=1, min_round_s=0.0, matmul_size=128, isolate=False)
    cases = [Case("bottleneck", "eval", 2, compile=True), Case("bottleneck", "train", 2, compile=True),
             Case("late", "train", 2, amp="bf16", grad_checkpointing=True)]
    result = compare_cases(cases, bench)
    assert [r["case"] for r in result["cases"]] == ["bottleneck eval b2 (compile)", "bottleneck train b2 (compile)",
                                                    "late train b2 (bf16, ckpt)"]
    assert all(r["s_per_clip"] > 0 and r["memory"]["step_peak_mb"] > 0 for r in result["cases"])
    assert set(result["cases"][2]["rounds"][0]["matmul_s"]) >= {"torch.mm"}
    torch._dynamo.reset()


def test_bf16_agreement_reports_top1_and_speed():
    r = amp_agreement(BenchConfig(size="tiny"), clips=4, batch=2)
    assert r["dtype"] == "bfloat16" and r["clips"] == 4
    assert 0.0 <= r["top1_agreement"] <= 1.0 and 0.0 <= r["top5_overlap"] <= 1.0
    assert 0 < r["max_diff_over_std"] < 0.3
    assert r["speedup"] > 0 and r["fp32_s_per_clip"] > 0 and r["amp_s_per_clip"] > 0


def test_bad_options_name_the_field(capsys):
    with pytest.raises(ConfigError, match="variant"):
        Case(variant="middle")
    with pytest.raises(ConfigError, match="size"):
        BenchConfig(size="huge")
    assert main(["bench", "--set", "model.fusion_layer=2"]) == 1
    assert "fusion variant sets these" in capsys.readouterr().err
    assert main(["bench", "--set", "model.mlp_dims=2"]) == 1
    assert "mlp_dims" in capsys.readouterr().err


def test_trainer_reports_the_fraction_of_time_spent_waiting_for_data(tmp_path):
    from mbt.train.loop import train

    cfg = tiny_config("train.epochs=1", "train.num_workers=1", "train.log_every=2")
    train(cfg, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    waits = [r["data_wait"] for r in records if r["split"] == "train"]
    assert len(waits) == 2 and all(0.0 <= w < 1.0 for w in waits)
    assert waits[0] > 0  # the first step waits for the worker to start
