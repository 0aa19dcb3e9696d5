"""The CPU inference kernels of `mbt.models.cpu_kernels` (oneDNN fused linear+GELU, cached bf16
weights, chunked bf16 attention) compute the same function as the plain ops; training,
and inference with gradients, keep the plain ops."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import mbt
import mbt.models.cpu_kernels as mbt_module
from mbt.models.cpu_kernels import chunked_attention, cpu_inference_dtype, linear

from .conftest import randomize, tiny_config, tiny_inputs

pytestmark = pytest.mark.skipif(not mbt_module._ONEDNN_LINEAR, reason="torch built without oneDNN")


def _mid_config() -> mbt.MBTConfig:
    """Wide enough for real GEMM blocking, 2 chunks of queries in the bf16 attention."""
    return tiny_config(hidden_size=64, num_heads=4, mlp_dim=256, image_size=(64, 64), num_frames=4,
                       spectrogram_size=(64, 32))


def _plain(fn):
    """`fn()` with the oneDNN paths off."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about TF32 on Intel GPUs when flags change
        with torch.backends.mkldnn.flags(enabled=False):
            return fn()


def test_fast_path_is_taken_only_for_cpu_inference():
    x = torch.randn(2, 3)
    assert cpu_inference_dtype(x) is None  # gradients on
    with torch.no_grad():
        assert cpu_inference_dtype(x) == torch.float32
        assert cpu_inference_dtype(x.double()) is None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert cpu_inference_dtype(x) == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.float16):
            assert cpu_inference_dtype(x) is None
        assert _plain(lambda: cpu_inference_dtype(x)) is None
        with FlopCounterMode(display=False):  # tools that watch the ops see the plain ones
            assert cpu_inference_dtype(x) is None


@pytest.mark.parametrize("gelu", [None, "tanh", "exact"])
def test_fused_linear_equals_linear_then_gelu(gelu):
    layer = torch.nn.Linear(48, 80)
    x = torch.randn(3, 17, 48)
    ref = layer(x)
    ref = F.gelu(ref, approximate="tanh" if gelu == "tanh" else "none") if gelu else ref
    with torch.no_grad():
        fast = linear(x, layer, gelu)
        low = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = linear(x, layer, gelu)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=0.05, rtol=0.05)


def test_fp32_inference_matches_plain_ops():
    cfg = _mid_config()
    model = randomize(mbt.MBT(cfg)).eval()
    inputs = tiny_inputs(cfg)
    with torch.no_grad():
        fast = model(inputs).logits
        plain = _plain(lambda: model(inputs).logits)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_chunked_bf16_attention_matches_fp32_attention(monkeypatch):
    monkeypatch.setattr(mbt_module, "_ATTENTION_QUERY_CHUNK", 64)  # 150 queries: chunks of 64, 64 and 22
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 150, 16, generator=g) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    out = chunked_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.shape == (2, 150, 3, 16) and out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05
    assert (out.float() - ref).abs().mean() < 0.005


def test_bf16_inference_stays_close_to_fp32_and_to_plain_autocast():
    cfg = _mid_config()
    model = randomize(mbt.MBT(cfg)).eval()
    inputs = tiny_inputs(cfg)
    with torch.no_grad():
        ref = model(inputs).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(inputs).logits
            plain = _plain(lambda: model(inputs).logits)
    assert fast.dtype == torch.bfloat16
    scale = ref.abs().max()
    assert (fast.float() - ref).abs().max() < 0.05 * scale
    assert (fast.float() - ref).abs().max() < 3 * (plain.float() - ref).abs().max() + 0.01 * scale


def test_cached_bf16_weights_follow_weight_changes_and_training_drops_them():
    cfg = _mid_config()
    model = randomize(mbt.MBT(cfg)).eval()
    inputs = tiny_inputs(cfg)

    def bf16_logits():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(inputs).logits.float()

    before = bf16_logits()
    fc = model.towers["rgb"][0].mlp.fc1
    assert "_lowp_weight" in fc.__dict__
    fresh = randomize(mbt.MBT(cfg), seed=1).eval()
    model.load_state_dict(fresh.state_dict())  # in-place copies into the same tensors
    after = bf16_logits()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = fresh(inputs).logits.float()
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, atol=0, rtol=0)
    model.train()
    assert not any("_lowp_weight" in m.__dict__ for m in model.modules())


def test_training_and_inference_with_gradients_use_the_plain_ops(monkeypatch):
    decisions = []
    decide = mbt_module.cpu_inference_dtype

    def spy(x):
        decisions.append(decide(x))
        return decisions[-1]

    monkeypatch.setattr(mbt_module, "cpu_inference_dtype", spy)
    cfg = tiny_config()
    model = mbt.MBT(cfg).train()
    model(tiny_inputs(cfg)).logits.sum().backward()
    model.eval()(tiny_inputs(cfg))
    assert decisions and set(decisions) == {None}
    decisions.clear()
    with torch.no_grad():
        model(tiny_inputs(cfg))
    assert decisions and set(decisions) == {torch.float32}
