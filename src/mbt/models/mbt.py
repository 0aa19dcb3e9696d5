"""The Multimodal Bottleneck Transformer (Nagrani et al., NeurIPS 2021).

One pre-LN ViT tower per modality (or one shared tower). Up to `fusion_layer` the towers
run apart; from there they exchange information through a few bottleneck tokens
(`fusion='bottleneck'`) or by attending to each other's tokens (`fusion='vanilla'`).
The maths follows Scenic's `scenic/projects/mbt/model.py` exactly: tanh GELU, LayerNorm
eps 1e-6, bottlenecks appended after the modality tokens and averaged over modalities,
per-example stochastic depth without rescaling, one head shared by the modalities.
Options off by default let towers hold audio encoders trained elsewhere (AST, CAV-MAE,
AudioMAE): exact GELU, another eps, overlapping spectrogram patches, a distillation token,
per-modality final norms and a head norm (see `MBTConfig`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..device import host_sync_is_cheap
from .config import MODALITIES, MBTConfig, sampled_frame_indices
from .cpu_kernels import chunked_attention, cpu_inference_dtype, linear
from .pretrained import load_model, save_pretrained


@dataclass
class MBTOutput:
    """What `MBT.forward` returns."""

    logits: Tensor
    """[B, num_classes]: the prediction (per-modality logits averaged for 'token')."""
    modality_logits: dict[str, Tensor] = field(default_factory=dict)
    """Per-modality logits of the token head, used by the training loss; empty when
    the head pools all tokens jointly."""
    embeddings: dict[str, Tensor] | None = None
    """Pooled per-modality features fed to the head (cls token, mean of the cls and
    distillation tokens, or mean of the modality's tokens for pooling heads), after
    `head_norm` and `pre_logits`; on request."""
    tokens: dict[str, Tensor] | None = None
    """Final normalised tokens of each modality [B, prefix tokens + N, D]; on request."""
    attentions: list[dict[str, Tensor]] | None = None
    """Per layer, per modality (or 'joint'), attention probabilities [B, H, S, S] over the
    sequence that block saw; on request."""
    attention_layout: list[dict[str, list[tuple[str, int]]]] | None = None
    """With `attentions`: what each sequence is made of, as (segment, length) pairs in
    order, segments being 'cls:<modality>', 'dist:<modality>' (the distillation token),
    '<modality>' (its patches) and 'bottleneck'."""


class Attention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        b, s, d = x.shape
        q, k, v = linear(x, self.qkv).view(b, s, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        drop = self.attn_drop if self.training else 0.0
        weights = None
        if need_weights:  # explicit path, only when the maps are asked for
            weights = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)
            weights = weights.softmax(dim=-1)
            out = (F.dropout(weights, drop, self.training) @ v).transpose(1, 2)
        elif q.dtype == torch.bfloat16 and drop == 0.0 and cpu_inference_dtype(q) == torch.bfloat16:
            out = chunked_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop).transpose(1, 2)
        out = out.reshape(b, s, d)
        return self.proj_drop(linear(out, self.proj)), weights


class MLP(nn.Module):
    """Scenic's MlpBlock: Dense, GELU ('tanh' as Scenic, or 'exact'), dropout, Dense, dropout."""

    def __init__(self, dim: int, hidden: int, drop: float, gelu: str = "tanh"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)
        self.gelu = gelu

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(linear(self.drop(linear(x, self.fc1, gelu=self.gelu)), self.fc2))


class Block(nn.Module):
    """Pre-LN encoder block with Scenic's droplayer: a whole residual branch is dropped
    per example with probability `drop_prob`, and kept branches are not rescaled.

    Scenic computes every branch and multiplies the dropped ones by zero. On the CPU a
    branch runs only on the examples that keep it (same draws, same maths): with the
    paper's rate 0.3 that skips 15% of the encoder's training compute. On accelerators
    (and under `torch.compile`) the mask form runs: picking the kept examples needs their
    count on the host, a synchronisation per branch that cost 2.1x on an H200."""

    def __init__(self, cfg: MBTConfig, drop_prob: float):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attn = Attention(d, cfg.num_heads, cfg.attention_dropout_rate, cfg.dropout_rate)
        self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = MLP(d, cfg.mlp_dim, cfg.dropout_rate, cfg.gelu)
        self.drop_prob = drop_prob

    def _keep(self, x: Tensor) -> Tensor:
        """One Bernoulli draw per example: True where the branch is kept."""
        return torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop_prob

    def _droplayer(self, branch: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return branch
        return branch * self._keep(branch).to(branch.dtype)

    def _residual(self, x: Tensor, branch: Callable[[Tensor], Tensor]) -> Tensor:
        """x + droplayer(branch(x)), computing the branch for kept examples only. A branch
        no example keeps still runs on an empty batch, so that every parameter gets a
        (zero) gradient, as data parallelism expects."""
        idx = self._keep(x).view(-1).nonzero().view(-1)
        if len(idx) == x.shape[0]:
            return x + branch(x)
        return x.index_add(0, idx, branch(x.index_select(0, idx)).to(x.dtype))  # autocast: bf16 branch

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        if (self.training and self.drop_prob > 0.0 and not need_weights and not torch.compiler.is_compiling()
                and host_sync_is_cheap(x.device)):
            x = self._residual(x, lambda y: self.attn(self.norm1(y))[0])
            return self._residual(x, lambda y: self.mlp(self.norm2(y))), None
        a, weights = self.attn(self.norm1(x), need_weights)
        x = x + self._droplayer(a)
        x = x + self._droplayer(self.mlp(self.norm2(x)))
        return x, weights


def _patchify_2d(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """VALID, stride=kernel 2-D conv as one matmul: [B, C, H, W] -> [B, (H/ph)(W/pw), D]
    in row-major patch order."""
    b, c, h, w = x.shape
    d, wc, ph, pw = weight.shape
    if c == 1 and wc == 3:  # a log-mel tiled to 3 channels is the same as summing the kernel
        weight = weight.sum(dim=1, keepdim=True)
    gh, gw = h // ph, w // pw
    x = x[:, :, : gh * ph, : gw * pw].reshape(b, c, gh, ph, gw, pw)
    x = x.permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * ph * pw)
    return F.linear(x, weight.reshape(d, -1), bias)


class TubeletEmbed(nn.Module):
    """rgb '3d_conv': non-overlapping (ft, ph, pw) tubelets, tokens in (t, h, w) order."""

    def __init__(self, cfg: MBTConfig):
        super().__init__()
        ft, (ph, pw) = cfg.tubelet_size, cfg.patch_size
        self.proj = nn.Conv3d(3, cfg.hidden_size, (ft, ph, pw), stride=(ft, ph, pw))

    def forward(self, x: Tensor) -> Tensor:  # [B, T, 3, H, W]
        b, t, c, h, w = x.shape
        d, _, ft, ph, pw = self.proj.weight.shape
        nt, nh, nw = t // ft, h // ph, w // pw
        x = x[:, : nt * ft, :, : nh * ph, : nw * pw].reshape(b, nt, ft, c, nh, ph, nw, pw)
        x = x.permute(0, 1, 4, 6, 3, 2, 5, 7).reshape(b, nt * nh * nw, c * ft * ph * pw)
        return F.linear(x, self.proj.weight.reshape(d, -1), self.proj.bias)


class FrameEmbed(nn.Module):
    """rgb 'temporal_sampling': pick frames by Scenic's rule, stack them vertically into
    one tall image and cut it into 2-D patches (tokens in frame, row, col order)."""

    def __init__(self, cfg: MBTConfig):
        super().__init__()
        self.n_sampled_frames = cfg.n_sampled_frames
        self.proj = nn.Conv2d(3, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:  # [B, T, 3, H, W]
        b, t, c, h, w = x.shape
        idx = sampled_frame_indices(t, self.n_sampled_frames)
        if len(idx) < t:
            x = x[:, idx]
        x = x.permute(0, 2, 1, 3, 4).reshape(b, c, len(idx) * h, w)
        return _patchify_2d(x, self.proj.weight, self.proj.bias)


class SpectrogramEmbed(nn.Module):
    """Spectrogram as a (time x mel) image cut into 2-D patches, time-major order. Patches
    overlap when the stride is smaller than the patch (AST): a strided VALID convolution."""

    def __init__(self, cfg: MBTConfig):
        super().__init__()
        self.stride = cfg.spectrogram_stride
        self.proj = nn.Conv2d(cfg.spectrogram_channels, cfg.hidden_size, cfg.patch_size, stride=self.stride)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, T, F]
        weight = self.proj.weight
        if self.stride == tuple(weight.shape[-2:]):
            return _patchify_2d(x, weight, self.proj.bias)
        if x.shape[1] == 1 and weight.shape[1] == 3:  # as in `_patchify_2d`
            weight = weight.sum(dim=1, keepdim=True)
        return F.conv2d(x, weight, self.proj.bias, stride=self.stride).flatten(2).transpose(1, 2)


class MBT(nn.Module):
    """Multimodal Bottleneck Transformer.

    `model({"rgb": [B, T, 3, H, W], "spectrogram": [B, T, F] or [B, C, T, F]})` returns an
    `MBTOutput`. Any non-empty subset of the configured modalities may be given: a model
    trained on both runs the towers it has (fusing over the modalities present) and
    averages the heads it has.
    """

    def __init__(self, config: MBTConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.grad_checkpointing = False

        embeds = {}
        for m in cfg.modalities:
            if m == "spectrogram":
                embeds[m] = SpectrogramEmbed(cfg)
            elif cfg.temporal_encoding == "3d_conv":
                embeds[m] = TubeletEmbed(cfg)
            else:
                embeds[m] = FrameEmbed(cfg)
        self.embeddings = nn.ModuleDict(embeds)

        with_cls = cfg.classifier == "token" or cfg.cls_token
        self.cls_tokens = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(1, 1, d)) for m in cfg.modalities} if with_cls else {}
        )
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.distillation_token else None
        self.pos_embed = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(1, cfg.num_tokens(m), d)) for m in cfg.modalities}
        )
        uses_bottleneck = cfg.fusion == "bottleneck" and cfg.num_modalities > 1
        self.bottleneck = (
            nn.Parameter(torch.zeros(1, cfg.num_bottleneck_tokens, d)) if uses_bottleneck else None
        )

        def tower() -> nn.ModuleList:
            rates = [i / max(cfg.num_layers - 1, 1) * cfg.stochastic_depth for i in range(cfg.num_layers)]
            return nn.ModuleList(Block(cfg, p) for p in rates)

        names = ("shared",) if cfg.share_encoder else cfg.modalities
        self.towers = nn.ModuleDict({name: tower() for name in names})
        eps = cfg.layer_norm_eps
        if cfg.modality_norm:
            self.modality_norms = nn.ModuleDict({m: nn.LayerNorm(d, eps=eps) for m in cfg.modalities})
        elif cfg.final_norm:
            self.norm = nn.LayerNorm(d, eps=eps)
        self.head_norm = nn.LayerNorm(d, eps=cfg.head_norm_eps or eps) if cfg.head_norm else None
        self.pre_logits = nn.Linear(d, cfg.representation_size) if cfg.representation_size else None
        self.head = nn.Linear(cfg.representation_size or d, cfg.num_classes)
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Scenic's initialisers: xavier-uniform projections, lecun-normal patch kernels,
        N(0, 0.02) positions and bottlenecks, zero cls tokens and zero head."""
        cfg = self.config
        d = cfg.hidden_size
        for tower in self.towers.values():
            for blk in tower:
                for i in range(3):  # q, k and v are each one (D, D) Dense in Flax
                    nn.init.xavier_uniform_(blk.attn.qkv.weight[i * d : (i + 1) * d])
                nn.init.zeros_(blk.attn.qkv.bias)
                nn.init.xavier_uniform_(blk.attn.proj.weight)
                nn.init.zeros_(blk.attn.proj.bias)
                for fc in (blk.mlp.fc1, blk.mlp.fc2):
                    nn.init.xavier_uniform_(fc.weight)
                    nn.init.normal_(fc.bias, std=1e-6)
                for norm in (blk.norm1, blk.norm2):
                    nn.init.ones_(norm.weight)
                    nn.init.zeros_(norm.bias)
        for m, embed in self.embeddings.items():
            w = embed.proj.weight
            fan_in = w[0].numel()
            if m == "rgb" and w.dim() == 5 and cfg.tubelet_init != "default":
                w2d = _lecun_normal(w.new_empty(w.shape[0], w.shape[1], *w.shape[3:]), w[0, :, 0].numel())
                w.copy_(inflate_patch_kernel(w2d, w.shape[2], cfg.tubelet_init))
            else:
                _lecun_normal(w, fan_in)
            nn.init.zeros_(embed.proj.bias)
        for p in self.pos_embed.values():
            nn.init.normal_(p, std=0.02)
        for p in self.cls_tokens.values():
            nn.init.zeros_(p)
        if self.dist_token is not None:
            nn.init.zeros_(self.dist_token)
        if self.bottleneck is not None:
            nn.init.normal_(self.bottleneck, std=0.02)
        for norm in [*self.final_norms().values(), *([self.head_norm] if self.head_norm is not None else [])]:
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)
        if self.pre_logits is not None:
            _lecun_normal(self.pre_logits.weight, d)
            nn.init.zeros_(self.pre_logits.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def train(self, mode: bool = True) -> MBT:
        """Switch training mode; entering training drops the low-precision weight copies
        that CPU inference under autocast keeps (see `linear`)."""
        if mode:
            for module in self.modules():
                module.__dict__.pop("_lowp_weight", None)
        return super().train(mode)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass: much less activation memory for
        about one extra forward pass of compute."""
        self.grad_checkpointing = enable

    def tower(self, modality: str) -> nn.ModuleList:
        """The blocks that process `modality`."""
        return self.towers["shared" if self.config.share_encoder else modality]

    def final_norm(self, modality: str) -> nn.Module:
        """The LayerNorm after the last block for `modality`: its own with `modality_norm`,
        else the shared `norm`; the identity without `final_norm`."""
        if not self.config.final_norm:
            return nn.Identity()
        return self.modality_norms[modality] if self.config.modality_norm else self.norm

    def final_norms(self) -> dict[str, nn.LayerNorm]:
        """Each final LayerNorm by the name of its parameters' prefix ('norm' or
        'modality_norms.<modality>')."""
        if self.config.modality_norm:
            return {f"modality_norms.{m}": n for m, n in self.modality_norms.items()}
        return {"norm": self.norm} if self.config.final_norm else {}

    # ------------------------------------------------------------------ forward
    def embed(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Tokens of each given modality, with cls and position embeddings, in fusion order."""
        cfg = self.config
        present = self._check_inputs(inputs)
        tokens = {}
        for m in present:
            x = inputs[m]
            if m == "spectrogram" and x.dim() == 3:
                x = x.unsqueeze(1)
            x = self.embeddings[m](x)
            prefix = [self.cls_tokens[m]] if m in self.cls_tokens else []
            if m == "spectrogram" and self.dist_token is not None:
                prefix.append(self.dist_token)
            if prefix:
                x = torch.cat([*(p.expand(x.shape[0], -1, -1).to(x.dtype) for p in prefix), x], dim=1)
            pos = self.pos_embed[m]
            if x.shape[1] != pos.shape[1]:
                raise ValueError(
                    f"{m}: input of shape {list(inputs[m].shape)} gives {x.shape[1]} tokens but the model "
                    f"has {pos.shape[1]} positions ({_expected_shape(cfg, m)})"
                )
            tokens[m] = x + pos.to(x.dtype)
        return tokens

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        *,
        output_embeddings: bool = False,
        output_tokens: bool = False,
        output_attentions: bool = False,
    ) -> MBTOutput:
        cfg = self.config
        x = self.embed(inputs)
        present = list(x)
        batch = next(iter(x.values())).shape[0]
        attentions: list[dict[str, Tensor]] | None = [] if output_attentions else None
        layouts: list[dict[str, list[tuple[str, int]]]] = []
        own = {m: self._own_layout(m, x[m].shape[1]) for m in present}

        schedule = cfg.fusion_schedule(train=self.training)
        z = None
        if "bottleneck" in schedule:
            z = self.bottleneck.expand(batch, -1, -1).to(x[present[0]].dtype)
        joint: Tensor | None = None  # the concatenated sequence of early fusion with one encoder

        for layer, kind in enumerate(schedule):
            maps: dict[str, Tensor] = {}
            if kind == "separate":
                layout = {m: own[m] for m in present}
                for m in present:
                    x[m], maps[m] = self._block(m, layer, x[m], output_attentions)
            elif kind == "bottleneck":
                layout = {m: [*own[m], ("bottleneck", z.shape[1])] for m in present}
                outs = []
                for m in present:
                    n = x[m].shape[1]
                    y, maps[m] = self._block(m, layer, torch.cat([x[m], z], dim=1), output_attentions)
                    x[m] = y[:, :n]
                    outs.append(y[:, n:])
                z = torch.stack(outs, dim=-1).mean(dim=-1)
            elif kind == "cross":
                layout = {m: [s for o in MODALITIES if o != m and o in x for s in own[o]] + own[m] for m in present}
                new = {}
                for m in present:  # context in Scenic's fixed order, this modality last
                    context = [x[o] for o in MODALITIES if o != m and o in x] + [x[m]]
                    y, maps[m] = self._block(m, layer, torch.cat(context, dim=1), output_attentions)
                    new[m] = y[:, -x[m].shape[1] :]
                x = new
            else:
                layout = {"joint": [s for m in present for s in own[m]]}
                if joint is None:
                    joint = torch.cat([x[m] for m in present], dim=1)
                joint, maps["joint"] = self._block(present[0], layer, joint, output_attentions)
            if attentions is not None:
                attentions.append({k: v for k, v in maps.items() if v is not None})
                layouts.append(layout)

        if joint is not None:  # split the joint sequence back into modalities
            sizes = [x[m].shape[1] for m in present]
            x = dict(zip(present, joint.split(sizes, dim=1), strict=True))
        out = self._head(x, present, output_embeddings, output_tokens, attentions)
        out.attention_layout = layouts if output_attentions else None
        return out

    def _own_layout(self, modality: str, length: int) -> list[tuple[str, int]]:
        """The segments of a modality's own sequence of `length` tokens: prefix tokens, patches."""
        cfg = self.config
        prefix = [(f"cls:{modality}", 1)] if cfg.classifier == "token" or cfg.cls_token else []
        if modality == "spectrogram" and cfg.distillation_token:
            prefix.append((f"dist:{modality}", 1))
        return [*prefix, (modality, length - len(prefix))]

    def _block(self, modality: str, layer: int, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        blk = self.tower(modality)[layer]
        if self.grad_checkpointing and self.training and torch.is_grad_enabled() and not need_weights:
            return checkpoint(blk, x, use_reentrant=False)[0], None
        return blk(x, need_weights)

    def _head(
        self,
        x: dict[str, Tensor],
        present: list[str],
        output_embeddings: bool,
        output_tokens: bool,
        attentions: list[dict[str, Tensor]] | None,
    ) -> MBTOutput:
        cfg = self.config
        tokens = {m: self.final_norm(m)(x[m]) for m in present}
        embeddings: dict[str, Tensor] = {}
        modality_logits: dict[str, Tensor] = {}
        if cfg.classifier == "token":
            for m in present:  # the cls token, or the mean of cls and distillation tokens (AST)
                prefix = cfg.num_prefix_tokens(m)
                pooled = tokens[m][:, 0] if prefix == 1 else tokens[m][:, :prefix].mean(dim=1)
                embeddings[m] = self._pre_logits(pooled)
                modality_logits[m] = self.head(embeddings[m])
            logits = torch.stack([modality_logits[m] for m in present]).mean(dim=0)
        else:
            patches = {m: tokens[m][:, cfg.num_prefix_tokens(m):] for m in present}  # a kept cls is not pooled
            seq = torch.cat([patches[m] for m in present], dim=1)
            pooled = {"gap": seq.mean(dim=1), "gmp": seq.amax(dim=1), "gsp": seq.sum(dim=1)}[cfg.classifier]
            logits = self.head(self._pre_logits(pooled))
            if output_embeddings:
                pool = {"gap": torch.mean, "gmp": torch.amax, "gsp": torch.sum}[cfg.classifier]
                embeddings = {m: self._pre_logits(pool(patches[m], dim=1)) for m in present}
        return MBTOutput(
            logits=logits,
            modality_logits=modality_logits,
            embeddings=embeddings if output_embeddings else None,
            tokens=tokens if output_tokens else None,
            attentions=attentions,
        )

    def _pre_logits(self, x: Tensor) -> Tensor:
        """What the classifier sees of a pooled feature: `head_norm`, then `pre_logits`."""
        if self.head_norm is not None:
            x = self.head_norm(x)
        return x if self.pre_logits is None else torch.tanh(self.pre_logits(x))

    def _check_inputs(self, inputs: Mapping[str, Tensor]) -> list[str]:
        cfg = self.config
        if not isinstance(inputs, Mapping):
            raise TypeError(f"MBT expects a dict {{modality: tensor}}, got {type(inputs).__name__}")
        given = [m for m, v in inputs.items() if v is not None]
        if not given:
            raise ValueError(f"no input given; this model takes {list(cfg.modalities)}")
        unknown = [m for m in given if m not in cfg.modalities]
        if unknown:
            raise ValueError(f"unknown input modality {unknown}; this model takes {list(cfg.modalities)}")
        batch = None
        for m in given:
            t = inputs[m]
            want = (5,) if m == "rgb" else (3, 4)
            if not isinstance(t, Tensor) or t.dim() not in want:
                shape = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{m}: expected a tensor {_expected_shape(cfg, m)}, got {shape}")
            if m == "rgb" and t.shape[2] != 3:
                raise ValueError(f"rgb: expected [B, T, 3, H, W] (channels third), got {list(t.shape)}")
            if m == "spectrogram" and t.dim() == 4 and t.shape[1] not in (1, cfg.spectrogram_channels):
                raise ValueError(
                    f"spectrogram: expected [B, C, T, F] with C in (1, {cfg.spectrogram_channels}), "
                    f"got {list(t.shape)}"
                )
            if batch is not None and t.shape[0] != batch:
                raise ValueError(f"inputs have different batch sizes: {[inputs[k].shape[0] for k in given]}")
            batch = t.shape[0]
        return [m for m in cfg.modalities if m in given]

    # ------------------------------------------------------------------ weights
    def no_weight_decay(self) -> set[str]:
        """Parameters that weight decay should skip (tokens, positions, norms, biases)."""
        return {n for n, p in self.named_parameters() if p.dim() <= 1 or "pos_embed" in n
                or "cls_tokens" in n or n in ("bottleneck", "dist_token")}

    def save_pretrained(self, directory: str, **kwargs) -> None:
        """Write `config.json` and `model.safetensors` into `directory`."""
        save_pretrained(self, directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> Any:
        """Upload to the Hugging Face Hub with a generated model card (`mbt.models.hub.push_to_hub`)."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, directory: str, map_location: str | torch.device = "cpu") -> MBT:
        """Load a model written by `save_pretrained` (bit-exact), from a folder or from the Hub
        as `hf-hub:org/name[@revision]`."""
        from .hub import resolve_model_dir

        return load_model(cls, resolve_model_dir(directory), map_location=map_location)


def inflate_patch_kernel(kernel_2d: Tensor, frames: int, method: str) -> Tensor:
    """A tubelet kernel [D, C, ft, ph, pw] from a 2-D patch kernel [D, C, ph, pw]:
    'central_frame' puts it at frame ft//2 and zeros elsewhere (so a static video gives
    the image features); 'average_frame' spreads it evenly over the frames."""
    out = kernel_2d.new_zeros(kernel_2d.shape[0], kernel_2d.shape[1], frames, *kernel_2d.shape[2:])
    if method == "central_frame":
        out[:, :, frames // 2] = kernel_2d
    elif method == "average_frame":
        out[:] = (kernel_2d / frames).unsqueeze(2)
    else:
        raise ValueError(f"tubelet_init: cannot inflate a kernel with {method!r}")
    return out


def _lecun_normal(t: Tensor, fan_in: int) -> Tensor:
    """Flax's default kernel init: truncated normal with variance 1/fan_in."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # std of N(0,1) truncated to [-2, 2]
    return nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


def _expected_shape(cfg: MBTConfig, modality: str) -> str:
    if modality == "rgb":
        h, w = cfg.image_size
        return f"[B, {cfg.num_frames}, 3, {h}, {w}]"
    t, f = cfg.spectrogram_size
    _, gt, gf = cfg.patch_grid(modality)
    grid = f"{gt}x{gf} patches of {list(cfg.patch_size)} at stride {list(cfg.spectrogram_stride)}"
    return f"[B, {t}, {f}] or [B, C, {t}, {f}]: {grid}"


def class_probabilities(logits: Tensor, multi_label: bool, class_splits: Sequence[int] | None = None) -> Tensor:
    """Probabilities from logits [..., C]: sigmoid for multi-label models, softmax per split
    (EPIC's nouns and verbs) or over all classes otherwise."""
    if multi_label:
        return torch.sigmoid(logits)
    if class_splits:
        return torch.cat([p.softmax(-1) for p in logits.split(list(class_splits), dim=-1)], dim=-1)
    return logits.softmax(-1)
