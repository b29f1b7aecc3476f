"""An SDXL ControlNet in diffusers' ``ControlNetModel`` layout: FaceSnap's FFRNet backbone, InstantID's and EcomID's
IdentityNet.

Pure PyTorch. The parameter names and shapes are exactly those of ``diffusers.ControlNetModel`` with the same
config, so diffusers-trained ControlNet checkpoints load with ``load_state_dict``. ``forward`` has the signature
and output of ComfyUI's ``comfy.cldm.cldm.ControlNet``: ``{"middle": [mid], "output": [residuals]}`` with the
residuals in input-block order (ComfyUI pops them from the end while walking the decoder).

``y`` is the SDXL ADM vector as ComfyUI builds it (pooled text 1280 + six 256-d sinusoidal size embeddings);
this is exactly the input of diffusers' ``add_embedding`` (``text_embeds`` concatenated with ``add_time_proj``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..common.operations import resolve_operations


@dataclass
class ControlNetConfig:
    """The diffusers ``ControlNetModel`` config fields supported here (SDXL's text-time embedding, linear
    projections)."""

    in_channels: int = 4
    conditioning_channels: int = 3
    down_block_types: tuple = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    block_out_channels: tuple = (320, 640, 1280)
    layers_per_block: int = 2
    transformer_layers_per_block: tuple = (1, 2, 10)
    cross_attention_dim: int = 2048
    attention_head_dim: tuple = (5, 10, 20)  # diffusers' historical name: these are head COUNTS
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    addition_time_embed_dim: int = 256
    projection_class_embeddings_input_dim: int = 2816
    conditioning_embedding_out_channels: tuple = (16, 32, 96, 256)
    extra: dict = field(default_factory=dict)  # unknown diffusers fields, kept for round-tripping

    @classmethod
    def sdxl(cls) -> "ControlNetConfig":
        """SDXL's ControlNet: a full copy of SDXL's encoder and middle block (InstantID's IdentityNet layout)."""
        return cls()

    @classmethod
    def tiny(cls, cross_attention_dim: int = 64, **fields) -> "ControlNetConfig":
        """A two-level toy with SDXL's structure (first level without attention), for tests. ``fields``: a
        subclass's own fields."""
        return cls(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            transformer_layers_per_block=(1, 1),
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=(2, 4),
            conditioning_embedding_out_channels=(8, 8, 16, 16),
            **fields,
        )

    def to_dict(self) -> dict:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        data["extra"] = data.pop("extra")  # last, after a subclass's fields: the key order of saved configs
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ControlNetConfig":
        names = set(cls.__dataclass_fields__)
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        kwargs.setdefault("extra", {})
        kwargs["extra"] = dict(kwargs["extra"], **{k: v for k, v in data.items() if k not in names})
        return cls(**kwargs)

    @classmethod
    def from_diffusers(cls, config: dict, **fields) -> "ControlNetConfig":
        """Build from a diffusers ``config.json`` dict (``num_attention_heads`` wins over ``attention_head_dim``).
        ``fields``: a subclass's own fields."""
        data = dict(config)
        if data.get("num_attention_heads") is not None:
            data["attention_head_dim"] = data["num_attention_heads"]
        levels = len(data.get("block_out_channels", cls.block_out_channels))
        for key in ("attention_head_dim", "transformer_layers_per_block"):
            if isinstance(data.get(key), int):
                data[key] = [data[key]] * levels
        data.update(fields)
        return cls.from_dict({k: v for k, v in data.items() if not k.startswith("_")})

    def diffusers_kwargs(self) -> dict:
        """Keyword arguments that build the matching ``diffusers.ControlNetModel``."""
        return dict(
            in_channels=self.in_channels,
            conditioning_channels=self.conditioning_channels,
            down_block_types=tuple(self.down_block_types),
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            transformer_layers_per_block=tuple(self.transformer_layers_per_block),
            cross_attention_dim=self.cross_attention_dim,
            attention_head_dim=tuple(self.attention_head_dim),
            norm_num_groups=self.norm_num_groups,
            norm_eps=self.norm_eps,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=self.addition_time_embed_dim,
            projection_class_embeddings_input_dim=self.projection_class_embeddings_input_dim,
            conditioning_embedding_out_channels=tuple(self.conditioning_embedding_out_channels),
        )

    def residual_channels(self) -> list[int]:
        """Channels of the control residuals in input-block order (9 on SDXL)."""
        chans = [self.block_out_channels[0]]
        last = len(self.block_out_channels) - 1
        for level, ch in enumerate(self.block_out_channels):
            chans += [ch] * self.layers_per_block
            if level != last:
                chans.append(ch)
        return chans


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers ``Timesteps(dim, flip_sin_to_cos=True, freq_shift=0)`` == ComfyUI's ``timestep_embedding``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, ops, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = ops.Linear(in_dim, out_dim)
        self.linear_2 = ops.Linear(out_dim, out_dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, ops, cfg: ControlNetConfig, in_ch: int, out_ch: int, temb_ch: int):
        super().__init__()
        self.norm1 = ops.GroupNorm(cfg.norm_num_groups, in_ch, eps=cfg.norm_eps)
        self.conv1 = ops.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = ops.Linear(temb_ch, out_ch)
        self.norm2 = ops.GroupNorm(cfg.norm_num_groups, out_ch, eps=cfg.norm_eps)
        self.conv2 = ops.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = ops.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    def __init__(self, ops, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        context_dim = context_dim or dim
        self.to_q = ops.Linear(dim, dim, bias=False)
        self.to_k = ops.Linear(context_dim, dim, bias=False)
        self.to_v = ops.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([ops.Linear(dim, dim)])

    def forward(self, x, context=None):
        context = x if context is None else context
        b = x.shape[0]
        q, k, v = (t.view(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2)
                   for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[-1]))


class GEGLU(nn.Module):
    def __init__(self, ops, dim: int, inner: int):
        super().__init__()
        self.proj = ops.Linear(dim, inner * 2)

    def forward(self, x):
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, ops, dim: int):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(ops, dim, dim * 4), nn.Identity(), ops.Linear(dim * 4, dim)])

    def forward(self, x):
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, ops, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm1 = ops.LayerNorm(dim)
        self.attn1 = Attention(ops, dim, heads)
        self.norm2 = ops.LayerNorm(dim)
        self.attn2 = Attention(ops, dim, heads, context_dim)
        self.norm3 = ops.LayerNorm(dim)
        self.ff = FeedForward(ops, dim)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """diffusers' linear-projection spatial transformer (SDXL)."""

    def __init__(self, ops, cfg: ControlNetConfig, channels: int, heads: int, depth: int):
        super().__init__()
        self.norm = ops.GroupNorm(cfg.norm_num_groups, channels, eps=1e-6)
        self.proj_in = ops.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(ops, channels, heads, cfg.cross_attention_dim) for _ in range(depth)]
        )
        self.proj_out = ops.Linear(channels, channels)

    def forward(self, x, context):
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c))
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return x + self.proj_out(tokens).reshape(b, h, w, c).permute(0, 3, 1, 2)


