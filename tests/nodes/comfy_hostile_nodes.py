"""Test-only ComfyUI nodes that make the hostile inputs a real graph can carry: an empty IMAGE batch and non-finite
pixels, a 2-channel image. Loaded with ``nodes.load_custom_node`` by
tests/nodes/conftest.py and test_hostile_files.py (not a test module itself)."""


class FaceSnapTestBadImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "problem": (["empty batch", "nan", "inf", "two channels"],)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "spoil"
    CATEGORY = "testing/facesnap"

    def spoil(self, image, problem):
        if problem == "empty batch":
            return (image[:0],)
        if problem == "two channels":
            return (image[..., :2].contiguous(),)
        image = image.clone()
        image[:, : image.shape[1] // 2] = float("nan") if problem == "nan" else float("inf")
        return (image,)


NODE_CLASS_MAPPINGS = {"FaceSnapTestBadImage": FaceSnapTestBadImage}
