"""Identity methods, one sub-package each (``facesnap/``, ``instantid/``, ``pulid/``, ``ecomid/``), and the modules
they share here: the identity type (``identity.py``), reference faces, the SDXL ControlNet and its diffusers files,
the Perceiver blocks, IP-Adapter attention and the UNet's cross-attention sites. A method package imports only these
shared modules and ``models/common`` (EcomID, which combines InstantID and PuLID, also imports those two)."""
