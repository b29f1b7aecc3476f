"""One glue module per identity method, each with the interface of ``comfy_glue/identity_methods.py``."""
