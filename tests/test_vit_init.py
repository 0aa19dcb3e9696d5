"""Initialising MBT from an ImageNet ViT, from every supported source, by the official rules."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import scipy.ndimage
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import mbt
from mbt.weights.vit import ViTFormatError, init_from_vit, load_vit_state_dict

from .conftest import tiny_config, tiny_inputs

D, DEPTH, HEADS, MLP = 24, 4, 4, 48


def _vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=D, depth=DEPTH, num_heads=HEADS,
                            mlp_ratio=MLP / D, num_classes=5, **kw)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return vit


def _google_npz(vit: VisionTransformer, path) -> None:
    """The original ViT .npz layout (pre-Linen names), as google-research/vision_transformer
    ships it."""
    sd = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"], "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"], "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"],
    }
    hd = D // HEADS
    for i in range(DEPTH):
        b, s = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        out[b + "LayerNorm_0/scale"], out[b + "LayerNorm_0/bias"] = sd[s + "norm1.weight"], sd[s + "norm1.bias"]
        out[b + "LayerNorm_2/scale"], out[b + "LayerNorm_2/bias"] = sd[s + "norm2.weight"], sd[s + "norm2.bias"]
        qkv_w, qkv_b = sd[s + "attn.qkv.weight"].reshape(3, D, D), sd[s + "attn.qkv.bias"].reshape(3, D)
        for j, name in enumerate(("query", "key", "value")):
            out[b + f"MultiHeadDotProductAttention_1/{name}/kernel"] = qkv_w[j].T.reshape(D, HEADS, hd)
            out[b + f"MultiHeadDotProductAttention_1/{name}/bias"] = qkv_b[j].reshape(HEADS, hd)
        out[b + "MultiHeadDotProductAttention_1/out/kernel"] = sd[s + "attn.proj.weight"].T.reshape(HEADS, hd, D)
        out[b + "MultiHeadDotProductAttention_1/out/bias"] = sd[s + "attn.proj.bias"]
        for j, fc in ((0, "fc1"), (1, "fc2")):
            out[b + f"MlpBlock_3/Dense_{j}/kernel"] = sd[s + f"mlp.{fc}.weight"].T
            out[b + f"MlpBlock_3/Dense_{j}/bias"] = sd[s + f"mlp.{fc}.bias"]
    np.savez(path, **out)


def _hf_state(vit: VisionTransformer) -> dict[str, torch.Tensor]:
    """Hugging Face `ViTModel` names (with the `vit.` prefix of ViTForImageClassification)."""
    sd = vit.state_dict()
    out = {"vit.embeddings.cls_token": sd["cls_token"], "vit.embeddings.position_embeddings": sd["pos_embed"],
           "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "vit.layernorm.weight": sd["norm.weight"], "vit.layernorm.bias": sd["norm.bias"]}
    for i in range(DEPTH):
        s, h = f"blocks.{i}.", f"vit.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = sd[s + f"attn.qkv.{kind}"].chunk(3)
            out[h + f"attention.attention.query.{kind}"] = q
            out[h + f"attention.attention.key.{kind}"] = k
            out[h + f"attention.attention.value.{kind}"] = v
            out[h + f"attention.output.dense.{kind}"] = sd[s + f"attn.proj.{kind}"]
            out[h + f"intermediate.dense.{kind}"] = sd[s + f"mlp.fc1.{kind}"]
            out[h + f"output.dense.{kind}"] = sd[s + f"mlp.fc2.{kind}"]
            out[h + f"layernorm_before.{kind}"] = sd[s + f"norm1.{kind}"]
            out[h + f"layernorm_after.{kind}"] = sd[s + f"norm2.{kind}"]
    return out


def _assert_same(a: dict, b: dict, keys) -> None:
    for k in keys:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-7, msg=k)


def test_every_source_gives_the_same_weights(tmp_path):
    vit = _vit()
    ref = {k: v for k, v in vit.state_dict().items() if not k.startswith("head")}
    from safetensors.torch import save_file

    save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    torch.save({"model": vit.state_dict()}, tmp_path / "vit.pth")
    _google_npz(vit, tmp_path / "ViT-B_16.npz")
    for source in (vit.state_dict(), str(tmp_path / "vit.safetensors"), str(tmp_path / "vit.pth"),
                   str(tmp_path / "ViT-B_16.npz"), _hf_state(vit)):
        got = load_vit_state_dict(source)
        _assert_same(got, ref, ref.keys())


def test_official_rules_for_positions_bottlenecks_kernels_and_cls():
    vit = _vit()
    sd = vit.state_dict()
    cfg = tiny_config(num_frames=4, image_size=(32, 32), spectrogram_size=(40, 16), num_bottlenecks=4)
    model = mbt.MBT(cfg)
    init_from_vit(model, sd)
    cls_pos, grid = sd["pos_embed"][0, 0], sd["pos_embed"][0, 1:].reshape(4, 4, D)
    # towers start identical, equal to the ViT
    for m in ("rgb", "spectrogram"):
        for i in range(DEPTH):
            torch.testing.assert_close(model.tower(m)[i].attn.qkv.weight, sd[f"blocks.{i}.attn.qkv.weight"])
    # rgb: the 4x4 grid tiled over the 2 tubelet slices, after the ViT cls position
    rgb = model.pos_embed["rgb"][0]
    torch.testing.assert_close(rgb[0], cls_pos)
    for t in range(2):
        torch.testing.assert_close(rgb[1 + 16 * t : 17 + 16 * t], grid.reshape(16, D))
    # spectrogram: 4x4 -> 5x2 grid, as scipy.ndimage.zoom(order=1) (what Scenic calls) computes
    want = scipy.ndimage.zoom(grid.numpy(), (5 / 4, 2 / 4, 1), order=1)
    spec = model.pos_embed["spectrogram"][0]
    torch.testing.assert_close(spec[0], cls_pos)
    np.testing.assert_allclose(spec[1:].detach().numpy(), want.reshape(10, D), atol=1e-6)
    # bottlenecks: cls position + the grid shrunk to 2x2
    want = scipy.ndimage.zoom(grid.numpy(), (2 / 4, 2 / 4, 1), order=1).reshape(4, D)
    torch.testing.assert_close(model.bottleneck[0, 0], cls_pos)
    np.testing.assert_allclose(model.bottleneck[0, 1:].detach().numpy(), want, atol=1e-6)
    # tubelet kernel: the ViT kernel at the central frame (t = ft // 2 = 1), zero elsewhere
    w = model.embeddings["rgb"].proj.weight
    torch.testing.assert_close(w[:, :, 1], sd["patch_embed.proj.weight"])
    assert torch.count_nonzero(w[:, :, 0]) == 0
    torch.testing.assert_close(model.embeddings["spectrogram"].proj.weight, sd["patch_embed.proj.weight"])
    torch.testing.assert_close(model.cls_tokens["rgb"], sd["cls_token"])
    torch.testing.assert_close(model.cls_tokens["spectrogram"], sd["cls_token"])
    assert torch.count_nonzero(model.head.weight) == 0


def test_official_spectrogram_cls_quirk_and_average_frames():
    sd = _vit().state_dict()
    model = mbt.MBT(tiny_config(tubelet_init="average_frame"))
    init_from_vit(model, sd, restore_spectrogram_cls=False)
    assert torch.count_nonzero(model.cls_tokens["spectrogram"]) == 0
    w = model.embeddings["rgb"].proj.weight
    torch.testing.assert_close(w[:, :, 0], sd["patch_embed.proj.weight"] / 2)
    torch.testing.assert_close(w.sum(2), sd["patch_embed.proj.weight"])


def test_rgb_tower_computes_what_the_vit_computes():
    """One frame through the initialised rgb tower equals the ViT (given MBT's tanh GELU
    and LayerNorm eps) on that image: nothing was mis-mapped."""
    vit = _vit(act_layer=partial(nn.GELU, approximate="tanh"), norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
    cfg = tiny_config(modalities=("rgb",), temporal_encoding="temporal_sampling", num_frames=1, n_sampled_frames=1)
    model = mbt.MBT(cfg).eval()
    init_from_vit(model, vit.state_dict())
    image = tiny_inputs(cfg, batch=2)["rgb"]
    with torch.no_grad():
        ours = model({"rgb": image}, output_tokens=True).tokens["rgb"]
        theirs = vit.forward_features(image[:, 0])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_patch_size_is_resampled_and_one_channel_spectrogram_sums_the_kernel():
    sd = _vit().state_dict()
    model = mbt.MBT(tiny_config(patch_size=(4, 4), image_size=(16, 16), spectrogram_size=(20, 8),
                                spectrogram_channels=1))
    report = init_from_vit(model, sd)
    assert report["patch_resampled"] == [4, 4]
    assert model.embeddings["spectrogram"].proj.weight.shape == (D, 1, 4, 4)


@pytest.mark.parametrize("distilled", [False, True])
def test_strided_spectrogram_grid_and_distillation_token(distilled):
    """Overlapping spectrogram patches: the position grid is resized to the strided grid
    (40x16 at patch 8, stride 4 -> 9x3); the distillation token's position is DeiT's own
    (distilled ViTs) or the cls position, every final norm gets the ViT's."""
    from timm.models.deit import VisionTransformerDistilled

    torch.manual_seed(0)
    vit = (VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=D, depth=DEPTH, num_heads=HEADS,
                                      mlp_ratio=MLP / D, num_classes=5) if distilled else _vit())
    sd = {k: v + torch.randn_like(v) * 0.1 for k, v in vit.state_dict().items()}
    prefix = 2 if distilled else 1
    grid = sd["pos_embed"][0, prefix:].reshape(4, 4, D)
    cfg = tiny_config(spectrogram_patch_stride=(4, 4), distillation_token=True, modality_norm=True)
    assert cfg.patch_grid("spectrogram") == (1, 9, 3)
    model = mbt.MBT(cfg)
    report = init_from_vit(model, sd)
    spec = model.pos_embed["spectrogram"][0]
    assert spec.shape == (2 + 27, D)
    torch.testing.assert_close(spec[0], sd["pos_embed"][0, 0])
    torch.testing.assert_close(spec[1], sd["pos_embed"][0, prefix - 1])
    want = scipy.ndimage.zoom(grid.numpy(), (9 / 4, 3 / 4, 1), order=1)
    np.testing.assert_allclose(spec[2:].detach().numpy(), want.reshape(27, D), atol=1e-6)
    if distilled:
        torch.testing.assert_close(model.dist_token, sd["dist_token"])
        assert report["dist_token"] == "restored"
    else:
        assert torch.count_nonzero(model.dist_token) == 0 and report["dist_token"].startswith("zero")
    for norm in model.modality_norms.values():
        torch.testing.assert_close(norm.weight, sd["norm.weight"])


@pytest.mark.parametrize("changes,message", [
    ({"hidden_size": 32, "num_heads": 4}, "width"),
    ({"num_layers": 6, "fusion_layer": 2}, "fewer than num_layers"),
    ({"mlp_dim": 64}, "MLP width"),
    ({"num_bottlenecks": 7}, "num_bottlenecks=7"),
])
def test_mismatches_are_named(changes, message):
    model = mbt.MBT(tiny_config(**changes))
    with pytest.raises(ViTFormatError, match=message):
        init_from_vit(model, _vit().state_dict())


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_vit_state_dict(str(tmp_path / "missing.npz"))
    with pytest.raises(ViTFormatError, match="not a ViT state dict"):
        load_vit_state_dict({"weight": torch.zeros(1)})


def test_paper_vit_is_the_original_in21k():
    from mbt.weights.vit import PAPER_VIT

    assert PAPER_VIT == "vit_base_patch16_224.orig_in21k"
