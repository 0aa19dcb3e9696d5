"""Using a trained model on video files: predictions, embeddings, attention pictures.

A video is cut into evenly spaced clips (enough to cover it, at least the model's
`num_test_clips`, at most `max_clips`), each decoded and featurised by the recipe saved
with the model, and the model's logits are averaged over the clips, as in the official
multi-clip evaluation. A file without an audio track is run through the video tower(s)
alone, an audio-only file (wav, mp3, flac, ...) through the audio tower(s) alone, and the
result says so (see "Missing modalities" in the README).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.annotations import Annotations, Item
from .data.config import DataConfig, load_data_config
from .data.dataset import PRESENCE_KEYS, AVDataset, missing_note
from .data.decode import DecodeError, media_duration
from .io import not_a_file
from .models.config import check_range
from .models.mbt import MBT, class_probabilities
from .weights import load_pretrained

MAX_CLIPS = 256
"""Most clips `predict` and `embed` read from one file: they form one batch in memory (256 clips of
8 frames of 224x224 are 1.2 GB); longer files go through `timeline`."""


@dataclass
class Prediction:
    """The top classes of one file."""

    path: str
    top: list[tuple[str, float]]
    """(class name, probability), best first: sigmoid for multi-label models, softmax else. For a
    model with two heads (EPIC's noun and verb): the joint pairs ('verb noun'), ranked by the
    product of the heads' probabilities."""
    num_clips: int
    modalities: tuple[str, ...]
    """Modalities the prediction used."""
    note: str = ""
    """What the prediction could not use (e.g. a missing audio track)."""
    damage: str = ""
    """Concealed damage met decoding the clips (FFmpeg errors, corrupt frames); '' if none."""
    scores: np.ndarray | None = field(default=None, repr=False)
    """All class probabilities."""
    heads: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    """Models with several heads (`class_splits`): each head's own ranking, best first."""

    def to_dict(self) -> dict[str, Any]:
        def ranked(pairs: list[tuple[str, float]]) -> list[dict[str, Any]]:
            return [{"label": n, "probability": round(p, 6)} for n, p in pairs]

        return {"path": self.path, "top": ranked(self.top), "num_clips": self.num_clips,
                "modalities": list(self.modalities), "note": self.note, "damage": self.damage,
                **({"heads": {h: ranked(v) for h, v in self.heads.items()}} if self.heads else {})}


class Predictor:
    """A saved model (`save_pretrained` folder) and the recipe that feeds it."""

    def __init__(self, model: str | os.PathLike | MBT, data: DataConfig | None = None, device: str = "cpu",
                 max_clips: int = 32, modalities: Sequence[str] | None = None):
        """`modalities`: a subset of the model's to read and run (a modality ablation); default all."""
        if isinstance(model, MBT):
            self.model = model.to(device).eval()
            self.data = data or DataConfig()
        else:
            self.model = load_pretrained(model, map_location=device)
            self.data = data or load_data_config(model)
        check_range(max_clips, "max_clips", 1, MAX_CLIPS)
        self.device, self.max_clips = torch.device(device), max_clips
        cfg = self.model.config
        if data is not None or not isinstance(model, MBT):  # the recipe meant for this model: shapes must fit
            self.data.check_fits(cfg)
        self.class_names = list(cfg.label_names or [str(i) for i in range(cfg.num_classes)])
        chosen = cfg.modalities if modalities is None else tuple(modalities)
        if not chosen or any(m not in cfg.modalities for m in chosen):
            raise ValueError(f"modalities {list(chosen)}: choose among the model's {list(cfg.modalities)}")
        self.modalities = tuple(m for m in cfg.modalities if m in chosen)

    # ------------------------------------------------------------------ clips
    def num_clips(self, path: str) -> int:
        """Clips that cover the file (non-overlapping windows), within [num_test_clips, max_clips]."""
        duration = media_duration(path, self.data.video_stream, self.data.audio_stream)
        window = max(self.data.clip_seconds if "rgb" in self.modalities else 0.0,
                     self.data.audio_seconds if "spectrogram" in self.modalities else 0.0)
        covering = math.ceil(duration / window) if window > 0 else 1
        return max(1, min(self.max_clips, max(self.data.num_test_clips, covering)))

    def clips(self, path: str, num_clips: int | None = None) -> dict[str, Any]:
        """All clips of a file as one batch: the model's inputs plus `has_audio` and `has_rgb` [N]
        and `damage` (the clips' concealed damage, '' if none)."""
        path = os.fspath(path)
        problem = not_a_file(path)
        if problem:
            raise DecodeError(f"{path}: {problem}" + (", not a video file" if problem == "is a directory" else ""))
        if num_clips is not None:
            check_range(num_clips, "clips", 1, MAX_CLIPS)
        n = num_clips or self.num_clips(path)
        cfg = replace(self.data, num_test_clips=n, num_test_crops=1)
        annotations = Annotations([Item(path, (), video_id=path)], self.class_names)
        dataset = AVDataset(annotations, cfg, "test", modalities=self.modalities)
        items = [dataset[i] for i in range(len(dataset))]
        batch: dict[str, Any] = {m: torch.stack([it[m] for it in items]) for m in self.modalities}
        batch["has_audio"] = torch.tensor([bool(it["has_audio"]) for it in items])
        batch["damage"] = "; ".join(dict.fromkeys(it["damage"] for it in items if it["damage"]))
        batch["has_rgb"] = torch.tensor([bool(it["has_rgb"]) for it in items])
        return batch

    def _inputs(self, batch: dict[str, Any], path: str = "") -> tuple[dict[str, torch.Tensor], str]:
        """The inputs of the modalities the file has, and a note on what was left out."""
        mods = self.modalities
        present = tuple(m for m in mods if bool(batch[PRESENCE_KEYS[m]].any()))
        note = missing_note(mods, present, path)
        return {m: batch[m].to(self.device) for m in present}, note

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def predict(self, path: str, topk: int | None = None, num_clips: int | None = None) -> Prediction:
        """Clip-averaged prediction for one file: the `topk` best classes (default: 5, or all when
        the model has fewer)."""
        topk = self.topk(topk)
        batch = self.clips(path, num_clips)
        inputs, note = self._inputs(batch, path)
        logits = self.model(inputs).logits.float().mean(0)
        cfg = self.model.config
        probs = finite_scores(class_probabilities(logits, cfg.multi_label, cfg.class_splits), path)
        if not cfg.class_splits or cfg.multi_label:
            order = probs.argsort(descending=True)[:topk].tolist()
            return Prediction(path, [(self.class_names[i], float(probs[i])) for i in order],
                              len(batch["has_audio"]), tuple(inputs), note, batch["damage"], probs.numpy())
        names = list(cfg.split_names or [f"head{i}" for i in range(len(cfg.class_splits))])
        parts = probs.split(list(cfg.class_splits))
        offsets = np.cumsum([0, *cfg.class_splits])
        heads = {}
        for name, p, lo in zip(names, parts, offsets, strict=False):
            order = p.argsort(descending=True)[:topk].tolist()
            heads[name] = [(self.class_names[lo + i], float(p[i])) for i in order]
        top = heads[names[0]]
        if len(parts) == 2:  # the joint pairs: each member of a top-k pair is in its head's top k
            first = 1 if names == ["noun", "verb"] else 0  # say 'verb noun', as EPIC's actions read
            a, b = heads[names[first]], heads[names[1 - first]]
            top = sorted(((f"{x} {y}", px * py) for x, px in a for y, py in b), key=lambda t: -t[1])[:topk]
        return Prediction(path, top, len(batch["has_audio"]), tuple(inputs), note, batch["damage"], probs.numpy(),
                          heads)

    @torch.no_grad()
    def embed(self, path: str, num_clips: int | None = None) -> dict[str, np.ndarray]:
        """Per-modality pooled embeddings (the features the head sees) of the modalities the file
        has, and `fused` (the vector the head turns into the logits), averaged over clips."""
        from .embed_dataset import fused_embedding

        inputs, _ = self._inputs(self.clips(path, num_clips), path)
        out = self.model(inputs, output_embeddings=True, output_tokens=self.model.config.classifier != "token")
        fused = fused_embedding(self.model, out, list(inputs))
        return {**{m: e.float().mean(0).numpy() for m, e in out.embeddings.items()},
                "fused": fused.float().mean(0).numpy()}

    def timeline(self, path: str, window: float | None = None, hop: float | None = None,
                 progress: bool = False) -> Any:
        """Per-window predictions over a video of any length (see `mbt.timeline`)."""
        from .timeline import timeline

        return timeline(self, path, window, hop, progress=progress)

    def topk(self, topk: int | None) -> int:
        """`topk`, checked to be a number of classes this model can rank (1 to all: else a
        `ConfigError`); None: 5, or all the classes when there are fewer."""
        if topk is None:
            return min(5, len(self.class_names))
        check_range(topk, "topk", 1, len(self.class_names))
        return topk

    def class_index(self, target: str | int) -> int:
        """The index of a class given by name or by index (as an int or a string of digits)."""
        if isinstance(target, str) and target in self.class_names:
            return self.class_names.index(target)
        if isinstance(target, int) or target.isdigit():
            k = int(target)
            if 0 <= k < len(self.class_names):
                return k
        raise ValueError(f"class {target!r}: neither a class name of this model nor an index below "
                         f"{len(self.class_names)} (first classes: {self.class_names[:5]})")

    def clip_at(self, path: str, start: float | None = None) -> tuple[dict[str, Any], float, list[float]]:
        """The clip whose window starts `start` seconds into the file (default: the middle clip)
        as a batch of one, its centre and its frames' times in seconds."""
        path = os.fspath(path)
        problem = not_a_file(path)
        if problem:
            raise (FileNotFoundError if problem == "no such file" else DecodeError)(f"{path}: {problem}")
        def one_clip(item: Item) -> AVDataset:  # 'val': the middle clip of the item's segment
            return AVDataset(Annotations([item], self.class_names), self.data, "val",
                             modalities=self.modalities)

        dataset = one_clip(Item(path, (), video_id=path))
        if start is not None:
            duration = dataset.segment(dataset.items[0])[1]
            if not 0 <= start < duration:
                raise ValueError(f"{path}: start {start:g} s is outside the file (0 to {duration:.2f} s)")
            dataset = one_clip(Item(path, (), start=start, end=start + dataset.window_seconds, video_id=path))
        centre = dataset.clip_centre(dataset.items[0], 0, torch.Generator())
        sample = dataset[0]
        batch = {m: sample[m][None] for m in self.modalities}
        batch["has_audio"] = torch.tensor([bool(sample["has_audio"])])
        batch["has_rgb"] = torch.tensor([bool(sample["has_rgb"])])
        return batch, centre, dataset.frame_times(centre)

    def explain(self, path: str, out_dir: str | os.PathLike, start: float | None = None,
                target: str | int | None = None) -> list[Path]:
        """Pictures of where the model looks in one clip (the one starting `start` seconds in;
        default the middle one): the attention of the bottleneck tokens (fusion layers of a
        bottleneck model) or of the cls token (other models; all tokens for pooling heads)
        over the frames' patches and the spectrogram's time-frequency patches. With `target`
        (a class name or index), the attention is weighted by the gradient of that class's
        logit (`visualize.patch_attention`). Returns the PNG paths."""
        from . import visualize as pictures

        batch, centre, frame_times = self.clip_at(path, start)
        inputs, note = self._inputs(batch, path)
        k = None if target is None else self.class_index(target)
        with torch.set_grad_enabled(k is not None):
            out = self.model(inputs, output_attentions=True)
            grads = None
            if k is not None:
                maps = [(i, key, a) for i, layer in enumerate(out.attentions) for key, a in layer.items()]
                values = torch.autograd.grad(out.logits[0, k], [a for _, _, a in maps], allow_unused=True)
                grads = [{} for _ in out.attentions]
                for (i, key, a), g in zip(maps, values, strict=True):
                    grads[i][key] = g if g is not None else torch.zeros_like(a)
        heat, source = pictures.patch_attention(self.model, out, grads)
        probs = finite_scores(class_probabilities(out.logits[0].detach().float(), self.model.config.multi_label,
                                                  self.model.config.class_splits), path)
        top = probs.argsort(descending=True)[:3].tolist()
        seconds = self.data.clip_seconds if "rgb" in inputs else self.data.audio_seconds
        title = (f"{Path(path).name}, clip {centre - seconds / 2:.2f}-{centre + seconds / 2:.2f} s: "
                 + ", ".join(f"{self.class_names[i]} {float(probs[i]):.0%}" for i in top))
        if k is not None:
            source += f", weighted by the gradient of '{self.class_names[k]}'"
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        if "rgb" in heat:
            written.append(pictures.video_figure(self.model.config, inputs["rgb"][0], heat["rgb"], source,
                                                 title, out_dir / "video_attention.png", frame_times))
        if "spectrogram" in heat:
            written.append(pictures.audio_figure(self.model.config, inputs["spectrogram"][0],
                                                 heat["spectrogram"], source, title, out_dir / "audio_attention.png",
                                                 self.data, max(centre - self.data.audio_seconds / 2, 0.0)))
        if note:
            (out_dir / "note.txt").write_text(note + "\n")
        return written


def finite_scores(scores: torch.Tensor, path: str) -> torch.Tensor:
    """`scores` when every one is finite, else `ValueError` naming ``path``: a NaN never reaches a
    printed percentage or a JSON file. (Inputs and weights are checked where they enter; this is
    the last guard, e.g. for a model whose activations overflow.)"""
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{path}: the model's scores are NaN or infinite ({int((~torch.isfinite(scores)).sum())} "
                         f"of {scores.numel()}): no prediction")
    return scores


def embed(paths: str | Sequence[str], model: str | os.PathLike, device: str = "cpu") -> dict[str, np.ndarray]:
    """Per-modality embeddings [N, D] of media files (see `Predictor.embed`), `fused` [N, D] (the
    vector the head turns into the logits, from the modalities each file has), and a mask
    `has_<modality>` [N] of the files that have each (the other rows are NaN)."""
    predictor = Predictor(model, device=device)
    rows = [predictor.embed(p) for p in ([paths] if isinstance(paths, str) else paths)]
    cfg = predictor.model.config
    missing = np.full(cfg.representation_size or cfg.hidden_size, np.nan, np.float32)
    # a file without a modality has no embedding for it: a NaN row, and False in has_<modality>
    out = {m: np.stack([r.get(m, missing) for r in rows]) for m in (*cfg.modalities, "fused")}
    out.update({f"has_{m}": np.array([m in r for r in rows]) for m in cfg.modalities})
    return out
