"""Diff-PC's ID-Injector on the UNet: y = (1 + phi) * h + mu after the middle block and after each decoder block.

Only ComfyUI's public patch points, no object patch: an ``output_block_patch`` sees the middle output (point 0) and
the outputs of decoder blocks 0..N-2 (points 1..N-1); a ``diffusion_model`` wrapper reaches the last point (the last
decoder block's output, the input of ``unet.out``) through a forward pre-hook that lives for that one call. Nothing
is wrapped or replaced, so re-patching never piles up and other packs' patches on the same blocks keep working.

Pairing (one patch object per MODEL, holding the heads of every FaceSnap file injected into it, by pairing key):
- each identity control publishes its FFRNet residuals under its file's pairing key (``control.FEATURES_KEY``); the
  patch computes (phi, mu) with the heads of the same key, weighted by that control's strength and mask, and sums them
  over controls: y = (1 + sum phi) h + sum mu. Two people (two controls, two masks) keep two identities.
- files may have different head layouts (kernel size, channels): each head only reads its own file's residuals.
- a control whose file has no injector on this MODEL runs FFRNet only; its heads are never computed.
- injecting the same file again replaces its heads (no double application).
- training passes precomputed (phi, mu) under ``INJECTOR_KEY`` instead.
Outside a control's start/end window nothing is published, so the patch is a no-op.
"""

from __future__ import annotations

import torch

import comfy.patcher_extension

from ..models.errors import InvalidInputError
from ..models.identity.facesnap.ffrnet import FFRNet
from ..models.identity.facesnap.id_injector import IDInjector
from .control import FEATURES_KEY, IdentityFeatures
from .unet_layout import unet_layout_error

INJECTOR_KEY = "facesnap_id_injector"  # transformer_options entry for training: [(phi, mu)] per injection point
WRAPPER_KEY = "facesnap_id_injector"
DIFFUSION_MODEL = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL


def check_unet_matches(model_patcher, ffrnet: FFRNet) -> None:
    """The MODEL must have the UNet layout FFRNet was built for."""
    problem = unet_layout_error(model_patcher.model, ffrnet.config)
    if problem is not None:
        raise InvalidInputError(problem, "load an SDXL checkpoint (SD1.5/SD2/Flux models cannot use FaceSnap)")


def _head(layer: torch.nn.Module, c_id: torch.Tensor, compute_dtype: torch.dtype) -> torch.Tensor:
    """A head through its layer call, so that ComfyUI's casting and streaming of the heads' network apply (its weights
    are never read here). The residual is cast to the heads' compute dtype, in case another load of the same file
    (another dtype) produced it."""
    return layer(c_id.to(compute_dtype))


