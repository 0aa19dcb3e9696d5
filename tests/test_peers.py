"""AST, CAV-MAE and AudioMAE checkpoints in their published layouts as mbt models: outputs
equal to each peer's own (tests/assets/peer_init: random weights, the peers' code's outputs),
position rules, `mbt convert` + `mbt predict`, fine-tuning from a converted CAV-MAE, and the
refusals (truncated file, renamed key, wrong shape, unknown layout)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from mbt.cli import main
from mbt.models.mbt import MBT
from mbt.weights.peers import PeerFormatError, init_from_peer, peer_config, read_peer

ASSETS = Path(__file__).parent / "assets" / "peer_init"


def _load(name: str) -> np.ndarray:
    return np.load(ASSETS / name)


def _time_major(tokens: np.ndarray, f: int, t: int, prefix: int) -> np.ndarray:
    """A peer's frequency-major token sequence (token prefix + f * T + t) in mbt's order."""
    grid = tokens[:, prefix:].reshape(tokens.shape[0], f, t, -1).transpose(0, 2, 1, 3)
    return np.concatenate([tokens[:, :prefix], grid.reshape(tokens.shape[0], f * t, -1)], axis=1)


ONE_FRAME = {"num_frames": 1, "n_sampled_frames": 1}
"""CAV-MAE's input: one frame (a converted pretrained encoder gets MBT's 8 by default)."""


def _run(path: str, inputs: dict[str, np.ndarray], dtype: torch.dtype, modalities=None, **read):
    ckpt = read_peer(ASSETS / path, **read)
    frames = ONE_FRAME if "rgb" in inputs else {}
    model = MBT(peer_config(ckpt, modalities, **frames)).eval()
    init_from_peer(model, ckpt)
    model = model.to(dtype)
    with torch.no_grad():
        return model({m: torch.from_numpy(x).to(dtype) for m, x in inputs.items()}, output_tokens=True)


DTYPES = [(torch.float64, "_f64", 1e-6), (torch.float32, "", 1e-5)]
AUDIO_AST = "ast_orig_s10/input.npy"
AUDIO_CAV = "common/audio_cavmae.npy"


def _frames() -> np.ndarray:
    """CAV-MAE's input image [1, 3, H, W] (ImageNet-normalised) as mbt's rgb input
    [1, 1, 3, H, W] in [-1, 1]: the converter folds CAV-MAE's normalisation into the kernel."""
    x = _load("common/image_cavmae.npy").astype(np.float64)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((x * std[:, None, None] + mean[:, None, None]) * 2 - 1)[:, None]


@pytest.mark.parametrize("dtype,suffix,bound", DTYPES)
def test_hf_ast_folder_gives_its_logits_and_tokens(dtype, suffix, bound):
    out = _run("ast_hf/model", {"spectrogram": _load("ast_hf/input_values.npy")}, dtype)
    assert np.abs(out.logits.numpy() - _load(f"ast_hf/logits{suffix}.npy")).max() <= bound
    if suffix:
        want = _time_major(_load("ast_hf/last_hidden_state_f64.npy"), 12, 101, 2)
        assert np.abs(out.tokens["spectrogram"].numpy() - want).max() <= bound


@pytest.mark.parametrize("stride,grid", [(10, (12, 25)), (16, (8, 16))])
@pytest.mark.parametrize("dtype,suffix,bound", DTYPES)
def test_original_ast_pth_gives_its_logits_and_tokens(stride, grid, dtype, suffix, bound):
    folder = f"ast_orig_s{stride}"
    out = _run(f"{folder}/ast_s{stride}.pth", {"spectrogram": _load(AUDIO_AST)}, dtype, num_heads=4, target_length=256)
    assert np.abs(out.logits.numpy() - _load(f"{folder}/logits{suffix}.npy")).max() <= bound
    want = _time_major(_load(f"{folder}/tokens{suffix}.npy"), *grid, 2)
    assert np.abs(out.tokens["spectrogram"].numpy() - want).max() <= bound


def test_original_ast_settings_come_from_the_file():
    ckpt = read_peer(ASSETS / "ast_orig_s10/ast_s10.pth", num_heads=4, target_length=256)
    cfg = peer_config(ckpt)
    assert (cfg.spectrogram_stride, cfg.gelu, cfg.layer_norm_eps, cfg.head_norm_eps) == ((10, 10), "exact", 1e-6, 1e-5)
    assert cfg.distillation_token and cfg.spectrogram_size == (256, 128)
    hf = peer_config(read_peer(ASSETS / "ast_hf/model"))
    assert (hf.layer_norm_eps, hf.num_heads, hf.spectrogram_size) == (1e-12, 4, (1024, 128))
    with pytest.raises(PeerFormatError, match="match no single patch stride at 1024 frames"):
        read_peer(ASSETS / "ast_orig_s10/ast_s10.pth")  # trained on 256 frames: the default 1024 does not fit


