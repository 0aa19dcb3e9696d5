"""Start MBT from the audio and audio-visual encoders people fine-tune from, in their
published files: AST (Hugging Face folder or `.safetensors`, and the original DataParallel
`.pth`), CAV-MAE (pretrained `CAVMAE` and fine-tuned `CAVMAEFT` `.pth`) and AudioMAE
(`{'model': ..., 'args': Namespace}` pretrained and fine-tuned).

`read_peer` detects the layout from the keys and checks every key and shape, refusing
anything else with the file and the first unexpected key or shape named. `peer_config`
gives the MBT that computes what the source computes (settings read from the source:
LayerNorm eps, GELU, patch stride, prefix tokens), `init_from_peer` loads the weights into
an MBT, and `convert_peer` writes a complete model folder with its Kaldi fbank front end.

The peers order spectrogram tokens frequency-major (AST, CAV-MAE: `f * T + t`); mbt's order
is time-major, so kernels are transposed and position tables permuted. CAV-MAE's modality
embeddings are added to every token: they are folded into the position tables. Position
grids are resized by the source's own rule (AST: centre crop or bilinear without corner
alignment; fixed sin-cos tables regenerated; trained tables bilinear) and reported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.config import MBTConfig
from ..models.mbt import MBT, inflate_patch_kernel
from ..models.pretrained import check_foreign_weights

FAMILIES = ("ast", "cav-mae", "audiomae")
"""What `mbt convert` accepts: the families of published checkpoints."""

MEL_BINS = 128
"""Mel bins of every source's Kaldi fbank input."""

NORMALISATION = {
    "ast": (-4.2677393, 2 * 4.5689974), "cav-mae": (-5.081, 4.4849), "audiomae": (-4.2677393, 2 * 4.5689974),
}
"""(spec_mean, spec_std) of each family's fbank normalisation `(x - mean) / std`: AST and
AudioMAE use `(x + 4.2677393) / (4.5689974 * 2)`, CAV-MAE `(x + 5.081) / 4.4849`."""


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
"""CAV-MAE's frame normalisation (torchvision `Normalize`, on [0, 1] pixels)."""


class _Args:
    """What AudioMAE's pickled `argparse.Namespace` (its training arguments) is read into:
    a plain attribute holder allowed under that one name, so that `weights_only` loading
    admits nothing else and no argparse code runs."""


class PeerFormatError(ValueError):
    """A file is not one of the known published layouts, or is damaged; the message names
    the file and what is wrong."""


@dataclass
class Tower:
    """One encoder as mbt sees it: weights in mbt's (timm) block names, spectrogram grids
    time-major."""

    kernel: Tensor
    """Patch kernel [D, C, ph, pw], (time, mel) for the spectrogram."""
    bias: Tensor
    prefix: list[Tensor]
    """Prefix tokens [D] in order: cls, then AST's distillation token."""
    prefix_pos: list[Tensor]
    """Their positions [D]."""
    grid: Tensor
    """Patch positions [gh, gw, D] (time x mel, or image rows x columns), modality
    embedding folded in."""
    blocks: list[dict[str, Tensor]]
    """Per layer, `norm1.weight`, `attn.qkv.weight`, ... as mbt's `Block`."""
    norm: tuple[Tensor, Tensor] | None
    """Final LayerNorm (weight, bias), None when the source has none before pooling."""
    sincos: str | None = None
    """The fixed sin-cos rule its positions follow ('cav-mae', 'audiomae'), else None."""
    modality_embedding: Tensor | None = None
    """CAV-MAE's modality embedding [D], folded into `grid` (kept for regenerating sin-cos)."""


@dataclass
class PeerCheckpoint:
    """A published checkpoint read and checked, in mbt's terms."""

    path: str
    layout: str
    """'ast-hf', 'ast', 'cav-mae-pretrain', 'cav-mae-ft', 'audiomae-pretrain', 'audiomae-ft'."""
    towers: dict[str, Tower]
    """By mbt modality. CAV-MAE's carry its modality-specific norms in the shared layer."""
    joint_blocks: list[dict[str, Tensor]] = field(default_factory=list)
    """CAV-MAE's shared layers with their joint norms (its multimodal path)."""
    joint_norm: tuple[Tensor, Tensor] | None = None
    """CAV-MAE's joint final norm `norm`."""
    head_norm: tuple[Tensor, Tensor] | None = None
    head: tuple[Tensor, Tensor] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    """eps, gelu, stride, spectrogram_size, image_size, heads and where each came from."""

    @property
    def family(self) -> str:
        return self.layout.rsplit("-", 1)[0] if self.layout != "ast-hf" else "ast"

    @property
    def num_classes(self) -> int | None:
        return None if self.head is None else self.head[0].shape[0]


