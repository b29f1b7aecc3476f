"""Hostile and careless workflow values, through ComfyUI's real validator and executor:
file inputs that try to leave the model folders, model files that are not what they claim, unknown dropdown values,
empty and non-finite image batches, widget values that would exhaust memory, warnings the artist must see, and the
error type ComfyUI's dialog shows."""

from __future__ import annotations

import contextlib
import gc
import os
import pathlib
import pickle
import sys

import numpy as np
import pytest
import torch

from comfyui_facesnap.devkit.comfy_host import cached_output
from hostile_prompts import Session, loader_prompt, write_ict_npz

pytestmark = pytest.mark.comfy

HERE = pathlib.Path(__file__).resolve().parent
PHOTO = "Tom_Hanks_54745.png"
UNSAFE_ADVICE = ("unsafe", "allow_pickle", "weights_only", "trust", "safe_globals", "--download")


# ---- fixtures (hostile_host and folders: conftest.py) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def host(hostile_host):
    return hostile_host


def face_prompt(photo=PHOTO, size=128, selection="largest", if_no_face="error") -> dict:
    return {
        "10": {"class_type": "LoadImage", "inputs": {"image": photo}},
        "11": {"class_type": "FaceSnapFaceAnalyzerLoader",
               "inputs": {"backend": "dlib", "provider": "CPU", "dlib_detector": "hog"}},
        "12": {"class_type": "FaceSnapFaceCrop",
               "inputs": {"analyzer": ["11", 0], "image": ["10", 0], "selection": selection, "index": 0,
                          "size": size, "margin": 0.5, "if_no_face": if_no_face}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    }


def error_text(error: dict) -> str:
    return str(error.get("exception_message") or error)


# ---- item 7: file inputs stay inside the model folders -----------------------------------------------------------
class DiskRecorder:
    """Python-level opens, listings and stats of paths under ``root`` (an audit hook plus os.stat/os.lstat)."""

    active: list | None = None
    _hooked = False

    def __init__(self, root: pathlib.Path, monkeypatch):
        self.root, self.seen = os.path.realpath(root), []
        if not DiskRecorder._hooked:
            sys.addaudithook(DiskRecorder._audit)  # audit hooks stay for the process; they record only when active
            DiskRecorder._hooked = True
        for name in ("stat", "lstat"):
            original = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(original))

    def _wrap(self, original):
        def recording(path, *args, **kwargs):
            self._note("os.stat", path)
            return original(path, *args, **kwargs)

        return recording

    def _note(self, event, path):
        if DiskRecorder.active is self and isinstance(path, (str, bytes, os.PathLike)) and not isinstance(path, int):
            text = os.fsdecode(os.fspath(path))
            if os.path.abspath(text).startswith(self.root) or self.root in text:
                self.seen.append((event, text))

    @staticmethod
    def _audit(event, args):
        recorder = DiskRecorder.active
        if recorder is not None and event in ("open", "os.listdir", "os.scandir", "os.mkdir") and args:
            recorder._note(event, args[0])

    @contextlib.contextmanager
    def recording(self):
        DiskRecorder.active = self
        try:
            yield self.seen
        finally:
            DiskRecorder.active = None


FILE_INPUTS = {"ict_file": ("ICT-FaceKit", ".npz"), "flame_file": ("FLAME", ".pkl"),
               "flame_landmarks": ("FLAME", ".npy"), "deca_file": ("FLAME", ".tar")}