class IDInjectorPatch:
    """The ID-Injector hooks of one MODEL: ``heads`` maps a FaceSnap file's pairing key to that file's IDInjector."""

    def __init__(self, heads: dict[str, IDInjector], compute_dtypes: dict[str, torch.dtype],
                 node_id: str = "DiffPCIDInjector"):
        self.heads = heads
        self.compute_dtypes = compute_dtypes
        self.node_id = node_id

    def __deepcopy__(self, memo):  # ModelPatcher.clone deep-copies model_options: share the heads, never copy them
        return self

    def __call__(self, h, hsp, transformer_options):  # output_block_patch
        kind, index = transformer_options["block"]
        if kind == "output":
            h = self.inject(index, h, transformer_options)
        return h, hsp

    def wrap_unet(self, executor, x, timesteps, context, y, control, transformer_options, *args, **kwargs):
        """diffusion_model wrapper: the last point is the input of ``unet.out`` (whatever module is there now)."""
        unet = executor.class_obj
        point = len(unet.output_blocks)

        def last_point(module, inputs):
            return (self.inject(point, inputs[0], transformer_options), *inputs[1:])

        handle = unet.out.register_forward_pre_hook(last_point)
        try:
            return executor(x, timesteps, context, y, control, transformer_options, *args, **kwargs)
        finally:
            handle.remove()

    def inject(self, point: int, h: torch.Tensor, options: dict) -> torch.Tensor:
        """Eq. 17 at injection point ``point`` (0 = after the middle block) with every paired control's (phi, mu)."""
        terms = []
        params = options.get(INJECTOR_KEY)
        if params is not None:
            terms.append(params[point])
        for features in options.get(FEATURES_KEY, ()):
            heads = self.heads.get(features.pairing_key)
            if heads is not None:
                terms.append(self._params(heads, point, features, h))
        if not terms:
            return h
        phi, mu = terms[0]
        for more_phi, more_mu in terms[1:]:
            phi, mu = phi + more_phi, mu + more_mu
        return IDInjector.apply(h, phi, mu)

    def _params(self, heads: IDInjector, point: int, features: IdentityFeatures, h: torch.Tensor):
        layout = heads.layout
        source = layout.source_indices[point] if point < layout.points else None
        c_id = features.residuals[source] if source is not None and source < len(features.residuals) else None
        if (c_id is None or c_id.shape[1] != layout.source_channels[point] or c_id.shape[-2:] != h.shape[-2:]
                or layout.target_channels[point] != h.shape[1]):
            got = "nothing" if c_id is None else f"residual {tuple(c_id.shape)}"
            raise InvalidInputError(
                f"[{self.node_id}] injection point {point} of the UNet ({tuple(h.shape)}) gets {got} from the FFRNet "
                f"applied by {features.source or 'an identity control'}; the heads expect {layout.points} points",
                "use FaceSnap weights made for this SDXL model in both the apply node and the ID-Injector node")
        weight, dtype = features.weights[source], self.compute_dtypes[features.pairing_key]
        return _head(heads.phi[point], c_id, dtype) * weight, _head(heads.mu[point], c_id, dtype) * weight


def find_injector_patch(model_patcher) -> IDInjectorPatch | None:
    patches = model_patcher.model_options.get("transformer_options", {}).get("patches", {})
    return next((p for p in patches.get("output_block_patch", []) if isinstance(p, IDInjectorPatch)), None)


def patch_model_with_injector(model_patcher, ffrnet: FFRNet, pairing_key: str, node_id: str = "DiffPCIDInjector", *,
                              ffrnet_patcher=None):
    """A clone of MODEL whose ID-Injector also applies ``ffrnet``'s heads to the controls of the FaceSnap file whose
    pairing key is ``pairing_key``.
    ``ffrnet_patcher`` (the ModelPatcher that manages ``ffrnet``, None outside ComfyUI's sampling) is loaded with the
    MODEL, so the heads are in place even when another load of the file runs the control. The input MODEL is
    untouched."""
    check_unet_matches(model_patcher, ffrnet)
    layout = ffrnet.id_injector.layout
    if layout != ffrnet.config.injector_layout():
        raise InvalidInputError(f"the ID-Injector heads do not match their FFRNet (points {layout.points})",
                                "re-export the FaceSnap file with save_facesnap")
    m = model_patcher.clone()
    old = find_injector_patch(m)
    patch = IDInjectorPatch({**(old.heads if old else {}), pairing_key: ffrnet.id_injector},
                            {**(old.compute_dtypes if old else {}), pairing_key: ffrnet.dtype}, node_id)
    if old is None:
        m.set_model_output_block_patch(patch)
    else:
        patches = m.model_options["transformer_options"]["patches"]["output_block_patch"]
        patches[patches.index(old)] = patch
    m.remove_wrappers_with_key(DIFFUSION_MODEL, WRAPPER_KEY)
    m.add_wrapper_with_key(DIFFUSION_MODEL, WRAPPER_KEY, patch.wrap_unet)
    if ffrnet_patcher is not None:
        m.set_additional_models(f"{WRAPPER_KEY}:{pairing_key}", [ffrnet_patcher])
    return m


def unet_transformer_options(model_patcher) -> dict:
    """transformer_options for calling the patched UNet directly, outside a sampler (training): patches and
    wrappers, as ``comfy.sampler_helpers.prepare_model_patcher`` assembles them."""
    options = dict(model_patcher.model_options.get("transformer_options", {}))
    options["wrappers"] = {kind: {k: list(v) for k, v in by_key.items()}
                           for kind, by_key in model_patcher.wrappers.items()}
    return options
