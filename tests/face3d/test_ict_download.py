"""ICT-FaceKit download: a synthetic FaceXModel folder served over loopback HTTP goes through the real download,
resume, conversion and verification path; failures give the manual route and leave no half file behind."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import pathlib
import socket
import threading

import numpy as np
import pytest

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.models.face3d.ict_download import ICT_OBJ_FILES, download_ict_facekit
from comfyui_facesnap.models.face3d.morphable_model import ICT_NARROW_FACE_VERTICES, load_ict_npz

CLI = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "convert_ict_facekit.py"
FAST = {"retries": 1, "timeout": 5.0, "retry_wait": 0.0, "progress": False, "total_bytes": None}


def _obj_text(verts: np.ndarray, faces: list[list[int]] = ()) -> bytes:
    lines = [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in verts.tolist()]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in face) for face in faces]
    return ("# synthetic ICT-FaceKit mesh\n" + "\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def facexmodel() -> dict[str, bytes]:
    """The 158 upstream file names with tiny random meshes of the narrow face's vertex count."""
    rng = np.random.default_rng(0)
    neutral = rng.normal(size=(ICT_NARROW_FACE_VERTICES, 3)).astype(np.float32)
    files = {"generic_neutral_mesh.obj": _obj_text(neutral, [[0, 1, 2], [2, 3, 4, 5]])}
    for name in ICT_OBJ_FILES[1:]:
        files[name] = _obj_text(neutral + rng.normal(scale=0.01, size=neutral.shape).astype(np.float32))
    return files


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        name = self.path.rsplit("/", 1)[-1]
        srv.requests.append((name, self.headers.get("Range")))
        if name not in srv.files or srv.faults.get(name) == "404":
            self.send_error(404)
            return
        data = srv.files[name]
        start = int(self.headers["Range"][len("bytes="):].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if srv.faults.get(name) == "drop" and srv.drops_left > 0:
            srv.drops_left -= 1
            self.wfile.write(data[start: start + (len(data) - start) // 2])
            return  # HTTP/1.0: closing the connection here cuts the body short of its Content-Length
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(facexmodel):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.faults, httpd.drops_left, httpd.requests = facexmodel, {}, 0, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/ICT-FaceKit/master/FaceXModel/"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_download_resumes_converts_and_cleans_up(server, tmp_path):
    server.faults, server.drops_left = {"identity007.obj": "drop"}, 1
    target = tmp_path / "3dmm" / "ict_face_narrow.npz"
    seen = []
    out = download_ict_facekit(target, server.url, on_progress=lambda done, total: seen.append(done), **FAST)
    assert out == target
    model = load_ict_npz(target)
    assert model.num_id == 100 and model.neutral.shape == (ICT_NARROW_FACE_VERTICES, 3)
    assert len(model.exp_names) == 47  # 57 upstream blendshapes minus pupil dilation and gaze
    requested = [name for name, _ in server.requests]
    assert sorted(set(requested)) == sorted(ICT_OBJ_FILES) and len(requested) == len(ICT_OBJ_FILES) + 1
    half = len(server.files["identity007.obj"]) // 2
    assert ("identity007.obj", f"bytes={half}-") in server.requests  # the retry resumed the .part file
    assert seen[-1] == sum(len(data) for data in server.files.values())
    assert sorted(p.name for p in target.parent.iterdir()) == ["ict_face_narrow.npz"]  # work folder removed


def _assert_no_final_file(target):
    assert not target.exists()
    assert not list(target.parent.glob("*.npz"))


def test_missing_upstream_file_gives_the_manual_route(server, tmp_path):
    server.faults = {"identity003.obj": "404"}
    target = tmp_path / "3dmm" / "ict_face_narrow.npz"
    with pytest.raises(ModelFileError) as err:
        download_ict_facekit(target, server.url, **FAST)
    assert "identity003.obj" in err.value.message and "HTTP 404" in err.value.message
    assert f"copy an already converted ict_face_narrow.npz to {target}" in err.value.fix
    assert [name for name, _ in server.requests].count("identity003.obj") == 1  # a 404 is not retried
    _assert_no_final_file(target)
    # finished files stay for the next attempt (here through the script's --download), which fetches what is left
    server.faults, server.requests[:] = {}, []
    assert _cli().main(["--download", "--base-url", server.url, str(target)]) == 0
    assert [name for name, _ in server.requests] == list(ICT_OBJ_FILES[4:])
    load_ict_npz(target)


def _cli():
    spec = importlib.util.spec_from_file_location("convert_ict_facekit", CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv", [["FaceXModel", "out.npz", "--download"], ["out.npz"],
                                  ["FaceXModel", "out.npz", "--base-url", "http://mirror/"]])
def test_script_refuses_ambiguous_sources(argv):
    with pytest.raises(SystemExit) as exit_info:
        _cli().main(argv)
    assert exit_info.value.code == 2


def test_connection_dropping_every_time_fails_cleanly(server, tmp_path):
    server.faults, server.drops_left = {"generic_neutral_mesh.obj": "drop"}, 99
    target = tmp_path / "3dmm" / "ict_face_narrow.npz"
    with pytest.raises(ModelFileError, match="generic_neutral_mesh.obj") as err:
        download_ict_facekit(target, server.url, **FAST)
    assert str(target) in err.value.fix and "resumes" in err.value.fix
    assert len(server.requests) == 2  # first try plus one retry
    _assert_no_final_file(target)
    assert not (target.parent / "ict_face_narrow.download" / "generic_neutral_mesh.obj").exists()


def test_offline_error_names_the_exact_path(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/FaceXModel/"
    target = tmp_path / "models" / "3dmm" / "ict_face_narrow.npz"
    with pytest.raises(ModelFileError) as err:
        download_ict_facekit(target, url, **FAST)
    assert "could not download" in err.value.message
    assert str(target) in err.value.fix and "ICT-VGL/ICT-FaceKit" in err.value.fix
    assert list(target.parent.iterdir()) == []  # not even an empty work folder


def test_files_that_do_not_convert_are_discarded(server, tmp_path):
    server.files = {**server.files, "jawOpen.obj": b"v 0 0 0\n"}
    target = tmp_path / "3dmm" / "ict_face_narrow.npz"
    with pytest.raises(ModelFileError, match="did not convert"):
        download_ict_facekit(target, server.url, **FAST)
    _assert_no_final_file(target)
    assert sorted(p.name for p in target.parent.iterdir()) == []  # no OBJs kept to convert wrongly again


@pytest.mark.comfy
def test_loader_node_downloads_when_missing(server, tmp_path, monkeypatch):
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored
    from comfyui_facesnap.nodes import predictor_nodes
    from comfyui_facesnap.nodes.errors import FaceSnapNodeError

    folder = tmp_path / "3dmm"
    monkeypatch.setattr(predictor_nodes, "download_ict_facekit",
                        functools.partial(download_ict_facekit, base_url=server.url, **FAST))
    loader = predictor_nodes.FaceSnap3DMMLoader
    with model_folders_restored() as folder_paths:
        folder_paths.add_model_folder_path("3dmm", str(folder), is_default=True)
        with pytest.raises(FaceSnapNodeError, match="download_if_missing"):
            loader.execute("ICT-FaceKit", "ict_face_narrow.npz", "generic_model.pkl", "landmark_embedding.npy",
                           download_if_missing=False)
        # downloads go only to the default 3dmm folder, under the pack's own file name
        for outside in (str(tmp_path / "elsewhere" / "ict_face_narrow.npz"), "../elsewhere/ict_face_narrow.npz",
                        "sub/ict_face_narrow.npz"):
            with pytest.raises(FaceSnapNodeError, match="ict_file"):
                loader.execute("ICT-FaceKit", outside, "generic_model.pkl", "landmark_embedding.npy")
        assert not server.requests and not (tmp_path / "elsewhere").exists() and not folder.exists()
        model = loader.execute("ICT-FaceKit", "ict_face_narrow.npz", "generic_model.pkl", "landmark_embedding.npy")[0]
    assert model.num_id == 100 and (folder / "ict_face_narrow.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3dmm"]
