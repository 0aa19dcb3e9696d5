"""Using a trained model on video files: predictions, embeddings, attention pictures.

A video is cut into evenly spaced clips (enough to cover it, at least the model's
`num_test_clips`, at most `max_clips`), each decoded and featurised by the recipe saved
with the model, and the model's logits are averaged over the clips, as in the official
multi-clip evaluation. A file without an audio track is run through the video tower(s)
alone when the model has them, and the result says so.
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
from .data.config import DataConfig
from .data.dataset import AVDataset
from .data.decode import probe
from .models.mbt import MBT
from .weights.pretrained import load_data_config, load_pretrained


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
    scores: np.ndarray | None = field(default=None, repr=False)
    """All class probabilities."""
    heads: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    """Models with several heads (`class_splits`): each head's own ranking, best first."""

    def to_dict(self) -> dict[str, Any]:
        def ranked(pairs: list[tuple[str, float]]) -> list[dict[str, Any]]:
            return [{"label": n, "probability": round(p, 6)} for n, p in pairs]

        return {"path": self.path, "top": ranked(self.top), "num_clips": self.num_clips,
                "modalities": list(self.modalities), "note": self.note,
                **({"heads": {h: ranked(v) for h, v in self.heads.items()}} if self.heads else {})}


class Predictor:
    """A saved model (`save_pretrained` folder) and the recipe that feeds it."""

    def __init__(self, model: str | os.PathLike | MBT, data: DataConfig | None = None, device: str = "cpu",
                 max_clips: int = 32):
        if isinstance(model, MBT):
            self.model = model.to(device).eval()
            self.data = data or DataConfig()
        else:
            self.model = load_pretrained(model, map_location=device)
            self.data = data or load_data_config(model)
        self.device, self.max_clips = torch.device(device), max_clips
        cfg = self.model.config
        self.class_names = list(cfg.label_names or [str(i) for i in range(cfg.num_classes)])

    # ------------------------------------------------------------------ clips
    def num_clips(self, path: str) -> int:
        """Clips that cover the file (non-overlapping windows), within [num_test_clips, max_clips]."""
        duration = probe(path).duration or 0.0
        window = max(self.data.clip_seconds if "rgb" in self.model.config.modalities else 0.0,
                     self.data.audio_seconds if "spectrogram" in self.model.config.modalities else 0.0)
        covering = math.ceil(duration / window) if window > 0 else 1
        return max(1, min(self.max_clips, max(self.data.num_test_clips, covering)))

    def clips(self, path: str, num_clips: int | None = None) -> dict[str, Any]:
        """All clips of a file as one batch: the model's inputs plus `has_audio` [N]."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        n = num_clips or self.num_clips(path)
        cfg = replace(self.data, num_test_clips=n, num_test_crops=1)
        annotations = Annotations([Item(path, (), video_id=path)], self.class_names)
        dataset = AVDataset(annotations, cfg, "test", modalities=self.model.config.modalities)
        items = [dataset[i] for i in range(len(dataset))]
        batch: dict[str, Any] = {m: torch.stack([it[m] for it in items]) for m in self.model.config.modalities}
        batch["has_audio"] = torch.tensor([bool(it["has_audio"]) for it in items])
        return batch

    def _inputs(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
        """The inputs the model can use, and a note on what was left out."""
        mods = self.model.config.modalities
        inputs = {m: batch[m].to(self.device) for m in mods}
        if "spectrogram" in mods and not bool(batch["has_audio"].any()):
            if "rgb" in mods:
                del inputs["spectrogram"]
                return inputs, "no audio track: predicted from the video alone"
            return inputs, "no audio track: this audio-only model saw silence"
        return inputs, ""

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def predict(self, path: str, topk: int = 5, num_clips: int | None = None) -> Prediction:
        """Clip-averaged prediction for one file."""
        batch = self.clips(path, num_clips)
        inputs, note = self._inputs(batch)
        logits = self.model(inputs).logits.float().mean(0)
        cfg = self.model.config
        if cfg.multi_label:
            probs = torch.sigmoid(logits)
        elif cfg.class_splits:
            probs = torch.cat([p.softmax(-1) for p in logits.split(list(cfg.class_splits))])
        else:
            probs = logits.softmax(-1)
        if not cfg.class_splits or cfg.multi_label:
            order = probs.argsort(descending=True)[:topk].tolist()
            return Prediction(path, [(self.class_names[i], float(probs[i])) for i in order],
                              len(batch["has_audio"]), tuple(inputs), note, probs.numpy())
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
        return Prediction(path, top, len(batch["has_audio"]), tuple(inputs), note, probs.numpy(), heads)

    @torch.no_grad()
    def embed(self, path: str, num_clips: int | None = None) -> dict[str, np.ndarray]:
        """Per-modality pooled embeddings (the features the head sees), averaged over clips."""
        inputs, _ = self._inputs(self.clips(path, num_clips))
        out = self.model(inputs, output_embeddings=True)
        return {m: e.float().mean(0).numpy() for m, e in out.embeddings.items()}

    @torch.no_grad()
    def explain(self, path: str, out_dir: str | os.PathLike, clip: int | None = None) -> list[Path]:
        """Pictures of where the model looks in one clip (the middle one by default): the
        attention of the bottleneck tokens (fusion layers of a bottleneck model) or of the
        cls token (other models; all tokens for pooling heads) over the frames' patches and
        the spectrogram's time-frequency patches. Returns the PNG paths."""
        from . import visualize as pictures

        batch = self.clips(path)
        k = len(batch["has_audio"]) // 2 if clip is None else clip
        inputs, note = self._inputs({key: v[k : k + 1] for key, v in batch.items()})
        out = self.model(inputs, output_attentions=True)
        prediction = self.predict(path, topk=3)
        heat, source = pictures.patch_attention(self.model, out)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        title = f"{Path(path).name}: " + ", ".join(f"{n} {p:.0%}" for n, p in prediction.top)
        written = []
        if "rgb" in heat:
            written.append(pictures.video_figure(self.model.config, inputs["rgb"][0], heat["rgb"], source, title,
                                                 out_dir / "video_attention.png"))
        if "spectrogram" in heat:
            written.append(pictures.audio_figure(self.model.config, inputs["spectrogram"][0], heat["spectrogram"],
                                                 source, title, out_dir / "audio_attention.png", self.data))
        if note:
            (out_dir / "note.txt").write_text(note + "\n")
        return written


def predict(paths: str | Sequence[str], model: str | os.PathLike, topk: int = 5, device: str = "cpu"
            ) -> list[Prediction]:
    """Predictions for video files with a saved model (see `Predictor.predict`)."""
    predictor = Predictor(model, device=device)
    return [predictor.predict(p, topk) for p in ([paths] if isinstance(paths, str) else paths)]


def embed(paths: str | Sequence[str], model: str | os.PathLike, device: str = "cpu") -> dict[str, np.ndarray]:
    """Per-modality embeddings [N, D] of video files (see `Predictor.embed`)."""
    predictor = Predictor(model, device=device)
    rows = [predictor.embed(p) for p in ([paths] if isinstance(paths, str) else paths)]
    width = {m: v.shape for r in rows for m, v in r.items()}  # a file without audio has no audio embedding: NaN
    return {m: np.stack([r.get(m, np.full(shape, np.nan, np.float32)) for r in rows]) for m, shape in width.items()}


def explain(path: str, model: str | os.PathLike, out_dir: str | os.PathLike, device: str = "cpu") -> list[Path]:
    """Attention pictures for one video (see `Predictor.explain`)."""
    return Predictor(model, device=device).explain(path, out_dir)