class Downsample2D(nn.Module):
    def __init__(self, ops, channels: int):
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class DownBlock(nn.Module):
    """``DownBlock2D`` (no attentions) or ``CrossAttnDownBlock2D``; returns every intermediate output."""

    def __init__(self, ops, cfg: ControlNetConfig, level: int, in_ch: int, temb_ch: int):
        super().__init__()
        out_ch = cfg.block_out_channels[level]
        layers = cfg.layers_per_block
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(ops, cfg, in_ch if i == 0 else out_ch, out_ch, temb_ch) for i in range(layers)]
        )
        if cfg.down_block_types[level] == "CrossAttnDownBlock2D":
            heads, depth = cfg.attention_head_dim[level], cfg.transformer_layers_per_block[level]
            self.attentions = nn.ModuleList([Transformer2DModel(ops, cfg, out_ch, heads, depth) for _ in range(layers)])
        elif cfg.down_block_types[level] == "DownBlock2D":
            self.attentions = None
        else:
            raise ValueError(f"unsupported down block type {cfg.down_block_types[level]!r}")
        last = level == len(cfg.block_out_channels) - 1
        self.downsamplers = None if last else nn.ModuleList([Downsample2D(ops, out_ch)])

    def forward(self, x, temb, context):
        outputs = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            outputs.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            outputs.append(x)
        return x, outputs


class MidBlock(nn.Module):
    def __init__(self, ops, cfg: ControlNetConfig, temb_ch: int):
        super().__init__()
        ch = cfg.block_out_channels[-1]
        self.resnets = nn.ModuleList([ResnetBlock2D(ops, cfg, ch, ch, temb_ch) for _ in range(2)])
        self.attentions = nn.ModuleList(
            [Transformer2DModel(ops, cfg, ch, cfg.attention_head_dim[-1], cfg.transformer_layers_per_block[-1])]
        )

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


