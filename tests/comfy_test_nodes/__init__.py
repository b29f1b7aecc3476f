"""Test-only V3 node pack: tiny in-process SDXL, VAE, CLIP vision and conditioning (load with ComfyHost extra_packs)."""

import hashlib

from comfy_api.latest import ComfyExtension, io

from .dynamic_vram import simulated_dynamic
from .tiny_models import (
    TinyClip,
    foreign_attn2,
    foreign_patch,
    rect_mask,
    tiny_clip_vision,
    tiny_conditioning,
    tiny_face_features,
    tiny_stock_controlnet,
    tiny_unet_patcher,
    tiny_vae,
)


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


class FaceSnapTestRectImage(io.ComfyNode):
    """A white rectangle on black, as an IMAGE."""

    @classmethod
    def define_schema(cls):
        ints = [io.Int.Input(name, default=0, min=0, max=4096) for name in ("width", "height", "x", "y", "w", "h")]
        return io.Schema(node_id="FaceSnapTestRectImage", category="testing/facesnap", inputs=ints,
                         outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, width, height, x, y, w, h):
        return io.NodeOutput(rect_mask(width, height, x, y, w, h)[..., None].repeat(1, 1, 1, 3))


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
    """Tiny conditioning from a prompt text (seeded by its hash): lets a graph's prompt be patched like
    CLIPTextEncode."""

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


class FaceSnapTestTinyCheckpoint(io.ComfyNode):
    """Stands in for CheckpointLoaderSimple in shipped workflows: the tiny SDXL, a token CLIP (only
    FaceSnapTestCLIPTextEncode reads it) and the tiny VAE."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestTinyCheckpoint", category="testing/facesnap",
                         inputs=[io.Int.Input("seed", default=0, min=0, max=2**31)],
                         outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()])

    @classmethod
    def execute(cls, seed):
        return io.NodeOutput(tiny_unet_patcher(seed), TinyClip(seed), tiny_vae(seed))


class FaceSnapTestCLIPTextEncode(io.ComfyNode):
    """Stands in for CLIPTextEncode: tiny SDXL conditioning seeded by the text."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestCLIPTextEncode", category="testing/facesnap",
                         inputs=[io.String.Input("text", multiline=True, default=""), io.Clip.Input("clip")],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, text, clip):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return io.NodeOutput(tiny_conditioning(seed)[0])


class FaceSnapTestDynamicModel(io.ComfyNode):
    """The MODEL as dynamic VRAM presents it, with no non-dynamic delegate (dynamic_vram.py)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestDynamicModel", category="testing/facesnap",
                         inputs=[io.Model.Input("model")], outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model):
        return io.NodeOutput(simulated_dynamic(model))


class FaceSnapTestHookedConditioning(io.ComfyNode):
    """Conditioning with one (empty) transformer-options hook, as ComfyUI's hook nodes leave it."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="FaceSnapTestHookedConditioning", category="testing/facesnap",
                         inputs=[io.Conditioning.Input("conditioning")], outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, conditioning):
        import comfy.hooks

        hooks = comfy.hooks.HookGroup()
        hooks.add(comfy.hooks.TransformerOptionsHook({}))
        return io.NodeOutput([[text, dict(options, hooks=hooks)] for text, options in conditioning])


class TestExtension(ComfyExtension):
    async def get_node_list(self):
        return [FaceSnapTestTinySDXL, FaceSnapTestTinyCLIPVision, FaceSnapTestConditioning, FaceSnapTestTinyControlNet,
                FaceSnapTestFaceFeatures, FaceSnapTestRectMask, FaceSnapTestRectImage, FaceSnapTestForeignPatch,
                FaceSnapTestTextConditioning, FaceSnapTestForeignAttn2, FaceSnapTestTinyCheckpoint,
                FaceSnapTestCLIPTextEncode,
                FaceSnapTestDynamicModel, FaceSnapTestHookedConditioning]


async def comfy_entrypoint():
    return TestExtension()
