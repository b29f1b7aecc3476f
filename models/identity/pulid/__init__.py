"""PuLID for SDXL (v1 and v1.1): ArcFace and EVA-CLIP features -> identity tokens (``id_encoder.py`` v1, 10 tokens;
``id_former.py`` v1.1, 32 tokens), read by a second attention at every UNet cross-attention (``id_attention.py``),
with the published weight files (``weights.py``) and both in one module (``adapter.py``). Its inputs: the
EVA02-CLIP-L-14-336 vision tower (``eva_clip_vision.py``, file ``eva_clip_weights.py``) on PuLID's face input (the
aligned face, background whited out, in grey: ``face_input.py``)."""
