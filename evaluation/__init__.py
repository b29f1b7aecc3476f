"""The papers' evaluation: FaceSnap's Table 1 (CLIP-T, CLIP-face, FaceSim, FID, time, VRAM) and Diff-PC's pose,
expression and shape errors, with one FaceSim column per face-recognition judge and a copy-paste score, measured on
images that ComfyUI servers generate (``scripts/facesnap_eval.py``).

Pure Python on top of ``models/``; ComfyUI is reached only over HTTP (``comfy_client``). CLIP (open_clip) and FID
(torchmetrics + torch-fidelity) are the pack's ``eval`` extra and are imported only when used.

=====================  =============================================================================================
module                 role
=====================  =============================================================================================
workflow_modes         modes (the workflow as given, plain SDXL baseline) and patching by node type and title
comfy_client           HTTP: upload photos, queue a prompt, read its history (time), sample VRAM, download the image
server_pool            several servers: each one's queue kept full, a dead server's prompts handed to the others
generation             the job list, generation with resume (images saved as they finish)
benchmark_folder       a test set laid out like Unsplash-50 (one portrait per identity, prompts.txt)
face_similarity        FaceSim per judge (models/face_analysis/recognisers) and the copy-paste score
clip_scores            CLIP-T and CLIP-face from a local open_clip checkpoint
fid                    FID through torchmetrics with a local Inception weights file
face_geometry          pose / expression / shape errors through the pack's 3DMM fit
scoring, report        per-image rows, per-mode summary, JSON / markdown (FaceSnap's and, for Unsplash-50, PuLID's and
                       Diff-PC's table layouts) / CSV / contact sheet
pipeline               one run, start to end
identification         identification against held-out galleries and its chance tests (learning benchmark)
=====================  =============================================================================================
"""
