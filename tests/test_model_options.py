"""Model options for encoders trained elsewhere (AST, CAV-MAE, AudioMAE): exact GELU, the
LayerNorm eps, overlapping spectrogram patches, a distillation token, per-modality final
norms and a head norm. Off by default (Scenic's MBT); numerics checked in float64."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import mbt
from mbt.models.mbt import MLP, SpectrogramEmbed
from mbt.weights.scenic import ScenicFormatError, to_scenic

from .conftest import randomize, tiny_config, tiny_inputs

OPTIONS = dict(spectrogram_patch_stride=(5, 4), distillation_token=True, modality_norm=True, head_norm=True,
               gelu="exact", layer_norm_eps=1e-5)
"""Every option on, at values other than the defaults."""


def _f64(model: mbt.MBT, inputs: dict) -> tuple[mbt.MBT, dict]:
    return model.double().eval(), {k: v.double() for k, v in inputs.items()}


def test_defaults_are_scenic_and_add_no_parameters():
    cfg = tiny_config()
    assert (cfg.gelu, cfg.layer_norm_eps, cfg.spectrogram_patch_stride) == ("tanh", 1e-6, None)
    assert not (cfg.distillation_token or cfg.modality_norm or cfg.head_norm)
    keys = set(mbt.MBT(cfg).state_dict())
    assert {"norm.weight", "norm.bias"} <= keys
    assert not any(k.startswith(("dist_token", "head_norm", "modality_norms")) for k in keys)


def test_exact_gelu_is_torch_gelu_and_differs_from_tanh():
    torch.manual_seed(0)
    mlp = MLP(6, 16, 0.0, gelu="exact").double()
    x = torch.randn(3, 5, 6, dtype=torch.float64) * 3
    ref = mlp.fc2(F.gelu(mlp.fc1(x)))
    torch.testing.assert_close(mlp(x), ref, atol=1e-14, rtol=0)
    mlp.gelu = "tanh"
    assert (mlp(x) - ref).abs().max() > 1e-5

    cfg = tiny_config(gelu="exact")
    model, inputs = _f64(randomize(mbt.MBT(cfg)), tiny_inputs(cfg))
    tanh = mbt.MBT(cfg.replace(gelu="tanh")).double().eval()
    tanh.load_state_dict(model.state_dict())
    assert (model(inputs).logits - tanh(inputs).logits).abs().max() > 1e-6


def test_exact_gelu_in_the_cpu_inference_kernels():
    """float32 inference without gradients takes the fused oneDNN linear+GELU: it must apply
    the configured GELU too."""
    cfg = tiny_config(gelu="exact")
    model = randomize(mbt.MBT(cfg)).eval()
    inputs = tiny_inputs(cfg)
    ref = model.double()({k: v.double() for k, v in inputs.items()}).logits.float()
    model.float()
    with torch.no_grad():
        fast = model(inputs).logits
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    tanh = mbt.MBT(cfg.replace(gelu="tanh")).eval()
    tanh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (tanh(inputs).logits - ref).abs().max() > 1e-4


def test_layer_norm_eps_reaches_every_norm():
    cfg = tiny_config(layer_norm_eps=1e-3, modality_norm=True, head_norm=True)
    model = mbt.MBT(cfg)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 2 * cfg.num_layers + 2 + 1  # block norms, one per modality, the head's
    assert {n.eps for n in norms} == {1e-3}
    # and it changes the function: inputs of small variance feel eps
    model, inputs = _f64(randomize(mbt.MBT(cfg)), tiny_inputs(cfg))
    small = mbt.MBT(cfg.replace(layer_norm_eps=1e-6)).double().eval()
    small.load_state_dict(model.state_dict())
    inputs = {k: v * 1e-2 for k, v in inputs.items()}
    assert (model(inputs).logits - small(inputs).logits).abs().max() > 1e-6


def test_ast_geometry_stride_10_gives_101_by_12_tokens():
    cfg = mbt.MBTConfig(modalities=("spectrogram",), spectrogram_size=(1024, 128), patch_size=(16, 16),
                        spectrogram_patch_stride=(10, 10), spectrogram_channels=1, distillation_token=True)
    assert cfg.patch_grid("spectrogram") == (1, 101, 12)
    assert cfg.num_patches("spectrogram") == 1212
    assert cfg.num_tokens("spectrogram") == 1214
    with torch.device("meta"):
        assert mbt.MBT(cfg).pos_embed["spectrogram"].shape == (1, 1214, 768)
    assert mbt.MBTConfig().patch_grid("spectrogram") == (1, 50, 8)  # default: non-overlapping, 400 tokens


@pytest.mark.parametrize("channels", [1, 3])
def test_strided_patch_embedding_equals_an_explicit_strided_convolution(channels):
    cfg = tiny_config(modalities=("spectrogram",), spectrogram_size=(43, 16), patch_size=(8, 8),
                      spectrogram_patch_stride=(5, 3), spectrogram_channels=channels)
    assert cfg.patch_grid("spectrogram") == (1, 8, 3)
    embed = SpectrogramEmbed(cfg).double()
    torch.nn.init.normal_(embed.proj.weight)
    torch.nn.init.normal_(embed.proj.bias)
    x = torch.randn(2, 1, 43, 16, dtype=torch.float64)
    w = embed.proj.weight.sum(1, keepdim=True)  # a 1-channel input is the 3-channel one tiled
    ref = [torch.einsum("bchw,dchw->bd", x[:, :, t * 5 : t * 5 + 8, f * 3 : f * 3 + 8], w) + embed.proj.bias
           for t in range(8) for f in range(3)]  # time-major: t * F + f
    torch.testing.assert_close(embed(x), torch.stack(ref, 1), atol=1e-12, rtol=0)
    torch.testing.assert_close(embed(x.expand(-1, channels, -1, -1)), torch.stack(ref, 1) if channels == 1
                               else F.conv2d(x.expand(-1, 3, -1, -1), embed.proj.weight, embed.proj.bias,
                                             stride=(5, 3)).flatten(2).transpose(1, 2), atol=1e-12, rtol=0)


def test_stride_equal_to_the_patch_is_the_default_model():
    cfg = tiny_config()
    model, inputs = _f64(randomize(mbt.MBT(cfg)), tiny_inputs(cfg))
    same = mbt.MBT(cfg.replace(spectrogram_patch_stride=cfg.patch_size)).double().eval()
    same.load_state_dict(model.state_dict())
    assert torch.equal(model(inputs).logits, same(inputs).logits)


def test_distillation_token_head_pools_the_mean_of_the_prefix_tokens():
    cfg = tiny_config(distillation_token=True)
    model, inputs = _f64(randomize(mbt.MBT(cfg)), tiny_inputs(cfg))
    assert model.pos_embed["spectrogram"].shape[1] == 2 + cfg.num_patches("spectrogram")
    assert model.pos_embed["rgb"].shape[1] == 1 + cfg.num_patches("rgb")
    out = model(inputs, output_tokens=True, output_embeddings=True, output_attentions=True)
    spec = out.tokens["spectrogram"]
    torch.testing.assert_close(out.embeddings["spectrogram"], (spec[:, 0] + spec[:, 1]) / 2, atol=1e-14, rtol=0)
    torch.testing.assert_close(out.embeddings["rgb"], out.tokens["rgb"][:, 0], atol=0, rtol=0)
    torch.testing.assert_close(out.modality_logits["spectrogram"], model.head(out.embeddings["spectrogram"]))
    assert out.attention_layout[0]["spectrogram"][:2] == [("cls:spectrogram", 1), ("dist:spectrogram", 1)]
    before = out.logits
    with torch.no_grad():
        model.dist_token.add_(torch.randn_like(model.dist_token))  # not a constant: LayerNorm ignores those
    assert (model(inputs).logits - before).abs().max() > 1e-6  # the token is used


@pytest.mark.parametrize("changes", [
    {"distillation_token": True, "classifier": "gap"},
    {"distillation_token": True, "modalities": ("rgb",)},
    {"gelu": "sigmoid"},
    {"layer_norm_eps": 0.0},
    {"spectrogram_patch_stride": (0, 4)},
])
def test_senseless_options_are_refused_naming_the_field(changes):
    field = next(k for k in changes if k not in ("classifier", "modalities"))
    with pytest.raises(mbt.ConfigError, match=field):
        tiny_config(**changes)


def test_modality_norm_normalises_each_modality_with_its_own_parameters():
    cfg = tiny_config(modality_norm=True)
    model, inputs = _f64(randomize(mbt.MBT(cfg)), tiny_inputs(cfg))
    keys = set(model.state_dict())
    assert "norm.weight" not in keys
    assert {f"modality_norms.{m}.{p}" for m in cfg.modalities for p in ("weight", "bias")} <= keys
    # with both norms equal to a shared one it is the default model
    shared = mbt.MBT(cfg.replace(modality_norm=False)).double().eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("modality_norms")}
    state.update({"norm.weight": model.modality_norms["rgb"].weight, "norm.bias": model.modality_norms["rgb"].bias})
    shared.load_state_dict(state)
    with torch.no_grad():
        model.modality_norms["spectrogram"].load_state_dict(model.modality_norms["rgb"].state_dict())
    a, b = model(inputs, output_tokens=True), shared(inputs, output_tokens=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-14, rtol=0)
    # changing one modality's norm changes only that modality's tokens
    with torch.no_grad():
        model.modality_norms["rgb"].bias.add_(1.0)
    c = model(inputs, output_tokens=True)
    torch.testing.assert_close(c.tokens["spectrogram"], a.tokens["spectrogram"], atol=0, rtol=0)
    torch.testing.assert_close(c.tokens["rgb"], a.tokens["rgb"] + 1.0, atol=1e-12, rtol=0)


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_head_norm_normalises_the_pooled_feature_before_the_classifier(classifier):
    cfg = tiny_config(head_norm=True, classifier=classifier, fusion_layer=4)
    model, inputs = _f64(randomize(mbt.MBT(cfg)), tiny_inputs(cfg))
    out = model(inputs, output_tokens=True, output_embeddings=True)
    hn = model.head_norm
    assert hn.weight.shape == (cfg.hidden_size,) and hn.eps == cfg.layer_norm_eps
    if classifier == "token":
        pooled = {m: out.tokens[m][:, 0] for m in cfg.modalities}
        logits = torch.stack([model.head(F.layer_norm(p, (cfg.hidden_size,), hn.weight, hn.bias, hn.eps))
                              for p in pooled.values()]).mean(0)
    else:
        pooled = torch.cat([out.tokens[m] for m in cfg.modalities], 1).mean(1)
        logits = model.head(F.layer_norm(pooled, (cfg.hidden_size,), hn.weight, hn.bias, hn.eps))
    torch.testing.assert_close(out.logits, logits, atol=1e-13, rtol=0)
    plain = mbt.MBT(cfg.replace(head_norm=False)).double().eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head_norm")})
    assert (plain(inputs).logits - out.logits).abs().max() > 1e-6


def test_every_option_round_trips_through_config_json(tmp_path):
    cfg = tiny_config(**OPTIONS)
    model = randomize(mbt.MBT(cfg)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["model"]
    assert {k: saved[k] for k in OPTIONS} == {**OPTIONS, "spectrogram_patch_stride": [5, 4]}
    loaded = mbt.MBT.from_pretrained(tmp_path)
    assert loaded.config == cfg
    inputs = tiny_inputs(cfg)
    with torch.no_grad():
        assert torch.equal(loaded(inputs).logits, model(inputs).logits)


def test_a_config_json_from_before_the_options_still_loads(tmp_path):
    cfg = tiny_config()
    model = randomize(mbt.MBT(cfg)).eval()
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    for name in OPTIONS:
        del config["model"][name]
    path.write_text(json.dumps(config))
    loaded = mbt.MBT.from_pretrained(tmp_path)
    assert loaded.config == cfg
    inputs = tiny_inputs(cfg)
    with torch.no_grad():
        assert torch.equal(loaded(inputs).logits, model(inputs).logits)


def test_options_scenic_lacks_are_refused_by_the_scenic_export():
    with pytest.raises(ScenicFormatError, match="head_norm=True"):
        to_scenic(mbt.MBT(tiny_config(head_norm=True)))
