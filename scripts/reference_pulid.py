"""Reference outputs of the official PuLID SDXL and EcomID code, at full size with seeded random weights, fp32 on the
CPU: writes ``tests/fixtures/pulid_reference.safetensors`` (samples of each output, about 130 KB), which
``tests/identity/test_pulid_equivalence.py`` compares the pack's modules against.

Upstream code it ran (checkouts outside this repository; nothing of them is copied here):
- ToTheBeginning/PuLID at 1aa2fc7df4bf51080df39f355f9abdc1cbfefbaa: ``pulid/encoders.py`` (IDEncoder, v1),
  ``pulid/encoders_transformer.py`` (IDFormer, v1.1), ``pulid/attention_processor.py`` (``IDAttnProcessor2_0`` with
  its ``NUM_ZERO`` / ``ORTHO`` / ``ORTHO_v2`` switches) and ``pulid/pipeline.py`` (``hack_unet_attn_layers``, for the
  layer numbering, on diffusers' SDXL UNet built on the meta device);
- cubiq/PuLID_ComfyUI at 4e1fd4024cae77a0c53edb8ecc3c8ee04027ebef: ``pulid.py`` (``pulid_attention``, ``To_KV``),
  run with ComfyUI's ``optimized_attention`` from the pinned host;
- alimama-creative/SDXL_EcomID_ComfyUI at e43fdb7bec1099199495682315b6f8626e952ccc keeps its Python files in Git LFS
  (the repository holds pointers). yiwangsimple/EcomID_sdxl_ComfyUI at 55bc2fe7b6aabfbe1c4190a517175cd00577ebce
  holds the same files: their SHA-256 equal the pointers' oids (``CrossAttentionPatch.py``: b89f8994...). The script
  checks that hash and runs that file's ``pulid_attention``.

    git clone https://github.com/ToTheBeginning/PuLID /tmp/ref/PuLID
    git clone https://github.com/cubiq/PuLID_ComfyUI /tmp/ref/PuLID_ComfyUI
    git clone https://github.com/yiwangsimple/EcomID_sdxl_ComfyUI /tmp/ref/SDXL_EcomID_ComfyUI
    ~/.cache/comfyui-facesnap/venv/bin/python scripts/reference_pulid.py --pulid /tmp/ref/PuLID \\
        --cubiq /tmp/ref/PuLID_ComfyUI --ecomid /tmp/ref/SDXL_EcomID_ComfyUI

The official modules import packages their functions under test never use: facexlib (face detection and parsing)
is replaced by empty stand-ins when it is not installed. Everything else runs as published (diffusers, eva_clip,
insightface and ComfyUI from the test host's venv).

Seeds and order: every weight and input is drawn by ``devkit/pulid_reference_cases.py`` / ``devkit/seeded_weights.py``
from its own generator (run seed + tensor name), so the tests rebuild identical full-size weights in-process in any
order. Stored: every ``TOKEN_STRIDE``-th channel of the tokens, every ``ATTENTION_ROWS``-th query position and
``ATTENTION_STRIDE``-th channel of the attention outputs; the metadata records the commits, the seeds and the
official layer numbering.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import pathlib
import subprocess
import sys
import types

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
import pack_import  # noqa: E402

sys.path.remove(str(PACK_ROOT))
pack_import.boot_comfyui(cpu=True)

import torch  # noqa: E402

from comfyui_facesnap.devkit import pulid_reference_cases as cases  # noqa: E402
from comfyui_facesnap.devkit.sdxl_diffusers import sdxl_unet_on_meta  # noqa: E402
from comfyui_facesnap.devkit.seeded_weights import seeded_state  # noqa: E402

ECOMID_ATTENTION_SHA256 = "b89f899462d170dfb2f46de9448d068c8a1584ecd5a21b6657437438b89ffa5b"  # the LFS oid
OUT = PACK_ROOT / "tests" / "fixtures" / "pulid_reference.safetensors"


def load_file(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def package(name: str, path: pathlib.Path, run_init: bool = False):
    """``path`` importable as package ``name`` (its ``__init__`` run only when asked)."""
    if run_init:
        spec = importlib.util.spec_from_file_location(name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
    return module


def stub_facexlib() -> None:
    try:
        importlib.import_module("facexlib.utils.face_restoration_helper")
    except ImportError:
        for name, attrs in (("facexlib", {}), ("facexlib.parsing", {"init_parsing_model": None}),
                            ("facexlib.utils", {}),
                            ("facexlib.utils.face_restoration_helper", {"FaceRestoreHelper": None})):
            sys.modules[name] = types.ModuleType(name)
            vars(sys.modules[name]).update(attrs)


def commit(path: pathlib.Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def official_names(prefix: str, module: torch.nn.Module) -> dict[str, tuple]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def fill(module: torch.nn.Module, prefix: str, seed: int) -> torch.nn.Module:
    state = seeded_state(official_names(prefix, module), seed)
    module.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=True)
    return module.eval()


def id_features(arcface: torch.Tensor, eva_cls: torch.Tensor) -> torch.Tensor:
    """What ``get_id_embedding`` builds from its two embeddings (pipeline.py and pipeline_v1_1.py)."""
    return torch.cat([arcface, torch.div(eva_cls, torch.norm(eva_cls, 2, 1, True))], dim=-1)


@torch.no_grad()
def run_encoders(pulid_dir: pathlib.Path) -> dict[str, torch.Tensor]:
    v1 = fill(load_file("pulid_official_encoders", pulid_dir / "pulid" / "encoders.py").IDEncoder(),
              "id_adapter.", cases.WEIGHT_SEEDS["v1"])
    module = load_file("pulid_official_encoders_transformer", pulid_dir / "pulid" / "encoders_transformer.py")
    v1_1 = fill(module.IDFormer(), "id_adapter.", cases.WEIGHT_SEEDS["v1.1"])
    arcface, eva_cls, hidden = cases.encoder_inputs(1)
    arcface2, eva_cls2, hidden2 = cases.encoder_inputs(2, offset=1)
    one, two = id_features(arcface, eva_cls), id_features(arcface2, eva_cls2)
    zeros = [torch.zeros_like(h) for h in hidden]
    out = {}
    # v1: one image; the negative (zeros, as get_id_embedding); two images averaged token-wise (cubiq's node)
    v1_tokens = [v1(one, hidden), v1(torch.zeros_like(one), zeros), v1(two, hidden2).mean(dim=0, keepdim=True)]
    out["idencoder"] = cases.sample_tokens(torch.cat(v1_tokens), "v1")
    # v1.1: one image; the negative; two images encoded together (pipeline_v1_1: stacked id_cond, hidden side by side)
    joint = [h.reshape(1, -1, h.shape[-1]) for h in hidden2]
    v1_1_tokens = [v1_1(one, hidden), v1_1(torch.zeros_like(one), zeros), v1_1(two[None], joint)]
    out["idformer"] = cases.sample_tokens(torch.cat(v1_1_tokens), "v1.1")
    return out


def diffusers_attention() -> torch.nn.Module:
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=cases.CHANNELS, cross_attention_dim=cases.CONTEXT, heads=cases.HEADS, dim_head=64,
                     out_bias=True)
    state = cases.cross_attention_weights()
    attn.load_state_dict({k[len("attn2."):]: v for k, v in state.items()}, strict=True)
    return attn.eval()


@torch.no_grad()
def run_official_attention(pulid_dir: pathlib.Path) -> dict[str, torch.Tensor]:
    processors = load_file("pulid_official_attention", pulid_dir / "pulid" / "attention_processor.py")
    attn, inputs = diffusers_attention(), cases.attention_inputs()
    processor = processors.IDAttnProcessor2_0(hidden_size=cases.CHANNELS, cross_attention_dim=cases.CONTEXT)
    fill(processor, f"id_adapter_attn_layers.{cases.LAYER}.", cases.WEIGHT_SEEDS["attention"])
    out = {}
    for name, projection, num_zero, tokens in cases.OFFICIAL_MODES:
        processors.NUM_ZERO = num_zero
        processors.ORTHO = projection == "ortho"
        processors.ORTHO_v2 = projection == "ortho_v2"
        result = processor(attn, inputs["hidden"], encoder_hidden_states=inputs["text"], id_embedding=inputs[tokens],
                           id_scale=cases.ID_SCALE)
        out[name] = cases.sample_attention(result)
    return out


def comfyui_attention_output(pulid_attention, to_kv_class, mode: tuple, module_key: str) -> torch.Tensor:
    """One attn2 replace call as cubiq's Attn2Replace makes it (text attention plus the callback's term; the layer's
    to_out follows in ComfyUI), with the cond / uncond tokens padded as ApplyPulid pads them."""
    from comfy.ldm.modules.attention import optimized_attention

    _, projection, num_zero, masked = mode
    attn, inputs = diffusers_attention(), cases.attention_inputs()
    state = cases.id_layer_weights()
    pulid = types.SimpleNamespace(ip_layers=to_kv_class(
        {f"{module_key}.to_{kv}_ip.weight": state[f"id_adapter_attn_layers.{module_key}.id_to_{kv}.weight"]
         for kv in "kv"}))
    q, k, v = attn.to_q(inputs["hidden"]), attn.to_k(inputs["text"]), attn.to_v(inputs["text"])
    zeros = torch.zeros((1, num_zero, cases.CONTEXT))
    uncond, cond = (torch.cat([t[None], zeros], dim=1) for t in inputs["v1"])
    extra = {"n_heads": cases.HEADS, "cond_or_uncond": [1, 0], "original_shape": [2, 4, *cases.GRID]}
    out = optimized_attention(q, k, v, cases.HEADS)
    term = pulid_attention(out, q, k, v, extra, module_key=module_key, pulid=pulid, cond=cond, uncond=uncond,
                           weight=cases.ID_SCALE, ortho=projection == "ortho", ortho_v2=projection == "ortho_v2",
                           mask=inputs["mask"] if masked else None)
    return out + term


@torch.no_grad()
def run_comfyui_attention(cubiq_dir: pathlib.Path, ecomid_dir: pathlib.Path) -> dict[str, torch.Tensor]:
    stub_facexlib()
    package("cubiq_pulid", cubiq_dir)
    package("cubiq_pulid.eva_clip", cubiq_dir / "eva_clip")
    cubiq = importlib.import_module("cubiq_pulid.pulid")
    out = {mode[0]: cases.sample_attention(comfyui_attention_output(cubiq.pulid_attention, cubiq.To_KV, mode,
                                                                    str(cases.LAYER)))
           for mode in cases.CUBIQ_MODES}
    source = ecomid_dir / "CrossAttentionPatch.py"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != ECOMID_ATTENTION_SHA256:
        sys.exit(f"{source} is not EcomID's published file (sha256 {digest}; a Git-LFS pointer? run git lfs pull)")
    package("ecomid_ref", ecomid_dir)
    ecomid = importlib.import_module("ecomid_ref.CrossAttentionPatch")
    # EcomID.py's To_KV is cubiq's class unchanged; EcomID.py itself needs insightface models at import, so cubiq's
    # class stands in for it
    out.update({mode[0]: cases.sample_attention(comfyui_attention_output(ecomid.pulid_attention, cubiq.To_KV, mode,
                                                                         str(cases.LAYER)))
                for mode in cases.ECOMID_MODES})
    return out


def official_numbering(pulid_dir: pathlib.Path) -> list[list]:
    """[module number, diffusers processor name, hidden size] of every ``IDAttnProcessor`` that the official
    ``hack_unet_attn_layers`` puts into ``id_adapter_attn_layers``, on diffusers' SDXL UNet (meta device)."""
    stub_facexlib()
    package("eva_clip", pulid_dir / "eva_clip", run_init=True)
    package("pulid", pulid_dir / "pulid")
    pipeline = importlib.import_module("pulid.pipeline")
    unet = sdxl_unet_on_meta()
    holder = types.SimpleNamespace()
    pipeline.PuLIDPipeline.hack_unet_attn_layers(holder, unet)
    names = list(unet.attn_processors)
    return [[i, names[i], layer.id_to_k.weight.shape[0]] for i, layer in enumerate(holder.id_adapter_attn_layers)
            if hasattr(layer, "id_to_k")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pulid", type=pathlib.Path, required=True, help="checkout of ToTheBeginning/PuLID")
    parser.add_argument("--cubiq", type=pathlib.Path, required=True, help="checkout of cubiq/PuLID_ComfyUI")
    parser.add_argument("--ecomid", type=pathlib.Path, required=True,
                        help="checkout holding SDXL_EcomID_ComfyUI's files (LFS objects resolved)")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args()
    from safetensors.torch import save_file

    tensors = run_encoders(args.pulid)
    tensors.update(run_official_attention(args.pulid))
    tensors.update(run_comfyui_attention(args.cubiq, args.ecomid))
    metadata = {"pulid_commit": commit(args.pulid), "cubiq_commit": commit(args.cubiq),
                "ecomid_commit": commit(args.ecomid), "ecomid_attention_sha256": ECOMID_ATTENTION_SHA256,
                "weight_seeds": json.dumps(cases.WEIGHT_SEEDS), "input_seed": str(cases.INPUT_SEED),
                "layer": str(cases.LAYER), "official_numbering": json.dumps(official_numbering(args.pulid)),
                "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(args.out), metadata=metadata)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1024:.0f} KB): " + ", ".join(f"{k} {list(v.shape)}" for k, v in tensors.items()))


if __name__ == "__main__":
    main()
