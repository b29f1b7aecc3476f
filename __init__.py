"""ComfyUI-FaceSnap: identity-preserving SDXL portraits (FaceSnap) with the Diff-PC ID-Injector.

ComfyUI loads this package and calls ``comfy_entrypoint``. Importing it without ComfyUI is safe: the node
modules are only imported inside the entrypoint, so ``models/`` can be used by the trainer and the tests alone.
"""


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from .nodes import all_nodes
    from .nodes.model_paths import register_model_folders

    register_model_folders()

    class FaceSnapExtension(ComfyExtension):
        async def get_node_list(self):
            return all_nodes()

    return FaceSnapExtension()
