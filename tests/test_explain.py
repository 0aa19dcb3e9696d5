"""`mbt explain` pictures: one cell per patch, colours against the uniform share (marked),
frame times, a chosen clip and class, titles that do not overlap."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import mbt
from mbt.cli import main
from mbt.demo.run import _demo_data, _demo_model
from mbt.demo.synth import CLASSES
from mbt.visualize import MAX_RATIO, attention_scale, patch_attention

from .conftest import randomize
from .test_inference import _video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    randomize(mbt.MBT(_demo_model().replace(label_names=CLASSES)), seed=1).save_pretrained(
        out, data_config=_demo_data())
    return out


@pytest.fixture
def figures(monkeypatch):
    """The figures the code closes, kept for inspection."""
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    monkeypatch.undo()
    plt.close("all")


def test_colour_scale_is_centred_on_the_uniform_share():
    heat = np.array([0.1, 0.1, 0.4, 0.2])  # raw attention: the rest of the row went to other tokens
    share, uniform, norm = attention_scale(heat)
    assert uniform == 0.25 and share.sum() == pytest.approx(1.0) and share[2] == pytest.approx(0.5)
    assert norm(uniform) == pytest.approx(0.5)  # the middle colour (white) is the uniform share
    assert norm.vmax / uniform == pytest.approx(uniform / norm.vmin) == pytest.approx(2.0)  # symmetric in log
    _, _, wide = attention_scale(np.array([1e-9, 1.0, 1.0, 1.0]))
    assert wide.vmax / 0.25 == MAX_RATIO  # extreme shares are clipped to the end colours


def _bbox_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_explain_pictures_cells_times_marker_and_titles(model_dir, tmp_path, figures):
    video = _video(tmp_path / "v.mp4", seconds=4.0)
    paths = mbt.explain(video, model_dir, tmp_path / "pics", start=1.0)
    assert [p.name for p in paths] == ["video_attention.png", "audio_attention.png"]
    cfg = _demo_model()
    video_fig, audio_fig = figures
    for fig, modality in ((video_fig, "rgb"), (audio_fig, "spectrogram")):
        n = cfg.num_patches(modality)
        bar = fig.axes[-1]
        marks = [line.get_ydata()[0] for line in bar.get_lines()]
        assert marks == [pytest.approx(1 / n)]  # the uniform share 1/N is marked on the colour bar
        assert any(f"1/{n}" in t.get_text() for t in bar.texts)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title = fig._suptitle.get_window_extent(renderer)
        for ax in fig.axes[:-1]:
            assert not _bbox_overlap(title, ax.title.get_window_extent(renderer)), ax.title.get_text()
    # one nearest-neighbour cell per patch: the overlay is the patch grid itself, not an upsampled map
    _, gh, gw = cfg.patch_grid("rgb")
    overlays = [ax.get_images()[1] for ax in video_fig.axes[:-1]]
    assert all(im.get_array().shape == (gh, gw, 4) and im.get_interpolation() == "nearest" for im in overlays)
    _, ts, fs = cfg.patch_grid("spectrogram")
    spec_overlay = audio_fig.axes[1].get_images()[1]
    assert spec_overlay.get_array().shape == (fs, ts, 4) and spec_overlay.get_interpolation() == "nearest"
    # the clip starting at 1 s: 4 frames at 2 fps around its centre (2 s), times in the file
    assert [ax.get_title() for ax in video_fig.axes[:-1]] == [f"frame {i} at {t:.2f} s" for i, t in
                                                              enumerate((1.25, 1.75, 2.25, 2.75), 1)]
    assert audio_fig.axes[1].get_xlim()[0] == pytest.approx(1.0)
    assert "clip 1.00-3.00 s" in video_fig._suptitle.get_text()
    with pytest.raises(ValueError, match="outside the file"):
        mbt.explain(video, model_dir, tmp_path / "pics", start=9.0)


def test_class_weighted_attention_depends_on_the_class(model_dir, tmp_path):
    predictor = mbt.Predictor(model_dir)
    batch, _, _ = predictor.clip_at(_video(tmp_path / "v.mp4"))
    inputs = {m: batch[m] for m in ("rgb", "spectrogram")}
    heats = []
    for k in (0, 4):
        out = predictor.model(inputs, output_attentions=True)
        keys = [(i, key) for i, layer in enumerate(out.attentions) for key in layer]
        grads = torch.autograd.grad(out.logits[0, k], [out.attentions[i][key] for i, key in keys], allow_unused=True)
        per_layer = [{} for _ in out.attentions]
        for (i, key), g in zip(keys, grads, strict=True):
            per_layer[i][key] = g if g is not None else torch.zeros_like(out.attentions[i][key])
        heats.append(patch_attention(predictor.model, out, per_layer)[0])
    plain = patch_attention(predictor.model, out)[0]
    for m in ("rgb", "spectrogram"):
        assert (heats[0][m] >= 0).all() and not np.allclose(heats[0][m], heats[1][m])
        assert not np.allclose(heats[0][m] / heats[0][m].sum(), plain[m] / plain[m].sum())
    assert predictor.class_index(CLASSES[4]) == 4 and predictor.class_index("4") == 4
    with pytest.raises(ValueError, match="neither a class name"):
        predictor.class_index("no such class")


def test_cli_start_and_class(model_dir, tmp_path, capsys):
    video = _video(tmp_path / "v.mp4", seconds=3.0)
    out = tmp_path / "pics"
    assert main(["explain", video, "--model", str(model_dir), "--out", str(out), "--start", "0.5",
                 "--class", CLASSES[2]]) == 0
    assert (out / "video_attention.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["explain", video, "--model", str(model_dir), "--out", str(out), "--class", "99"]) == 1
    assert "neither a class name" in capsys.readouterr().err


def test_overlapping_patches_and_distillation_token(tmp_path, figures):
    """AST-style spectrogram tower (patches every 10x8 bins, cls and distillation tokens,
    late fusion): the map is the attention both prefix tokens pay to the patches, one cell
    per patch, each one stride wide and centred on its patch."""
    cfg = _demo_model().replace(label_names=CLASSES, spectrogram_patch_stride=(10, 8), distillation_token=True,
                                fusion_layer=4, head_norm=True, gelu="exact")
    _, ts, fs = cfg.patch_grid("spectrogram")
    assert (ts, fs) == (19, 7)
    torch.manual_seed(0)
    model = randomize(mbt.MBT(cfg), seed=2).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder, data_config=_demo_data())
    video = _video(tmp_path / "v.mp4", seconds=3.0)
    paths = mbt.explain(video, folder, tmp_path / "pics", start=0.5)
    assert [p.name for p in paths] == ["video_attention.png", "audio_attention.png"]
    audio_fig = figures[1]
    overlay = audio_fig.axes[1].get_images()[1]
    assert overlay.get_array().shape == (fs, ts, 4)
    hop = _demo_data().hop_ms / 1000
    x0, x1, y0, y1 = overlay.get_extent()
    assert (x0, x1) == pytest.approx((0.5 + 3 * hop, 0.5 + (18 * 10 + 13) * hop))  # centres of patches 0 and 18
    assert (y0, y1) == pytest.approx((4, 6 * 8 + 12))
    assert "every 10x8" in audio_fig.axes[1].get_title()
    assert "cls and distillation tokens'" in audio_fig._suptitle.get_text()

    predictor = mbt.Predictor(folder)
    batch, _, _ = predictor.clip_at(video)
    with torch.no_grad():
        out = predictor.model({m: batch[m] for m in cfg.modalities}, output_attentions=True)
    heat, _ = patch_attention(predictor.model, out)
    last = out.attentions[-1]["spectrogram"][0].mean(0)  # [S, S], heads averaged
    np.testing.assert_allclose(heat["spectrogram"], last[0:2, 2 : 2 + ts * fs].mean(0).numpy(), rtol=1e-6)
