"""The papers' evaluation: FaceSnap's Table 1 (CLIP-T, CLIP-face, FaceSim, FID, time, VRAM) and Diff-PC's pose,
expression and shape errors, measured on images a ComfyUI server generates (``scripts/facesnap_eval.py``).

Pure Python on top of ``models/``; ComfyUI is reached only over HTTP (``comfy_client``). CLIP (open_clip) and FID
(torchmetrics + torch-fidelity) are the pack's ``eval`` extra and are imported only when used.

=====================  =============================================================================================
module                 role
=====================  =============================================================================================
workflow_modes         modes (the workflow as given, plain SDXL baseline) and patching by node type and title
comfy_client           HTTP: upload photos, queue a prompt, time it, sample VRAM, download the image
generation             the job list, generation with resume
face_similarity        FaceSim (ArcFace) or FaceSim-dlib (fallback, reported under its own name)
clip_scores            CLIP-T and CLIP-face from a local open_clip checkpoint
fid                    FID through torchmetrics with a local Inception weights file
face_geometry          pose / expression / shape errors through the pack's 3DMM fit
scoring, report        per-image rows, per-mode summary, JSON / markdown / CSV / contact sheet
pipeline               one run, start to end
identification         identification against held-out galleries and its chance tests (learning benchmark)
=====================  =============================================================================================
"""