# ---------------------------------------------------------------------- reading
def read_peer(
    path: str | os.PathLike, *, num_heads: int | None = None, target_length: int | None = None
) -> PeerCheckpoint:
    """The checkpoint at `path` (a file, or a Hugging Face AST folder), its layout detected
    from the keys. `num_heads`: the original AST, CAV-MAE and AudioMAE files do not record
    it; by default D / 64 (every released ViT's head width). `target_length`: the spectrogram
    frames an original AST `.pth` was trained on (its file does not say; default 1024)."""
    path = os.fspath(path)
    hf_config = None
    if os.path.isdir(path):
        hf_config, path = _hf_folder(path)
    elif path.endswith(".safetensors"):
        folder_config = os.path.join(os.path.dirname(path) or ".", "config.json")
        if not os.path.isfile(folder_config):
            raise PeerFormatError(f"{path}: a Hugging Face AST file needs its config.json beside it (LayerNorm eps, "
                                  "GELU and strides are read from it)")
        hf_config = _read_json(folder_config)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    state, extra = _load_state(path)
    ckpt = _from_state(path, state, extra, hf_config, num_heads, target_length)
    if ckpt is None:
        first = next(iter(state), "<no keys>")
        raise PeerFormatError(
            f"{path}: unknown layout (first key {first!r}); expected a Hugging Face AST, original AST (module.v.*), "
            "CAV-MAE (module.blocks_a.*) or AudioMAE ({'model': ...} with fc_norm or a decoder) checkpoint"
        )
    return ckpt


def peer_source(path: str | os.PathLike, **read_options: Any) -> PeerCheckpoint | None:
    """The checkpoint at `path` if it is one of the published layouts (for `train.init_from`,
    which also takes mbt folders and ImageNet ViTs), else None. A file of a known layout that
    fails the checks raises."""
    path = os.fspath(path)
    if os.path.isdir(path):
        config = os.path.join(path, "config.json")
        if os.path.isfile(config) and _read_json(config).get("model_type") == "audio-spectrogram-transformer":
            return read_peer(path, **read_options)
        return None
    if not os.path.isfile(path) or not path.endswith((".pth", ".pt", ".bin", ".safetensors")):
        return None
    state, extra = _load_state(path)
    hf_config = None
    folder_config = os.path.join(os.path.dirname(path) or ".", "config.json")
    if path.endswith(".safetensors") and os.path.isfile(folder_config):
        hf_config = _read_json(folder_config)
    return _from_state(path, state, extra, hf_config, **read_options)


def _from_state(path: str, state: dict[str, Tensor], extra: dict[str, Any], hf_config: dict[str, Any] | None,
                num_heads: int | None = None, target_length: int | None = None) -> PeerCheckpoint | None:
    """The layout detected from the keys, read and checked; None when no layout matches."""
    if any(k.startswith("audio_spectrogram_transformer.") for k in state):
        if hf_config is None:
            raise PeerFormatError(f"{path}: Hugging Face AST weights without their config.json")
        return _read_ast_hf(path, state, hf_config)
    stripped = {k.removeprefix("module."): v for k, v in state.items()}
    if "v.dist_token" in stripped:
        return _read_ast(path, stripped, num_heads, target_length)
    if "blocks_a.0.norm1.weight" in stripped:
        return _read_cavmae(path, stripped, num_heads)
    if "fc_norm.weight" in stripped or ("decoder_embed.weight" in stripped and "cls_token" in stripped):
        return _read_audiomae(path, stripped, extra, num_heads)
    return None


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise PeerFormatError(f"{path}: unreadable JSON ({e})") from e


def _hf_folder(folder: str) -> tuple[dict[str, Any], str]:
    config = os.path.join(folder, "config.json")
    weights = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(config) or not os.path.isfile(weights):
        raise PeerFormatError(f"{folder}: a model folder needs config.json and model.safetensors (a Hugging Face "
                              "AST folder as save_pretrained writes it)")
    hf = _read_json(config)
    if hf.get("model_type") != "audio-spectrogram-transformer":
        raise PeerFormatError(f"{config}: model_type {hf.get('model_type')!r}, not 'audio-spectrogram-transformer'")
    return hf, weights