def _hostile_value(kind: str, ext: str, models: pathlib.Path, outside: pathlib.Path) -> tuple[str, pathlib.Path]:
    """(value, the outside file it would reach)."""
    secret = outside / f"secret{ext}"
    if kind == "absolute":
        return str(secret), secret
    if kind == "dotdot":
        return f"../../outside/secret{ext}", secret
    if kind == "subfolder-dotdot":  # into a real subfolder, then up and out
        (models / "sub").mkdir(exist_ok=True)
        return f"sub/../../../outside/secret{ext}", secret
    link = models / f"secret_link{ext}.bak"  # a link out of the folder under a name that is not a model file
    if not link.is_symlink():
        link.symlink_to(secret)
    return link.name, secret


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "subfolder-dotdot", "symlink"])
@pytest.mark.parametrize("input_name", list(FILE_INPUTS))
def test_file_inputs_never_reach_outside_the_model_folders(host, folders, monkeypatch, input_name, kind):
    models, outside = folders
    model, ext = FILE_INPUTS[input_name]
    value, secret = _hostile_value(kind, ext, models, outside)
    prompt = loader_prompt(model=model, **{input_name: value})
    recorder = DiskRecorder(outside, monkeypatch)
    messages = []
    for present in (True, False):  # the same answer whether or not the outside file exists
        if not present:
            secret.unlink()
        with recorder.recording() as seen:
            ok, error = Session(host).run(prompt)
        assert not ok, f"{input_name}={value!r} was accepted"
        assert not seen, f"{input_name}={value!r} touched the disk outside the model folders: {seen}"
        messages.append({key: error.get(key) for key in ("validation", "exception_type", "exception_message")})
        if "validation" not in error:  # passed validation (a plain name): refused by the node, before any read
            text = error_text(error)
            assert "[FaceSnap3DMMLoader]" in text and input_name in text and str(outside) not in text
    assert messages[0] == messages[1]
    if kind != "symlink":  # paths are refused from their text alone, already by ComfyUI's prompt validation
        details = str(messages[0]["validation"])
        assert input_name in details and ("absolute path" in details or "'..'" in details)
    else:
        assert "was not found" in error_text(messages[0])


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_node_refuses_paths_even_when_called_directly(host, folders, kind):
    from comfyui_facesnap.nodes.errors import FaceSnapNodeError
    from comfyui_facesnap.nodes.predictor_nodes import FaceSnap3DMMLoader

    models, outside = folders
    value, _ = _hostile_value(kind, ".npz", models, outside)
    with pytest.raises(FaceSnapNodeError, match=r"\[FaceSnap3DMMLoader\] ict_file .*(absolute path|'\.\.')"):
        FaceSnap3DMMLoader.execute("ICT-FaceKit", value, "generic_model.pkl", "landmark_embedding.npy",
                                     download_if_missing=True)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.npy", "secret.npz", "secret.pkl", "secret.tar"]


@pytest.mark.parametrize("input_name", ["ict_file", "flame_file", "flame_landmarks"])
def test_empty_file_names_are_reported_by_name(host, folders, input_name):
    model, _ = FILE_INPUTS[input_name]
    ok, error = Session(host).run(loader_prompt(model=model, **{input_name: ""}))
    assert not ok
    text = error_text(error)
    assert f"[FaceSnap3DMMLoader] {input_name} '' is empty" in text and "dropdown" in text


def test_legacy_empty_deca_file_means_none_and_owner_links_are_followed(host, folders):
    """deca_file was a text field whose empty value meant "no DECA"; saved workflows keep working. A link that the
    folder's owner put into a model folder is followed, as ComfyUI does for every model folder."""
    models, outside = folders
    session = Session(host)
    assert session.run(loader_prompt(model="FLAME", deca_file=""))[0]
    (models / "linked_ict.npz").symlink_to(outside / "secret.npz")
    assert session.run(loader_prompt(ict_file="linked_ict.npz"))[0]


def test_file_dropdowns_list_the_model_folders(host, folders):
    from comfyui_facesnap.nodes.predictor_nodes import FaceSnap3DMMLoader

    models, _ = folders
    write_ict_npz(models / "another.npz")
    (models / "deca_model.tar").write_bytes(b"")
    (models / "notes.txt").write_text("not a model")
    inputs = {spec.id: spec for spec in FaceSnap3DMMLoader.define_schema().inputs}
    assert inputs["ict_file"].options == ["ict_face_narrow.npz", "another.npz"]
    assert inputs["flame_file"].options == ["generic_model.pkl"]
    assert inputs["flame_landmarks"].options == ["landmark_embedding.npy"]
    assert inputs["deca_file"].options == ["none", "deca_model.tar"]


# ---- item 8: no message advises unsafe loading --------------------------------------------------------------------
class _Exploit:
    def __reduce__(self):
        return os.system, ("touch exploited",)


def _nested_torch_pickle() -> np.ndarray:
    """An object array whose dict holds a 'tensor' that is really a torch file with a code-running pickle inside."""
    import io

    buffer = io.BytesIO()
    torch.save({"storage": _Exploit()}, buffer)

    class NestedTorch:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (buffer.getvalue(),)

    return np.array([{"full_lmk_faces_idx": NestedTorch(), "full_lmk_bary_coords": np.zeros((1, 68, 3))}],
                    dtype=object)


