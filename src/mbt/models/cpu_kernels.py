"""CPU inference kernels: faster kernels for the same maths when the model runs on CPU
without autograd; training, CUDA and `torch.compile` keep the plain ops.

They use private PyTorch API (`torch.ops.mkldnn._linear_pointwise`,
`torch.utils._python_dispatch`), so they live apart from the network.
`torch.backends.mkldnn.flags(enabled=False)` turns them off. Measurements:
docs/benchmarks.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_ATTENTION_QUERY_CHUNK = 512
"""Queries per chunk of the bf16 CPU attention: 12 heads x 512 x 1,569 bf16 scores (19 MB)
stay in a server CPU's L3 cache between the two matmuls."""


def cpu_inference_dtype(x: Tensor) -> torch.dtype | None:
    """The compute dtype of a CPU inference fast path for `x` (float32, or bfloat16 under
    CPU bf16 autocast), or None when the plain ops must run: with gradients, off CPU,
    under `torch.compile`, or while a dispatch mode (FLOP counter, fake tensors) watches
    the ops."""
    if not (x.device.type == "cpu" and _ONEDNN_LINEAR and not torch.is_grad_enabled()
            and torch.backends.mkldnn.enabled and not torch.compiler.is_compiling()
            and _get_current_dispatch_mode() is None):
        return None
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return torch.float32 if x.dtype == torch.float32 else None


def _lowp_weight(layer: nn.Linear, dtype: torch.dtype) -> Tensor:
    """`layer.weight` cast to `dtype`, kept on the layer while the weight is unchanged (its
    version counter and storage), so that repeated inference calls under autocast do not
    re-cast every weight. `MBT.train()` drops these copies."""
    w = layer.weight
    key = (w._version, w.data_ptr(), w.device, dtype)
    cached = layer.__dict__.get("_lowp_weight")
    if cached is None or cached[0] != key:
        cached = (key, w.detach().to(dtype))
        layer.__dict__["_lowp_weight"] = cached
    return cached[1]


def linear(x: Tensor, layer: nn.Linear, gelu: str | None = None) -> Tensor:
    """`layer(x)`, then GELU if `gelu` is given: 'tanh' (its tanh approximation, Scenic's)
    or 'exact' (erf).

    CPU inference makes it one oneDNN call: its AVX-512 GEMM runs this model's shapes
    5-15% faster than the BLAS (MKL) behind `F.linear` on AMD CPUs, adds the bias inside the GEMM
    instead of copying it into the output first, and applies the GELU to each output tile
    while it is in cache instead of in a second pass. Under bf16 autocast it multiplies
    bf16 copies of the weights (cached, see `_lowp_weight`), as autocast would, and
    returns bf16 as autocast's linear does."""
    dtype = cpu_inference_dtype(x)
    if dtype is None:
        y = layer(x)
        return F.gelu(y, approximate="tanh" if gelu == "tanh" else "none") if gelu else y
    weight = layer.weight if dtype == torch.float32 else _lowp_weight(layer, dtype)
    algorithm = {"tanh": "tanh", "exact": "none"}[gelu] if gelu else ""
    return torch.ops.mkldnn._linear_pointwise(
        x.to(dtype), weight, layer.bias, "gelu" if gelu else "none", [], algorithm)


def chunked_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v for bf16 inference on CPU, [B, H, S, Dh] -> [B, S, H, Dh].

    PyTorch's flash-attention kernel for CPU runs no faster in bf16 than in fp32 on CPUs
    without AMX; two batched bf16 matmuls per chunk of queries (oneDNN's bf16 GEMM) with
    the softmax between them in cache are 1.5x faster here. The scores are rounded to bf16
    before the softmax (computed in fp32 internally), as autocast's math attention does."""
    b, h, s, dh = q.shape
    out = q.new_empty(b, s, h, dh)
    for i in range(b):
        qs, kt, vs = q[i] * dh**-0.5, k[i].transpose(1, 2), v[i]
        for j in range(0, s, _ATTENTION_QUERY_CHUNK):
            p = torch.softmax(torch.bmm(qs[:, j : j + _ATTENTION_QUERY_CHUNK], kt), dim=-1)
            out[i, j : j + _ATTENTION_QUERY_CHUNK] = torch.bmm(p, vs).transpose(0, 1)
    return out