@pytest.mark.parametrize("mode,modalities", [("multimodal", None), ("audioonly", ("spectrogram",)),
                                             ("videoonly", ("rgb",))])
@pytest.mark.parametrize("dtype,suffix,bound", DTYPES)
def test_cavmae_finetuned_paths_give_its_logits(mode, modalities, dtype, suffix, bound):
    inputs = {"spectrogram": _load(AUDIO_CAV), "rgb": _frames()}
    inputs = {m: x for m, x in inputs.items() if modalities is None or m in modalities}
    out = _run("cavmae_ft/cavmae_ft.pth", inputs, dtype, modalities, num_heads=4)
    assert np.abs(out.logits.numpy() - _load(f"cavmae_ft/logits_{mode}{suffix}.npy")).max() <= bound
    tokens = [out.tokens[m] for m in ("spectrogram", "rgb") if m in out.tokens]
    want = _load(f"cavmae_ft/tokens_{mode}{suffix}.npy")
    if modalities != ("rgb",):  # audio tokens first in CAV-MAE's sequence
        want = np.concatenate([_time_major(want[:, :128], 8, 16, 0), want[:, 128:]], axis=1)
    assert np.abs(torch.cat(tokens, dim=1).numpy() - want).max() <= bound


@pytest.mark.parametrize("dtype,suffix,bound", DTYPES)
def test_cavmae_pretrained_towers_give_its_features(dtype, suffix, bound):
    audio, image = _load(AUDIO_CAV), _frames()
    a = _run("cavmae_pretrain/cavmae_pretrain.pth", {"spectrogram": audio}, dtype, ("spectrogram",), num_heads=4)
    v = _run("cavmae_pretrain/cavmae_pretrain.pth", {"rgb": image}, dtype, ("rgb",), num_heads=4)
    want_a = _time_major(_load(f"cavmae_pretrain/feat_a{suffix}.npy"), 8, 16, 0)
    assert np.abs(a.tokens["spectrogram"].numpy() - want_a).max() <= bound
    assert np.abs(v.tokens["rgb"].numpy() - _load(f"cavmae_pretrain/feat_v{suffix}.npy")).max() <= bound


def test_cavmae_pretrained_both_towers_make_a_bottleneck_mbt_with_its_towers():
    ckpt = read_peer(ASSETS / "cavmae_pretrain/cavmae_pretrain.pth", num_heads=4)
    cfg = peer_config(ckpt, num_classes=3, **ONE_FRAME)
    assert (cfg.fusion, cfg.modality_norm, cfg.classifier, cfg.num_classes) == ("bottleneck", True, "gap", 3)
    model = MBT(cfg.replace(test_with_bottlenecks=False)).eval()  # every layer unimodal: the towers alone
    report = init_from_peer(model, ckpt)
    assert "head" in report["fresh"] and "bottleneck" in report["fresh"]
    assert not model.head.weight.any()
    inputs = {"spectrogram": _load(AUDIO_CAV), "rgb": _frames()}
    with torch.no_grad():
        out = model.double()({m: torch.from_numpy(x).double() for m, x in inputs.items()}, output_tokens=True)
    assert np.abs(out.tokens["rgb"].numpy() - _load("cavmae_pretrain/feat_v_f64.npy")).max() <= 1e-6
    want_a = _time_major(_load("cavmae_pretrain/feat_a_f64.npy"), 8, 16, 0)
    assert np.abs(out.tokens["spectrogram"].numpy() - want_a).max() <= 1e-6


@pytest.mark.parametrize("dtype,suffix,bound", DTYPES)
def test_audiomae_finetuned_and_pretrained_give_their_outputs(dtype, suffix, bound):
    audio = {"spectrogram": _load(AUDIO_AST)}
    ft = _run("audiomae_ft/audiomae_ft.pth", audio, dtype, num_heads=4)
    assert np.abs(ft.logits.numpy() - _load(f"audiomae_ft/logits{suffix}.npy")).max() <= bound
    pre = _run("audiomae_pretrain/audiomae_pretrain.pth", audio, dtype, num_heads=4)
    assert np.abs(pre.tokens["spectrogram"].numpy() - _load(f"audiomae_pretrain/tokens{suffix}.npy")).max() <= bound