def _bad_files(models: pathlib.Path) -> dict[str, tuple[str, str]]:
    """input -> (file name, model kind) of files that are not what the input needs."""
    (models / "pickled.npz").write_bytes(pickle.dumps({"neutral": np.zeros(3)}))
    (models / "text.npz").write_text("root:x:0:0:root:/root:/bin/bash\n")
    np.save(models / "nested.npy", _nested_torch_pickle(), allow_pickle=True)
    (models / "evil.pkl").write_bytes(pickle.dumps({"v_template": _Exploit()}, protocol=2))
    torch.save({"E_flame": {"encoder.conv1.weight": _Exploit()}}, models / "evil.tar")
    return {"pickled.npz": ("ict_file", "ICT-FaceKit"), "text.npz": ("ict_file", "ICT-FaceKit"),
            "nested.npy": ("flame_landmarks", "FLAME"), "evil.pkl": ("flame_file", "FLAME"),
            "evil.tar": ("deca_file", "FLAME")}


def test_wrong_files_say_what_they_should_be_without_unsafe_advice(host, folders, monkeypatch):
    models, _ = folders
    monkeypatch.chdir(models)
    session = Session(host)
    for name, (input_name, model) in _bad_files(models).items():
        ok, error = session.run(loader_prompt(model=model, **{input_name: name}))
        text = error_text(error)
        assert not ok and "[FaceSnap3DMMLoader]" in text and str(models / name) in text, text
        assert not [word for word in UNSAFE_ADVICE if word in text.lower()], f"{name}: {text}"
        should_be = {"ict_file": "ICT-FaceKit face model as the pack converts it", "flame_file": "FLAME 2020/2023",
                     "flame_landmarks": "DECA's landmark_embedding.npy", "deca_file": "DECA's deca_model.tar"}
        where = {"ict_file": "github.com/ICT-VGL/ICT-FaceKit", "flame_file": "flame.is.tue.mpg.de",
                 "flame_landmarks": "github.com/yfeng95/DECA", "deca_file": "github.com/yfeng95/DECA"}
        assert should_be[input_name] in text and where[input_name] in text, f"{name}: {text}"
    assert "program code" in error_text(session.run(loader_prompt(model="FLAME", flame_file="evil.pkl"))[1])
    assert not (models / "exploited").exists()


def test_no_source_advises_unsafe_loading():
    """The pack never suggests allow_pickle=True, weights_only=False or an allow-list of globals to anyone."""
    root = HERE.parents[1]
    offenders = []
    for path in root.rglob("*"):
        if path.suffix not in (".py", ".md") or "tests" in path.relative_to(root).parts or ".git" in path.parts:
            continue
        text = path.read_text(errors="replace")
        for phrase in ("weights_only=False", "allow_pickle=True", "load it unsafely", "add_safe_globals("):
            if phrase in text and not path.name == "file_errors.py":  # which names them to keep them out
                offenders.append(f"{path.relative_to(root)}: {phrase}")
    assert not offenders


