"""Run API-format graphs through ComfyUI's real validator and executor, in-process.

The tests' side of the differences between ComfyUI hosts lives here (the pack's own side is
``comfy_glue/host_compat.py``):

| difference | 0.3.48 | 0.3.75 / 0.8.0 | 0.33.0 |
|---|---|---|---|
| ``PromptExecutor(cache_args=...)`` | absent | ``lru`` and ``ram`` | also ``ram_inactive`` |
| ``executor.caches.outputs.get(node_id)`` | a list of output lists | a ``CacheEntry`` (``.outputs``) | a coroutine of a ``CacheEntry`` |
| ``ModelPatcher._load_list()`` entries | (bytes, name, module, params) | (offload bytes, bytes, name, module, params) | the same |
"""  # noqa: E501  (the table's rows cannot wrap)

from __future__ import annotations

import asyncio
import inspect
import pathlib
import uuid


class _StubServer:
    """The parts of PromptServer that the executor talks to."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def __init__(self):
        self.events = []

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))


class ComfyHost:
    def __init__(self, pack_root: pathlib.Path, workdir: pathlib.Path, extra_packs: list[pathlib.Path] = ()):
        import folder_paths
        import nodes

        self.workdir = pathlib.Path(workdir)
        for sub in ("input", "output", "temp", "models"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        folder_paths.set_input_directory(str(self.workdir / "input"))
        folder_paths.set_output_directory(str(self.workdir / "output"))
        folder_paths.set_temp_directory(str(self.workdir / "temp"))
        for pack in [pack_root, *extra_packs]:
            if not asyncio.run(nodes.load_custom_node(str(pack))):
                raise RuntimeError(f"ComfyUI failed to load the custom node pack at {pack}")
        self.node_classes = nodes.NODE_CLASS_MAPPINGS

    def load_builtin_nodes(self, *files: str) -> None:
        """Load some of ComfyUI's own optional node files (``comfy_extras/nodes_*.py``), as its server does at start."""
        import folder_paths
        import nodes

        extras = pathlib.Path(folder_paths.base_path) / "comfy_extras"
        for name in files:
            if not asyncio.run(nodes.load_custom_node(str(extras / name), module_parent="comfy_extras")):
                raise RuntimeError(f"ComfyUI failed to load its node file comfy_extras/{name}")

    @property
    def input_dir(self) -> pathlib.Path:
        return self.workdir / "input"

    @property
    def output_dir(self) -> pathlib.Path:
        return self.workdir / "output"

    def validate(self, prompt: dict):
        import execution

        return asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def run(self, prompt: dict, expect_success: bool = True):
        """Validate and execute a graph in a fresh executor (nothing cached from earlier runs). Returns the executor;
        its ``history_result`` holds the UI outputs."""
        return self.session().run(prompt, expect_success)

    def session(self) -> "ComfySession":
        """One executor kept across prompts, as ComfyUI's server keeps it (node outputs and loaded models stay)."""
        return ComfySession(self)

    @staticmethod
    def error_message(executor) -> str:
        for event, data in executor.events:
            if event == "execution_error":
                return str(data.get("exception_message", ""))
        return ""


def new_executor(server):
    """A ``PromptExecutor`` with the CLASSIC cache, as ComfyUI's server builds it by default."""
    import execution

    accepts = inspect.signature(execution.PromptExecutor).parameters
    options = {"cache_args": {"lru": 0, "ram": 0, "ram_inactive": 0}} if "cache_args" in accepts else {}
    return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC, **options)


def comfyui_version() -> tuple[int, ...]:
    """The host's version as a tuple, e.g. (0, 3, 75)."""
    import comfyui_version as version

    return tuple(int(part) for part in version.__version__.split(".")[:3])


def cached_output(executor, node_id: str, slot: int = 0):
    """The first item of output ``slot`` of ``node_id`` in the executor's cache (see the module docstring)."""
    entry = executor.caches.outputs.get(node_id)
    if inspect.iscoroutine(entry):
        entry = asyncio.run(entry)
    outputs = getattr(entry, "outputs", entry)
    return outputs[slot][0]


def streamable_layers(patcher) -> dict[str, int]:
    """name -> bytes of every module ComfyUI's partial loader handles one by one (``ModelPatcher._load_list``; its
    entries differ between hosts, see the module docstring)."""
    layers = {}
    for entry in patcher._load_list():
        at = next(i for i, item in enumerate(entry) if isinstance(item, str))
        layers[entry[at]] = entry[at - 1]
    return layers


class ComfySession:
    """A persistent ``PromptExecutor``: re-running an edited graph re-executes only the changed nodes."""

    def __init__(self, host: ComfyHost):
        self.host = host
        self.server = _StubServer()
        self.executor = new_executor(self.server)

    def run(self, prompt: dict, expect_success: bool = True):
        valid = self.host.validate(prompt)
        # validate_prompt stays "valid" while silently dropping outputs whose inputs fail, so check node_errors too.
        if not valid[0] or valid[3]:
            raise AssertionError(f"prompt failed validation: {valid[1]} {valid[3]}")
        self.server.events = []
        executor = self.executor
        executor.execute(prompt, str(uuid.uuid4()), {}, valid[2])
        # Errors reach the server only with a client id; the executor's status_messages always keep them.
        sent = {event for event, _ in self.server.events}
        failures = [(event, data) for event, data in executor.status_messages
                    if event in ("execution_error", "execution_interrupted") and event not in sent]
        executor.events = self.server.events + failures
        if expect_success and not executor.success:
            errors = [data for event, data in executor.events if event == "execution_error"]
            raise AssertionError(f"graph failed: {errors}")
        return executor