def test_audiomae_finetuned_pools_patch_tokens_then_fc_norm():
    cfg = peer_config(read_peer(ASSETS / "audiomae_ft/audiomae_ft.pth", num_heads=4))
    assert (cfg.classifier, cfg.cls_token, cfg.final_norm, cfg.head_norm) == ("gap", True, False, True)


def test_sincos_positions_are_regenerated_by_the_sources_rule_for_other_lengths():
    cav = read_peer(ASSETS / "cavmae_pretrain/cavmae_pretrain.pth", num_heads=4)
    model = MBT(peer_config(cav, ("spectrogram",), spectrogram_size=(128, 128)))
    report = init_from_peer(model, cav)
    assert "regenerated" in report["positions"]["spectrogram"]
    modality = torch.load(ASSETS / "cavmae_pretrain/cavmae_pretrain.pth", weights_only=True)["module.modality_a"]
    want = _time_major(_load("cavmae_pretrain/pos_embed_a_len128.npy")[None], 8, 8, 0) + modality.numpy()
    assert np.abs(model.pos_embed["spectrogram"].detach().numpy() - want).max() <= 1e-6

    mae = read_peer(ASSETS / "audiomae_pretrain/audiomae_pretrain.pth", num_heads=4)
    model = MBT(peer_config(mae, spectrogram_size=(128, 128)))
    init_from_peer(model, mae)
    pos = model.pos_embed["spectrogram"].detach().numpy()[0]
    assert torch.equal(torch.from_numpy(pos[0]), mae.towers["spectrogram"].prefix_pos[0])  # cls position as stored
    assert np.abs(pos[1:] - _load("audiomae_pretrain/pos_embed_len128.npy")[1:]).max() <= 1e-6


def test_ast_positions_for_shorter_input_are_the_centre_columns():
    ckpt = read_peer(ASSETS / "ast_orig_s10/ast_s10.pth", num_heads=4, target_length=256)
    model = MBT(peer_config(ckpt, spectrogram_size=(156, 128)))  # 15 time patches of the stored 25
    report = init_from_peer(model, ckpt)
    assert "AST's rule" in report["positions"]["spectrogram"]
    stored = torch.load(ASSETS / "ast_orig_s10/ast_s10.pth", weights_only=True)["module.v.pos_embed"][0]
    grid = stored[2:].reshape(12, 25, -1)[:, 12 - 7: 12 - 7 + 15].transpose(0, 1).reshape(15 * 12, -1)
    assert torch.equal(model.pos_embed["spectrogram"][0, 2:].detach(), grid)
    longer = MBT(peer_config(ckpt, spectrogram_size=(356, 128)))  # 35 > 25: bilinear without corner alignment
    init_from_peer(longer, ckpt)
    x = stored[2:].reshape(1, 12, 25, -1).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(x, size=(12, 35), mode="bilinear", align_corners=False)
    want = want[0].permute(2, 1, 0).reshape(35 * 12, -1)
    assert torch.allclose(longer.pos_embed["spectrogram"][0, 2:].detach(), want, atol=1e-6)


