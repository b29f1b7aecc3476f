"""A test set laid out like Unsplash-50 (LCM-Lookahead's release, used by PuLID, Diff-PC and others): one portrait
per identity and the prompt list in a text file. The images are the user's own copy; none ship with the pack.

    unsplash50/
        prompts.txt          one prompt per line (blank lines and lines starting with # are skipped)
        0001.jpg             one portrait per identity; the file name (without suffix) names the identity
        0002.png
        ...
"""

from __future__ import annotations

import pathlib

from ..models.errors import InvalidInputError
from .generation import IMAGE_SUFFIXES, safe_name

PROMPT_FILE = "prompts.txt"


def read_prompt_file(path: pathlib.Path) -> list[str]:
    lines = (line.strip() for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_benchmark(folder: pathlib.Path) -> tuple[dict[str, list[pathlib.Path]], list[str]]:
    """({identity: [its portrait]}, prompts) of a benchmark folder, or an error saying what the layout is."""
    folder = pathlib.Path(folder)
    layout = f"one portrait per identity and {PROMPT_FILE} (one prompt per line) directly in the folder"
    if not folder.is_dir():
        raise InvalidInputError(f"the benchmark folder {folder} does not exist", f"give a folder with {layout}")
    portraits = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not portraits:
        raise InvalidInputError(f"no portrait (PNG, JPEG or WebP) in {folder}", f"put {layout}")
    people: dict[str, list[pathlib.Path]] = {}
    for path in portraits:
        name = safe_name(path.stem)
        if name in people:
            raise InvalidInputError(f"{path.name} and {people[name][0].name} name the same identity {name!r}",
                                    "give each portrait its own file name")
        people[name] = [path]
    prompts = read_prompt_file(folder / PROMPT_FILE) if (folder / PROMPT_FILE).is_file() else []
    return people, prompts
