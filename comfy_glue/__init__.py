"""ComfyUI glue shared by the nodes and the trainer: the identity methods' glue (``methods/``, registered in
``identity_methods.py``), the identity ControlNet, the UNet patches, the weights' dtypes and patchers, and the one
module of host differences (``host_compat.py``). ``models/`` stays free of ComfyUI; ``nodes/`` stays thin adapters
over this package."""
