"""Generation on several ComfyUI servers at once: each server keeps its own queue full, and a server that dies hands
its unfinished prompts to the others.

One thread per server takes prompts from a shared list whenever fewer than ``depth`` of its own are queued, so the
work is spread by speed (a faster GPU takes more) and no server waits between prompts. It polls ``/history`` for
its queued prompts in order and samples ``/system_stats`` meanwhile; each finished image is handed to
``on_finished`` at once (the caller saves it), so a run that stops keeps everything done so far. A server that has
not answered for ``dead_after_s`` seconds is given up: its queued prompts go back to the front of the shared list
and the other servers take them. A prompt is therefore finished by exactly one server, and its image saved once.
When every server is gone, the run stops with the count of prompts left (rerunning resumes from the saved images).

Peak VRAM is attributed to the prompt that finished next: a server runs its queue in order, so the samples taken
since its previous prompt finished were taken while this one ran (or waited to load).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .comfy_client import ComfyClient, RunResult, ServerError, ServerUnreachable

DEFAULT_DEPTH = 2  # prompts kept queued on each server: the next one is ready when the current one ends
DEFAULT_DEAD_AFTER_S = 30.0


@dataclass
class Task:
    key: str  # for progress and messages
    prompt: dict  # API-format prompt
    output_node: str
    payload: object = None  # the caller's (the job)


@dataclass
class Finished:
    task: Task
    result: RunResult
    server: str
    image: bytes  # the output node's first image, as the server saved it


@dataclass
class _Server:
    client: ComfyClient
    queued: collections.deque = field(default_factory=collections.deque)  # (task, prompt id, queued at)
    done: int = 0
    returned: int = 0  # prompts handed to the other servers when this one died
    alive: bool = True
    failing_since: float | None = None
    peak: int | None = None  # bytes sampled since this server's previous prompt finished
    device: str = "?"

    @property
    def name(self) -> str:
        return self.client.url.split("://")[-1]


class ServerPool:
    def __init__(self, clients: Sequence[ComfyClient], depth: int = DEFAULT_DEPTH,
                 dead_after_s: float = DEFAULT_DEAD_AFTER_S, poll_s: float = 0.2,
                 say: Callable[[str], None] = print):
        if not clients:
            raise ValueError("a server pool needs at least one server")
        self.servers = [_Server(client) for client in clients]
        self.depth, self.dead_after_s, self.poll_s, self.say = max(1, depth), dead_after_s, poll_s, say
        self._lock = threading.Lock()
        self._pending: collections.deque[Task] = collections.deque()
        self._outstanding = 0
        self._error: BaseException | None = None

    # ---- progress ------------------------------------------------------------------------------------------------
    def status(self) -> str:
        """One short line: per server what it finished and holds (or that it died), e.g. for a progress bar."""
        with self._lock:
            parts = [f"{s.name}: {s.done} done, " + (f"{len(s.queued)} queued" if s.alive else
                                                     f"gone ({s.returned} handed on)") for s in self.servers]
            return " | ".join(parts + [f"{len(self._pending)} waiting"])

    def finished_count(self) -> int:
        with self._lock:
            return sum(s.done for s in self.servers)

    # ---- the run -------------------------------------------------------------------------------------------------
    def run(self, tasks: Sequence[Task], on_finished: Callable[[Finished], None],
            on_progress: Callable[[], None] | None = None) -> None:
        """Finish every task on the servers; ``on_finished`` is called once per task, from a server's thread."""
        self._pending.extend(tasks)
        self._outstanding = len(tasks)
        threads = [threading.Thread(target=self._serve, args=(server, on_finished), daemon=True,
                                    name=f"comfy {server.name}") for server in self.servers]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.25)
            if on_progress is not None:
                on_progress()
        if self._error is not None:
            raise self._error
        if self._outstanding:
            raise ServerError(f"every ComfyUI server stopped answering; {self._outstanding} image(s) were not "
                              "generated. Run the same command again to generate only those")

    def _serve(self, server: _Server, on_finished) -> None:
        try:
            while self._step(server, on_finished):
                time.sleep(self.poll_s)
        except BaseException as err:  # any error, so that no thread dies silently and leaves the run waiting
            with self._lock:
                self._error = self._error or err

    def _step(self, server: _Server, on_finished) -> bool:
        """One round: top up the server's queue, then collect what it finished. False when this server is done."""
        with self._lock:
            if self._error is not None or self._outstanding == 0:
                return False
            taken = [self._pending.popleft() for _ in range(min(self.depth - len(server.queued), len(self._pending)))]
        try:
            while taken:
                server.queued.append((taken[0], server.client.queue(taken[0].prompt), time.monotonic()))
                taken.pop(0)
            self._collect(server, on_finished)
        except ServerUnreachable as err:
            with self._lock:
                self._pending.extendleft(reversed(taken))  # not queued there: back to the front
            return self._failing(server, err)
        server.failing_since = None
        return True

    def _collect(self, server: _Server, on_finished) -> None:
        """Sample the server's memory, then hand on every prompt it finished, in queue order."""
        if not server.queued:
            return
        server.device, memory = server.client.device_memory()
        if memory is not None:
            server.peak = max(server.peak or 0, memory)
        while server.queued:
            task, prompt_id, queued_at = server.queued[0]
            entry = server.client.history_entry(prompt_id)
            if entry is None:
                return
            result = server.client.result(prompt_id, entry, task.output_node, queued_at, server.device, server.peak)
            image = server.client.download(result.images[0])
            server.queued.popleft()
            server.peak = None
            on_finished(Finished(task, result, server.client.url, image))
            with self._lock:
                server.done += 1
                self._outstanding -= 1

    def _failing(self, server: _Server, err: ServerUnreachable) -> bool:
        """Keep trying for ``dead_after_s``; then give the server's queued prompts to the others. False: given up."""
        now = time.monotonic()
        server.failing_since = server.failing_since or now
        if now - server.failing_since < self.dead_after_s:
            return True
        with self._lock:
            tasks = [task for task, _, _ in server.queued]
            self._pending.extendleft(reversed(tasks))
            server.queued.clear()
            server.returned += len(tasks)
            server.alive = False
        self.say(f"{server.name} stopped answering for {self.dead_after_s:g} s ({err}); its {len(tasks)} unfinished "
                 "prompt(s) go to the other servers")
        return False
