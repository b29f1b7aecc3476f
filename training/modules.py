"""The trainable FaceSnap network around the frozen SDXL UNet, wired exactly as the ComfyUI nodes wire it.

Forward: f_mix = Mixer(ArcFace, CLIP) -> FFRNet(z_t, landmark hint, t, context = f_mix, y) -> control residuals
(+ ID-Injector (phi, mu)) -> frozen UNet(z_t, t, text context, y, control). The injector hooks are the nodes'
own (``comfy_glue.id_injector_patch.patch_model_with_injector``), applied once to the frozen UNet.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..models.identity.facesnap.attribute_mixer import FacialAttributeMixer
from ..models.identity.facesnap.ffrnet import FFRNet

# Layers wrapped by gradient checkpointing: ComfyUI's UNet blocks and FFRNet's.
CHECKPOINTED = {"ResBlock", "SpatialTransformer", "ResnetBlock2D", "Transformer2DModel"}


def enable_gradient_checkpointing(module: nn.Module) -> int:
    """Recompute each ResBlock / transformer in the backward pass instead of storing its activations."""
    count = 0
    for layer in module.modules():
        if type(layer).__name__ in CHECKPOINTED and not getattr(layer, "_facesnap_checkpointed", False):
            original = layer.forward

            @functools.wraps(original)
            def forward(*args, _original=original, **kwargs):
                if not torch.is_grad_enabled():
                    return _original(*args, **kwargs)
                return checkpoint(_original, *args, use_reentrant=False, **kwargs)

            layer.forward = forward
            layer._facesnap_checkpointed = True
            count += 1
    return count


class InjectedUNet:
    """A frozen ComfyUI UNet with the ID-Injector hooks (patches and wrapper passed in its transformer_options)."""

    def __init__(self, model, ffrnet: FFRNet | None):
        import comfy.model_patcher

        patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                                   offload_device=torch.device("cpu"))
        self.transformer_options: dict = {}
        if ffrnet is not None and ffrnet.id_injector is not None:
            from ..comfy_glue.id_injector_patch import patch_model_with_injector, unet_transformer_options

            self.transformer_options = unet_transformer_options(patch_model_with_injector(patcher, ffrnet, "training"))
        self.unet = model.diffusion_model

    def __call__(self, x, timesteps, context, y, control, injector_params=None):
        from ..comfy_glue.id_injector_patch import INJECTOR_KEY

        options = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.transformer_options.items()}
        if injector_params is not None:
            options[INJECTOR_KEY] = injector_params
        control = {key: list(values) for key, values in control.items()}  # the UNet pops from these lists
        return self.unet(x, timesteps=timesteps, context=context, y=y, control=control, transformer_options=options)


class FaceSnapTrainingModel(nn.Module):
    """Holds only the trainable modules (what DDP/FSDP wraps); the frozen UNet is passed in, not registered."""

    def __init__(self, mixer: FacialAttributeMixer, ffrnet: FFRNet):
        super().__init__()
        self.mixer = mixer
        self.ffrnet = ffrnet

    def forward(self, unet: InjectedUNet, z_t, timesteps, context, y, hint, id_embeds, clip_tokens, return_f_mix=False):
        """The UNet's noise prediction; with ``return_f_mix`` also the mixer's tokens (returned from here, so that
        a loss on them reaches the mixer through DDP/FSDP like the diffusion loss does)."""
        f_mix = self.mixer(id_embeds[:, None], clip_tokens[:, None])
        control = self.ffrnet(z_t, hint, timesteps, f_mix, y)
        params = self.ffrnet.injector_params(control) if self.ffrnet.id_injector is not None else None
        eps = unet(z_t, timesteps, context, y, control, params)
        return (eps, f_mix) if return_f_mix else eps


def _plain_name(name: str) -> str:
    """A parameter's name without the wrapper segments nested FSDP units add (as in the gathered state dict)."""
    return name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")


class EMA:
    """Exponential moving average of the trainable parameters, kept in float32.

    Build it from the module *after* ``accelerator.prepare``: under FSDP the parameters of this process are then
    its flat shards, and each process averages exactly those (a copy taken before prepare has the full shapes and
    no longer matches). ``full_state_dict`` assembles the full tensors for checkpoints and export. Single GPU, DDP
    and DeepSpeed ZeRO-2 keep whole parameters on every process, so there the shards are the full tensors.
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {_plain_name(k): p.detach().float().clone() for k, p in module.named_parameters()
                       if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, p in module.named_parameters():
            average = self.shadow.get(_plain_name(k))
            if average is not None:
                average.lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict:
        """This process's averages (under FSDP: its shards; used to resume with the same number of processes)."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        for k in self.shadow:
            self.shadow[k].copy_(state[k])

    @torch.no_grad()
    def full_state_dict(self, module: nn.Module, gather, sharded: bool) -> dict:
        """The averages with their full shapes. ``sharded``: ``module`` holds only shards (FSDP); the averages are
        then swapped into its parameters for one ``gather()`` (``accelerator.get_state_dict``, a collective call
        every process must make) and the trained values are put back."""
        if not sharded:
            return self.state_dict()
        params = {_plain_name(k): p for k, p in module.named_parameters() if _plain_name(k) in self.shadow}
        trained = {k: p.detach().clone() for k, p in params.items()}
        try:
            for k, p in params.items():
                p.copy_(self.shadow[k])
            full = gather()
        finally:
            for k, p in params.items():
                p.copy_(trained[k])
        return {k: v.detach().float().cpu() for k, v in full.items() if k in self.shadow}
