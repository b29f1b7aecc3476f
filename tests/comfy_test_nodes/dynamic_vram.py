"""A MODEL as dynamic VRAM presents it, for CPU hosts (which never run dynamic VRAM).

``simulated_dynamic(model)`` is a clone whose ``is_dynamic()`` is true, as ComfyUI's ``ModelPatcherDynamic`` on an
NVIDIA GPU, and whose non-dynamic delegate cannot be made, as for a MODEL from a loader that sets no
``cached_patcher_init`` (GGUF and other custom loaders): if anything makes the sampler ask for that delegate, sampling
fails with the host's own message. Loading and weights stay the host's ordinary CPU path.
"""

from __future__ import annotations

_CLASSES: dict = {}

DELEGATE_ERROR = "Cannot create non-dynamic delegate: cached_patcher_init is not initialized."


def _dynamic_class(base):
    if base not in _CLASSES:
        class SimulatedDynamicPatcher(base):
            delegates_asked = 0

            def is_dynamic(self):
                return True

            def get_non_dynamic_delegate(self):
                type(self).delegates_asked += 1
                raise RuntimeError(DELEGATE_ERROR)

            def set_in_use_by_current_prompt(self, in_use):
                pass

            def loaded_ram_size(self):
                return self.model_size()

        _CLASSES[base] = SimulatedDynamicPatcher
    return _CLASSES[base]


def delegates_asked() -> int:
    """How often a simulated MODEL's delegate was asked for since the last ``reset_delegate_counts()``."""
    return sum(cls.delegates_asked for cls in _CLASSES.values())


def reset_delegate_counts() -> None:
    for cls in _CLASSES.values():
        cls.delegates_asked = 0


def simulated_dynamic(model_patcher):
    clone = model_patcher.clone()
    clone.__class__ = _dynamic_class(type(model_patcher))
    return clone
