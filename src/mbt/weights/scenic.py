"""Official Scenic MBT checkpoints <-> mbt.

Scenic saves a flax msgpack file (`checkpoint_<step>`) whose weights sit under `params/`
(current trainers) or `optimizer/target/` (the flax.optim trainers of 2022, the layout of
the released MBT checkpoints). It is read here with `msgpack` alone: no jax, no flax.
`from_scenic` maps Scenic's `config.model` fields and parameter tree onto `MBTConfig` and
`MBT`; `to_scenic` goes back, so any model can be exported to the official layout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import torch

from ..errors import ConfigError
from ..models.config import MBTConfig
from ..models.mbt import MBT

if TYPE_CHECKING:
    from ..data.config import DataConfig

# Scenic config.model keys that carry no architecture (outputs are on request in mbt).
_IGNORED_KEYS = {"return_prelogits", "return_preclassifier", "dtype", "model_dtype_str", "attention_config"}
_KNOWN_KEYS = _IGNORED_KEYS | {
    "hidden_size", "num_layers", "num_heads", "mlp_dim", "num_classes", "representation_size",
    "dropout_rate", "attention_dropout_rate", "stochastic_droplayer_rate", "classifier",
    "modality_fusion", "fusion_layer", "use_bottleneck", "n_bottlenecks", "test_with_bottlenecks",
    "share_encoder", "patches", "temporal_encoding_config",
}


class ScenicFormatError(ValueError):
    """A Scenic checkpoint or config cannot be mapped onto MBT; the message says why."""


# ---------------------------------------------------------------------- reading
def read_flax_checkpoint(path: str) -> dict[str, Any]:
    """The tree stored in a flax msgpack checkpoint file, with numpy array leaves."""
    if os.path.isdir(path):
        path = latest_checkpoint(path)
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ScenicFormatError(f"{path}: empty file")
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise ScenicFormatError(f"{path}: not a flax msgpack checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(tree, dict):
        raise ScenicFormatError(f"{path}: expected a dict at the top of the checkpoint, got {type(tree).__name__}")
    return _unchunk(tree)


def latest_checkpoint(directory: str) -> str:
    """The `checkpoint_<step>` file with the largest step in a Scenic workdir."""
    steps = []
    for name in os.listdir(directory):
        if name.startswith("checkpoint_") and name[len("checkpoint_") :].isdigit():
            steps.append((int(name[len("checkpoint_") :]), name))
    if not steps:
        raise ScenicFormatError(f"{directory}: no checkpoint_<step> file in this folder")
    return os.path.join(directory, max(steps)[1])


def scenic_params(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The flattened ('/'-joined) model parameters of a checkpoint tree, whichever layout:
    as Scenic's `restore_pretrained_checkpoint` does, `params` or `optimizer/target`,
    then one more `params` level for pre-Linen trees."""
    if "params" in tree:
        params = tree["params"]
    elif "optimizer" in tree and isinstance(tree["optimizer"], Mapping) and "target" in tree["optimizer"]:
        params = tree["optimizer"]["target"]
    else:
        params = tree
    if isinstance(params, Mapping) and "params" in params:
        params = params["params"]
    return flatten(params)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "/"))
        else:
            out[name] = np.asarray(value)
    return out


def _ndarray(data: bytes) -> np.ndarray:
    shape, dtype, buffer = msgpack.unpackb(data, raw=True)
    dtype = dtype.decode() if isinstance(dtype, bytes) else dtype
    if dtype == "bfloat16":  # numpy has no bfloat16: widen through torch
        raw = torch.frombuffer(bytearray(buffer), dtype=torch.bfloat16)
        return raw.float().numpy().reshape(shape)
    return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape).copy()


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 1:  # ndarray
        return _ndarray(data)
    if code == 3:  # numpy scalar, stored as a 0-d array
        return _ndarray(data)[()]
    if code == 2:  # python complex
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


def _unchunk(tree: Any) -> Any:
    """Reassemble arrays flax split into chunks (leaves over 2**30 bytes)."""
    if isinstance(tree, dict):
        if "__msgpack_chunked_array__" in tree:
            shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
            chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
            return np.concatenate(chunks).reshape(shape)
        return {k: _unchunk(v) for k, v in tree.items()}
    return tree


