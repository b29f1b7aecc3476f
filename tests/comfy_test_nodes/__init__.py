"""Test-only V3 node pack: tiny in-process SDXL, VAE, CLIP vision and conditioning (load with ComfyHost extra_packs)."""

import hashlib

from comfy_api.latest import ComfyExtension, io

from .tiny_models import (foreign_attn2, foreign_patch, rect_mask, tiny_clip_vision, tiny_conditioning,
                          tiny_face_features, tiny_stock_controlnet, tiny_unet_patcher, tiny_vae)


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


class FaceSnapTestTinyControlNet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestTinyControlNet", category="testing/facesnap",
                         inputs=[io.Int.Input("seed", default=0, min=0, max=2**31)],
                         outputs=[io.ControlNet.Output()])

    @classmethod
    def execute(cls, seed):
        return io.NodeOutput(tiny_stock_controlnet(seed))


class FaceSnapTestFaceFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestFaceFeatures", category="testing/facesnap",
                         inputs=[io.Int.Input("seed", default=0, min=0, max=2**31)],
                         outputs=[io.Custom("FACESNAP_FACE_FEATURES").Output()])

    @classmethod
    def execute(cls, seed):
        return io.NodeOutput(tiny_face_features(seed))


class FaceSnapTestRectMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        ints = [io.Int.Input(name, default=0, min=0, max=4096) for name in ("width", "height", "x", "y", "w", "h")]
        return io.Schema(node_id="FaceSnapTestRectMask", category="testing/facesnap", inputs=ints,
                         outputs=[io.Mask.Output()])

    @classmethod
    def execute(cls, width, height, x, y, w, h):
        return io.NodeOutput(rect_mask(width, height, x, y, w, h))


class FaceSnapTestForeignPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestForeignPatch", category="testing/facesnap",
                         inputs=[io.Model.Input("model"), io.Combo.Input("kind", options=["last_block", "out"])],
                         outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model, kind):
        return io.NodeOutput(foreign_patch(model, kind))


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


class FaceSnapTestForeignAttn2(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestForeignAttn2", category="testing/facesnap",
                         inputs=[io.Model.Input("model")], outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model):
        return io.NodeOutput(foreign_attn2(model))


class TestExtension(ComfyExtension):
    async def get_node_list(self):
        return [FaceSnapTestTinySDXL, FaceSnapTestTinyCLIPVision, FaceSnapTestConditioning, FaceSnapTestTinyControlNet,
                FaceSnapTestFaceFeatures, FaceSnapTestRectMask, FaceSnapTestForeignPatch, FaceSnapTestTextConditioning,
                FaceSnapTestForeignAttn2]


async def comfy_entrypoint():
    return TestExtension()