class ConditioningEmbedding(nn.Module):
    def __init__(self, ops, cfg: ControlNetConfig):
        super().__init__()
        chans = cfg.conditioning_embedding_out_channels
        self.conv_in = ops.Conv2d(cfg.conditioning_channels, chans[0], 3, padding=1)
        blocks = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            blocks += [ops.Conv2d(a, a, 3, padding=1), ops.Conv2d(a, b, 3, padding=1, stride=2)]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = ops.Conv2d(chans[-1], cfg.block_out_channels[0], 3, padding=1)

    def forward(self, x):
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


def random_init_(module: nn.Module, std: float | None = 0.02, generator: torch.Generator | None = None) -> None:
    """Normal weights, zero biases and norm shifts, unit norm scales. Also used for tiny random test/benchmark bases,
    whose ComfyUI ``disable_weight_init`` layers are otherwise left uninitialised. ``std=None`` scales each weight
    by 1/sqrt(fan-in) (LeCun), so that activations keep their size through depth: a base meant to be trained."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, std if std is not None else p[0].numel() ** -0.5, generator=generator)


class SDXLControlNet(nn.Module):
    """SDXL ControlNet (diffusers layout).

    ``operations`` supplies the ``Linear``/``Conv2d``/``GroupNorm``/``LayerNorm`` classes (ComfyUI passes its
    ``comfy.ops`` for manual casting and low-VRAM loading); the default is plain ``torch.nn``. ``compute_dtype``: the
    dtype ``forward`` casts its inputs to (default: the weights' dtype); set it when the weights are stored in another
    dtype (fp8, fp16) and the layers cast them per call (ComfyUI's manual cast).
    """

    def __init__(self, config: ControlNetConfig, operations=None, compute_dtype: torch.dtype | None = None):
        super().__init__()
        ops = resolve_operations(operations)
        cfg = self.config = config
        self.compute_dtype = compute_dtype
        ch0 = cfg.block_out_channels[0]
        temb = ch0 * 4
        self.conv_in = ops.Conv2d(cfg.in_channels, ch0, 3, padding=1)
        self.time_embedding = TimestepEmbedding(ops, ch0, temb)
        self.add_embedding = TimestepEmbedding(ops, cfg.projection_class_embeddings_input_dim, temb)
        self.controlnet_cond_embedding = ConditioningEmbedding(ops, cfg)
        self.down_blocks = nn.ModuleList()
        in_ch = ch0
        for level, out_ch in enumerate(cfg.block_out_channels):
            self.down_blocks.append(DownBlock(ops, cfg, level, in_ch, temb))
            in_ch = out_ch
        self.controlnet_down_blocks = nn.ModuleList([ops.Conv2d(c, c, 1) for c in cfg.residual_channels()])
        self.mid_block = MidBlock(ops, cfg, temb)
        self.controlnet_mid_block = ops.Conv2d(cfg.block_out_channels[-1], cfg.block_out_channels[-1], 1)

    @property
    def dtype(self) -> torch.dtype:  # read by comfy.controlnet.ControlNet.get_control
        return self.compute_dtype or self.conv_in.weight.dtype

    def reset_parameters(self, std: float = 0.02, generator: torch.Generator | None = None):
        """Random init (see ``random_init_``) and ControlNet's zero convs."""
        random_init_(self, std, generator)
        self.zero_init_controls()
        return self

    def zero_init_controls(self) -> None:
        """Zero the output convs (ControlNet's zero convolutions)."""
        for module in [*self.controlnet_down_blocks, self.controlnet_mid_block,
                       self.controlnet_cond_embedding.conv_out]:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x, hint, timesteps, context, y=None, **kwargs) -> dict:
        dtype = self.dtype
        emb = self.time_embedding(timestep_embedding(timesteps, self.config.block_out_channels[0]).to(dtype))
        if y is None:
            raise ValueError(f"{type(self).__name__} needs the SDXL ADM vector y (B, 2816)")
        emb = emb + self.add_embedding(y.to(dtype))
        context = context.to(dtype)
        h = self.conv_in(x.to(dtype)) + self.controlnet_cond_embedding(hint.to(dtype))
        features = [h]
        for block in self.down_blocks:
            h, outs = block(h, emb, context)
            features += outs
        h = self.mid_block(h, emb, context)
        output = [conv(f) for conv, f in zip(self.controlnet_down_blocks, features, strict=True)]
        return {"middle": [self.controlnet_mid_block(h)], "output": output}
