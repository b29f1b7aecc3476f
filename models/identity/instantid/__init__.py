"""InstantID's public SDXL weights in FaceSnap's slots: the Resampler (ArcFace -> 16 identity tokens, the Attribute
Mixer's slot), the IP-attention layers (the same tokens in every UNet cross-attention) and their weight file.
IdentityNet, InstantID's ControlNet, is an ``SDXLControlNet`` (``diffusers_controlnet.load_diffusers_controlnet``)."""