# ---- item 9: every dropdown value is checked ----------------------------------------------------------------------
def full_prompt() -> dict:
    prompt = {**face_prompt(), **loader_prompt(model="FLAME")}
    prompt["2"] = {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    prompt["20"] = {"class_type": "FaceSnapDrawLandmarks", "inputs": {"faces": ["12", 1], "frame": "crop"}}
    prompt["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
    prompt["30"] = {"class_type": "FaceSnapLandmarkPredictor",
                    "inputs": {"model": ["1", 0], "reference": ["12", 1], "pose_source": "manual", "yaw": 0.0,
                               "pitch": 0.0, "roll": 0.0, "keep_reference_expression": False,
                               "expression_strength": 1.0, "neutral_reference": False, "frame": "canvas",
                               "width": 128, "height": 128}}
    prompt["31"] = {"class_type": "PreviewImage", "inputs": {"images": ["30", 1]}}
    return prompt


COMBOS = [("1", "FaceSnap3DMMLoader", "model", "BFM"), ("11", "FaceSnapFaceAnalyzerLoader", "backend", "opencv"),
          ("11", "FaceSnapFaceAnalyzerLoader", "provider", "ROCm"),
          ("11", "FaceSnapFaceAnalyzerLoader", "dlib_detector", "mtcnn"),
          ("12", "FaceSnapFaceCrop", "selection", "biggest"), ("12", "FaceSnapFaceCrop", "if_no_face", "ignore"),
          ("20", "FaceSnapDrawLandmarks", "frame", "crops"), ("30", "FaceSnapLandmarkPredictor", "pose_source", "auto"),
          ("30", "FaceSnapLandmarkPredictor", "frame", "")]


def test_unknown_dropdown_values_are_refused_by_name(host, folders):
    session = Session(host)
    assert session.run(full_prompt())[0]
    for node_id, node_class, input_name, value in COMBOS:
        prompt = full_prompt()
        prompt[node_id]["inputs"][input_name] = value
        ok, error = session.run(prompt)
        text = error_text(error)
        ours = f"[{node_class}] {input_name} = {value!r} is not one of its choices" in text
        # newer hosts (v0.8.0) check combo values themselves and refuse the prompt before the node runs
        hosts = "value_not_in_list" in text and f"{input_name}: {value!r} not in" in text
        assert not ok and (ours or hosts), text


# ---- item 10: empty and non-finite image batches ------------------------------------------------------------------
@pytest.mark.parametrize("problem, expected", [
    ("empty batch", "the image batch is empty"),
    ("nan", "image 0 of the batch holds NaN or infinite pixel values"),
    ("inf", "image 0 of the batch holds NaN or infinite pixel values"),
])
def test_bad_image_batches_get_a_named_error_with_a_fix(host, problem, expected):
    prompt = face_prompt()
    prompt["14"] = {"class_type": "FaceSnapTestBadImage", "inputs": {"image": ["10", 0], "problem": problem}}
    prompt["12"]["inputs"]["image"] = ["14", 0]
    ok, error = Session(host).run(prompt)
    text = error_text(error)
    assert not ok and f"[FaceSnapFaceCrop] {expected}" in text and "\nFix: " in text, text


# ---- item 11: memory is estimated before it is allocated ---------------------------------------------------------
def _peak_rss_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@pytest.mark.skipif(not pathlib.Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("case", ["crop 4096, every face", "draw 8192 x 8192"])
def test_memory_hungry_widget_values_are_refused_before_allocating(host, case):
    prompt = face_prompt(photo="t1.jpg", selection="all") if case == "crop 4096, every face" else face_prompt()
    node, widget = "FaceSnapFaceCrop", "lower size"
    if case == "crop 4096, every face":  # (the starting commit peaked at 5.9 GB here, and 3.8 GB for the other case)
        prompt["12"]["inputs"]["size"] = 4096
    else:
        prompt["20"] = {"class_type": "FaceSnapDrawLandmarks",
                        "inputs": {"faces": ["12", 1], "frame": "crop", "width": 8192, "height": 8192}}
        prompt["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
        node, widget = "FaceSnapDrawLandmarks", "lower width and height"
    session = Session(host)
    gc.collect()
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # reset the peak
    before = _rss_mb()
    ok, error = session.run(prompt)
    grown = _peak_rss_mb() - before
    text = error_text(error)
    assert not ok and f"[{node}]" in text and "above the pack's limit of 1,024 MB" in text and widget in text, text
    assert grown < 400, f"peak memory grew by {grown:.0f} MB before the refusal"


def test_predictor_canvas_is_checked_before_rendering(host, folders):
    prompt = full_prompt()
    prompt["30"]["inputs"].update(width=4096, height=4096)
    ok, error = Session(host).run(prompt)
    text = error_text(error)
    assert not ok and "[FaceSnapLandmarkPredictor] 1 prediction(s) of 4096 x 4096" in text, text
    assert "lower width and height" in text


def test_memory_limit_can_be_changed(host, monkeypatch):
    monkeypatch.setenv("FACESNAP_MEMORY_LIMIT_MB", "1")
    ok, error = Session(host).run(face_prompt(size=512))
    assert not ok and "above the pack's limit of 1 MB" in error_text(error) and "lower size" in error_text(error)
    monkeypatch.setenv("FACESNAP_MEMORY_LIMIT_MB", "8")
    assert Session(host).run(face_prompt(size=512))[0]


def test_nothing_of_the_pack_outlives_the_prompt(host):
    """While ComfyUI caches a prompt's outputs they stay; once it drops them (a new executor, or 'Free memory'), the
    pack keeps none of them alive: not the analyzer, the face set, the crops or the drawn images."""
    import weakref

    session = Session(host)
    prompt = face_prompt(photo="t1.jpg", selection="all", size=256)
    prompt["20"] = {"class_type": "FaceSnapDrawLandmarks", "inputs": {"faces": ["12", 1], "frame": "image"}}
    prompt["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 1]}}
    assert session.run(prompt)[0]
    outputs = [cached_output(session.executor, node, slot)
               for node, slot in (("11", 0), ("12", 0), ("12", 1), ("20", 0), ("20", 1))]
    assert [type(o).__name__ for o in outputs] == ["DlibAnalyzer", "Tensor", "FaceSet", "Tensor", "Tensor"]
    held = [weakref.ref(o) for o in outputs]
    del outputs, session
    gc.collect()
    assert [ref() for ref in held] == [None] * len(held)


# ---- item 12: warnings reach the artist ---------------------------------------------------------------------------
@pytest.fixture
def node_texts(monkeypatch):
    """What nodes show on themselves through ``server.PromptServer.instance.send_progress_text`` (the call ComfyUI's
    Get Image Size node makes): (node id, text) pairs. The in-process host runs no server, so one stands in."""
    import types

    shown = []

    class PromptServer:
        def send_progress_text(self, text, node_id, sid=None):
            shown.append((str(node_id), text))

    PromptServer.instance = PromptServer()
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=PromptServer))
    return shown


def test_skipped_faces_and_clamped_angles_are_reported(host, folders, node_texts):
    prompt = {**full_prompt(), **face_prompt(photo="mask_black.jpg", if_no_face="skip")}
    prompt["30"]["inputs"]["yaw"] = 89.0
    prompt["15"] = {"class_type": "PreviewAny", "inputs": {"source": ["12", 2]}}
    prompt["32"] = {"class_type": "PreviewAny", "inputs": {"source": ["30", 4]}}
    prompt["12"]["inputs"]["selection"] = "largest"
    # the faceless crop is the reference here only to reach the predictor: give it a face instead
    prompt["40"] = {"class_type": "LoadImage", "inputs": {"image": PHOTO}}
    prompt["41"] = {"class_type": "FaceSnapFaceCrop",
                    "inputs": {"analyzer": ["11", 0], "image": ["40", 0], "selection": "largest", "index": 0,
                               "size": 128, "margin": 0.5, "if_no_face": "error"}}
    prompt["30"]["inputs"]["reference"] = ["41", 1]
    session = Session(host)
    ok, error = session.run(prompt)
    assert ok, error
    crop_report = session.ui("15")["text"][0]
    assert crop_report == "no face found in image 0 of the batch: passed through whole, with no face recorded"
    predictor_report = session.ui("32")["text"][0]
    assert "manual pose: yaw 89° clamped to 75°" in predictor_report
    assert ("12", crop_report) in node_texts and ("30", predictor_report) in node_texts


# ---- item 13: a drive image without a face takes the manual pose, as the tooltip says ------------------------------
def test_drive_items_without_a_face_take_the_manual_pose(host, folders, node_texts):
    prompt = full_prompt()
    prompt["16"] = {"class_type": "LoadImage", "inputs": {"image": "mask_black.jpg"}}
    prompt["17"] = {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["16", 0]}}
    prompt["18"] = {"class_type": "FaceSnapFaceCrop",
                    "inputs": {"analyzer": ["11", 0], "image": ["17", 0], "selection": "largest", "index": 0,
                               "size": 160, "margin": 0.5, "if_no_face": "skip"}}
    prompt["30"]["inputs"].update(drive=["18", 1], pose_source="drive", frame="drive crop", yaw=20.0)
    prompt["32"] = {"class_type": "PreviewAny", "inputs": {"source": ["30", 4]}}
    session = Session(host)
    ok, error = session.run(prompt)
    assert ok, error
    landmarks, control = (cached_output(session.executor, "30", i) for i in (0, 1))
    assert landmarks.points.shape == (2, 72, 2) and np.isfinite(landmarks.points).all()
    assert landmarks.canvas_sizes == [(160, 160)] * 2 and tuple(control.shape) == (2, 160, 160, 3)
    report = session.ui("32")["text"][0]  # (the FLAME stand-in's random landmarks may also clamp item 0's pose)
    assert report.splitlines()[0] == ("drive item 1 has no face: the manual pose (yaw 20°, pitch 0°, roll 0°) and "
                                      "the reference's expression were used")
    assert ("30", report) in node_texts
    tooltip = next(i for i in host.node_classes["FaceSnapLandmarkPredictor"].define_schema().inputs
                   if i.id == "pose_source").tooltip
    assert "without a face" in tooltip and "manual yaw/pitch/roll" in tooltip


# ---- item 14: a clean error type in ComfyUI's dialog ---------------------------------------------------------------
def test_error_type_has_a_clean_name(host, folders):
    ok, error = Session(host).run(loader_prompt(ict_file="missing.npz"))
    assert not ok and error["exception_type"] == "comfyui_facesnap.FaceSnapNodeError"
