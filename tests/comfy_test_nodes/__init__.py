"""Test-only V3 node pack: tiny in-process SDXL, VAE, CLIP vision and conditioning (load with ComfyHost extra_packs)."""

import hashlib

from comfy_api.latest import ComfyExtension, io

from .tiny_models import tiny_clip_vision, tiny_conditioning, tiny_unet_patcher, tiny_vae


class FaceSnapTestTinySDXL(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestTinySDXL", category="testing/facesnap",
                         inputs=[io.Int.Input("seed", default=0, min=0, max=2**31),
                                 io.Boolean.Input("sd15", default=False)],
                         outputs=[io.Model.Output(), io.Vae.Output()])

    @classmethod
    def execute(cls, seed, sd15):
        return io.NodeOutput(tiny_unet_patcher(seed, sd15), tiny_vae(seed))


class FaceSnapTestTinyCLIPVision(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestTinyCLIPVision", category="testing/facesnap",
                         inputs=[io.Int.Input("seed", default=0, min=0, max=2**31)],
                         outputs=[io.ClipVision.Output()])

    @classmethod
    def execute(cls, seed):
        return io.NodeOutput(tiny_clip_vision(seed))


class FaceSnapTestConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestConditioning", category="testing/facesnap",
                         inputs=[io.Int.Input("seed", default=0, min=0, max=2**31)],
                         outputs=[io.Conditioning.Output(display_name="positive"),
                                  io.Conditioning.Output(display_name="negative")])

    @classmethod
    def execute(cls, seed):
        return io.NodeOutput(*tiny_conditioning(seed))


class FaceSnapTestTextConditioning(io.ComfyNode):
    """Tiny conditioning from a prompt text (seeded by its hash): lets a graph's prompt be patched like CLIPTextEncode."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestTextConditioning", category="testing/facesnap",
                         inputs=[io.String.Input("text", multiline=True, default="")],
                         outputs=[io.Conditioning.Output(display_name="positive"),
                                  io.Conditioning.Output(display_name="negative")])

    @classmethod
    def execute(cls, text):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return io.NodeOutput(*tiny_conditioning(seed))


class TestExtension(ComfyExtension):
    async def get_node_list(self):
        return [FaceSnapTestTinySDXL, FaceSnapTestTinyCLIPVision, FaceSnapTestConditioning,
                FaceSnapTestTextConditioning]


async def comfy_entrypoint():
    return TestExtension()
