"""Initialise both MBT towers from one ImageNet ViT, as the official code does (spec §3).

Every tower gets a copy of the ViT's blocks and final norm. The rgb and spectrogram
position embeddings start from the ViT's: its cls position, then its patch grid resized
bilinearly (align_corners, which is what Scenic's `scipy.ndimage.zoom(order=1)` computes)
to each modality's grid and tiled over time for video. The bottleneck tokens start from
the ViT's cls position plus its grid shrunk to sqrt(B) x B/sqrt(B). A 2-D patch kernel
becomes a tubelet kernel by the central-frame (or average) rule. The head stays at zero.
Overlapping spectrogram patches resize the grid to the strided one (`MBTConfig.patch_grid`);
a distillation token takes a distilled DeiT's token and position, else the cls position.

The paper started from the original ImageNet-21k ViT-B/16 (Google's `ViT-B_16.npz`, timm's
`vit_base_patch16_224.orig_in21k`), not the AugReg weights that timm's old `_in21k` alias
now loads.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.config import PAPER_VIT
from ..models.mbt import MBT, inflate_patch_kernel
from ..models.pretrained import check_foreign_weights


class ViTFormatError(ValueError):
    """A ViT checkpoint cannot initialise this MBT; the message says why."""


# ---------------------------------------------------------------------- reading sources
def load_vit_state_dict(source: str | os.PathLike | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ViT state dict in timm's naming, from a state dict (timm or Hugging Face names),
    a local `.safetensors` / `.pth` / `.pt` / `.bin` file, Google's `.npz` (original ViT
    or big_vision), or a timm model name (downloaded by timm, so online)."""
    if isinstance(source, Mapping):
        return _to_timm_names(dict(source), "<state dict>")
    path = os.fspath(source)
    if os.path.isfile(path):
        if path.endswith(".npz"):
            return _load_npz(path)
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "module"):
                if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
                    state = state[key]
        try:
            check_foreign_weights(state, path)
        except ValueError as e:
            raise ViTFormatError(str(e)) from e
        return _to_timm_names(dict(state), path)
    if os.sep in path or path.endswith((".npz", ".safetensors", ".pth", ".pt", ".bin")):
        raise FileNotFoundError(f"{path}: no such ViT checkpoint file")
    return _load_timm(path)


def _load_timm(name: str) -> dict[str, Tensor]:
    import timm

    if name not in timm.list_models(pretrained=True) and name.split(".")[0] not in timm.list_models():
        raise ViTFormatError(f"{name!r} is neither a file nor a timm model name")
    try:
        vit = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:  # network, hub or cache failures all end here
        raise ViTFormatError(
            f"could not load timm model {name!r} ({type(e).__name__}: {e}); offline, download its weights "
            "once and pass the local .safetensors/.npz file instead"
        ) from e
    return vit.state_dict()


def _load_npz(path: str) -> dict[str, Tensor]:
    """Google's ViT `.npz` through timm's own reader, into a timm ViT of matching shape."""
    from timm.models.vision_transformer import VisionTransformer

    with np.load(path) as z:
        keys = set(z.files)
        prefix = next((p for p in ("", "opt/target/", "params/") if f"{p}embedding/kernel" in keys), None)
        if prefix is None:
            raise ViTFormatError(f"{path}: no embedding/kernel, not a Google ViT checkpoint")
        kernel = z[f"{prefix}embedding/kernel"]
        depth = len({m.group(1) for k in keys if k.startswith(prefix) and (m := re.search(r"/encoderblock_(\d+)/", k))})
        block = f"{prefix}Transformer/encoderblock_0/"
        query = next(k for k in keys if k.startswith(block + "MultiHeadDotProduct") and k.endswith("query/kernel"))
        heads = z[query].shape[1]
        mlp = z[next(k for k in keys if k.startswith(block + "MlpBlock") and k.endswith("Dense_0/kernel"))].shape[1]
        posemb = z[f"{prefix}Transformer/posembed_input/pos_embedding"].shape[1]
        has_cls = f"{prefix}cls" in keys
    patch, dim = kernel.shape[0], kernel.shape[-1]
    side = math.isqrt(posemb - has_cls)
    vit = VisionTransformer(
        img_size=side * patch, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=mlp / dim, num_classes=0, class_token=has_cls, global_pool="token" if has_cls else "avg",
    )
    vit.load_pretrained(path, prefix=prefix)
    return vit.state_dict()


