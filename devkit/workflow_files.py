"""The files the example workflows name: photos in ComfyUI's input folder and model files in its model folders.

The workflow test fills a temporary ComfyUI with tiny stand-ins (validation only checks that the names exist);
the browser test does the same for its server, with real photos so that the landmark workflow can run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import pathlib
import shutil

# input file name -> photo shipped inside the insightface wheel
INPUT_IMAGES = {
    "t1.jpg": "t1.jpg",
    "reference.png": "Tom_Hanks_54745.png",
    "reference_2.png": "Tom_Hanks_54745.png",
    "reference_3.png": "Tom_Hanks_54745.png",
    "drive.jpg": "t1.jpg",
}

# ComfyUI model folder -> file names the workflows use (the README says where to get each one)
MODEL_FILES = {
    "checkpoints": ["sd_xl_base_1.0.safetensors"],
    "clip_vision": ["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"],
    "facesnap": ["facesnap_sdxl.safetensors"],
    "instantid": ["ip-adapter.bin"],
    "controlnet": ["instantid/diffusion_pytorch_model.safetensors",  # InstantID's IdentityNet, as cubiq names it
                   "ecomid/diffusion_pytorch_model.safetensors",  # EcomID's IdentityNet (a single file, no config)
                   "xinsir-controlnet-openpose-sdxl-1.0.safetensors"],  # an SDXL OpenPose ControlNet
    "pulid": ["pulid_v1.1.safetensors", "ip-adapter_pulid_sdxl_fp16.safetensors"],
    "clip": ["EVA02_CLIP_L_336_psz14_s6B.pt"],  # ComfyUI's text_encoders folder (models/clip)
    "facexlib": ["parsing_bisenet.pth"],
}


def insightface_images() -> pathlib.Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None:
        raise RuntimeError("insightface is not installed; its wheel ships the example photos")
    return pathlib.Path(spec.origin).parent / "data" / "images"


def populate_inputs(input_dir: pathlib.Path) -> None:
    source = insightface_images()
    input_dir.mkdir(parents=True, exist_ok=True)
    for name, photo in INPUT_IMAGES.items():
        shutil.copyfile(source / photo, input_dir / name)


def populate_models(models_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Create empty stand-in model files under ``models_dir/<folder>``; returns folder name -> directory."""
    folders = {}
    for folder, names in MODEL_FILES.items():
        directory = models_dir / folder
        directory.mkdir(parents=True, exist_ok=True)
        for name in names:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(b"")
        folders[folder] = directory
    return folders


@contextlib.contextmanager
def model_folders_restored():
    """Restore ComfyUI's registered model folders (folder_paths) when the block ends, whatever it changed."""
    import folder_paths

    saved = {name: (list(paths), set(exts)) for name, (paths, exts) in folder_paths.folder_names_and_paths.items()}
    try:
        yield folder_paths
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)
        folder_paths.filename_list_cache.clear()


@contextlib.contextmanager
def stand_in_models(models_dir: pathlib.Path):
    """Stand-in model files registered with ComfyUI's folder_paths for the duration; the folders are restored after."""
    with model_folders_restored() as folder_paths:
        for folder, directory in populate_models(models_dir).items():
            folder_paths.add_model_folder_path(folder, str(directory))
        folder_paths.filename_list_cache.clear()
        yield