def _load_state(path: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors of a file, and the other entries of an AudioMAE-style dict. Only tensors
    (and AudioMAE's `argparse.Namespace`, as `_Args`) are unpickled: `weights_only=True`."""
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except (SafetensorError, OSError) as e:
            raise PeerFormatError(f"{path}: not a readable safetensors file ({e})") from e
        _check_tensors(state, path)
        return state, {}
    try:
        with torch.serialization.safe_globals([(_Args, "argparse.Namespace")]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...: torch raises many kinds
        raise PeerFormatError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from e
    extra: dict[str, Any] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        extra = {k: v for k, v in obj.items() if k != "model"}
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise PeerFormatError(f"{path}: not a state dict of tensors")
    _check_tensors(obj, path)
    return dict(obj), extra


def _check_tensors(state: Mapping[str, Tensor], path: str) -> None:
    try:
        check_foreign_weights(state, path)
    except ValueError as e:
        raise PeerFormatError(str(e)) from e


class _Keys:
    """Takes tensors out of a state dict by name, checking each shape; `finish` refuses
    what is left over."""

    def __init__(self, path: str, state: dict[str, Tensor], prefix: str = ""):
        self.path, self.state, self.prefix = path, dict(state), prefix
        self.order = list(state)

    def take(self, name: str, shape: tuple[int, ...] | None = None) -> Tensor:
        key = self.prefix + name
        if key not in self.state:
            raise PeerFormatError(f"{self.path}: missing key {key!r}")
        t = self.state.pop(key)
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise PeerFormatError(f"{self.path}: {key} has shape {list(t.shape)}, expected {list(shape)}")
        return t.detach().clone()

    def rows(self, name: str) -> int:
        """The first dimension of a tensor (a width the file defines), without taking it."""
        key = self.prefix + name
        if key not in self.state:
            raise PeerFormatError(f"{self.path}: missing key {key!r}")
        return self.state[key].shape[0]

    def has(self, name: str) -> bool:
        return self.prefix + name in self.state

    def drop(self, pattern: str) -> None:
        for k in [k for k in self.state if re.fullmatch(pattern, k)]:
            del self.state[k]

    def finish(self) -> None:
        left = [k for k in self.order if k in self.state]
        if left:
            raise PeerFormatError(f"{self.path}: unexpected key {left[0]!r} (shape {list(self.state[left[0]].shape)})"
                                  + (f" and {len(left) - 1} more" if len(left) > 1 else ""))


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _timm_block(keys: _Keys, prefix: str, d: int, mlp: int) -> dict[str, Tensor]:
    """A timm block's weights (`norm1`, `attn.qkv`, ...: mbt's `Block` names)."""
    out = {}
    for norm in ("norm1", "norm2"):
        out[f"{norm}.weight"] = keys.take(f"{prefix}{norm}.weight", (d,))
        out[f"{norm}.bias"] = keys.take(f"{prefix}{norm}.bias", (d,))
    for name, shape in (("attn.qkv", (3 * d, d)), ("attn.proj", (d, d)), ("mlp.fc1", (mlp, d)), ("mlp.fc2", (d, mlp))):
        out[f"{name}.weight"] = keys.take(f"{prefix}{name}.weight", shape)
        out[f"{name}.bias"] = keys.take(f"{prefix}{name}.bias", shape[:1])
    return out


def _norm(keys: _Keys, name: str, d: int) -> tuple[Tensor, Tensor]:
    return keys.take(f"{name}.weight", (d,)), keys.take(f"{name}.bias", (d,))


def _heads(d: int, num_heads: int | None) -> tuple[int, str]:
    if num_heads is not None:
        return num_heads, "given"
    if d % 64:
        raise PeerFormatError(f"width {d} is not a multiple of 64: give the number of attention heads")
    return d // 64, "D / 64 (not in the file: the head width of every released ViT)"


def _freq_major_to_time_major(grid: Tensor, f: int, t: int) -> Tensor:
    """[f * t, D] in the peers' order (f * T + t) -> [t, f, D]."""
    return grid.reshape(f, t, -1).transpose(0, 1).contiguous()


def _audio_grid(path: str, n: int, stride: int, patch: int, target_length: int | None) -> tuple[int, int, int]:
    """(time patches, mel patches, frames) of `n` grid tokens of 128-bin fbank."""
    f = (MEL_BINS - patch) // stride + 1
    if n % f:
        raise PeerFormatError(f"{path}: {n} grid positions are not a whole number of {f} mel rows (stride {stride})")
    t = n // f
    frames = target_length if target_length is not None else (t - 1) * stride + patch
    if (frames - patch) // stride + 1 != t:
        raise PeerFormatError(f"{path}: {t} time patches at stride {stride} do not fit target_length {frames}")
    return t, f, frames


def _read_ast_hf(path: str, state: dict[str, Tensor], hf: dict[str, Any]) -> PeerCheckpoint:
    needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
              "frequency_stride", "time_stride", "num_mel_bins", "max_length", "layer_norm_eps")
    absent = [k for k in needed if not isinstance(hf.get(k), (int, float))]
    if absent:
        raise PeerFormatError(f"{path}: its config.json lacks {absent[0]!r} (or it is not a number)")
    keys = _Keys(path, state, "audio_spectrogram_transformer.")
    d, mlp, depth = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    patch = hf["patch_size"]
    fs, ts = hf["frequency_stride"], hf["time_stride"]
    f = (hf["num_mel_bins"] - patch) // fs + 1
    t = (hf["max_length"] - patch) // ts + 1
    act = hf.get("hidden_act", "gelu")
    gelus = {"gelu": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
    if act not in gelus:
        raise PeerFormatError(f"{path}: hidden_act {act!r}: mbt has exact and tanh GELU only")
    kernel = keys.take("embeddings.patch_embeddings.projection.weight", (d, 1, patch, patch))
    bias = keys.take("embeddings.patch_embeddings.projection.bias", (d,))
    cls = keys.take("embeddings.cls_token", (1, 1, d))
    dist = keys.take("embeddings.distillation_token", (1, 1, d))
    pos = keys.take("embeddings.position_embeddings", (1, 2 + f * t, d))[0]
    blocks = []
    for i in range(depth):
        p = f"encoder.layer.{i}."
        blk = {}
        for kind in ("weight", "bias"):
            qkv = [keys.take(f"{p}attention.attention.{n}.{kind}", (d, d) if kind == "weight" else (d,))
                   for n in ("query", "key", "value")]
            blk[f"attn.qkv.{kind}"] = torch.cat(qkv)
            for theirs, mine, shape in (("layernorm_before", "norm1", (d,)), ("layernorm_after", "norm2", (d,)),
                                        ("attention.output.dense", "attn.proj", (d, d)),
                                        ("intermediate.dense", "mlp.fc1", (mlp, d)),
                                        ("output.dense", "mlp.fc2", (d, mlp))):
                blk[f"{mine}.{kind}"] = keys.take(f"{p}{theirs}.{kind}", shape if kind == "weight" else shape[:1])
        blocks.append(blk)
    norm = _norm(keys, "layernorm", d)
    keys.prefix = ""
    head_norm = _norm(keys, "classifier.layernorm", d)
    n_cls = keys.rows("classifier.dense.weight")
    head = (keys.take("classifier.dense.weight", (n_cls, d)), keys.take("classifier.dense.bias", (n_cls,)))
    keys.finish()
    tower = Tower(kernel.transpose(2, 3), bias, [cls.reshape(d), dist.reshape(d)], [pos[0], pos[1]],
                  _freq_major_to_time_major(pos[2:], f, t), blocks, norm)
    settings = {"layer_norm_eps": hf["layer_norm_eps"], "gelu": gelus[act], "stride": (ts, fs),
                "spectrogram_size": (hf["max_length"], hf["num_mel_bins"]), "num_heads": hf["num_attention_heads"],
                "source": f"config.json: layer_norm_eps {hf['layer_norm_eps']}, hidden_act {act!r}, frequency/time "
                          f"stride {fs}/{ts}, {hf['num_attention_heads']} heads"}
    return PeerCheckpoint(path, "ast-hf", {"spectrogram": tower}, head_norm=head_norm, head=head, settings=settings)


def _read_ast(path: str, state: dict[str, Tensor], num_heads: int | None, target_length: int | None) -> PeerCheckpoint:
    keys = _Keys(path, state, "v.")
    kernel = keys.take("patch_embed.proj.weight")
    d, c, patch = kernel.shape[0], kernel.shape[1], kernel.shape[2]
    if c != 1 or kernel.shape[3] != patch:
        raise PeerFormatError(f"{path}: v.patch_embed.proj.weight has shape {list(kernel.shape)}, "
                              "expected [D, 1, p, p]")
    bias = keys.take("patch_embed.proj.bias", (d,))
    pos = keys.take("pos_embed")
    if pos.dim() != 3 or pos.shape[2] != d:
        raise PeerFormatError(f"{path}: v.pos_embed has shape {list(pos.shape)}, expected [1, 2 + N, {d}]")
    n = pos.shape[1] - 2
    length = target_length or 1024
    strides = [s for s in range(1, patch + 1)
               if ((MEL_BINS - patch) // s + 1) * ((length - patch) // s + 1) == n]
    if len(strides) != 1:
        raise PeerFormatError(f"{path}: {n} grid positions match no single patch stride at {length} frames x "
                              f"{MEL_BINS} mel bins (strides {strides}); give the target length it was trained on")
    stride = strides[0]
    t, f, frames = _audio_grid(path, n, stride, patch, length)
    depth = _count(keys.state, r"v\.blocks\.(\d+)\.")
    mlp = keys.rows("blocks.0.mlp.fc1.weight")
    cls, dist = keys.take("cls_token", (1, 1, d)), keys.take("dist_token", (1, 1, d))
    blocks = [_timm_block(keys, f"blocks.{i}.", d, mlp) for i in range(depth)]
    norm = _norm(keys, "norm", d)
    keys.drop(r"v\.head(_dist)?\.(weight|bias)")  # DeiT's unused heads
    keys.prefix = ""
    head_norm = _norm(keys, "mlp_head.0", d)
    n_cls = keys.rows("mlp_head.1.weight")
    head = (keys.take("mlp_head.1.weight", (n_cls, d)), keys.take("mlp_head.1.bias", (n_cls,)))
    keys.finish()
    heads, heads_from = _heads(d, num_heads)
    tower = Tower(kernel.transpose(2, 3), bias, [cls.reshape(d), dist.reshape(d)],
                  [pos[0, 0], pos[0, 1]], _freq_major_to_time_major(pos[0, 2:], f, t), blocks, norm)
    settings = {"layer_norm_eps": 1e-6, "head_norm_eps": 1e-5, "gelu": "exact", "stride": (stride, stride),
                "spectrogram_size": (frames, MEL_BINS), "num_heads": heads,
                "source": f"the AST recipe (timm DeiT: eps 1e-6, head nn.LayerNorm 1e-5, exact GELU); stride {stride} "
                f"from {n} positions at {length} frames; heads {heads_from}"}
    return PeerCheckpoint(path, "ast", {"spectrogram": tower}, head_norm=head_norm, head=head, settings=settings)



def _read_cavmae(path: str, state: dict[str, Tensor], num_heads: int | None) -> PeerCheckpoint:
    keys = _Keys(path, state)
    ka = keys.take("patch_embed_a.proj.weight")
    d, patch = ka.shape[0], ka.shape[2]
    if tuple(ka.shape) != (d, 1, patch, patch):
        raise PeerFormatError(f"{path}: patch_embed_a.proj.weight has shape {list(ka.shape)}, expected [D, 1, p, p]")
    ba = keys.take("patch_embed_a.proj.bias", (d,))
    kv, bv = _fold_imagenet_normalisation(keys.take("patch_embed_v.proj.weight", (d, 3, patch, patch)),
                                          keys.take("patch_embed_v.proj.bias", (d,)))
    pos_a, pos_v = keys.take("pos_embed_a"), keys.take("pos_embed_v")
    for name, p in (("pos_embed_a", pos_a), ("pos_embed_v", pos_v)):
        if p.dim() != 3 or p.shape[0] != 1 or p.shape[2] != d:
            raise PeerFormatError(f"{path}: {name} has shape {list(p.shape)}, expected [1, N, {d}]")
    mod_a, mod_v = keys.take("modality_a", (1, 1, d)).reshape(d), keys.take("modality_v", (1, 1, d)).reshape(d)
    t, f, frames = _audio_grid(path, pos_a.shape[1], patch, patch, None)
    side = math.isqrt(pos_v.shape[1])
    if side * side != pos_v.shape[1]:
        raise PeerFormatError(f"{path}: pos_embed_v has {pos_v.shape[1]} positions, not a square grid")
    n_specific = _count(keys.state, r"blocks_a\.(\d+)\.")
    n_shared = _count(keys.state, r"blocks_u\.(\d+)\.")
    n_video = _count(keys.state, r"blocks_v\.(\d+)\.")
    if n_specific != n_video or not n_shared:
        raise PeerFormatError(f"{path}: blocks_a, blocks_v and blocks_u do not make a CAV-MAE (depths {n_specific}, "
                              f"{n_video}, {n_shared})")
    mlp = keys.rows("blocks_a.0.mlp.fc1.weight")
    specific: dict[str, list[dict[str, Tensor]]] = {"a": [], "v": []}
    for m in ("a", "v"):
        for i in range(n_specific):
            specific[m].append(_timm_block(keys, f"blocks_{m}.{i}.", d, mlp))
            for unused in ("norm1_a", "norm1_v", "norm2_a", "norm2_v"):  # the specific layers run without modality
                _norm(keys, f"blocks_{m}.{i}.{unused}", d)
    shared: dict[str, list[dict[str, Tensor]]] = {"joint": [], "a": [], "v": []}
    for i in range(n_shared):
        p = f"blocks_u.{i}."
        joint = _timm_block(keys, p, d, mlp)  # the unified path's norms: norm1, norm2
        shared["joint"].append(joint)
        for m in ("a", "v"):  # the modality-only paths' norms: norm1_a, norm2_a, ...
            own = dict(joint)
            for mine in ("norm1", "norm2"):
                own[f"{mine}.weight"], own[f"{mine}.bias"] = _norm(keys, f"{p}{mine}_{m}", d)
            shared[m].append(own)
    norm_a, norm_v, norm = _norm(keys, "norm_a", d), _norm(keys, "norm_v", d), _norm(keys, "norm", d)
    pretrain = keys.has("decoder_embed.weight")
    head_norm = head = None
    if pretrain:
        keys.drop(r"decoder_.*|mask_token")
    else:
        head_norm = _norm(keys, "mlp_head.0", d)
        n_cls = keys.rows("mlp_head.1.weight")
        head = (keys.take("mlp_head.1.weight", (n_cls, d)), keys.take("mlp_head.1.bias", (n_cls,)))
    keys.finish()
    sincos = "cav-mae" if pretrain else None
    towers = {
        "spectrogram": Tower(ka.transpose(2, 3), ba, [], [], _freq_major_to_time_major(pos_a[0] + mod_a, f, t),
                             specific["a"] + shared["a"], norm_a, sincos, mod_a),
        "rgb": Tower(kv, bv, [], [], (pos_v[0] + mod_v).reshape(side, side, d), specific["v"] + shared["v"],
                     norm_v, sincos, mod_v),
    }
    heads, heads_from = _heads(d, num_heads)
    settings = {"layer_norm_eps": 1e-5, "gelu": "exact", "stride": (patch, patch),
                "spectrogram_size": (frames, MEL_BINS), "image_size": (side * patch, side * patch),
                "num_heads": heads, "fusion_layer": n_specific,
                "source": f"the CAV-MAE code (nn.LayerNorm default eps 1e-5, exact GELU); heads {heads_from}"}
    return PeerCheckpoint(path, "cav-mae-pretrain" if pretrain else "cav-mae-ft", towers,
                          joint_blocks=shared["joint"], joint_norm=norm,
                          head_norm=head_norm, head=head, settings=settings)


def _fold_imagenet_normalisation(kernel: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """The patch kernel and bias that give on mbt's frames (in [-1, 1]) what `kernel` gives on
    ImageNet-normalised ones: x_c -> (x_c + 1) / 2 -> (. - mean_c) / std_c is affine per
    channel, and non-overlapping unpadded patches make folding its offset into the bias exact."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).reshape(1, 3, 1, 1)
    k = kernel.to(torch.float64)
    scale, offset = 1 / (2 * std), (0.5 - mean) / std
    folded_bias = bias.to(torch.float64) + (k * offset).sum(dim=(1, 2, 3))
    return (k * scale).to(kernel.dtype), folded_bias.to(bias.dtype)


def _read_audiomae(path: str, state: dict[str, Tensor], extra: dict[str, Any], num_heads: int | None) -> PeerCheckpoint:
    keys = _Keys(path, state)
    kernel = keys.take("patch_embed.proj.weight")
    d, patch = kernel.shape[0], kernel.shape[2]
    if tuple(kernel.shape) != (d, 1, patch, patch):
        raise PeerFormatError(f"{path}: patch_embed.proj.weight has shape {list(kernel.shape)}, expected [D, 1, p, p]")
    bias = keys.take("patch_embed.proj.bias", (d,))
    cls = keys.take("cls_token", (1, 1, d)).reshape(d)
    pos = keys.take("pos_embed")
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != d:
        raise PeerFormatError(f"{path}: pos_embed has shape {list(pos.shape)}, expected [1, 1 + N, {d}]")
    args = extra.get("args")
    custom = bool(getattr(args, "use_custom_patch", False))
    stride = 10 if custom else patch  # AudioMAE's use_custom_patch: AST's overlapping stride-10 patches
    t, f, frames = _audio_grid(path, pos.shape[1] - 1, stride, patch, None)
    depth = _count(keys.state, r"blocks\.(\d+)\.")
    mlp = keys.rows("blocks.0.mlp.fc1.weight")
    blocks = [_timm_block(keys, f"blocks.{i}.", d, mlp) for i in range(depth)]
    pretrain = keys.has("norm.weight")
    head_norm = head = norm = None
    if pretrain:
        norm = _norm(keys, "norm", d)
        keys.drop(r"decoder_.*|mask_token")
    else:
        head_norm = _norm(keys, "fc_norm", d)
        n_cls = keys.rows("head.weight")
        head = (keys.take("head.weight", (n_cls, d)), keys.take("head.bias", (n_cls,)))
    keys.finish()
    tower = Tower(kernel, bias, [cls], [pos[0, 0]], pos[0, 1:].reshape(t, f, d), blocks, norm)
    # fine-tuning keeps the pretraining's fixed table (requires_grad=False): regenerate it too
    fixed = _regenerate(tower, "audiomae", "spectrogram", (t, f), torch.float64)
    if pretrain or torch.allclose(tower.grid.to(torch.float64), fixed, atol=1e-6):
        tower.sincos = "audiomae"
    heads, heads_from = _heads(d, num_heads)
    settings = {"layer_norm_eps": 1e-6, "gelu": "exact", "stride": (stride, stride),
                "spectrogram_size": (frames, MEL_BINS), "num_heads": heads,
                "source": f"the AudioMAE code (eps 1e-6, exact GELU); stride {stride} from "
                f"args.use_custom_patch={custom}; heads {heads_from}"}
    return PeerCheckpoint(path, "audiomae-pretrain" if pretrain else "audiomae-ft", {"spectrogram": tower},
                          head_norm=head_norm, head=head, settings=settings)


# ---------------------------------------------------------------------- the MBT that computes the same
def peer_config(ckpt: PeerCheckpoint, modalities: tuple[str, ...] | None = None, num_classes: int | None = None,
                **overrides: Any) -> MBTConfig:
    """The MBT config of a converted checkpoint. Complete models (with their head) compute
    what the source computes: AST with its distillation token and head norm; CAV-MAE
    fine-tuned as its multimodal path (vanilla fusion from its first shared layer, both
    towers' shared layers with the joint norms, joint final norm, mean of all tokens, head
    norm) or one branch alone (its modality norms); AudioMAE fine-tuned as a kept cls token,
    no final norm, mean of the patch tokens and `fc_norm`. Pretrained encoders get a fresh
    head (CAV-MAE's: mean pooling and a head norm, as its fine-tuning) and MBT's sampled
    frames; CAV-MAE's two towers then fuse through bottlenecks from the paper's layer (8 of
    12, scaled) with per-modality final norms. `num_classes` other than the source's gives
    a fresh head."""
    s = ckpt.settings
    avail = tuple(m for m in ("spectrogram", "rgb") if m in ckpt.towers)
    modalities = tuple(modalities or avail)
    missing = [m for m in modalities if m not in ckpt.towers]
    if missing:
        raise PeerFormatError(f"{ckpt.path}: a {ckpt.layout} checkpoint has no {missing[0]} encoder "
                              f"(it has {list(avail)})")
    tower = ckpt.towers[modalities[0]]
    d = tower.kernel.shape[0]
    cfg: dict[str, Any] = {
        "modalities": modalities, "hidden_size": d, "num_layers": len(tower.blocks), "num_heads": s["num_heads"],
        "mlp_dim": tower.blocks[0]["mlp.fc1.weight"].shape[0], "patch_size": tuple(tower.kernel.shape[-2:]),
        "gelu": s["gelu"], "layer_norm_eps": s["layer_norm_eps"],
        "num_classes": num_classes or ckpt.num_classes or 527, "fusion_layer": len(tower.blocks),
    }
    if "spectrogram" in modalities:
        cfg.update(spectrogram_size=s["spectrogram_size"], spectrogram_channels=1,
                   spectrogram_patch_stride=None if s["stride"] == cfg["patch_size"] else s["stride"])
    if "rgb" in modalities:  # a complete CAV-MAE sees one frame; an encoder to fine-tune gets MBT's frames
        frames = {"num_frames": 1, "n_sampled_frames": 1} if ckpt.head is not None else {}
        cfg.update(image_size=s["image_size"], temporal_encoding="temporal_sampling", **frames)
    family = ckpt.family
    if family == "ast":
        cfg.update(classifier="token", distillation_token=True, head_norm=True, head_norm_eps=s.get("head_norm_eps"))
    elif ckpt.layout == "audiomae-ft":
        cfg.update(classifier="gap", cls_token=True, final_norm=False, head_norm=True)
    elif ckpt.layout == "audiomae-pretrain":
        cfg.update(classifier="token")
    elif len(modalities) == 1:  # one CAV-MAE branch: its modality-specific norms; a head as CAV-MAE's
        cfg.update(classifier="gap", head_norm=True)
    elif ckpt.layout == "cav-mae-ft":
        cfg.update(classifier="gap", head_norm=True, fusion="vanilla", fusion_layer=s["fusion_layer"])
    else:
        cfg.update(classifier="gap", head_norm=True, fusion="bottleneck", modality_norm=True,
                   fusion_layer=round(8 * cfg["num_layers"] / 12))
    cfg.update(overrides)
    return MBTConfig(**cfg)


def _joint(ckpt: PeerCheckpoint, cfg: MBTConfig) -> bool:
    """Whether `cfg` is CAV-MAE's own multimodal path: its shared layers run on both
    modalities with the joint norms."""
    return (bool(ckpt.joint_blocks) and cfg.fusion == "vanilla" and cfg.num_modalities == 2
            and not cfg.share_encoder and cfg.fusion_layer == ckpt.settings["fusion_layer"])


# ---------------------------------------------------------------------- positions
def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """The MAE 1-D table (float64): sin of pos * omega, then cos, omega = 1 / 10000^(i / (dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.to(torch.float64).reshape(-1, 1) * omega
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_grid(rows: int, cols: int, dim: int) -> Tensor:
    """[rows, cols, dim] = the 2-D table CAV-MAE and AudioMAE compute for a (rows, cols)
    grid (`get_2d_sincos_pos_embed*`): the first half encodes the column, the second the row."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.cat([_sincos_1d(dim // 2, c), _sincos_1d(dim // 2, r)], dim=1).reshape(rows, cols, dim)


def _regenerate(tower: Tower, family: str, modality: str, size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """A fixed sin-cos table for grid `size` (time x mel, or rows x columns) by the source's
    own code, modality embedding added. AudioMAE builds its table for a (mel, time) grid but
    adds it to time-major tokens in flat order; that quirk is kept."""
    h, w = size
    d = tower.kernel.shape[0]
    if modality == "rgb":
        table = sincos_grid(h, w, d)
    elif family == "cav-mae":
        table = sincos_grid(w, h, d).transpose(0, 1)
    else:
        table = sincos_grid(w, h, d).reshape(h, w, d)
    table = table.to(dtype)
    return table + tower.modality_embedding.to(dtype) if tower.modality_embedding is not None else table


def _ast_resize(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """AST's rule per axis (`ASTModel.__init__`): fewer patches take the centre ones, more are
    interpolated linearly without corner alignment."""
    for axis, n in enumerate(size):
        have = grid.shape[axis]
        if n < have:
            start = have // 2 - n // 2
            grid = grid.narrow(axis, start, n)
        elif n > have:
            new = list(grid.shape[:2])
            new[axis] = n
            grid = _bilinear(grid, (new[0], new[1]))
    return grid


def _bilinear(grid: Tensor, size: tuple[int, int]) -> Tensor:
    x = grid.permute(2, 0, 1).unsqueeze(0)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0)


def _positions(ckpt: PeerCheckpoint, tower: Tower, modality: str, size: tuple[int, int]) -> tuple[Tensor, str]:
    """The tower's patch positions for grid `size`, and how they were made."""
    if tuple(tower.grid.shape[:2]) == tuple(size):
        return tower.grid, "as stored"
    src = list(tower.grid.shape[:2])
    if tower.sincos:
        return _regenerate(tower, ckpt.family, modality, size, tower.grid.dtype), \
            f"fixed sin-cos regenerated for {list(size)} (stored {src})"
    if ckpt.family == "ast":
        return _ast_resize(tower.grid, size), f"AST's rule (centre crop / bilinear) {src} -> {list(size)}"
    return _bilinear(tower.grid, size), f"bilinear (align_corners=False) {src} -> {list(size)}"


# ---------------------------------------------------------------------- loading
def _check_fits(ckpt: PeerCheckpoint, cfg: MBTConfig, modalities: list[str]) -> None:
    s = ckpt.settings
    tower = ckpt.towers[modalities[0]]
    wants = {"gelu": s["gelu"], "layer_norm_eps": s["layer_norm_eps"], "hidden_size": tower.kernel.shape[0],
             "mlp_dim": tower.blocks[0]["mlp.fc1.weight"].shape[0], "num_layers": len(tower.blocks),
             "patch_size": tuple(tower.kernel.shape[-2:])}
    if "spectrogram" in modalities:
        wants["spectrogram_stride"] = tuple(s["stride"])
        wants["distillation_token"] = len(ckpt.towers["spectrogram"].prefix) == 2
    for name, want in wants.items():
        have = getattr(cfg, name)
        if have != want:
            field_name = "spectrogram_patch_stride" if name == "spectrogram_stride" else name
            raise PeerFormatError(f"{ckpt.path}: model.{field_name} is {have!r} but the {ckpt.layout} checkpoint needs "
                                  f"{want!r}: set model.{field_name}={want!r}")
    if cfg.share_encoder:
        raise PeerFormatError(f"{ckpt.path}: share_encoder=True: the source's towers are not shared")


@torch.no_grad()
def init_from_peer(model: MBT, source: str | os.PathLike | PeerCheckpoint, **read_options: Any) -> dict[str, Any]:
    """Load a published AST / CAV-MAE / AudioMAE checkpoint into `model` (in place) and
    report what was set. The model's settings must match the source's (the error names the
    field); its grids may differ: positions are resized by the source's rule. Modalities the
    source lacks keep their initialisation; the head is copied only when its class count and
    layout match the source's, else it stays fresh."""
    cfg = model.config
    read_options.setdefault("num_heads", cfg.num_heads)  # the .pth files do not record it: the model's
    ckpt = source if isinstance(source, PeerCheckpoint) else read_peer(source, **read_options)
    loaded = [m for m in cfg.modalities if m in ckpt.towers]
    if not loaded:
        raise PeerFormatError(f"{ckpt.path}: the model's modalities {list(cfg.modalities)} are not in this "
                              f"{ckpt.layout} checkpoint ({list(ckpt.towers)})")
    _check_fits(ckpt, cfg, loaded)
    joint = _joint(ckpt, cfg)
    report: dict[str, Any] = {"source": ckpt.path, "layout": ckpt.layout, "settings": ckpt.settings["source"],
                              "positions": {}}
    for m in loaded:
        tower = ckpt.towers[m]
        blocks = tower.blocks
        if joint:  # CAV-MAE's multimodal path: shared layers with the joint norms
            blocks = blocks[: cfg.fusion_layer] + ckpt.joint_blocks
        for blk, weights in zip(model.tower(m), blocks, strict=True):
            blk.load_state_dict({k: v.to(blk.norm1.weight.dtype) for k, v in weights.items()})
        proj = model.embeddings[m].proj
        kernel = tower.kernel.to(proj.weight.dtype)
        if proj.weight.dim() == 5:
            method = "central_frame" if cfg.tubelet_init == "default" else cfg.tubelet_init
            kernel = inflate_patch_kernel(kernel, proj.weight.shape[2], method)
        elif proj.weight.shape[1] != kernel.shape[1]:  # a 1-channel kernel for 3 tiled channels
            kernel = kernel.repeat(1, proj.weight.shape[1], 1, 1) / proj.weight.shape[1]
        proj.weight.copy_(kernel)
        proj.bias.copy_(tower.bias)
        t, h, w = cfg.patch_grid(m)
        grid, how = _positions(ckpt, tower, m, (h, w))
        report["positions"][m] = how
        rows = [grid.reshape(h * w, -1).repeat(t, 1)]
        prefix = []
        if m in model.cls_tokens:
            cls = tower.prefix[0] if tower.prefix else torch.zeros_like(tower.bias)
            model.cls_tokens[m].copy_(cls.reshape(1, 1, -1))
            prefix.append(tower.prefix_pos[0] if tower.prefix_pos else torch.zeros_like(tower.bias))
        if m == "spectrogram" and model.dist_token is not None:
            model.dist_token.copy_(tower.prefix[1].reshape(1, 1, -1))
            prefix.append(tower.prefix_pos[1])
        model.pos_embed[m].copy_(torch.cat([p.reshape(1, -1) for p in prefix] + rows).unsqueeze(0))
    norms = model.final_norms()
    for name, norm in norms.items():
        m = name.rpartition(".")[2]
        source_norm = ckpt.joint_norm if joint or (name == "norm" and len(loaded) > 1) else ckpt.towers[
            m if m in ckpt.towers else loaded[0]].norm
        if source_norm is None:
            report["final_norm"] = "not in the source (it pools before its norm): left at identity init"
            continue
        norm.weight.copy_(source_norm[0])
        norm.bias.copy_(source_norm[1])
    fresh = []
    if model.head_norm is not None:
        if ckpt.head_norm is not None:
            model.head_norm.weight.copy_(ckpt.head_norm[0])
            model.head_norm.bias.copy_(ckpt.head_norm[1])
        else:
            fresh.append("head_norm")
    if ckpt.head is not None and ckpt.num_classes == cfg.num_classes and model.pre_logits is None \
            and (model.head_norm is not None) == (ckpt.head_norm is not None):
        model.head.weight.copy_(ckpt.head[0])
        model.head.bias.copy_(ckpt.head[1])
        report["head"] = f"loaded ({cfg.num_classes} classes)"
    else:
        fresh.append("head")
        report["head"] = (f"fresh: the source has {ckpt.num_classes or 'no'} classes' head, the model "
                          f"{cfg.num_classes}")
    if model.bottleneck is not None:
        fresh.append("bottleneck")
    report["fresh"] = fresh + [m for m in cfg.modalities if m not in loaded]
    report["towers"] = {m: ("joint shared layers" if joint else "own norms") for m in loaded}
    return report


def convert_peer(path: str | os.PathLike, out: str | os.PathLike, family: str, *,
                 modalities: tuple[str, ...] | None = None, num_classes: int | None = None,
                 label_names: tuple[str, ...] | None = None, **read_options: Any) -> tuple[MBT, dict[str, Any]]:
    """A published checkpoint -> a complete `save_pretrained` folder `out` (config, weights,
    class count and the Kaldi fbank front end with the source's statistics), which `mbt
    predict` runs. `family` ('ast', 'cav-mae', 'audiomae') must match the detected layout."""
    from ..data.config import DataConfig
    from ..models.pretrained import save_pretrained

    if family not in FAMILIES:
        raise PeerFormatError(f"unknown source family {family!r}; expected one of {list(FAMILIES)}")
    ckpt = read_peer(path, **read_options)
    if ckpt.family != family:
        raise PeerFormatError(f"{ckpt.path}: this is a {ckpt.layout} checkpoint, not {family}")
    extra = {"label_names": label_names} if label_names else {}
    cfg = peer_config(ckpt, modalities, num_classes, **extra)
    model = MBT(cfg)
    report = init_from_peer(model, ckpt)
    mean, std = NORMALISATION[family]
    data = DataConfig(frontend="kaldi_fbank", spec_mean=mean, spec_std=std, num_mel_bins=MEL_BINS,
                      target_length=cfg.spectrogram_size[0], audio_seconds=min(10.0, cfg.spectrogram_size[0] / 100))
    data = data.sized_for(cfg)
    if "rgb" in cfg.modalities:  # CAV-MAE: Resize(side) then CenterCrop(side)
        data = dataclasses.replace(data, min_resize=data.image_size)
    save_pretrained(model.eval(), out, data_config=data, extra={"converted_from": {
        "file": os.path.basename(ckpt.path), "layout": ckpt.layout, "report": report}})
    return model, report
