"""The UNet calls and IP-attention patch calls the identity tests record (the ``layer_calls`` fixture in
conftest.py), grouped per UNet call, and the tiny SDXL's cross-attention sites."""

TINY_SITES = [("input", 3, 0), ("middle", 0, 0), ("output", 0, 0), ("output", 1, 0)]


def per_unet_call(events) -> list[list]:
    calls = []
    for kind, key in events:
        if kind == "unet":
            calls.append([])
        else:
            calls[-1].append(key)
    return calls
