"""Every difference between the ComfyUI hosts the pack runs on, in one place.

The pack supports ComfyUI 0.3.48 (the first host that loads V3 packs) and newer; its tests run on 0.3.75 and 0.33.0.
What differs, and what the pack does about it:

| difference | 0.3.48 / 0.3.75 / 0.8.0 | 0.33.0 (and, read in sources, later) | here |
|---|---|---|---|
| dynamic VRAM (NVIDIA default since ~0.12) | absent | ``CFGGuider.inner_set_conds`` swaps the MODEL for ``get_non_dynamic_delegate()`` (a second, non-dynamic copy read from disk, or an error for MODELs of custom loaders) as soon as ``sampler_helpers.cond_has_hooks`` finds ``hooks`` on a cond or ``extra_hooks`` on a ControlNet | controls carry no hooks there: ``latent_size_hooks`` |
| the sampled latent's size | known only inside ``calc_cond_batch`` | also on the BaseModel (``latent_shapes``, set before the controls' ``pre_run``) | ``sampled_latent_dims`` |
| the patcher class of the host's loaders | ``ModelPatcher`` | ``CoreModelPatcher`` (``main.py`` rebinds it to ``ModelPatcherDynamic`` under dynamic VRAM) | ``model_patcher_class``, looked up at call time |
| ``ControlBase.get_control`` | rebuilds the hint when its size differs | rebuilds it from its own cache keyed by the latent size (read in a v0.38-era tree) | identity controls compute hint and call on their own path (``control.py``) |

The tests' side of these differences (executor caches, cache arguments) lives in ``devkit/comfy_host.py``.
"""  # noqa: E501  (the table's rows cannot wrap)

from __future__ import annotations

import comfy.hooks
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sampler_helpers


def host_has_dynamic_vram() -> bool:
    """Whether this ComfyUI can sample a dynamic-VRAM MODEL, and therefore swaps it when a cond has hooks."""
    return hasattr(comfy.sampler_helpers, "cond_has_hooks")


def model_patcher_class():
    """The ModelPatcher class the host's own loaders use now (``CoreModelPatcher`` where it exists)."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def sampled_latent_dims(base_model) -> tuple[int, ...] | None:
    """The spatial size of the latent being sampled, where the host records it on the BaseModel (one latent only)."""
    shapes = getattr(base_model, "latent_shapes", None)
    if not shapes or len(shapes) != 1:
        return None
    return tuple(shapes[0][2:])


_LATENT_SIZE_HOOKS: dict = {}


def latent_size_hooks(name: str, record) -> comfy.hooks.HookGroup | None:
    """On hosts that neither record the latent size on the model nor know dynamic VRAM: a ControlNet ``extra_hooks``
    group whose calc_cond_batch wrapper ``record(conds, x_in)`` tells controls the latent size (one hook object per
    name, so that conds keep batching together). Elsewhere None: a hook there would make ComfyUI replace a
    dynamic-VRAM MODEL (see the table above)."""
    if host_has_dynamic_vram():
        return None
    if name not in _LATENT_SIZE_HOOKS:
        def wrapper(executor, model, conds, x_in, timestep, model_options):
            record(conds, x_in)
            return executor(model, conds, x_in, timestep, model_options)

        _LATENT_SIZE_HOOKS[name] = comfy.hooks.TransformerOptionsHook(
            {"wrappers": {comfy.patcher_extension.WrappersMP.CALC_COND_BATCH: {name: [wrapper]}}})
    hooks = comfy.hooks.HookGroup()
    hooks.add(_LATENT_SIZE_HOOKS[name])
    return hooks
