"""InstantID's published file layouts for the identity tests (ip-adapter.bin, IdentityNet's config), a tiny UNet
config, and diffusers' attention-processor names mapped to ComfyUI's patch keys."""

from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig

# The published ip-adapter.bin, written out from the specification (InstantID's pipeline builds
# Resampler(dim=1280, depth=4, dim_head=64, heads=20, num_queries=16, embedding_dim=512, output_dim=2048, ff_mult=4)
# and one IPAttnProcessor per diffusers attn_processors entry: down blocks, up blocks, mid block).
SDXL_IP_WIDTHS = [640] * 4 + [1280] * 20 + [1280] * 30 + [640] * 6 + [1280] * 10
# SD1.5's 16 cross-attentions in the same order (down 320,320,640,640,1280,1280; up 1280x3,640x3,320x3; mid 1280)
SD15_IP_WIDTHS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280]
TINY_UNET_CONFIG = {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": [1, 1],
                    "transformer_depth": [0, 1], "transformer_depth_middle": 1,
                    "transformer_depth_output": [0, 0, 1, 1]}


def published_shapes() -> dict[str, dict[str, tuple]]:
    proj = {"latents": (1, 16, 1280), "proj_in.weight": (1280, 512), "proj_in.bias": (1280,),
            "proj_out.weight": (2048, 1280), "proj_out.bias": (2048,), "norm_out.weight": (2048,),
            "norm_out.bias": (2048,)}
    for i in range(4):
        for norm in ("norm1", "norm2"):
            proj[f"layers.{i}.0.{norm}.weight"] = proj[f"layers.{i}.0.{norm}.bias"] = (1280,)
        proj.update({f"layers.{i}.0.to_q.weight": (1280, 1280), f"layers.{i}.0.to_kv.weight": (2560, 1280),
                     f"layers.{i}.0.to_out.weight": (1280, 1280), f"layers.{i}.1.0.weight": (1280,),
                     f"layers.{i}.1.0.bias": (1280,), f"layers.{i}.1.1.weight": (5120, 1280),
                     f"layers.{i}.1.3.weight": (1280, 5120)})
    return {"image_proj": proj, "ip_adapter": _ip_shapes(SDXL_IP_WIDTHS, 2048)}


def _ip_shapes(widths, context):
    return {f"{2 * k + 1}.{name}.weight": (c, context) for k, c in enumerate(widths) for name in ("to_k_ip", "to_v_ip")}


def sd15_ip_adapter_shapes() -> dict[str, dict[str, tuple]]:
    """h94's ip-adapter_sd15.bin layout: ImageProjModel (4 tokens of 768 from CLIP-H 1024) + 16 layers."""
    proj = {"proj.weight": (3072, 1024), "proj.bias": (3072,), "norm.weight": (768,), "norm.bias": (768,)}
    return {"image_proj": proj, "ip_adapter": _ip_shapes(SD15_IP_WIDTHS, 768)}


def diffusers_name_to_patch_key(name: str, layers_per_block: int) -> tuple[str, int, int]:
    """diffusers ``down_blocks.b.attentions.a.transformer_blocks.t.attn2.processor`` -> ComfyUI's key: down block b,
    attention a is input block 1 + b * (layers + 1) + a; up block b is output block b * (layers + 2) + a."""
    parts = name.split(".")
    if parts[0] == "mid_block":
        return "middle", 0, int(parts[4])
    block, attention, t = int(parts[1]), int(parts[3]), int(parts[5])
    if parts[0] == "down_blocks":
        return "input", 1 + block * (layers_per_block + 1) + attention, t
    return "output", block * (layers_per_block + 1) + attention, t


def identitynet_config() -> dict:
    """A diffusers SDXL ControlNetModel config whose cross-attention reads 2048-wide identity tokens (InstantID's
    pipeline passes ``encoder_hidden_states=prompt_image_emb``, the Resampler's 16 x 2048 output)."""
    return dict(ControlNetConfig.sdxl().diffusers_kwargs(), cross_attention_dim=2048)
