"""Hostile files and values through ComfyUI's real validator and executor: architecture values a weight file states
(checked before anything is built, a 10 GB bomb refused in well under a second and 100 MB), malformed configs, NaN
weights in every loader, identities applied with other weights, control images, names on disk, a ControlNet the
FaceSnap loader would ignore, and /interrupt during a load."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import pathlib
import pickle
import resource
import signal
import time
import tracemalloc

import numpy as np
import pytest
import torch

from comfy_test_nodes.tiny_models import tiny_facesnap_models, tiny_instantid_files
from hostile_prompts import loader_prompt, write_ict_npz
from identity_graphs import add_loader, base_graph, cached, pack_module, register_facesnap_folder, setup_face_pipeline
from instantid_graphs import (
    CN_FILE,
    IP_FILE,
    add_apply_instantid,
    add_encode,
    add_instantid_loader,
    register_instantid_folders,
    use_identity_folder,
)

pytestmark = pytest.mark.comfy

HERE = pathlib.Path(__file__).resolve().parent
NODE_ERROR = "comfyui_facesnap.FaceSnapNodeError"
FOLDERS: dict[str, pathlib.Path] = {}


# ---- fixtures and helpers ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, tmp_path_factory):
    """The tiny FaceSnap and InstantID files in their model folders, the face pipeline's stand-ins, ComfyUI's Preview
    Any node (an output for loader-only graphs) and the test-only bad-image node."""
    import asyncio

    import folder_paths
    import nodes

    FOLDERS["facesnap"] = tmp_path_factory.mktemp("facesnap")
    register_facesnap_folder(FOLDERS["facesnap"])
    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    root = tmp_path_factory.mktemp("instantid")
    register_instantid_folders(comfy_host, insightface_images, root)
    FOLDERS["instantid"], FOLDERS["controlnet"] = root / "instantid", root / "controlnet"
    FOLDERS["sources"] = tmp_path_factory.mktemp("sources")
    preview_any = pathlib.Path(folder_paths.base_path) / "comfy_extras" / "nodes_preview_any.py"
    for pack in (preview_any, HERE / "comfy_hostile_nodes.py"):
        if not asyncio.run(nodes.load_custom_node(str(pack))):
            raise RuntimeError(f"could not load {pack}")
    return comfy_host


@pytest.fixture()
def models(host):
    """This module's model folders, first again (another module's tests may have put theirs in front)."""
    import folder_paths

    for kind in ("facesnap", "instantid", "controlnet"):
        folder_paths.add_model_folder_path(kind, str(FOLDERS[kind]), is_default=True)
    return FOLDERS


def run(host, g: dict) -> tuple[bool, dict, list]:
    """(success, the execution_error event's data or {}, every event) of a fresh executor."""
    executor = host.run(g, expect_success=False)
    errors = [data for event, data in executor.events if event == "execution_error"]
    return executor.success, (errors[0] if errors else {}), executor.events


def refused(host, g: dict, node: str, *parts: str) -> str:
    """Run ``g``; it must fail with the pack's node error from ``node`` holding every part."""
    ok, error, _ = run(host, g)
    text = str(error.get("exception_message") or error)
    assert not ok and error.get("exception_type") == NODE_ERROR, text
    assert f"[{node}]" in text and all(part in text for part in parts), text
    return text


def with_output(g: dict, source: str) -> dict:
    g[f"preview_{source}"] = {"class_type": "PreviewAny", "inputs": {"source": [source, 0]}}
    return g


def instantid_loader(ip: str = IP_FILE, cn: str = CN_FILE) -> dict:
    g = {}
    add_instantid_loader(g, node="loader", instantid_file=ip, controlnet_name=cn)
    return with_output(g, "loader")


def facesnap_loader(name: str, controlnet: str | None = None) -> dict:
    g = {}
    add_loader(g, name, node="loader", **({"controlnet_name": controlnet} if controlnet else {}))
    return with_output(g, "loader")


def rewrite(source, target, metadata: dict | None = None, change=None) -> pathlib.Path:
    """A copy of the .safetensors ``source`` at ``target`` with metadata entries replaced and ``change(tensors)``."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(source))
    with safe_open(str(source), framework="pt") as f:
        meta = dict(f.metadata() or {})
    meta.update(metadata or {})
    if change is not None:
        change(tensors)
    pathlib.Path(target).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata=meta)
    return pathlib.Path(target)


def sources(seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
    """The tiny InstantID pair of ``seed`` (ip-adapter, IdentityNet), written once per module."""
    folder = FOLDERS["sources"] / f"seed{seed}"
    if not folder.exists():
        folder.mkdir()
        tiny_instantid_files(str(folder), seed=seed)
    return folder / "tiny_ip-adapter.safetensors", folder / "tiny_identitynet.safetensors"


def ip_adapter(name: str, layout: dict | None = None, change=None, seed: int = 0) -> str:
    """A tiny ip-adapter in models/instantid with ``layout`` merged into its metadata configs."""
    from safetensors import safe_open

    source = sources(seed)[0]
    metadata = {}
    with safe_open(str(source), framework="pt") as f:
        current = f.metadata()
    for key, fields in (layout or {}).items():
        metadata[key] = fields if isinstance(fields, str) else json.dumps({**json.loads(current[key]), **fields})
    rewrite(source, FOLDERS["instantid"] / name, metadata, change)
    return name


def identitynet_folder(name: str, config_text: str | None = None, change=None) -> str:
    """InstantID's ControlNetModel/ layout in models/controlnet: config.json beside diffusion_pytorch_model."""
    from safetensors import safe_open

    source = sources()[1]
    with safe_open(str(source), framework="pt") as f:
        config = f.metadata()["config"]
    weights = rewrite(source, FOLDERS["controlnet"] / name / "diffusion_pytorch_model.safetensors", {}, change)
    (weights.parent / "config.json").write_text(config if config_text is None else config_text)
    return f"{name}/diffusion_pytorch_model.safetensors"


def facesnap_heads_only(name: str, ffrnet_config: dict | None = None) -> tuple[str, str]:
    """A FaceSnap file without FFRNet (its ffrnet_config fields replaced) and the tiny backbone it pairs with in
    models/controlnet: (FaceSnap name, ControlNet name)."""
    from safetensors.torch import save_file

    from comfyui_facesnap.models.identity.facesnap.checkpoint import save_facesnap

    mixer, ffrnet = tiny_facesnap_models(seed=5)
    backbone = FOLDERS["controlnet"] / "tiny_backbone.safetensors"
    if not backbone.exists():
        save_file({k: v.contiguous() for k, v in ffrnet.state_dict().items() if not k.startswith("id_injector.")},
                  str(backbone), metadata={"config": json.dumps(ffrnet.config.diffusers_kwargs())})
    plain = FOLDERS["sources"] / "heads_only.safetensors"
    save_facesnap(str(plain), mixer, ffrnet, include_backbone=False)
    rewrite(plain, FOLDERS["facesnap"] / name,
            {"ffrnet_config": json.dumps({**ffrnet.config.to_dict(), **(ffrnet_config or {})})})
    return name, backbone.name


# ---- item 1 and 8: a 10 GB bomb and the three files that hung the server -----------------------------------------
def _rss_mb() -> float:
    return int(pathlib.Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class GuardTripped(Exception):
    """Raised into a load that grows memory or time without bound (what the unchecked code did)."""


@contextlib.contextmanager
def memory_guard(limit_mb: float = 1024, limit_s: float = 30):
    """Stops a runaway load: every 50 ms a timer checks the process's memory and the time, and raises GuardTripped in
    the main thread (inside the node, which ComfyUI then reports) once either is over its limit."""
    start, baseline = time.perf_counter(), _rss_mb()

    def check(signum, frame):
        if _rss_mb() - baseline > limit_mb or time.perf_counter() - start > limit_s:
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise GuardTripped(f"stopped after {time.perf_counter() - start:.1f} s, "
                               f"{_rss_mb() - baseline:,.0f} MB above the baseline")

    previous = signal.signal(signal.SIGALRM, check)
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def injector_bomb_kernel(gigabytes: float = 10) -> int:
    """The ID-Injector kernel size whose heads on the tiny backbone take ``gigabytes`` in fp32."""
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNetConfig

    layout = FFRNetConfig.tiny().injector_layout()
    per_tap = 2 * sum(s * t for s, t in zip(layout.source_channels, layout.target_channels, strict=True))
    return math.ceil(math.sqrt(gigabytes * 2**30 / 4 / per_tap))


def bomb(kind: str) -> tuple[dict, str, str]:
    """(graph, loader node, the text its refusal must hold) of each file that would exhaust memory."""
    if kind == "injector kernel (10 GB of heads)":
        kernel = injector_bomb_kernel()
        name, backbone = facesnap_heads_only("kernel_bomb.safetensors", {"injector_kernel_size": kernel})
        return (facesnap_loader(name, backbone), "FaceSnapModelLoader",
                f"ffrnet_config.injector_kernel_size = {kernel} is not an integer in 1..7")
    if kind == "resampler depth 10**7":
        name = ip_adapter("depth_bomb.safetensors", {"resampler_config": {"depth": 10**7}})
        return instantid_loader(name), "FaceSnapInstantIDLoader", "resampler_config.depth = 10000000"
    if kind == "unet middle depth 10**7":
        name = ip_adapter("middle_bomb.safetensors", {"unet_config": {"transformer_depth_middle": 10**7}})
        return instantid_loader(name), "FaceSnapInstantIDLoader", "unet_config.transformer_depth_middle = 10000000"
    config = json.loads(json.dumps({**json.loads(_identitynet_config()), "layers_per_block": 10**6}))
    name = identitynet_folder("layers_bomb", json.dumps(config))
    return (instantid_loader(cn=name), "FaceSnapInstantIDLoader",
            "layers_bomb/config.json: config.layers_per_block = 1000000")


def _identitynet_config() -> str:
    from safetensors import safe_open

    with safe_open(str(sources()[1]), framework="pt") as f:
        return f.metadata()["config"]


BOMBS = ["injector kernel (10 GB of heads)", "resampler depth 10**7", "unet middle depth 10**7",
         "IdentityNet config.json layers_per_block 10**6"]


@pytest.mark.skipif(not pathlib.Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("kind", BOMBS)
def test_bomb_files_are_refused_at_once_in_bounded_memory(host, models, kind):
    """Each file states an architecture that would take gigabytes (the unchecked loader built it: the injector one
    allocated 10 GB of heads, the others built modules without end). Measured around the prompt: process CPU time
    (other jobs on the machine do not count), peak RSS (the kernel's high-water mark, reset just before) and
    Python's own peak allocation (tracemalloc). The first run warms the code paths; the second is measured."""
    g, node, expected = bomb(kind)
    with memory_guard():
        refused(host, g, node, expected)
    gc.collect()
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # reset the peak
    before, cpu, wall = _rss_mb(), time.process_time(), time.perf_counter()
    tracemalloc.start()
    try:
        with memory_guard():
            text = refused(host, g, node, expected)
        python_peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    grown = _peak_rss_mb() - before
    print(f"\n{kind}: refused in {cpu:.3f} s CPU ({wall:.3f} s wall), peak RSS +{grown:.1f} MB, Python peak "
          f"{python_peak:.1f} MB: {text.splitlines()[0]}")
    assert cpu < 1.0 and grown < 100 and python_peak < 100, (cpu, grown, python_peak)


def test_a_layout_within_every_range_but_10_gb_is_refused_before_a_module_is_built(host, models, monkeypatch):
    """Every field in its published range, together 10 GB: refused from the parameter count against the 70 k the
    file holds, before the Resampler (or any module) is built, even on the meta device."""
    resampler = pack_module(host, "FaceSnapInstantIDLoader", "models.identity.instantid.resampler").Resampler
    built = []
    init = resampler.__init__
    monkeypatch.setattr(resampler, "__init__", lambda self, *a, **k: built.append(a) or init(self, *a, **k))
    name = ip_adapter("wide.safetensors", {"resampler_config": {"dim": 4096, "depth": 16, "heads": 64,
                                                                "dim_head": 128, "ff_mult": 8}})
    text = refused(host, instantid_loader(name), "FaceSnapInstantIDLoader", "wide.safetensors: the layout in its "
                   "metadata describes", "GB in fp32), but the file holds only")
    assert not built, "a module was built from the layout before it was checked"
    assert float(text.split("(")[1].split(" GB")[0].replace(",", "")) > 10


# ---- item 1: malformed configs get the pack's error, never a raw Python one -----------------------------------------
@pytest.mark.parametrize("case", ["num_queries 10**30", "transformer_depth an int", "config.json not JSON",
                                  "mixer_config dim a string", "ControlNet config metadata a list",
                                  "header bomb", "config.json nested too deep"])
def test_malformed_configs_are_named(host, models, case):
    if case == "num_queries 10**30":
        g = instantid_loader(ip_adapter("queries.safetensors", {"resampler_config": {"num_queries": 10**30}}))
        parts = ("queries.safetensors: resampler_config.num_queries = 10000", "is not an integer in 1..256")
    elif case == "transformer_depth an int":
        g = instantid_loader(ip_adapter("depth_int.safetensors", {"unet_config": {"transformer_depth": 1}}))
        parts = ("unet_config.transformer_depth = 1 is not a list of 2 integers",)
    elif case == "config.json not JSON":
        g = instantid_loader(cn=identitynet_folder("not_json", "{'layers_per_block': 2,"))
        parts = ("not_json/config.json: its content is not valid JSON",)
    elif case == "config.json nested too deep":
        g = instantid_loader(cn=identitynet_folder("deep_json", "[" * 100_000 + "]" * 100_000))
        parts = ("deep_json/config.json: its content is not valid JSON (it is nested too deeply)",)
    elif case == "ControlNet config metadata a list":
        rewrite(sources()[1], FOLDERS["controlnet"] / "list_config.safetensors", {"config": "[2048, 2816]"})
        g = instantid_loader(cn="list_config.safetensors")
        parts = ("list_config.safetensors: its config metadata is a JSON list, not an object of settings",)
    elif case == "header bomb":
        (FOLDERS["controlnet"] / "header_bomb.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
        g = instantid_loader(cn="header_bomb.safetensors")
        parts = ("header_bomb.safetensors is not a readable .safetensors file: its header claims 1,000,000,000,000",)
    else:
        source = FOLDERS["facesnap"] / "tiny_facesnap.safetensors"
        rewrite(source, FOLDERS["facesnap"] / "dim_text.safetensors", {"mixer_config": json.dumps(
            {**json.loads(_metadata(source)["mixer_config"]), "dim": "big"})})
        g, node = facesnap_loader("dim_text.safetensors"), "FaceSnapModelLoader"
        refused(host, g, node, "dim_text.safetensors: mixer_config.dim = 'big' is not an integer")
        return
    refused(host, g, "FaceSnapInstantIDLoader", *parts)


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


# ---- item 2: NaN and infinite weights are refused by name in every loader ------------------------------------------
def _poison(name: str, value: float = float("nan")):
    def change(tensors):
        tensors[name] = torch.full_like(tensors[name], value)
    return change


@pytest.mark.parametrize("case", ["ip-adapter Resampler all NaN", "IdentityNet tensor inf", "FaceSnap mixer NaN",
                                  "FaceSnap FFRNet -inf"])
def test_non_finite_weights_are_refused_naming_the_tensor(host, models, case):
    if case == "ip-adapter Resampler all NaN":
        def all_nan(tensors):
            for key in [k for k in tensors if k.startswith("image_proj.")]:
                tensors[key] = torch.full_like(tensors[key], float("nan"))
        g, node = instantid_loader(ip_adapter("nan_resampler.safetensors", change=all_nan)), "FaceSnapInstantIDLoader"
        parts = ("tensor 'image_proj.", "in nan_resampler.safetensors holds NaN or infinite values")
    elif case == "IdentityNet tensor inf":
        g = instantid_loader(cn=identitynet_folder("inf_identitynet", change=_poison("conv_in.weight", float("inf"))))
        node, parts = "FaceSnapInstantIDLoader", ("tensor 'conv_in.weight' in diffusion_pytorch_model.safetensors",)
    else:
        tensor = "mixer.pi1.weight" if case == "FaceSnap mixer NaN" else "ffrnet.mid_block.resnets.0.conv1.weight"
        value = float("nan") if case == "FaceSnap mixer NaN" else -float("inf")
        rewrite(FOLDERS["facesnap"] / "tiny_facesnap.safetensors", FOLDERS["facesnap"] / "poisoned.safetensors",
                change=_poison(tensor, value))
        g, node, parts = facesnap_loader("poisoned.safetensors"), "FaceSnapModelLoader", (f"tensor {tensor!r}",)
    refused(host, g, node, *parts, "NaN or infinite")


def test_non_finite_3dmm_arrays_are_refused_naming_the_array(host, folders, flame_files):
    """FLAME's shapedirs, DECA's encoder weights and the ICT-FaceKit conversion: a NaN is named, not loaded."""
    from comfyui_facesnap.models.face3d.deca_encoder import DecaEncoder
    from comfyui_facesnap.models.face3d.flame_loader import load_flame_pkl

    models_dir, _ = folders
    flame = load_flame_pkl(models_dir / "generic_model.pkl")
    flame["shapedirs"] = flame["shapedirs"].copy()
    flame["shapedirs"][3, 1, 7] = np.nan
    (models_dir / "nan_flame.pkl").write_bytes(pickle.dumps(flame, protocol=2))
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in DecaEncoder().state_dict().items()}
    zeros = torch.zeros(max(s.numel() for s in shapes.values()))
    state = {k: zeros[:s.numel()].view(s) for k, s in shapes.items()}  # one storage: a small file
    state["layers.2.bias"] = torch.full(shapes["layers.2.bias"], float("nan"))
    torch.save({"E_flame": state}, models_dir / "nan_deca.tar")
    write_ict_npz(models_dir / "nan_ict.npz")
    with np.load(models_dir / "nan_ict.npz") as z:
        arrays = dict(z)
    arrays["id_basis"][5, 0, 0] = np.inf
    np.savez(models_dir / "nan_ict.npz", **arrays)
    for prompt, parts in ((loader_prompt(model="FLAME", flame_file="nan_flame.pkl"), "array 'shapedirs'"),
                          (loader_prompt(model="FLAME", deca_file="nan_deca.tar"), "tensor 'layers.2.bias'"),
                          (loader_prompt(ict_file="nan_ict.npz"), "array 'id_basis'")):
        refused(host, prompt, "FaceSnap3DMMLoader", parts, "NaN or infinite")


def test_nan_widget_values_and_images_get_the_node_error(host, models):
    g = base_graph(steps=1)
    loader = add_instantid_loader(g)
    add_apply_instantid(g, loader, add_encode(g, loader, noise=float("nan")), node="apply")
    refused(host, g, "FaceSnapInstantIDEncode", "uncond_noise = nan is not a finite number")
    g = base_graph(steps=1)
    loader = add_instantid_loader(g)
    add_apply_instantid(g, loader, add_encode(g, loader), node="apply", advanced={"uncond_noise": float("nan")})
    refused(host, g, "FaceSnapApplyInstantIDAdvanced", "uncond_noise = nan is not a finite number")


# ---- item 3: identities are checked against the weights that apply them -------------------------------------------
def facesnap_identity_graph(make: str, apply: str, advanced: dict | None = None) -> dict:
    """An identity made by FaceSnap file ``make``'s mixer, applied with file ``apply`` (FaceSnap Apply Identity, or
    the Advanced node with ``advanced`` settings)."""
    g = base_graph(steps=1)
    maker = add_loader(g, make, node="maker")
    applier = maker if apply == make else add_loader(g, apply, node="applier")
    g["features"] = {"class_type": "FaceSnapTestFaceFeatures", "inputs": {"seed": 10}}
    g["mixer"] = {"class_type": "FaceSnapAttributeMixer",
                  "inputs": {"facesnap_model": [maker, 0], "face_features": ["features", 0]}}
    inputs = {"positive": ["cond", 0], "negative": ["cond", 1], "facesnap_model": [applier, 0],
              "identity": ["mixer", 0], "landmark_image": ["hint", 0], "start_percent": 0.0, "end_percent": 1.0}
    if advanced is None:
        g["apply"] = {"class_type": "FaceSnapApplyIdentity", "inputs": {**inputs, "strength": 1.0}}
    else:
        g["apply"] = {"class_type": "FaceSnapApplyIdentityAdvanced", "inputs": {
            **inputs, "cond_strength": 1.0, "uncond_strength": 1.0, "uncond_noise": 0.0, "positive_only": False,
            **advanced}}
    g["sampler"]["inputs"].update(positive=["apply", 0], negative=["apply", 1])
    return g


def test_an_identity_of_other_weights_is_refused_naming_its_file_unless_allowed(host, models):
    refused(host, facesnap_identity_graph("other_heads.safetensors", "tiny_facesnap.safetensors"),
            "FaceSnapApplyIdentity", "made with other_heads.safetensors (weights key",
            "not with 'tiny_facesnap.safetensors'", "allow_other_weights")
    allowed = facesnap_identity_graph("other_heads.safetensors", "tiny_facesnap.safetensors",
                                      {"allow_other_weights": True})
    assert run(host, allowed)[0]
    assert not run(host, facesnap_identity_graph("other_heads.safetensors", "tiny_facesnap.safetensors",
                                                 {"allow_other_weights": False}))[0]
    assert run(host, facesnap_identity_graph("tiny_facesnap.safetensors", "tiny_facesnap_copy.safetensors"))[0], \
        "the same weights under another name are the same weights"


def test_an_instantid_identity_of_another_ip_adapter_is_refused(host, models):
    other = ip_adapter("other_ip-adapter.safetensors", seed=1)
    g = base_graph(steps=1)
    mine, theirs = add_instantid_loader(g), add_instantid_loader(g, node="other", instantid_file=other)
    add_apply_instantid(g, mine, add_encode(g, theirs), node="apply")
    refused(host, g, "FaceSnapApplyInstantID", "made with other_ip-adapter.safetensors", f"not with {IP_FILE!r}")
    g["apply"]["class_type"] = "FaceSnapApplyInstantIDAdvanced"
    g["apply"]["inputs"] = {**{k: v for k, v in g["apply"]["inputs"].items() if k != "weight"}, "ip_weight": 0.8,
                            "cn_strength": 0.8, "uncond_noise": 0.0, "positive_only": False,
                            "allow_other_weights": True}
    assert run(host, g)[0]


def test_saved_identities_with_a_made_up_key_are_refused_and_older_keys_still_apply(host, models, tmp_path):
    """A saved identity whose key no file has is refused; one saved with the key earlier versions computed for the
    same weights (dtype in the digest, full precision) still applies, and a new save records the file's name."""
    identity_module = pack_module(host, "FaceSnapSaveIdentity", "models.identity.identity")
    use_identity_folder(tmp_path)
    g = facesnap_identity_graph("tiny_facesnap.safetensors", "tiny_facesnap.safetensors")
    g["save"] = {"class_type": "FaceSnapSaveIdentity", "inputs": {"identity": ["mixer", 0], "name": "made",
                                                                  "overwrite": True}}
    ok, _, _ = run(host, g)
    assert ok
    made, _ = identity_module.load_identity(str(tmp_path / "made.safetensors"))
    assert made.model_name == "tiny_facesnap.safetensors" and len(made.weights_key) == 16
    session = host.session()
    bundle = cached(session.run(facesnap_loader("tiny_facesnap.safetensors")), "loader")
    legacy = identity_module.legacy_weights_key(bundle.mixer.state_dict())
    for name, key in (("made_up", "0123456789abcdef"), ("legacy", legacy)):
        saved = identity_module.Identity(cond=made.cond, uncond=made.uncond, encoder=made.encoder, weights_key=key)
        identity_module.save_identity(str(tmp_path / f"{name}.safetensors"), saved)
    g = facesnap_identity_graph("tiny_facesnap.safetensors", "tiny_facesnap.safetensors")
    g["mixer"] = {"class_type": "FaceSnapLoadIdentity", "inputs": {"identity_name": "made_up.safetensors"}}
    refused(host, g, "FaceSnapApplyIdentity", "weights key 0123456789abcdef", "name was not recorded")
    g["mixer"]["inputs"]["identity_name"] = "legacy.safetensors"
    assert run(host, g)[0], "an identity saved before the key ignored the dtype must keep applying"


def test_the_weights_key_is_the_same_for_a_file_and_its_fp16_copy(host, models):
    """An identity made with a FaceSnap file applies with the fp16 copy of that file without any option: the key
    samples values at fp16 precision and leaves the dtype out."""
    rewrite(FOLDERS["facesnap"] / "tiny_facesnap.safetensors", FOLDERS["facesnap"] / "tiny_facesnap_fp16.safetensors",
            change=lambda tensors: tensors.update({k: v.half() for k, v in tensors.items()}))
    g = facesnap_identity_graph("tiny_facesnap.safetensors", "tiny_facesnap_fp16.safetensors")
    g["applier"]["inputs"]["dtype"] = "bf16"  # nor does the storage dtype the loader picks
    executor = host.run(g)
    assert cached(executor, "mixer").weights_key == cached(executor, "applier").weights_key


# ---- item 4: one pre-flight check for control images -------------------------------------------------------------
def _spoiled(g: dict, source: list, problem: str) -> list:
    g[f"spoil_{problem}"] = {"class_type": "FaceSnapTestBadImage", "inputs": {"image": source, "problem": problem}}
    return [f"spoil_{problem}", 0]


@pytest.mark.parametrize("problem, expected", [
    ("empty batch", "the image batch is empty"), ("two channels", "the images have 2 channels"),
    ("nan", "image 0 of the batch holds NaN or infinite pixel values"),
])
def test_bad_control_images_are_refused_by_the_apply_nodes(host, models, problem, expected):
    g = base_graph(steps=1)
    loader = add_instantid_loader(g)
    apply = add_apply_instantid(g, loader, add_encode(g, loader), node="apply")
    g[apply]["inputs"]["keypoints_image"] = _spoiled(g, g[apply]["inputs"]["keypoints_image"], problem)
    refused(host, g, "FaceSnapApplyInstantID", f"keypoints_image: {expected}", "\nFix: ")
    g = facesnap_identity_graph("tiny_facesnap.safetensors", "tiny_facesnap.safetensors")
    g["apply"]["inputs"]["landmark_image"] = _spoiled(g, ["hint", 0], problem)
    refused(host, g, "FaceSnapApplyIdentity", f"landmark_image: {expected}", "\nFix: ")


def test_a_control_image_over_the_memory_limit_is_refused(host, models, monkeypatch):
    monkeypatch.setenv("FACESNAP_MEMORY_LIMIT_MB", "0.1")  # 128 x 128: 0.23 MB of copies
    refused(host, facesnap_identity_graph("tiny_facesnap.safetensors", "tiny_facesnap.safetensors"),
            "FaceSnapApplyIdentity", "landmark_image: 1 control image(s) of 128 x 128", "above the pack's limit")


def test_an_aspect_ratio_mismatch_reaches_comfyui_as_the_packs_node_error(host, models):
    g = base_graph(steps=1)
    loader = add_instantid_loader(g)
    apply = add_apply_instantid(g, loader, add_encode(g, loader), node="apply")
    g[g[apply]["inputs"]["keypoints_image"][0]]["inputs"].update(width=256, height=128)
    text = refused(host, g, "FaceSnapApplyInstantID", "is 256x128 but the latent is 128x128 pixels")
    assert "\nFix: draw the landmarks at the output size" in text


def test_draw_keypoints_and_face_similarity_check_the_memory_limit(host, models, monkeypatch):
    from instantid_graphs import add_faces, add_keypoints

    monkeypatch.setenv("FACESNAP_MEMORY_LIMIT_MB", "8")
    g = {}
    kps = add_keypoints(g)
    g[kps]["inputs"].update(width=1024, height=1024)  # 2 images of 1024 x 1024: 30 MB
    refused(host, with_output(g, kps), "FaceSnapDrawKeypoints", "1 keypoint image(s) and overlay(s) of 1024 x 1024",
            "above the pack's limit of 8 MB", "lower width and height")
    monkeypatch.setenv("FACESNAP_MEMORY_LIMIT_MB", "0.1")  # the 64 px crop fits, the 112 x 112 photo to rank not
    g = {}
    crop = add_faces(g)
    g[crop]["inputs"]["size"] = 64
    g["similarity"] = {"class_type": "FaceSnapFaceSimilarity", "inputs": {
        "analyzer": g[crop]["inputs"]["analyzer"], "images": [f"{crop}_photo", 0], "reference_faces": [crop, 1]}}
    refused(host, g, "FaceSnapFaceSimilarity", "image(s) of", "to rank", "above the pack's limit of 0 MB")


# ---- item 5: names on disk ----------------------------------------------------------------------------------------
def save_graph(name: str) -> dict:
    g = facesnap_identity_graph("tiny_facesnap.safetensors", "tiny_facesnap.safetensors")
    return {k: g[k] for k in ("maker", "features", "mixer")} | {"save": {
        "class_type": "FaceSnapSaveIdentity", "inputs": {"identity": ["mixer", 0], "name": name, "overwrite": False}}}


@pytest.mark.parametrize("name, expected", [
    ("\u00e9" * 150, "takes 318 bytes"), ("\u540d" * 90, "takes 288 bytes"),
    ("people\n/alice", "holds a control character"), ("alice\t", "holds a control character"),
])
def test_names_too_long_on_disk_or_with_control_characters_are_refused(host, models, tmp_path, name, expected):
    use_identity_folder(tmp_path)
    refused(host, save_graph(name), "FaceSnapSaveIdentity", "is not allowed", expected)
    assert not any(tmp_path.iterdir()), "nothing may be written"


def test_every_filesystem_error_on_saving_is_the_node_error(host, models, tmp_path):
    use_identity_folder(tmp_path)
    assert run(host, save_graph("taken"))[0]
    refused(host, save_graph("taken.safetensors/alice"), "FaceSnapSaveIdentity",
            "could not be saved as taken.safetensors/alice.safetensors", "File exists", "Fix: choose another name")
    (tmp_path / "deep").write_text("a file where a folder would be")
    refused(host, save_graph("deep/er/alice"), "FaceSnapSaveIdentity", "could not be saved as deep/er/alice",
            "Not a directory")


# ---- item 6: the FaceSnap loader never ignores an explicit ControlNet -----------------------------------------------
@pytest.mark.parametrize("controlnet", ["truncated.safetensors", "tiny_identitynet.safetensors"])
def test_an_explicit_controlnet_beside_a_file_with_its_own_ffrnet_is_refused(host, models, controlnet):
    (FOLDERS["controlnet"] / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    text = refused(host, facesnap_loader("tiny_facesnap.safetensors", controlnet), "FaceSnapModelLoader",
                   f"tiny_facesnap.safetensors has its own FFRNet, so the ControlNet {controlnet!r}")
    assert "set controlnet_name to '(FFRNet inside the FaceSnap file)'" in text
    tooltip = next(i.tooltip for i in host.node_classes["FaceSnapModelLoader"].define_schema().inputs
                   if i.id == "controlnet_name")
    assert "refuses another ControlNet" in tooltip


# ---- item 7: /interrupt reaches long loads --------------------------------------------------------------------------
class _InterruptingFile:
    """safetensors' safe_open that presses /interrupt once the first tensor has been read, and counts the reads."""

    reads = 0

    def __init__(self, opened):
        self._opened = opened

    def __enter__(self):
        self._inner = self._opened.__enter__()
        return self

    def __exit__(self, *exc):
        return self._opened.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def get_tensor(self, name):
        import comfy.model_management

        _InterruptingFile.reads += 1
        comfy.model_management.interrupt_current_processing(True)
        return self._inner.get_tensor(name)


@pytest.mark.parametrize("loader", ["FaceSnapModelLoader", "FaceSnapInstantIDLoader"])
def test_interrupt_stops_a_load_between_tensors(host, models, monkeypatch, loader):
    import safetensors
    import safetensors.torch

    import comfy.model_management

    real = safetensors.safe_open
    opener = lambda *args, **kwargs: _InterruptingFile(real(*args, **kwargs))  # noqa: E731
    monkeypatch.setattr(safetensors, "safe_open", opener)
    monkeypatch.setattr(safetensors.torch, "safe_open", opener)
    _InterruptingFile.reads = 0
    g = facesnap_loader("tiny_facesnap.safetensors") if loader == "FaceSnapModelLoader" else instantid_loader()
    g["loader"]["inputs"]["dtype"] = "fp16"  # not cached by an earlier test
    try:
        ok, _, events = run(host, g)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    stopped = [data for event, data in events if event == "execution_interrupted"]
    assert not ok and stopped and stopped[0]["node_id"] == "loader", events
    assert _InterruptingFile.reads == 1, f"{_InterruptingFile.reads} tensors were read after /interrupt"


# ---- the parameter counts behind the budget ---------------------------------------------------------------------
def test_parameter_counts_equal_the_modules_the_loaders_build():
    from comfyui_facesnap.models.identity.controlnet_checks import controlnet_parameters
    from comfyui_facesnap.models.identity.facesnap.attribute_mixer import FacialAttributeMixer, MixerConfig
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig
    from comfyui_facesnap.models.identity.facesnap.layout_checks import injector_parameters, mixer_parameters
    from comfyui_facesnap.models.identity.instantid.resampler import Resampler, ResamplerConfig, resampler_parameters
    from comfyui_facesnap.models.identity.ip_attention import IPAttentionLayers, ip_layer_parameters
    from comfyui_facesnap.models.identity.unet_sites import SDXL_UNET_CONFIG, ip_adapter_layer_sites

    def size(module):
        return sum(p.numel() for p in module.parameters())

    odd = FFRNetConfig(block_out_channels=(32, 64, 64, 128), layers_per_block=3,
                       transformer_layers_per_block=(1, 0, 2, 3),
                       down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D",
                                         "CrossAttnDownBlock2D"), attention_head_dim=(2, 2, 4, 8),
                       conditioning_embedding_out_channels=(8, 16), injector_kernel_size=3)
    with torch.device("meta"):
        for config in (FFRNetConfig.sdxl(), FFRNetConfig.sdxl_light(), FFRNetConfig.tiny(), odd):
            net = FFRNet(config)
            assert controlnet_parameters(config) == size(net) - size(net.id_injector)
            assert injector_parameters(config.injector_layout()) == size(net.id_injector)
        for config in (MixerConfig(), MixerConfig.tiny(), MixerConfig(decoder_layers=0, ff_mult=2)):
            assert mixer_parameters(config) == size(FacialAttributeMixer(config))
        for config in (ResamplerConfig.instantid(), ResamplerConfig.tiny()):
            assert resampler_parameters(config) == size(Resampler(config))
        layers = IPAttentionLayers(ip_adapter_layer_sites(SDXL_UNET_CONFIG), 2048)
        assert ip_layer_parameters(SDXL_UNET_CONFIG, 2048) == size(layers) == 340_787_200
