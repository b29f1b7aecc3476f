"""What dynamic VRAM looks at before sampling: hooks on the conds (``comfy.sampler_helpers.cond_has_hooks``).

On a host with dynamic VRAM, ``CFGGuider.inner_set_conds`` replaces the MODEL by its non-dynamic delegate as soon as a
cond has hooks. ``record_cond_hooks`` records, for every cond list set on a guider, the hooks found there the way the
host's check finds them; ``unexpected_hooks`` keeps those the host would react to: every hook on a host with dynamic
VRAM, and on older hosts every hook but the pack's latent-size hook (``comfy_glue/host_compat.py``), which those
hosts need and which costs them nothing.
"""

from __future__ import annotations

LATENT_SIZE_HOOK = "facesnap_latent_size"


def hooks_of(cond) -> list:
    found = []
    for _, options in cond:
        if "hooks" in options:
            found += list(options["hooks"].hooks)
        control = options.get("control")
        for group in (control.get_extra_hooks() if control is not None else []):
            found += list(group.hooks)
    return found


def record_cond_hooks(monkeypatch) -> list:
    """[(cond kind, hooks, the host's own cond_has_hooks or None)] for every cond list the sampler is given."""
    import comfy.sampler_helpers
    import comfy.samplers

    records = []
    original = comfy.samplers.CFGGuider.inner_set_conds
    host_check = getattr(comfy.sampler_helpers, "cond_has_hooks", None)

    def recording(self, conds):
        for kind, cond in conds.items():
            records.append((kind, hooks_of(cond), None if host_check is None else host_check(cond)))
        return original(self, conds)

    monkeypatch.setattr(comfy.samplers.CFGGuider, "inner_set_conds", recording)
    return records


def _is_latent_size_hook(hook) -> bool:
    wrappers = getattr(hook, "transformers_dict", {}).get("wrappers", {})
    return any(LATENT_SIZE_HOOK in by_key for by_key in wrappers.values())


def unexpected_hooks(records) -> list:
    import comfy.sampler_helpers

    dynamic_host = hasattr(comfy.sampler_helpers, "cond_has_hooks")
    bad = []
    for kind, hooks, host_says in records:
        kept = [h for h in hooks if dynamic_host or not _is_latent_size_hook(h)]
        if kept or host_says:
            bad.append((kind, kept, host_says))
    return bad