# ---------------------------------------------------------------------- config
def config_from_scenic(
    model_config: Mapping[str, Any],
    params: Mapping[str, np.ndarray],
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> MBTConfig:
    """The `MBTConfig` of a Scenic model, from its `config.model` fields and parameters.

    Scenic's model never sees its input size: only the token counts (the position
    embeddings) matter. Input geometry is taken from `input_shapes` when given
    (`{'rgb': (T, H, W), 'spectrogram': (T, F)}`), else inferred from the token counts
    assuming square frames (224 px when 196 patches per frame fit) and 128 mel bins when
    they fit.
    """
    mc = dict(model_config)
    unknown = sorted(set(mc) - _KNOWN_KEYS)
    if unknown:
        raise ScenicFormatError(f"unknown Scenic config.model field(s) {unknown}")
    attention = (mc.get("attention_config") or {}).get("type", "spacetime")
    if attention != "spacetime":
        raise ScenicFormatError(f"attention_config.type={attention!r}: MBT supports 'spacetime' only")
    for key in ("hidden_size", "num_layers", "num_heads", "mlp_dim", "modality_fusion", "patches"):
        if key not in mc:
            raise ScenicFormatError(f"Scenic config.model is missing {key!r}")

    modalities = tuple(mc["modality_fusion"])
    classifier = mc.get("classifier", "gap")
    if classifier == "0":
        raise ScenicFormatError("classifier='0' crashes in the official code; nothing to convert")
    patch = list(mc["patches"]["size"] if isinstance(mc["patches"], Mapping) else mc["patches"])
    te = dict(mc.get("temporal_encoding_config") or {})
    method = te.get("method", "3d_conv")
    kernel_init = {"central_frame_initializer": "central_frame", "average_frame_initializer": "average_frame"}.get(
        te.get("kernel_init_method") or "", "default"
    )
    head = params.get("output_projection/kernel")
    num_classes = mc.get("num_classes") or (head.shape[-1] if head is not None else None)
    if not num_classes:
        raise ScenicFormatError("num_classes is neither in config.model nor in output_projection/kernel")

    with_cls = 1 if classifier == "token" else 0
    shapes = dict(input_shapes or {})
    geometry: dict[str, Any] = {}
    ph, pw = patch[0], patch[1]
    n_sampled = int(te.get("n_sampled_frames", 8))
    if "rgb" in modalities:
        ft = patch[2] if len(patch) > 2 else 1
        pe = _param(params, "Transformer/posembed_input/pos_embedding")
        n = pe.shape[1] - with_cls
        if "rgb" in shapes:
            t, h, w = shapes["rgb"]
        elif method == "3d_conv":
            nt, side = _split_video_tokens(n, None)
            t, h, w = nt * ft, side * ph, side * pw
        else:
            _, side = _split_video_tokens(n, n_sampled)
            t, h, w = n_sampled, side * ph, side * pw
        geometry.update(num_frames=int(t), image_size=(int(h), int(w)), tubelet_size=int(ft))
    if "spectrogram" in modalities:
        pe = _param(params, "Transformer/posembed_input_spectrogram/pos_embedding")
        n = pe.shape[1] - with_cls
        if "spectrogram" in shapes:
            t, f = shapes["spectrogram"]
        else:
            gw = 128 // pw if n % max(128 // pw, 1) == 0 else _smallest_divisor(n)
            t, f = (n // gw) * ph, gw * pw
        kernel = _param(params, "embedding_spectrogram/kernel")
        geometry.update(spectrogram_size=(int(t), int(f)), spectrogram_channels=int(kernel.shape[2]))

    uses_bottleneck = bool(mc.get("use_bottleneck", False))
    cfg = MBTConfig(
        num_classes=int(num_classes),
        modalities=modalities,
        hidden_size=int(mc["hidden_size"]),
        num_layers=int(mc["num_layers"]),
        num_heads=int(mc["num_heads"]),
        mlp_dim=int(mc["mlp_dim"]),
        fusion_layer=int(mc.get("fusion_layer", 0)),
        fusion="bottleneck" if uses_bottleneck else "vanilla",
        num_bottlenecks=int(mc.get("n_bottlenecks", 4)),
        share_encoder=bool(mc.get("share_encoder", False)),
        test_with_bottlenecks=bool(mc.get("test_with_bottlenecks", True)),
        patch_size=(int(ph), int(pw)),
        temporal_encoding=method,
        tubelet_init=kernel_init,
        n_sampled_frames=n_sampled,
        classifier=classifier,
        representation_size=mc.get("representation_size"),
        dropout_rate=float(mc.get("dropout_rate", 0.1)),
        attention_dropout_rate=float(mc.get("attention_dropout_rate", 0.1)),
        stochastic_depth=float(mc.get("stochastic_droplayer_rate", 0.0)),
        **geometry,
    )
    for m in modalities:
        key = "Transformer/posembed_input" + ("" if m == "rgb" else "_spectrogram") + "/pos_embedding"
        want = cfg.num_patches(m) + with_cls
        if params[key].shape[1] != want:
            raise ScenicFormatError(
                f"{m}: input_shapes give {want} tokens but {key} has {params[key].shape[1]}"
            )
    return cfg


def _split_video_tokens(n: int, frames: int | None) -> tuple[int, int]:
    """(frames, side) with n = frames * side**2: 14x14 patches when they fit, else the
    largest square grid."""
    if frames is not None:
        side = round((n // frames) ** 0.5)
        if frames * side * side != n:
            raise ScenicFormatError(
                f"rgb: {n} tokens are not {frames} square frames; pass input_shapes={{'rgb': (T, H, W)}}"
            )
        return frames, side
    if n % 196 == 0:
        return n // 196, 14
    side = max(s for s in range(1, int(n**0.5) + 1) if n % (s * s) == 0)
    return n // (side * side), side


def _smallest_divisor(n: int) -> int:
    return next((d for d in range(2, n + 1) if n % d == 0), 1)


def _param(params: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in params:
        raise ScenicFormatError(f"the checkpoint has no parameter {key!r}")
    return params[key]


# ---------------------------------------------------------------------- weights
def _block_name(cfg: MBTConfig, modality: str, layer: int) -> str:
    suffix = "" if cfg.share_encoder or modality == "rgb" else "_" + modality
    return f"Transformer/encoderblock_{layer}{suffix}"


def _tower_names(cfg: MBTConfig) -> list[tuple[str, str]]:
    """(our tower key, a modality that uses it) pairs."""
    if cfg.share_encoder:
        return [("shared", cfg.modalities[0])]
    return [(m, m) for m in cfg.modalities]


def _cls_name(cfg: MBTConfig, modality: str) -> str:
    return "cls" if modality == "rgb" or cfg.num_modalities == 1 else "cls" + modality


def state_dict_from_scenic(params: Mapping[str, np.ndarray], cfg: MBTConfig) -> dict[str, torch.Tensor]:
    """Our state dict from Scenic's flattened parameters (Flax layouts)."""
    d = cfg.hidden_size
    used: set[str] = set()

    def get(key: str) -> np.ndarray:
        used.add(key)
        return np.asarray(_param(params, key), dtype=np.float32)

    sd: dict[str, np.ndarray] = {}
    for m in cfg.modalities:
        pe = "Transformer/posembed_input" + ("" if m == "rgb" else "_spectrogram")
        sd[f"pos_embed.{m}"] = get(pe + "/pos_embedding")
        if cfg.classifier == "token":
            sd[f"cls_tokens.{m}"] = get(_cls_name(cfg, m))
        name = "embedding" if m == "rgb" else "embedding_spectrogram"
        k = get(name + "/kernel")
        sd[f"embeddings.{m}.proj.weight"] = k.transpose(4, 3, 0, 1, 2) if k.ndim == 5 else k.transpose(3, 2, 0, 1)
        sd[f"embeddings.{m}.proj.bias"] = get(name + "/bias")
    for tower, m in _tower_names(cfg):
        for layer in range(cfg.num_layers):
            src = _block_name(cfg, m, layer)
            dst = f"towers.{tower}.{layer}"
            att = src + "/MultiHeadDotProductAttention_0"
            sd[dst + ".attn.qkv.weight"] = np.concatenate(
                [get(f"{att}/{p}/kernel").reshape(d, -1).T for p in ("query", "key", "value")]
            )
            sd[dst + ".attn.qkv.bias"] = np.concatenate(
                [get(f"{att}/{p}/bias").reshape(-1) for p in ("query", "key", "value")]
            )
            sd[dst + ".attn.proj.weight"] = get(f"{att}/out/kernel").reshape(-1, d).T
            sd[dst + ".attn.proj.bias"] = get(f"{att}/out/bias")
            for i, norm in ((0, "norm1"), (1, "norm2")):
                sd[f"{dst}.{norm}.weight"] = get(f"{src}/LayerNorm_{i}/scale")
                sd[f"{dst}.{norm}.bias"] = get(f"{src}/LayerNorm_{i}/bias")
            for i, fc in ((0, "fc1"), (1, "fc2")):
                sd[f"{dst}.mlp.{fc}.weight"] = get(f"{src}/MlpBlock_0/Dense_{i}/kernel").T
                sd[f"{dst}.mlp.{fc}.bias"] = get(f"{src}/MlpBlock_0/Dense_{i}/bias")
    if cfg.fusion == "bottleneck" and cfg.num_modalities > 1:
        sd["bottleneck"] = get("bottleneck")
    sd["norm.weight"] = get("Transformer/encoder_norm/scale")
    sd["norm.bias"] = get("Transformer/encoder_norm/bias")
    if cfg.representation_size:
        sd["pre_logits.weight"] = get("pre_logits/kernel").T
        sd["pre_logits.bias"] = get("pre_logits/bias")
    sd["head.weight"] = get("output_projection/kernel").T
    sd["head.bias"] = get("output_projection/bias")
    # Flax creates params only for modules it calls; an unused bottleneck of a one-modality
    # model is the only leaf Scenic may have that the network does not use.
    leftover = sorted(set(params) - used - {"bottleneck"})
    if leftover:
        raise ScenicFormatError(f"checkpoint parameters this config does not use: {leftover[:8]}")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


NON_SCENIC_OPTIONS = ("gelu", "layer_norm_eps", "spectrogram_patch_stride", "distillation_token",
                      "modality_norm", "head_norm", "head_norm_eps", "final_norm", "cls_token")
"""`MBTConfig` fields for encoders trained elsewhere; Scenic's MBT has only their defaults."""


def to_scenic(model: MBT) -> dict[str, np.ndarray]:
    """Scenic's flattened parameter tree (Flax layouts) of an mbt model."""
    cfg = model.config
    options = [name for name in NON_SCENIC_OPTIONS if getattr(cfg, name) != getattr(MBTConfig, name)]
    if options:
        values = ", ".join(f"{name}={getattr(cfg, name)!r}" for name in options)
        raise ScenicFormatError(f"Scenic's MBT has no equivalent of these options: {values}")
    d, h = cfg.hidden_size, cfg.num_heads
    sd = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}
    for m in cfg.modalities:
        pe = "Transformer/posembed_input" + ("" if m == "rgb" else "_spectrogram")
        out[pe + "/pos_embedding"] = sd[f"pos_embed.{m}"]
        if cfg.classifier == "token":
            out[_cls_name(cfg, m)] = sd[f"cls_tokens.{m}"]
        name = "embedding" if m == "rgb" else "embedding_spectrogram"
        w = sd[f"embeddings.{m}.proj.weight"]
        out[name + "/kernel"] = w.transpose(2, 3, 4, 1, 0) if w.ndim == 5 else w.transpose(2, 3, 1, 0)
        out[name + "/bias"] = sd[f"embeddings.{m}.proj.bias"]
    for tower, m in _tower_names(cfg):
        for layer in range(cfg.num_layers):
            dst = _block_name(cfg, m, layer)
            src = f"towers.{tower}.{layer}"
            att = dst + "/MultiHeadDotProductAttention_0"
            qkv_w = sd[src + ".attn.qkv.weight"].reshape(3, d, d)
            qkv_b = sd[src + ".attn.qkv.bias"].reshape(3, d)
            for i, p in enumerate(("query", "key", "value")):
                out[f"{att}/{p}/kernel"] = qkv_w[i].T.reshape(d, h, d // h)
                out[f"{att}/{p}/bias"] = qkv_b[i].reshape(h, d // h)
            out[f"{att}/out/kernel"] = sd[src + ".attn.proj.weight"].T.reshape(h, d // h, d)
            out[f"{att}/out/bias"] = sd[src + ".attn.proj.bias"]
            for i, norm in ((0, "norm1"), (1, "norm2")):
                out[f"{dst}/LayerNorm_{i}/scale"] = sd[f"{src}.{norm}.weight"]
                out[f"{dst}/LayerNorm_{i}/bias"] = sd[f"{src}.{norm}.bias"]
            for i, fc in ((0, "fc1"), (1, "fc2")):
                out[f"{dst}/MlpBlock_0/Dense_{i}/kernel"] = sd[f"{src}.mlp.{fc}.weight"].T
                out[f"{dst}/MlpBlock_0/Dense_{i}/bias"] = sd[f"{src}.mlp.{fc}.bias"]
    if "bottleneck" in sd:
        out["bottleneck"] = sd["bottleneck"]
    out["Transformer/encoder_norm/scale"] = sd["norm.weight"]
    out["Transformer/encoder_norm/bias"] = sd["norm.bias"]
    if cfg.representation_size:
        out["pre_logits/kernel"] = sd["pre_logits.weight"].T
        out["pre_logits/bias"] = sd["pre_logits.bias"]
    out["output_projection/kernel"] = sd["head.weight"].T
    out["output_projection/bias"] = sd["head.bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def scenic_model_config(cfg: MBTConfig) -> dict[str, Any]:
    """Scenic `config.model` fields equivalent to an `MBTConfig`."""
    patches = [*cfg.patch_size, cfg.tubelet_size] if cfg.temporal_encoding == "3d_conv" else [*cfg.patch_size]
    inits = {"central_frame": "central_frame_initializer", "average_frame": "average_frame_initializer"}
    return {
        "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
        "mlp_dim": cfg.mlp_dim, "num_classes": cfg.num_classes, "representation_size": cfg.representation_size,
        "dropout_rate": cfg.dropout_rate, "attention_dropout_rate": cfg.attention_dropout_rate,
        "stochastic_droplayer_rate": cfg.stochastic_depth, "classifier": cfg.classifier,
        "modality_fusion": list(cfg.modalities), "fusion_layer": cfg.fusion_layer,
        "use_bottleneck": cfg.fusion == "bottleneck", "n_bottlenecks": cfg.num_bottlenecks,
        "test_with_bottlenecks": cfg.test_with_bottlenecks, "share_encoder": cfg.share_encoder,
        "patches": {"size": patches},
        "temporal_encoding_config": {
            "method": cfg.temporal_encoding, "n_sampled_frames": cfg.n_sampled_frames,
            "kernel_init_method": inits.get(cfg.tubelet_init),
        },
        "attention_config": {"type": "spacetime"},
    }


# ---------------------------------------------------------------------- public
def load_scenic_params(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flattened Scenic parameters from a dict (flat or nested), a flax msgpack checkpoint
    file, a Scenic workdir (its latest checkpoint) or an `.npz` of flattened params."""
    if isinstance(source, Mapping):
        flat = flatten(source)
        return scenic_params(_unflatten(flat)) if any(k.startswith(("params/", "optimizer/")) for k in flat) \
            else flat
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file or folder")
    if path.endswith(".npz"):
        with np.load(path) as z:
            return scenic_params(_unflatten({k: np.asarray(z[k]) for k in z.files}))
    return scenic_params(read_flax_checkpoint(path))


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def from_scenic(
    params_or_checkpoint: str | os.PathLike | Mapping[str, Any],
    model_config: Mapping[str, Any],
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    **overrides: Any,
) -> MBT:
    """An `MBT` with the weights of an official Scenic MBT and the same outputs.

    `params_or_checkpoint`: Scenic's parameter tree (flattened with '/' or nested), the
    path of a checkpoint file (flax msgpack, `params/...` or `optimizer/target/...`), a
    workdir, or an `.npz`. `model_config`: Scenic's `config.model` fields as a dict.
    `overrides`: MBTConfig fields to set on top (e.g. `label_names`, `multi_label`).
    """
    params = load_scenic_params(params_or_checkpoint)
    cfg = config_from_scenic(model_config, params, input_shapes)
    if overrides:
        try:
            cfg = cfg.replace(**overrides)
        except TypeError as e:
            raise ConfigError(str(e)) from e
    model = MBT(cfg)
    state = state_dict_from_scenic(params, cfg)
    expected = model.state_dict()
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ScenicFormatError(
                f"{key}: checkpoint shape {list(value.shape)} != model shape {list(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---------------------------------------------------------------------- data config
SCENIC_VIDEO_FPS = 25.0
"""Frame rate of the official TFRecords ("AudioSet videos are extracted at 25fps", released
config): `stride` counts frames at this rate."""

RELEASED_DATASET_CONFIGS: dict[str, Any] = {
    "num_frames": 32, "stride": 2, "num_spec_frames": 8, "spec_shape": (100, 128), "spec_mean": 1.102,
    "spec_stddev": 2.762, "min_resize": 256, "crop_size": 224, "zero_centering": True, "num_test_clips": 4,
    "augmentation_params": {"do_jitter_scale": True, "scale_min_factor": 0.9, "scale_max_factor": 1.33,
                            "do_color_augment": True, "prob_color_augment": 0.8, "prob_color_drop": 0.1},
    "spec_augment": True,
    "spec_augment_params": {"freq_mask_max_bins": 48, "freq_mask_count": 1, "time_mask_max_frames": 48,
                            "time_mask_count": 4, "time_mask_max_ratio": 0},
}
"""`config.dataset_configs` of the released AudioSet-mini config (`balanced_audioset_base.py`):
what a conversion assumes for the fields a given config leaves out."""

FRONTEND_NOTE = {
    "known": "from the official config and loader: 100 spectrogram frames per second of audio "
             "(spec_shape[0] rows per stored second), spec_shape[1] mel bins (128), the normalisation "
             "statistics spec_mean / spec_stddev (1.102 / 2.762, 'over the entire unbalanced train set'), "
             "3 tiled channels, frames at 25 fps sampled every `stride`, resize / centre crop, [-1, 1] pixels",
    "ours": "the official log-mel code was never released: sample rate 16 kHz, 25 ms periodic Hann window, "
            "STFT magnitude through an HTK mel filterbank 80-7600 Hz, natural log with offset 1e-6 "
            "(DMVR's logmf convention, mbt.data.features) are our choices",
    "consequence": "video predictions of converted weights follow the official pipeline; audio inputs computed "
                   "from raw audio here are close to, not the same as, the features the weights were trained "
                   "on (our log-mel over real clips has mean -2.37, std 2.62 where the official statistics say "
                   "1.102, 2.762), so spectrogram-branch scores can shift. For numbers comparable to the paper, "
                   "check on labelled clips of your own (mbt eval) before relying on the audio branch.",
}
"""What of the audio front end of a converted checkpoint is known and what is ours; saved in
its `config.json` (`frontend`) and printed by `mbt convert scenic`."""


def split_scenic_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(`config.model`, `config.dataset_configs` or None) of a Scenic config dump or a bare
    `config.model` mapping."""
    if "model" in config and "hidden_size" not in config:
        if not isinstance(config["model"], Mapping):
            raise ScenicFormatError(f"config 'model' is a {type(config['model']).__name__}, expected a mapping")
        dc = config.get("dataset_configs")
        if dc is not None and not isinstance(dc, Mapping):
            raise ScenicFormatError(f"config 'dataset_configs' is a {type(dc).__name__}, expected a mapping")
        return dict(config["model"]), (dict(dc) if dc is not None else None)
    return dict(config), None


def _dataset_field(dc: Mapping[str, Any], key: str) -> Any:
    return dc[key] if key in dc else RELEASED_DATASET_CONFIGS[key]


def scenic_input_shapes(model_config: Mapping[str, Any], dataset_configs: Mapping[str, Any]) -> dict[str, tuple]:
    """Model input geometry of a Scenic config: rgb (frames, crop, crop), spectrogram
    (num_spec_frames * spec_shape[0], spec_shape[1])."""
    te = dict(model_config.get("temporal_encoding_config") or {})
    frames = int(_dataset_field(dataset_configs, "num_frames"))
    if te.get("method", "3d_conv") == "temporal_sampling":
        frames = min(frames, int(te.get("n_sampled_frames", 8)))
    crop = int(_dataset_field(dataset_configs, "crop_size"))
    rows, bins = (int(v) for v in _dataset_field(dataset_configs, "spec_shape"))
    seconds = int(_dataset_field(dataset_configs, "num_spec_frames"))
    modalities = tuple(model_config.get("modality_fusion", ()))
    shapes: dict[str, tuple] = {}
    if "rgb" in modalities:
        shapes["rgb"] = (frames, crop, crop)
    if "spectrogram" in modalities:
        shapes["spectrogram"] = (seconds * rows, bins)
    return shapes


def data_config_from_scenic(cfg: MBTConfig, dataset_configs: Mapping[str, Any] | None = None):
    """The `DataConfig` that feeds a converted model as Scenic's loader fed it (spec §4.2):
    the clip spans `num_frames * stride` frames at 25 fps (thinned to the frames the model
    takes), `num_spec_frames` s of `spec_shape[0]` rows/s, the config's statistics, crops,
    test clips and augmentation. Fields missing from `dataset_configs` (or all of them) take
    the released AudioSet config's values, with the geometry from the model."""
    from ..data.config import DataConfig

    given = dict(dataset_configs or {})
    dc = {**RELEASED_DATASET_CONFIGS, **given}
    if not dc["zero_centering"]:
        raise ScenicFormatError("dataset_configs.zero_centering=False ([0, 1] inputs) is not supported: "
                                "mbt feeds pixels in [-1, 1] and z-scored spectrograms")
    stride = int(dc["stride"])
    if "num_frames" not in given and cfg.temporal_encoding == "3d_conv":
        dc["num_frames"] = cfg.num_frames  # a bare config.model: the clip the model's tokens imply
    span = int(dc["num_frames"]) * stride / SCENIC_VIDEO_FPS
    rows = int(dc["spec_shape"][0])
    if cfg.image_size[0] != cfg.image_size[1]:
        raise ScenicFormatError(f"image_size {cfg.image_size}: Scenic crops square frames")
    image = cfg.image_size[0]
    aug = {**RELEASED_DATASET_CONFIGS["augmentation_params"], **dict(given.get("augmentation_params") or {})}
    spec_aug = {**RELEASED_DATASET_CONFIGS["spec_augment_params"], **dict(given.get("spec_augment_params") or {})}
    spec_on = bool(dc["spec_augment"])
    # lingvo returns the input unchanged when time_mask_max_ratio <= 0 (spec §4.3)
    time_masks = int(spec_aug["time_mask_count"]) if spec_on and float(spec_aug["time_mask_max_ratio"]) > 0 else 0
    return DataConfig(
        num_frames=cfg.num_frames,
        frame_rate=cfg.num_frames / span,
        image_size=image,
        min_resize=int(dc["min_resize"]) if "min_resize" in given or image == 224 else round(image * 256 / 224),
        audio_seconds=cfg.spectrogram_size[0] / rows,
        num_mel_bins=cfg.spectrogram_size[1],
        hop_ms=1000.0 / rows,
        spec_mean=float(dc["spec_mean"]),
        spec_std=float(dc["spec_stddev"]),
        scale_jitter=(float(aug["scale_min_factor"]), float(aug["scale_max_factor"]))
        if aug["do_jitter_scale"] else (1.0, 1.0),
        color_jitter_prob=float(aug["prob_color_augment"]) if aug["do_color_augment"] else 0.0,
        color_drop_prob=float(aug["prob_color_drop"]) if aug["do_color_augment"] else 0.0,
        freq_mask_max_bins=int(spec_aug["freq_mask_max_bins"]),
        freq_mask_count=int(spec_aug["freq_mask_count"]) if spec_on else 0,
        time_mask_max_frames=int(spec_aug["time_mask_max_frames"]),
        time_mask_count=time_masks,
        num_test_clips=int(dc["num_test_clips"]),
        num_test_crops=1,
    )


def convert_scenic(
    checkpoint: str, config: str, out: str, labels: str | None = None
) -> tuple[MBT, DataConfig, bool]:
    """A Scenic checkpoint and its config dump (JSON/YAML: the `model` and `dataset_configs`
    sections, or just the model fields) -> a `save_pretrained` folder `out`. Returns the model,
    the data config saved with it, and whether that came from the dump's dataset_configs
    (otherwise the released AudioSet config's, sized to the model)."""
    import yaml

    from ..data.annotations import read_class_list
    from ..models.pretrained import save_pretrained

    with open(config) as f:
        text = f.read()
    loaded = json.loads(text) if config.endswith(".json") else yaml.safe_load(text)
    if not isinstance(loaded, Mapping):
        raise ScenicFormatError(f"{config}: expected a mapping (a Scenic config or its 'model' fields)")
    model_config, dataset_configs = split_scenic_config(loaded)
    overrides = {"label_names": tuple(read_class_list(labels))} if labels else {}
    shapes = scenic_input_shapes(model_config, dataset_configs) if dataset_configs is not None else None
    model = from_scenic(checkpoint, model_config, input_shapes=shapes, **overrides)
    data = data_config_from_scenic(model.config, dataset_configs)
    save_pretrained(model, out, data_config=data, extra={"frontend": FRONTEND_NOTE})
    return model, data, dataset_configs is not None
