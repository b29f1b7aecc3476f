"""EcomID (alimama-creative/SDXL-EcomID, Apache-2.0): PuLID v1's ID attention in the UNet plus a new IdentityNet
ControlNet, combined as its ComfyUI node does (``recipe.py``).

EcomID combines two methods, so this is the one method package allowed to import others (``instantid/`` and
``pulid/``); every other method package imports only the shared modules (``models/identity/*.py``,
``models/common``; ``tests/package/test_layers.py`` checks it).

What the sources prescribe (alimama-creative/SDXL_EcomID_ComfyUI at e43fdb7, whose Python files are Git-LFS objects,
read from a copy whose SHA-256 equal the pointers' oids; the model card of alimama-creative/SDXL-EcomID):

- Files: ``ip-adapter_pulid_sdxl_fp16.safetensors`` (PuLID v1 in the IP-Adapter layout, ``models/pulid``),
  InstantID's ``ip-adapter.bin`` (``models/instantid``), EVA02-CLIP-L-14-336, antelopev2, facexlib's parsing, and
  the ControlNet ``diffusion_pytorch_model.safetensors`` (5 GB, float32, no config.json: an SDXL ControlNet in
  diffusers' layout with 2048-wide cross-attention, read here as an ``SDXLControlNet`` by
  ``diffusers_controlnet.load_diffusers_controlnet``).
- UNet: PuLID v1's tokens (the IDEncoder of ArcFace + EVA-CLIP, 10 x 2048, per photo, averaged over the photos)
  through PuLID's ID attention at all 70 SDXL cross-attentions, exactly cubiq's ``pulid_attention`` (the ortho_v2
  share per image over all heads, ``SHARE_CUBIQ``), with cubiq's methods: fidelity (8 zero tokens, ortho_v2),
  style (16, ortho), neutral (0, none). The middle block is patched under ``("middle", 0, t)`` (cubiq's PuLID node
  uses ``("middle", 1, t)``, which ComfyUI never calls). InstantID's own IP-attention layers are loaded but never
  applied.
- IdentityNet: its cross-attention reads InstantID's Resampler tokens (16 x 2048 from the ArcFace embedding, the
  photos' embeddings averaged), not PuLID's: the positive gets the face's tokens, the negative the Resampler of zeros
  (or of ``noise`` x uniform noise seeded from the embedding's sum), through ComfyUI's ``cross_attn_controlnet``,
  with ``control_apply_to_uncond`` off. The model card: "face embeddings are integrated into IdentityNet via
  cross-attention"; the IP-adapter was frozen while IdentityNet trained.
- Keypoint image: InstantID's 5-point drawing (``draw_kps``: ellipses eye/mouth-corner to nose scaled by 0.6, filled
  circles of radius 10, red/green/blue/yellow/magenta) of the largest face, from ``image_kps`` or the first reference.
- Strengths: the Advanced node's defaults are ip_weight 0.8 and cn_strength 0.8, method fidelity, noise 0, the whole
  schedule; the published example workflows use ip_weight 0.3 (basic) and 0.5 (face only) with cn_strength 0.8,
  25 steps of dpm_2 / karras at CFG 3.5; the README recommends CFG 6 (1 to 7). The simple node applies one
  ``weight`` (default 1.0) to both and, having no noise input, its function default noise 0.35 (noise also replaces
  PuLID's negative inputs and zero tokens by uniform draws).
- Its PuLID path picks the smallest face of each photo (``sorted(..., reverse=True)[-1]``, the bug cubiq's node fixed
  in its commit 8376656); the InstantID path the largest. The pack uses the largest face for both.
"""