# ---------------------------------------------------------------------- command line, end to end
def _write_wav(path: Path) -> Path:
    """The shared fixture's 10 s waveform (tests/assets/kaldi_fbank) as a 16 kHz wav."""
    samples = np.load(Path(__file__).parent / "assets/kaldi_fbank/fbank_reference.npz")["waveform_int16"]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def test_converted_hf_ast_predicts_a_wav_as_ast_does(tmp_path, capsys):
    assert main(["convert", "ast", str(ASSETS / "ast_hf/model"), "--out", str(tmp_path / "ast")]) == 0
    saved = json.loads((tmp_path / "ast/config.json").read_text())
    assert saved["data"]["frontend"] == "kaldi_fbank" and saved["data"]["target_length"] == 1024
    assert saved["model"]["num_classes"] == 5
    capsys.readouterr()
    wav = _write_wav(tmp_path / "clip.wav")
    assert main(["predict", "--model", str(tmp_path / "ast"), str(wav), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    got = {int(t["label"]): t["probability"] for t in result["top"]}
    # AST's own probabilities on the same audio (HF's feature extractor: within 1e-3 of the Kaldi recipe)
    want = 1 / (1 + np.exp(-_load("ast_hf/logits_f64.npy")[0]))
    assert max(abs(got[k] - want[k]) for k in range(5)) < 1e-4


def test_convert_cli_one_cavmae_branch_and_a_fresh_head(tmp_path, capsys):
    out = tmp_path / "audio"
    assert main(["convert", "cav-mae", str(ASSETS / "cavmae_ft/cavmae_ft.pth"), "--out", str(out),
                 "--modalities", "spectrogram", "--num-classes", "7", "--num-heads", "4"]) == 0
    assert "fresh" in capsys.readouterr().out
    model = MBT.from_pretrained(str(out))
    assert model.config.modalities == ("spectrogram",) and model.config.num_classes == 7
    assert not model.head.weight.any()
    saved = json.loads((out / "config.json").read_text())["data"]
    assert (saved["spec_mean"], saved["spec_std"], saved["target_length"]) == (-5.081, 4.4849, 256)
    assert main(["convert", "audiomae", str(ASSETS / "cavmae_ft/cavmae_ft.pth"), "--out", str(tmp_path / "x")]) == 1
    assert "cav-mae-ft checkpoint, not audiomae" in capsys.readouterr().err
    hf = str(ASSETS / "ast_hf/model")
    assert main(["convert", "ast", hf, "--out", str(tmp_path / "y"), "--modalities", "rgb"]) == 1
    assert "ast-hf checkpoint has no rgb encoder" in capsys.readouterr().err


def test_fine_tuning_starts_from_a_cavmae_checkpoint(tmp_path):
    from mbt.train.distributed import init_distributed
    from mbt.train.loop import Trainer
    from mbt.train.run_folder import RunFolder

    from .tiny_experiment import tiny_config

    cfg = tiny_config(
        f"train.init_from={ASSETS / 'cavmae_ft/cavmae_ft.pth'}", "train.epochs=1",
        "model.hidden_size=64", "model.num_heads=4", "model.mlp_dim=128", "model.patch_size=[16,16]",
        "model.gelu=exact", "model.layer_norm_eps=0.00001", "model.classifier=gap", "model.spectrogram_channels=1",
        "model.spectrogram_size=[64,128]", "model.image_size=[32,32]", "model.num_classes=3",
        "data.image_size=32", "data.min_resize=32", "data.audio_seconds=0.64", "data.num_mel_bins=128",
    )
    trainer = Trainer(cfg, RunFolder(tmp_path / "run"), init_distributed("cpu"), resume=False, progress=False)
    source = torch.load(ASSETS / "cavmae_ft/cavmae_ft.pth", weights_only=True)
    tower = trainer.model.tower("spectrogram")
    assert torch.equal(tower[0].mlp.fc1.weight, source["module.blocks_a.0.mlp.fc1.weight"])
    assert torch.equal(tower[1].norm1.weight, source["module.blocks_u.0.norm1_a.weight"])  # MBT: own norms
    assert torch.equal(trainer.model.tower("rgb")[1].attn.qkv.weight, source["module.blocks_u.0.attn.qkv.weight"])
    log = (tmp_path / "run/log.txt").read_text()
    assert "cav-mae-ft" in log and "bilinear" in log and "fresh" in log
    results = trainer.run()
    assert results["steps"] >= 1


# ---------------------------------------------------------------------- refusals
def test_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    data = (ASSETS / "cavmae_ft/cavmae_ft.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PeerFormatError, match=r"cut\.pth: not a readable PyTorch checkpoint"):
        read_peer(cut)


def test_renamed_key_is_refused_naming_it(tmp_path):
    state = torch.load(ASSETS / "cavmae_ft/cavmae_ft.pth", weights_only=True)
    state["module.blocks_a.0.mlp.fc3.weight"] = state.pop("module.blocks_a.0.mlp.fc1.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(PeerFormatError, match=r"renamed\.pth: missing key 'blocks_a\.0\.mlp\.fc1\.weight'"):
        read_peer(tmp_path / "renamed.pth", num_heads=4)
    state = torch.load(ASSETS / "ast_orig_s10/ast_s10.pth", weights_only=True)
    state["module.v.extra_token"] = state["module.v.cls_token"]
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(PeerFormatError, match=r"extra\.pth: unexpected key 'v\.extra_token'"):
        read_peer(tmp_path / "extra.pth", num_heads=4, target_length=256)


def test_wrong_shape_is_refused_naming_key_and_shapes(tmp_path):
    state = torch.load(ASSETS / "ast_orig_s10/ast_s10.pth", weights_only=True)
    state["module.v.blocks.1.attn.proj.weight"] = torch.zeros(64, 32)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(PeerFormatError, match=r"shape\.pth: v\.blocks\.1\.attn\.proj\.weight has shape \[64, 32\], "
                                              r"expected \[64, 64\]"):
        read_peer(tmp_path / "shape.pth", num_heads=4, target_length=256)


def test_unknown_layout_is_refused_naming_the_first_key(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(PeerFormatError, match=r"other\.pth: unknown layout \(first key 'encoder\.weight'\)"):
        read_peer(tmp_path / "other.pth")


def test_model_settings_that_differ_from_the_source_are_named(tmp_path):
    ckpt = read_peer(ASSETS / "audiomae_pretrain/audiomae_pretrain.pth", num_heads=4)
    model = MBT(peer_config(ckpt, gelu="tanh"))
    with pytest.raises(PeerFormatError, match=r"model\.gelu is 'tanh' but the audiomae-pretrain checkpoint needs "
                                              r"'exact'"):
        init_from_peer(model, ckpt)


def test_init_from_takes_an_hf_ast_folder_and_refuses_one_without_weights(tmp_path):
    import shutil

    from mbt.train.init_from import init_from

    ckpt = read_peer(ASSETS / "ast_hf/model")
    model = MBT(peer_config(ckpt, num_classes=3))
    report = init_from(model, ASSETS / "ast_hf/model")
    assert report["layout"] == "ast-hf" and "head" in report["fresh"]
    assert torch.equal(model.dist_token[0, 0], ckpt.towers["spectrogram"].prefix[1])
    folder = tmp_path / "ast"
    folder.mkdir()
    shutil.copy(ASSETS / "ast_hf/model/config.json", folder)
    with pytest.raises(PeerFormatError, match=r"ast: a model folder needs config\.json and model\.safetensors"):
        init_from(model, folder)


def test_fine_tuning_starts_from_a_converted_cavmae_folder(tmp_path, capsys):
    import dataclasses

    from mbt.data.config import load_data_config
    from mbt.models.config import MBTConfig
    from mbt.train.loop import train

    from .tiny_experiment import tiny_config

    folder = tmp_path / "cavmae"
    assert main(["convert", "cav-mae", str(ASSETS / "cavmae_ft/cavmae_ft.pth"), "--out", str(folder),
                 "--num-heads", "4"]) == 0
    saved = json.loads((folder / "config.json").read_text())
    base = tiny_config(f"train.init_from={folder}", "train.epochs=1", "dataset.synthetic_items=8",
                       "train.batch_size=4")
    model = MBTConfig.from_dict({**saved["model"], "num_classes": 3, "label_names": None})  # a new label set
    cfg = dataclasses.replace(base, model=model, data=load_data_config(str(folder)))
    results = train(cfg, tmp_path / "run", progress=False)
    assert results["steps"] == 2
    log = (tmp_path / "run/log.txt").read_text()
    assert "mbt model folder" in log and "re-initialised (5 classes in the source, 3 here)" in log


def test_a_kept_cls_token_attends_but_a_pooling_head_averages_the_patches_only():
    from mbt.models.config import MBTConfig
    from mbt.weights.scenic import ScenicFormatError, to_scenic
    from mbt.weights.vit import init_from_vit

    cfg = MBTConfig(modalities=("spectrogram",), hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, fusion_layer=2,
                    spectrogram_size=(32, 16), patch_size=(8, 8), classifier="gap", cls_token=True,
                    final_norm=False, head_norm=True, num_classes=3)
    torch.manual_seed(0)
    model = MBT(cfg).eval()
    assert "norm.weight" not in model.state_dict() and model.pos_embed["spectrogram"].shape[1] == 1 + 8
    torch.nn.init.normal_(model.head.weight)
    x = {"spectrogram": torch.randn(2, 32, 16)}
    with torch.no_grad():
        out = model(x, output_tokens=True)
        want = model.head(model.head_norm(out.tokens["spectrogram"][:, 1:].mean(dim=1)))
        assert torch.allclose(out.logits, want, atol=1e-6)
        model.cls_tokens["spectrogram"].add_(torch.randn(1, 1, 16))  # the cls token takes part in attention
        assert not torch.allclose(model(x).logits, out.logits, atol=1e-4)
    vit = {k: v for k, v in MBT(cfg.replace(classifier="token", cls_token=False, final_norm=True)).state_dict().items()}
    state = {"patch_embed.proj.weight": vit["embeddings.spectrogram.proj.weight"],
             "patch_embed.proj.bias": vit["embeddings.spectrogram.proj.bias"], "cls_token": torch.ones(1, 1, 16),
             "pos_embed": torch.randn(1, 1 + 4, 16), "norm.weight": torch.ones(16), "norm.bias": torch.zeros(16),
             **{f"blocks.{k[len('towers.spectrogram.'):]}": v for k, v in vit.items() if k.startswith("towers.")}}
    init_from_vit(model, state)  # a ViT fills the kept cls token and its position row too
    assert torch.equal(model.cls_tokens["spectrogram"], torch.ones(1, 1, 16))
    with pytest.raises(ScenicFormatError, match="final_norm=False, cls_token=True"):
        to_scenic(model)


def test_the_vggsound_cavmae_preset_starts_from_a_converted_pretrained_cavmae(tmp_path):
    """The preset's model, at the size of the test file, loads the converted folder: MBT's 8
    frames (the one-frame positions tiled), the head re-initialised for VGGSound's classes."""
    from mbt.train.init_from import init_from
    from mbt.train.presets import PRESETS

    folder = tmp_path / "cav-mae"
    assert main(["convert", "cav-mae", str(ASSETS / "cavmae_pretrain/cavmae_pretrain.pth"), "--out", str(folder),
                 "--num-heads", "4"]) == 0
    preset = PRESETS["vggsound-cavmae"]().model
    model = MBT(preset.replace(hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128, fusion_layer=1,
                               spectrogram_size=(256, 128), image_size=(64, 64)))
    report = init_from(model, folder)
    assert report["head"].startswith("re-initialised (527 classes in the source, 309 here)")
    converted = MBT.from_pretrained(str(folder))
    assert torch.equal(model.pos_embed["rgb"], converted.pos_embed["rgb"])
    assert model.pos_embed["rgb"].shape[1] == 8 * 16
    assert torch.equal(model.pos_embed["rgb"][0, :16], model.pos_embed["rgb"][0, 16:32])  # tiled over frames


def test_the_audioset_ast_preset_starts_from_a_converted_original_ast(tmp_path):
    from mbt.train.init_from import init_from
    from mbt.train.presets import PRESETS

    folder = tmp_path / "ast"
    assert main(["convert", "ast", str(ASSETS / "ast_orig_s10/ast_s10.pth"), "--out", str(folder), "--num-heads", "4",
                 "--target-length", "256", "--num-classes", "527"]) == 0
    preset = PRESETS["audioset-ast"]().model
    model = MBT(preset.replace(hidden_size=64, num_layers=2, num_heads=4, mlp_dim=256, fusion_layer=2,
                               spectrogram_size=(256, 128)))
    report = init_from(model, folder)
    source = torch.load(ASSETS / "ast_orig_s10/ast_s10.pth", weights_only=True)
    assert torch.equal(model.dist_token, source["module.v.dist_token"])
    assert report["head"] == "loaded"
    assert "head_norm_eps" not in report.get("model_differs", {})  # the preset's head norm is AST's (nn.LayerNorm's 1e-5)


def test_an_audiomae_finetuned_file_with_the_fixed_table_has_it_regenerated(tmp_path):
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        ft = torch.load(ASSETS / "audiomae_ft/audiomae_ft.pth", weights_only=True)
        pre = torch.load(ASSETS / "audiomae_pretrain/audiomae_pretrain.pth", weights_only=True)
    trained = read_peer(ASSETS / "audiomae_ft/audiomae_ft.pth", num_heads=4)  # random positions: resampled
    model = MBT(peer_config(trained, spectrogram_size=(128, 128)))
    assert "bilinear" in init_from_peer(model, trained)["positions"]["spectrogram"]
    ft["model"]["pos_embed"] = pre["model"]["pos_embed"]  # as AudioMAE's fine-tuning keeps it
    torch.save(ft, tmp_path / "ft.pth")
    fixed = read_peer(tmp_path / "ft.pth", num_heads=4)
    model = MBT(peer_config(fixed, spectrogram_size=(128, 128)))
    assert "regenerated" in init_from_peer(model, fixed)["positions"]["spectrogram"]
    want = _load("audiomae_pretrain/pos_embed_len128.npy")[1:]
    assert np.abs(model.pos_embed["spectrogram"].detach().numpy()[0, 1:] - want).max() <= 1e-6