_HF_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def _to_timm_names(state: dict[str, Tensor], origin: str) -> dict[str, Tensor]:
    """Accept timm ViT state dicts as they are and map Hugging Face `ViTModel` ones."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "patch_embed.proj.weight" in state:
        return state
    hf = {k.removeprefix("vit."): v for k, v in state.items()}
    if "embeddings.patch_embeddings.projection.weight" not in hf:
        raise ViTFormatError(
            f"{origin}: not a ViT state dict (no patch_embed.proj.weight nor "
            "embeddings.patch_embeddings.projection.weight)"
        )
    out = {
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
        "pos_embed": hf["embeddings.position_embeddings"],
        "norm.weight": hf["layernorm.weight"],
        "norm.bias": hf["layernorm.bias"],
    }
    if "embeddings.cls_token" in hf:
        out["cls_token"] = hf["embeddings.cls_token"]
    layer = 0
    while f"encoder.layer.{layer}.layernorm_before.weight" in hf:
        src, dst = f"encoder.layer.{layer}.", f"blocks.{layer}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.qkv.{kind}"] = torch.cat(
                [hf[src + f"attention.attention.{p}.{kind}"] for p in ("query", "key", "value")]
            )
            for a, b in _HF_BLOCK.items():
                out[dst + f"{b}.{kind}"] = hf[src + f"{a}.{kind}"]
        layer += 1
    return out


# ---------------------------------------------------------------------- geometry
def resize_grid(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """[h, w, D] -> [size, D] by bilinear interpolation with aligned corners."""
    if tuple(grid.shape[:2]) == tuple(size):
        return grid
    x = grid.permute(2, 0, 1).unsqueeze(0).float()
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)[0].permute(1, 2, 0)


def _split_posemb(state: Mapping[str, Tensor]) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """(cls position [D] or None, distillation-token position [D] or None (DeiT distilled),
    grid [side, side, D]) of a ViT position embedding."""
    pe = state["pos_embed"][0]
    prefix = 0
    if math.isqrt(pe.shape[0]) ** 2 != pe.shape[0]:
        prefix = ("cls_token" in state) + ("dist_token" in state)
    cls_pos = pe[0] if prefix else None
    dist_pos = pe[1] if prefix == 2 else None
    grid = pe[prefix:]
    side = math.isqrt(grid.shape[0])
    if side * side != grid.shape[0]:
        raise ViTFormatError(f"ViT position embedding has {grid.shape[0]} grid tokens: not a square grid")
    return cls_pos, dist_pos, grid.reshape(side, side, -1)


# ---------------------------------------------------------------------- the initialisation
@torch.no_grad()
def init_from_vit(
    model: MBT,
    source: str | os.PathLike | Mapping[str, Tensor] = PAPER_VIT,
    *,
    restore_positional_embedding: bool = True,
    restore_input_embedding: bool = True,
    restore_spectrogram_cls: bool = True,
) -> dict[str, Any]:
    """Load one ImageNet ViT into every tower of `model` (in place) and report what was
    set. `restore_spectrogram_cls`: the official code means to copy the ViT's cls token
    into the spectrogram cls too but looks it up under a wrong name, so there it stays at
    zero; False reproduces that."""
    cfg = model.config
    vit = load_vit_state_dict(source)
    d = cfg.hidden_size
    width = vit["patch_embed.proj.weight"].shape[0]
    if width != d:
        raise ViTFormatError(f"ViT width {width} != hidden_size {d}")
    depth = 1 + max(int(k.split(".")[1]) for k in vit if k.startswith("blocks."))
    if cfg.num_layers > depth:
        raise ViTFormatError(f"the ViT has {depth} blocks, fewer than num_layers={cfg.num_layers}")
    mlp = vit["blocks.0.mlp.fc1.weight"].shape[0]
    if mlp != cfg.mlp_dim:
        raise ViTFormatError(f"ViT MLP width {mlp} != mlp_dim {cfg.mlp_dim}")
    unsupported = sorted({k.split(".")[2] for k in vit if k.startswith("blocks.0.") and k.split(".")[2]
                          not in ("norm1", "attn", "norm2", "mlp")})
    if unsupported:
        raise ViTFormatError(f"ViT blocks have parts MBT's blocks lack: {unsupported}")

    report: dict[str, Any] = {"blocks": min(depth, cfg.num_layers), "vit_depth": depth}
    for tower in model.towers.values():
        for i, blk in enumerate(tower):
            blk_state = {k[len(f"blocks.{i}.") :]: v for k, v in vit.items() if k.startswith(f"blocks.{i}.")}
            if "attn.qkv.bias" not in blk_state:  # ViTs without qkv bias
                blk_state["attn.qkv.bias"] = torch.zeros(3 * d)
            blk.load_state_dict(blk_state, strict=True)
    for norm in model.final_norms().values():
        norm.load_state_dict({"weight": vit["norm.weight"], "bias": vit["norm.bias"]})

    cls_pos, dist_pos, grid = _split_posemb(vit)
    token = cfg.classifier == "token"
    if restore_positional_embedding:
        for m in cfg.modalities:
            t, h, w = cfg.patch_grid(m)  # the spectrogram's follows its patch stride
            pos = resize_grid(grid, (h, w)).reshape(h * w, d).repeat(t, 1)
            if m == "spectrogram" and cfg.distillation_token:  # DeiT's own, else the cls position
                pos = torch.cat([_cls_position(dist_pos if dist_pos is not None else cls_pos, d), pos])
            if m in model.cls_tokens:  # the token head's, or a kept cls with a pooling head
                pos = torch.cat([_cls_position(cls_pos, d), pos])
            model.pos_embed[m].copy_(pos.unsqueeze(0))
        report["pos_embed"] = {m: [*cfg.patch_grid(m)] for m in cfg.modalities}
        if model.bottleneck is not None:
            b = cfg.num_bottlenecks
            gh = math.isqrt(b)
            gw = b // gh
            if gh * gw != b:
                raise ViTFormatError(
                    f"num_bottlenecks={b}: the official ViT initialisation shrinks the position grid to "
                    f"{gh}x{gw}, which needs gh*gw == B (e.g. 4, 6, 8, 16); choose such a B"
                )
            z = resize_grid(grid, (gh, gw)).reshape(b, d)
            if token:
                z = torch.cat([_cls_position(cls_pos, d), z])
            model.bottleneck.copy_(z.unsqueeze(0))
            report["bottleneck"] = [gh, gw]

    if restore_input_embedding:
        kernel, bias = vit["patch_embed.proj.weight"], vit["patch_embed.proj.bias"]
        if tuple(kernel.shape[-2:]) != tuple(cfg.patch_size):
            from timm.layers import resample_patch_embed

            kernel = resample_patch_embed(kernel, list(cfg.patch_size))
            report["patch_resampled"] = [*cfg.patch_size]
        for m in cfg.modalities:
            proj = model.embeddings[m].proj
            if proj.weight.dim() == 5:
                method = "central_frame" if cfg.tubelet_init == "default" else cfg.tubelet_init
                proj.weight.copy_(inflate_patch_kernel(kernel, proj.weight.shape[2], method))
                report["tubelet_init"] = method
            elif proj.weight.shape[1] == 1:
                proj.weight.copy_(kernel.sum(dim=1, keepdim=True))
            else:
                proj.weight.copy_(kernel)
            proj.bias.copy_(bias)

    if "cls_token" in vit:
        for m in model.cls_tokens:
            if m == "rgb" or cfg.num_modalities == 1 or restore_spectrogram_cls:
                model.cls_tokens[m].copy_(vit["cls_token"].reshape(1, 1, d))
    if model.dist_token is not None:  # a copy of the cls token would stay its twin: zero unless DeiT has one
        if "dist_token" in vit:
            model.dist_token.copy_(vit["dist_token"].reshape(1, 1, d))
        report["dist_token"] = "restored" if "dist_token" in vit else "zero (the ViT has none)"
    return report


def _cls_position(cls_pos: Tensor | None, d: int) -> Tensor:
    return (cls_pos if cls_pos is not None else torch.zeros(d)).reshape(1, d)
