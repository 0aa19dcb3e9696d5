"""Pictures of what an MBT attends to: attention over frame patches and spectrogram patches.

For a bottleneck model the interesting question is what the few bottleneck tokens gather
from each modality: their attention over the modality's patches, averaged over heads,
bottleneck tokens and fusion layers. Models without bottlenecks show their cls token's
attention in the last layer (pooling heads: the attention all tokens pay to each patch).
Given a class, each head's map is weighted by the gradient of that class's logit.

The pictures show one cell per patch (no smoothing: the model sees nothing finer), coloured
by the patch's share of the attention against the uniform share 1/N (marked on the colour
bar): red above it, blue below, clear near it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib import cm, colors

from .data.config import DataConfig
from .models.config import MBTConfig, sampled_frame_indices
from .models.mbt import MBT, MBTOutput


def _segments(layout: list[tuple[str, int]]) -> dict[str, slice]:
    out, start = {}, 0
    for name, length in layout:
        out[name] = slice(start, start + length)
        start += length
    return out


def patch_attention(model: MBT, out: MBTOutput, grads: list[dict[str, torch.Tensor]] | None = None
                    ) -> tuple[dict[str, np.ndarray], str]:
    """Per modality, the attention each patch receives (flattened patch order) from the
    summary tokens, for the first example of `out`; and a description of those tokens.

    With `grads` (the gradient of one class's logit with respect to `out.attentions`, same
    structure), each head's attention is weighted by its positive gradient before the heads
    are averaged (attention x gradient, Chefer et al. 2021): where the model looks *for that
    class*, rather than where it looks."""
    cfg = model.config
    if out.attentions is None or out.attention_layout is None:
        raise ValueError("run the model with output_attentions=True")
    present = [m for m in cfg.modalities if any(m in seg for lay in out.attention_layout for k in lay
                                                for seg, _ in lay[k])]
    fusion_layers = [i for i, lay in enumerate(out.attention_layout)
                     if any(seg == "bottleneck" for k in lay for seg, _ in lay[k])]

    def heads_mean(layer: int, key: str) -> torch.Tensor:
        a = out.attentions[layer][key][0].detach().float()  # [H, S, S]
        if grads is not None:
            a = a * grads[layer][key][0].float().clamp(min=0)
        return a.mean(0)

    heat: dict[str, np.ndarray] = {}
    if fusion_layers:
        for m in present:
            maps = []
            for layer in fusion_layers:
                seg = _segments(out.attention_layout[layer][m])
                maps.append(heads_mean(layer, m)[seg["bottleneck"], seg[m]].mean(0))
            heat[m] = torch.stack(maps).mean(0).numpy()
        first, last = fusion_layers[0], fusion_layers[-1]
        layers = f"layer {first}" if first == last else f"layers {first}-{last}"
        return heat, f"bottleneck tokens' attention ({layers}, heads and tokens averaged)"
    last = len(out.attentions) - 1
    for m in present:
        key = m if m in out.attention_layout[last] else "joint"
        seg = _segments(out.attention_layout[last][key])
        pooled_by_head = cfg.classifier == "token"  # a cls kept with a pooling head is not what it pools
        prefix = [seg[s] for s in (f"cls:{m}", f"dist:{m}") if s in seg and pooled_by_head]  # the head's tokens
        rows = slice(prefix[0].start, prefix[-1].stop) if prefix else slice(None)
        heat[m] = heads_mean(last, key)[rows, seg[m]].mean(0).numpy()
    who = "all tokens'"
    if cfg.classifier == "token":
        who = "cls and distillation tokens'" if cfg.distillation_token else "cls token's"
    return heat, f"{who} attention (last layer, heads averaged)"


MAX_RATIO = 16.0
"""Widest colour scale, in multiples of the uniform share either way."""


def attention_scale(heat: np.ndarray) -> tuple[np.ndarray, float, colors.Normalize]:
    """The share of the attention each patch gets (summing to 1 over the modality's patches),
    the uniform share 1/N, and a colour scale centred on it: logarithmic and symmetric, so a
    patch with twice the uniform share is as red as one with half of it is blue; shares
    beyond `MAX_RATIO` times (or 1 / `MAX_RATIO` of) the uniform one take the end colours."""
    total = float(heat.sum())
    share = heat / total if total > 0 else np.full_like(heat, 1.0 / heat.size)
    uniform = 1.0 / share.size
    positive = share[share > 0]
    ratio = max(float(positive.max()) / uniform, uniform / float(positive.min()), 1.5) if positive.size else 1.5
    ratio = min(ratio, MAX_RATIO)
    return share, uniform, colors.LogNorm(vmin=uniform / ratio, vmax=uniform * ratio)


def _overlay(share: np.ndarray, norm: colors.Normalize, cmap: colors.Colormap) -> np.ndarray:
    """RGBA cells: diverging colours, transparent at the uniform share, opaque far from it."""
    level = np.clip(norm(np.maximum(share, norm.vmin)), 0, 1)
    rgba = cmap(level)
    rgba[..., 3] = 0.1 + 0.7 * np.abs(level - 0.5) * 2
    return rgba


def _colourbar(fig, norm: colors.Normalize, cmap: colors.Colormap, uniform: float, axes, count: int, what: str):
    """The colour bar, ticked in multiples of the uniform share, which is marked."""
    extend = "both" if norm.vmax >= uniform * MAX_RATIO else "neither"
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, fraction=0.025, pad=0.02, extend=extend)
    bar.set_label(f"share of the attention on the {what},\nin multiples of the uniform share 1/{count}")
    top = np.floor(np.log2(norm.vmax / uniform))
    steps = np.arange(-top, top + 1, 1 if top <= 2 else 2)
    labels = [f"{2.0**k:g}x" if k >= 0 else f"1/{2.0**-k:g}x" for k in steps]
    bar.set_ticks([uniform * 2.0**k for k in steps], labels=labels)
    bar.ax.minorticks_off()
    bar.ax.axhline(uniform, color="black", linewidth=2)
    bar.ax.text(-0.4, uniform, f"uniform\n1/{count}", transform=bar.ax.get_yaxis_transform(), ha="right",
                va="center", fontsize=8)
    return bar


def _suptitle(fig, title: str, source: str) -> None:
    fig.suptitle("\n".join([*textwrap.wrap(title, 100), *textwrap.wrap(source, 100)]), fontsize=10)


def _frames_and_grids(cfg: MBTConfig, rgb: torch.Tensor, heat: np.ndarray, times: list[float]
                      ) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(frame image [H, W, 3] in [0, 1], heat [gh, gw], caption with the time in the file) per token slice."""
    t_grid, gh, gw = cfg.patch_grid("rgb")
    frames = ((rgb.float().permute(0, 2, 3, 1).numpy() + 1) / 2).clip(0, 1)
    if cfg.temporal_encoding == "temporal_sampling":
        idx = sampled_frame_indices(len(frames), cfg.n_sampled_frames)
        if t_grid == 1 and len(idx) > 1:  # frames stacked into one image; rows straddle frames
            return [(np.concatenate([frames[i] for i in idx]), heat.reshape(gh, gw),
                     f"frames at {times[idx[0]]:.2f}-{times[idx[-1]]:.2f} s, stacked")]
        return [(frames[i], heat.reshape(t_grid, gh, gw)[k], f"frame {i + 1} at {times[i]:.2f} s")
                for k, i in enumerate(idx)]
    ft = cfg.tubelet_size
    grids = heat.reshape(t_grid, gh, gw)
    return [(frames[k * ft + ft // 2], grids[k],
             f"frames {k * ft + 1}-{k * ft + ft}, {times[k * ft]:.2f}-{times[k * ft + ft - 1]:.2f} s")
            for k in range(t_grid)]


def video_figure(cfg: MBTConfig, rgb: torch.Tensor, heat: np.ndarray, source: str, title: str, path: Path,
                 times: list[float]) -> Path:
    """The clip's frames (`times`: each frame's time in the file) with the attention over
    their patches laid on top, one cell per patch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share, uniform, norm = attention_scale(heat)
    panels = _frames_and_grids(cfg, rgb, share, times)
    cmap = plt.get_cmap("RdBu_r")
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1.4, 3.6), squeeze=False,
                             layout="constrained")
    for ax, (image, grid, caption) in zip(axes[0], panels, strict=True):
        ph, pw = cfg.patch_size
        h, w = grid.shape[0] * ph, grid.shape[1] * pw
        ax.imshow(image[:h, :w])
        ax.imshow(_overlay(grid, norm, cmap), extent=(0, w, h, 0),
                  interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    _colourbar(fig, norm, cmap, uniform, axes[0].tolist(), share.size, "frame patches")
    _suptitle(fig, title, f"where the model looks: {source}")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def audio_figure(cfg: MBTConfig, spectrogram: torch.Tensor, heat: np.ndarray, source: str, title: str,
                 path: Path, data: DataConfig, audio_start: float = 0.0) -> Path:
    """The log-mel spectrogram (time in the file across, mel bands up) and, below it, the
    attention over its time-frequency patches, one cell per patch. Overlapping patches
    (a stride below the patch size) get cells one stride wide, centred on their patch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = spectrogram.float()
    spec = (spec[0] if spec.dim() == 3 else spec).numpy()  # [T, F]
    _, ts, fs = cfg.patch_grid("spectrogram")
    (ph, pw), (st, sf) = cfg.patch_size, cfg.spectrogram_stride
    covered = ((ts - 1) * st + ph, (fs - 1) * sf + pw)
    seconds = data.hop_ms / 1000
    extent = (audio_start, audio_start + covered[0] * seconds, 0, covered[1])
    cells = (audio_start + (ph - st) / 2 * seconds, audio_start + ((ts - 1) * st + (ph + st) / 2) * seconds,
             (pw - sf) / 2, (fs - 1) * sf + (pw + sf) / 2)
    share, uniform, norm = attention_scale(heat)
    cmap = plt.get_cmap("RdBu_r")
    fig, (ax_spec, ax_heat) = plt.subplots(2, 1, figsize=(9, 5.6), sharex=True, layout="constrained")
    ax_spec.imshow(spec[: covered[0], : covered[1]].T, origin="lower", aspect="auto", cmap="magma", extent=extent)
    ax_spec.set(ylabel="mel band", title="log-mel spectrogram")
    ax_heat.imshow(spec[: covered[0], : covered[1]].T, origin="lower", aspect="auto", cmap="gray", extent=extent)
    ax_heat.imshow(_overlay(share.reshape(ts, fs).T, norm, cmap), origin="lower", aspect="auto", extent=cells,
                   interpolation="nearest")
    ax_heat.set_xlim(extent[0], extent[1])
    ax_heat.set_ylim(0, covered[1])
    stride = "" if (st, sf) == (ph, pw) else f", every {st}x{sf}"
    ax_heat.set(xlabel="time in the file (s)", ylabel="mel band",
                title=f"attention over time-frequency patches ({ph}x{pw} bins each{stride})")
    _colourbar(fig, norm, cmap, uniform, [ax_spec, ax_heat], share.size, "spectrogram patches")
    _suptitle(fig, title, f"where the model listens: {source}")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
