"""The network: where information may flow for each fusion variant, missing modalities,
configuration errors, attention maps, autocast and gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import mbt
from mbt.models.config import sampled_frame_indices

from .conftest import randomize, tiny_config, tiny_inputs


def _spectrogram_states(model: mbt.MBT, inputs) -> list[torch.Tensor]:
    """The spectrogram tokens after every layer (bottleneck tokens removed)."""
    states: list[torch.Tensor] = []
    n = model.config.num_patches("spectrogram") + (model.config.classifier == "token")
    tower = model.tower("spectrogram")
    hooks = []
    for blk in tower:
        def hook(_m, _inp, out):
            x = out[0]
            # vanilla fusion puts the modality last, bottleneck fusion first
            states.append(x[:, -n:] if model.config.fusion == "vanilla" else x[:, :n])
        hooks.append(blk.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return states, out


def _perturbed_rgb(inputs):
    changed = dict(inputs)
    changed["rgb"] = inputs["rgb"] + torch.randn_like(inputs["rgb"])
    return changed


@pytest.mark.parametrize("fusion_layer", [0, 1, 2, 3])
def test_bottleneck_fusion_lets_rgb_reach_spectrogram_only_after_fusion_layer(fusion_layer):
    model = randomize(mbt.MBT(tiny_config(fusion="bottleneck", fusion_layer=fusion_layer))).eval()
    inputs = tiny_inputs(model.config)
    base, _ = _spectrogram_states(model, inputs)
    moved, _ = _spectrogram_states(model, _perturbed_rgb(inputs))
    for layer, (a, b) in enumerate(zip(base, moved, strict=True)):
        # both towers read the same bottleneck within a layer, so rgb reaches the
        # spectrogram tokens one layer after the first fusion layer
        if layer <= fusion_layer:
            assert torch.equal(a, b), f"layer {layer} changed before fusion"
        else:
            assert not torch.allclose(a, b), f"layer {layer} unchanged after fusion"


def test_late_fusion_keeps_towers_apart_until_the_head():
    model = randomize(mbt.MBT(tiny_config(fusion_layer=4))).eval()
    inputs = tiny_inputs(model.config)
    base, out_a = _spectrogram_states(model, inputs)
    moved, out_b = _spectrogram_states(model, _perturbed_rgb(inputs))
    for a, b in zip(base, moved, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(out_a.modality_logits["spectrogram"], out_b.modality_logits["spectrogram"])
    assert not torch.allclose(out_a.logits, out_b.logits)  # the averaged head sees both


@pytest.mark.parametrize("fusion_layer", [0, 2])
def test_vanilla_cross_attention_mixes_from_the_fusion_layer(fusion_layer):
    model = randomize(mbt.MBT(tiny_config(fusion="vanilla", fusion_layer=fusion_layer))).eval()
    inputs = tiny_inputs(model.config)
    base, _ = _spectrogram_states(model, inputs)
    moved, _ = _spectrogram_states(model, _perturbed_rgb(inputs))
    for layer, (a, b) in enumerate(zip(base, moved, strict=True)):
        if layer < fusion_layer:
            assert torch.equal(a, b)
        else:  # each token attends to the other modality's tokens directly
            assert not torch.allclose(a, b)


def test_early_fusion_with_one_encoder_mixes_everything():
    cfg = tiny_config(fusion="vanilla", share_encoder=True, fusion_layer=0, classifier="token")
    model = randomize(mbt.MBT(cfg)).eval()
    assert list(model.towers) == ["shared"]
    inputs = tiny_inputs(cfg)
    a = model(inputs)
    b = model(_perturbed_rgb(inputs))
    assert not torch.allclose(a.modality_logits["spectrogram"], b.modality_logits["spectrogram"])


def test_bottleneck_without_test_bottlenecks_is_unimodal_at_eval_only():
    cfg = tiny_config(fusion="bottleneck", fusion_layer=0, test_with_bottlenecks=False)
    model = randomize(mbt.MBT(cfg))
    inputs = tiny_inputs(cfg)
    moved = _perturbed_rgb(inputs)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(inputs).modality_logits["spectrogram"],
                           model(moved).modality_logits["spectrogram"])
        model.train()
        assert not torch.allclose(model(inputs).modality_logits["spectrogram"],
                                  model(moved).modality_logits["spectrogram"])


def test_token_head_averages_modality_logits_and_shares_one_projection():
    model = randomize(mbt.MBT(tiny_config())).eval()
    out = model(tiny_inputs(model.config), output_embeddings=True)
    torch.testing.assert_close(out.logits, (out.modality_logits["rgb"] + out.modality_logits["spectrogram"]) / 2)
    for m, emb in out.embeddings.items():
        torch.testing.assert_close(model.head(emb), out.modality_logits[m])


@pytest.mark.parametrize("classifier", ["gap", "gmp", "gsp"])
def test_pooling_heads_pool_all_tokens_jointly(classifier):
    model = randomize(mbt.MBT(tiny_config(classifier=classifier, representation_size=10))).eval()
    out = model(tiny_inputs(model.config), output_tokens=True, output_embeddings=True)
    assert out.modality_logits == {}
    seq = torch.cat([out.tokens[m] for m in model.config.modalities], dim=1)
    pooled = {"gap": seq.mean(1), "gmp": seq.amax(1), "gsp": seq.sum(1)}[classifier]
    torch.testing.assert_close(out.logits, model.head(torch.tanh(model.pre_logits(pooled))))
    assert set(out.embeddings) == {"rgb", "spectrogram"}
    assert out.embeddings["rgb"].shape == (2, 10)


@pytest.mark.parametrize("fusion,share", [("bottleneck", False), ("vanilla", False), ("vanilla", True),
                                          ("bottleneck", True)])
def test_missing_modality_runs_the_towers_it_has(fusion, share):
    cfg = tiny_config(fusion=fusion, share_encoder=share, fusion_layer=1)
    model = randomize(mbt.MBT(cfg)).eval()
    inputs = tiny_inputs(cfg)
    video_only = model({"rgb": inputs["rgb"]})
    assert set(video_only.modality_logits) == {"rgb"}
    torch.testing.assert_close(video_only.logits, video_only.modality_logits["rgb"])
    audio_only = model({"spectrogram": inputs["spectrogram"], "rgb": None})
    assert audio_only.logits.shape == (2, 7)
    assert torch.isfinite(audio_only.logits).all()


def test_single_modality_model_never_fuses():
    cfg = tiny_config(modalities=("spectrogram",), fusion="bottleneck", fusion_layer=0)
    model = mbt.MBT(cfg)
    assert model.bottleneck is None and list(model.towers) == ["spectrogram"]
    out = model(tiny_inputs(cfg))
    assert out.logits.shape == (2, 7)


def test_rgb_temporal_sampling_uses_the_official_frame_rule():
    assert sampled_frame_indices(32, 8) == [4, 7, 11, 14, 18, 21, 25, 28]
    assert sampled_frame_indices(4, 3) == [1, 2, 3]
    assert sampled_frame_indices(8, 8) == list(range(8))
    cfg = tiny_config(temporal_encoding="temporal_sampling", num_frames=8, n_sampled_frames=3)
    model = randomize(mbt.MBT(cfg)).eval()
    assert cfg.num_patches("rgb") == 3 * 16
    inputs = tiny_inputs(cfg)
    changed = dict(inputs)
    changed["rgb"] = inputs["rgb"].clone()
    unused = [t for t in range(8) if t not in sampled_frame_indices(8, 3)]
    changed["rgb"][:, unused] = 0  # frames the rule skips cannot matter
    torch.testing.assert_close(model(inputs).logits, model(changed).logits, rtol=0, atol=0)
    changed["rgb"][:, sampled_frame_indices(8, 3)[0]] = 0
    assert not torch.allclose(model(inputs).logits, model(changed).logits)


def test_tubelet_embedding_equals_conv3d():
    cfg = tiny_config()
    model = randomize(mbt.MBT(cfg))
    rgb = tiny_inputs(cfg)["rgb"]
    embed = model.embeddings["rgb"]
    ref = embed.proj(rgb.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2)  # (t, h, w) order
    torch.testing.assert_close(embed(rgb), ref, atol=1e-5, rtol=1e-5)


def test_attention_maps_are_optional_and_do_not_change_outputs():
    model = randomize(mbt.MBT(tiny_config())).eval()
    inputs = tiny_inputs(model.config)
    plain = model(inputs)
    assert plain.attentions is None
    with_maps = model(inputs, output_attentions=True)
    torch.testing.assert_close(plain.logits, with_maps.logits, atol=1e-5, rtol=1e-5)
    assert len(with_maps.attentions) == 4
    nb = model.config.num_bottleneck_tokens
    n_spec = model.config.num_patches("spectrogram") + 1
    assert with_maps.attentions[0]["spectrogram"].shape == (2, 4, n_spec, n_spec)
    assert with_maps.attentions[3]["spectrogram"].shape == (2, 4, n_spec + nb, n_spec + nb)
    torch.testing.assert_close(with_maps.attentions[3]["rgb"].sum(-1), torch.ones(2, 4, 33 + nb, ))


def test_stochastic_depth_drops_whole_branches_per_example_without_rescaling():
    cfg = tiny_config(stochastic_depth=0.5, num_layers=3, fusion_layer=3)
    model = randomize(mbt.MBT(cfg))
    assert [b.drop_prob for b in model.tower("rgb")] == [0.0, 0.25, 0.5]
    blk = model.tower("rgb")[2].train()
    x = torch.randn(4000, 3, 24)
    branch = torch.ones(4000, 3, 24)
    torch.manual_seed(0)
    kept = blk._droplayer(branch)
    per_example = kept[:, 0, 0]
    assert set(per_example.unique().tolist()) <= {0.0, 1.0}  # kept branches are not rescaled
    assert torch.equal(kept, per_example[:, None, None].expand_as(kept))  # one draw per example
    assert abs(per_example.mean().item() - 0.5) < 0.05
    blk.eval()
    assert torch.equal(blk._droplayer(branch), branch)
    del x


def test_droplayer_skips_dropped_examples_with_the_same_maths_and_gradients():
    """A branch runs only for the examples that keep it; outputs and gradients equal
    Scenic's compute-then-multiply form with the same draws."""
    from mbt.models.mbt import Block

    cfg = tiny_config(stochastic_depth=0.5, num_layers=3, fusion_layer=3)
    blk = randomize(Block(cfg, 0.5)).train()
    x = torch.randn(8, 5, cfg.hidden_size, requires_grad=True)

    def run(skip: bool) -> tuple[Tensor, list[Tensor]]:
        blk.zero_grad()
        x.grad = None
        torch.manual_seed(1)
        if skip:
            y = blk(x)[0]
        else:  # the reference form: every branch computed, dropped ones zeroed
            h = x + blk.attn(blk.norm1(x))[0] * (torch.rand(8, 1, 1) >= 0.5)
            y = h + blk.mlp(blk.norm2(h)) * (torch.rand(8, 1, 1) >= 0.5)
        y.square().sum().backward()
        return y, [x.grad.clone(), *(p.grad.clone() for p in blk.parameters())]

    seen: list[int] = []
    hook = blk.mlp.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    y_skip, g_skip = run(True)
    hook.remove()
    y_ref, g_ref = run(False)
    torch.testing.assert_close(y_skip, y_ref, atol=1e-6, rtol=1e-5)
    for a, b in zip(g_skip, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.manual_seed(1)
    kept = [int((torch.rand(8) >= 0.5).sum()) for _ in range(2)]
    assert 0 < kept[1] < 8 and seen == kept[1:]  # the MLP ran on the kept examples only

    blk.drop_prob = 1.0  # nothing kept: the identity, yet every parameter gets a zero gradient
    blk.zero_grad()
    y = blk(x)[0]
    y.sum().backward()
    assert torch.equal(y, x)
    assert all(p.grad is not None and not p.grad.any() for p in blk.parameters())


def test_grad_checkpointing_gives_the_same_gradients():
    cfg = tiny_config(stochastic_depth=0.2)
    model = randomize(mbt.MBT(cfg)).train()
    inputs = tiny_inputs(cfg)

    def grads():
        model.zero_grad()
        torch.manual_seed(3)
        model(inputs).logits.square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.set_grad_checkpointing(True)
    ckpt = grads()
    for a, b in zip(plain, ckpt, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_runs_close_to_fp32():
    model = randomize(mbt.MBT(tiny_config())).eval()
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        ref = model(inputs).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(inputs).logits
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_droplayer_skipping_under_bf16_autocast_keeps_the_fp32_residual_stream():
    """Under autocast the branches come out in bf16 while the residual stream stays fp32, as
    in Scenic's form x + mask * branch."""
    from mbt.models.mbt import Block

    cfg = tiny_config()
    blk = randomize(Block(cfg, 0.5)).train()
    x = torch.randn(8, 5, cfg.hidden_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(2)
        y = blk(x)[0]
        torch.manual_seed(2)
        h = x + blk.attn(blk.norm1(x))[0] * (torch.rand(8, 1, 1) >= 0.5)
        ref = h + blk.mlp(blk.norm2(h)) * (torch.rand(8, 1, 1) >= 0.5)
    assert y.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(y, ref, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("changes,field", [
    ({"fusion_layer": 5}, "fusion_layer"),
    ({"fusion_layer": -1}, "fusion_layer"),
    ({"num_heads": 5}, "num_heads"),
    ({"modalities": ("rgb", "depth")}, "modalities"),
    ({"modalities": ()}, "modalities"),
    ({"modalities": ("rgb", "rgb")}, "modalities"),
    ({"classifier": "cls"}, "classifier"),
    ({"fusion": "concat"}, "fusion"),
    ({"num_bottlenecks": 0}, "num_bottlenecks"),
    ({"temporal_encoding": "2d"}, "temporal_encoding"),
    ({"class_splits": (3, 3), "multi_label": False}, "class_splits"),
    ({"label_names": ("a",)}, "label_names"),
    ({"image_size": (4, 4)}, "rgb"),
])
def test_bad_configs_fail_at_construction_naming_the_field(changes, field):
    with pytest.raises(mbt.ConfigError, match=field):
        tiny_config(**changes)


def test_bad_inputs_get_clear_errors():
    model = mbt.MBT(tiny_config()).eval()
    inputs = tiny_inputs(model.config)
    with pytest.raises(ValueError, match="no input"):
        model({})
    with pytest.raises(ValueError, match="unknown input modality"):
        model({**inputs, "depth": inputs["rgb"]})
    with pytest.raises(ValueError, match="rgb: expected"):
        model({"rgb": inputs["rgb"][:, 0]})
    with pytest.raises(ValueError, match="tokens but the model has"):
        model({"rgb": inputs["rgb"][..., :16, :16]})
    with pytest.raises(ValueError, match="batch sizes"):
        model({"rgb": inputs["rgb"], "spectrogram": inputs["spectrogram"][:1]})


def test_vit_sizes():
    b = mbt.MBTConfig.from_vit("B")
    assert (b.hidden_size, b.num_layers, b.num_heads, b.mlp_dim) == (768, 12, 12, 3072)
    assert mbt.MBTConfig.from_vit("L").num_layers == 24
    with pytest.raises(mbt.ConfigError):
        mbt.MBTConfig.from_vit("XL")


def test_paper_size_parameter_counts():
    """Counts of the official model (spec §2.1), built on the meta device (no memory)."""
    with torch.device("meta"):
        tubelets = mbt.MBT(mbt.MBTConfig(temporal_encoding="3d_conv", num_frames=32))
        sampled = mbt.MBT(mbt.MBTConfig())
        shared = mbt.MBT(mbt.MBTConfig(share_encoder=True))
        spec = mbt.MBT(mbt.MBTConfig(modalities=("spectrogram",)))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(tubelets) == 175_009_295
    assert count(sampled) == 173_215_247
    assert count(shared) == 88_160_783
    assert count(spec) == 86_360_591
