"""ComfyUI glue shared by the nodes and the trainer: the control object, the UNet patches and the
encoder copy. ``models/`` stays free of ComfyUI; ``nodes/`` stays thin adapters over this package."""
