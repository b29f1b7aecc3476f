"""The FaceSnap trainer on ``accelerate`` (single GPU, DDP, or DeepSpeed/FSDP through an accelerate config).

Frozen: the SDXL UNet, VAE and text encoders (and CLIP-vision / the face-recognition net when used).
Trainable: the Facial Attribute Mixer and FFRNet; the ID-Injector heads too when ``model.train_id_injector``.
Loss: masked diffusion loss (FaceSnap Eq. 3) + lambda_id * ID loss (Eq. 4-5; Diff-PC's x0 variant Eq. 19-20)
(+ lambda_distill * the distance of f_mix to InstantID's Resampler tokens, for a warm start: ``warm_start.py``).
"""

from __future__ import annotations

import json
import logging
import pathlib
from dataclasses import dataclass

import torch

from ..models.identity.facesnap.attribute_mixer import FacialAttributeMixer, MixerConfig
from ..models.identity.facesnap.ffrnet import FFRNet
from .base_model import FrozenBase, load_base
from .config import Config
from .distributed import fill_deepspeed_config
from .ffrnet_init import ffrnet_config_for_base, init_from_controlnet, init_from_unet
from .losses import detection_gate, id_loss, latent_mask, masked_diffusion_loss, predicted_x0
from .modules import EMA, FaceSnapTrainingModel, InjectedUNet, enable_gradient_checkpointing
from .warm_start import check_warm_start_config, distill_weight, distillation_loss, load_teacher, raw_arcface

log = logging.getLogger("facesnap.train")


@dataclass
class Frozen:
    """Everything frozen that a step uses."""

    base: FrozenBase
    unet: InjectedUNet
    clip: object  # .encode_batch(faces in [0, 1]) -> (B, T, D)
    face_model: torch.nn.Module | None
    lightning: InjectedUNet | None
    face_gate: object = None  # a face analyzer (.detect) for Diff-PC's M_det, or None
    teacher: torch.nn.Module | None = None  # InstantID's Resampler, for the distillation term
    teacher_key: str = ""  # its weights fingerprint, kept in checkpoints


def mixer_config(cfg: Config) -> MixerConfig:
    base = MixerConfig.tiny() if cfg.model.mixer_preset == "tiny" else MixerConfig()
    return MixerConfig.from_dict({**base.to_dict(), **cfg.model.mixer})


def build_trainable(cfg: Config, base: FrozenBase) -> tuple[FacialAttributeMixer, FFRNet]:
    mcfg = mixer_config(cfg)
    if mcfg.dim != base.unet_config["context_dim"]:
        raise ValueError(f"model.mixer.dim ({mcfg.dim}) must equal the UNet cross-attention width "
                         f"({base.unet_config['context_dim']}): FFRNet starts as a copy of the UNet encoder and "
                         "attends to f_mix")
    mixer = FacialAttributeMixer(mcfg)
    if cfg.model.ffrnet_init == "unet":
        fcfg = ffrnet_config_for_base(base.unet_config, cfg.model.id_injector, cfg.model.ffrnet_preset,
                                      cfg.model.ffrnet_overrides)
        ffrnet = FFRNet(fcfg).reset_parameters()
        init_from_unet(ffrnet, base.unet, base.unet_config)
    elif cfg.model.ffrnet_init == "instantid":  # IdentityNet (warm start)
        ffrnet = init_from_controlnet(cfg.model.instantid_controlnet, cfg.model.id_injector, base.unet_config,
                                      "model.instantid_controlnet")
    else:
        ffrnet = init_from_controlnet(cfg.model.ffrnet_init, cfg.model.id_injector, base.unet_config)
    if ffrnet.id_injector is not None and not cfg.model.train_id_injector:
        ffrnet.id_injector.requires_grad_(False)
    return mixer, ffrnet


def build_frozen(cfg: Config, base: FrozenBase, ffrnet: FFRNet, mcfg: MixerConfig) -> Frozen:
    from .clip_tokens import ClipTokenEncoder, TinyClipTokens

    if cfg.base.clip_vision:
        clip = ClipTokenEncoder(cfg.base.clip_vision)
    elif cfg.base.kind == "tiny":
        clip = TinyClipTokens(mcfg.clip_tokens, mcfg.clip_dim, cfg.base.seed)
    else:
        clip = None  # the shards must carry clip.npy; checked on the first batch
    face_model = lightning = None
    if cfg.id_loss.mode != "none":
        from .face_recognition import load_face_model

        if not cfg.id_loss.face_model and cfg.id_loss.face_model_arch != "tiny":
            raise ValueError("id_loss.face_model must name a torch ArcFace (iresnet) safetensors file; "
                             "see training/README.md")
        face_model = load_face_model(cfg.id_loss.face_model, cfg.id_loss.face_model_arch)
    if cfg.id_loss.mode == "lightning":
        lightning = InjectedUNet(load_lightning_unet(cfg.id_loss.lightning_unet), ffrnet)
    elif cfg.id_loss.mode not in ("none", "x0"):
        raise ValueError(f"id_loss.mode must be none, x0 or lightning, not {cfg.id_loss.mode!r}")
    teacher, teacher_key = load_teacher(cfg, base.unet_config, mcfg) if cfg.distill.weight > 0 else (None, "")
    return Frozen(base, InjectedUNet(base.model, ffrnet), clip, face_model, lightning, load_face_gate(cfg),
                  teacher, teacher_key)


def load_face_gate(cfg: Config):
    gate = cfg.id_loss.face_gate
    if gate == "none" or cfg.id_loss.mode == "none":
        return None
    if gate not in ("dlib", "insightface"):
        raise ValueError(f"id_loss.face_gate must be none, dlib or insightface, not {gate!r}")
    from ..models.face_analysis import load_analyzer

    provider = "CUDA" if torch.cuda.is_available() else "CPU"
    root = cfg.id_loss.face_gate_root or None
    return (load_analyzer(gate, insightface_root=root, provider=provider) if gate == "insightface"
            else load_analyzer(gate))


def load_lightning_unet(path: str):
    """An SDXL-Lightning UNet (e.g. sdxl_lightning_4step_unet.safetensors), loaded by ComfyUI, frozen."""
    import comfy.model_base
    import comfy.sd

    from ..models.errors import ModelFileError

    if not path:
        raise ModelFileError("id_loss.mode is lightning but id_loss.lightning_unet is empty",
                             "download an SDXL-Lightning UNet yourself and set its path, or use id_loss.mode: x0")
    patcher = comfy.sd.load_diffusion_model(path)
    if not isinstance(patcher.model, comfy.model_base.SDXL):
        raise ModelFileError(f"{path} is not an SDXL UNet", "use an SDXL-Lightning UNet checkpoint")
    return patcher.model.requires_grad_(False).eval()


class Trainer:
    def __init__(self, cfg: Config):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        self.cfg = cfg
        t = cfg.train
        out = pathlib.Path(t.output_dir)
        self.accelerator = Accelerator(
            mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.gradient_accumulation_steps,
            log_with="tensorboard",
            project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        )
        torch.manual_seed(t.seed + self.accelerator.process_index)
        check_warm_start_config(cfg)
        # The base is loaded (and rejected if it is not SDXL) before any data, optimizer or output is touched.
        self.base = load_base(cfg.base.kind, cfg.base.path, cfg.base.seed)
        self.mixer, self.ffrnet = build_trainable(cfg, self.base)
        self.frozen = build_frozen(cfg, self.base, self.ffrnet, self.mixer.config)
        if t.gradient_checkpointing:
            for module in (self.base.model.diffusion_model, self.ffrnet,
                           self.frozen.lightning and self.frozen.lightning.unet):
                if module is not None:
                    enable_gradient_checkpointing(module)
        self.model = FaceSnapTrainingModel(self.mixer, self.ffrnet)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        warmup = max(1, t.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        if self.accelerator.state.deepspeed_plugin is not None:
            fill_deepspeed_config(self.accelerator.state.deepspeed_plugin, cfg,
                                  self.accelerator.gradient_accumulation_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(self.model, self.optimizer,
                                                                              self.scheduler)
        # after prepare: under FSDP each process averages its own parameter shards
        self.ema = EMA(self.accelerator.unwrap_model(self.model), t.ema_decay) if t.ema_decay > 0 else None
        self.device = self.accelerator.device
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(t.mixed_precision, torch.float32)
        self.base.model.to(self.device, weight_dtype)
        self.base.codec.to(self.device, weight_dtype)
        if self.frozen.lightning is not None:
            self.frozen.lightning.unet.to(self.device, weight_dtype)
        if isinstance(self.frozen.clip, torch.nn.Module):
            self.frozen.clip.to(self.device)
        if self.frozen.face_model is not None:
            self.frozen.face_model.to(self.device)
        if self.frozen.teacher is not None:
            self.frozen.teacher.to(self.device)
        self.alphas = self.base.alphas_cumprod().to(self.device)
        self.step = 0
        self.micro_step = 0

    # ------------------------------------------------------------------ data
    def _loader(self):
        from .data import ShardDataset, make_loader

        d = self.cfg.data
        dataset = ShardDataset(d.shards, d.resolution, d.reference, self.cfg.train.seed)
        return make_loader(dataset, d.batch_size, self.cfg.train.seed, self.accelerator.num_processes,
                           self.accelerator.process_index, self.micro_step, d.num_workers)

    def _features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """ArcFace + CLIP features of the references, with Diff-PC's 5 % feature dropout (each zeroed separately)."""
        ids = batch["arcface"].to(self.device)
        if "clip" in batch:
            clip = batch["clip"].to(self.device)
        elif self.frozen.clip is not None:
            clip = self.frozen.clip.encode_batch(batch["ref_face"].to(self.device)).to(self.device)
        else:
            raise ValueError("the shards carry no clip.npy and base.clip_vision is empty: set base.clip_vision "
                             "(CLIP-ViT-H/14) or re-run prepare with --clip-vision")
        p = self.cfg.train.feature_dropout
        b = ids.shape[0]
        keep_id = (torch.rand(b, device=self.device) >= p) & batch["has_arcface"].to(self.device)
        keep_clip = torch.rand(b, device=self.device) >= p
        return ids * keep_id[:, None], clip * keep_clip[:, None, None]

    def _text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        drop = torch.rand(len(captions)) < self.cfg.train.text_dropout  # FaceSnap: 10 % null text
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        context, pooled = self.base.text.encode(captions)
        return context.to(self.device), pooled.to(self.device)

    # ------------------------------------------------------------------ one step
    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        pixels = batch["pixels"].to(self.device)
        b, _, h, w = pixels.shape
        z0 = self.base.codec.encode(pixels).float()
        context, pooled = self._text(batch["caption"])
        y = self.base.adm(pooled, h, w)
        id_embeds, clip_tokens = self._features(batch)
        t = torch.randint(0, len(self.alphas), (b,), device=self.device)
        noise = torch.randn_like(z0)
        a = self.alphas[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        hint = batch["control"].to(self.device)
        with self.accelerator.autocast():
            eps, f_mix = self.model(self.frozen.unet, z_t, t.float(), context, y, hint, id_embeds, clip_tokens,
                                    return_f_mix=True)
        mask = latent_mask(batch["mask"].to(self.device), z0.shape[-2:]) if cfg.train.masked_loss else None
        loss_diff = masked_diffusion_loss(eps, noise, mask)
        logs = {"loss/diffusion": loss_diff.detach()}
        loss = loss_diff
        if self.frozen.face_model is not None and self.step % max(1, cfg.id_loss.every) == 0:
            l_id = self._id_loss(batch, z_t, t, eps, (context, y, hint, id_embeds, clip_tokens))
            if l_id is not None:
                loss = loss + cfg.id_loss.weight * l_id
                logs["loss/id"] = l_id.detach()
                if self.frozen.face_gate is not None:
                    logs["id/face_detected"] = torch.tensor(self._last_face_rate)
        weight = distill_weight(cfg.distill, self.step)
        if self.frozen.teacher is not None and weight > 0:
            l_distill = self._distill_loss(batch, id_embeds, f_mix)
            if l_distill is not None:
                loss = loss + weight * l_distill
                logs["loss/distill"] = l_distill.detach()
                logs["distill/weight"] = torch.tensor(weight)
        logs["loss/total"] = loss.detach()
        return loss, logs

    def _distill_loss(self, batch, id_embeds, f_mix) -> torch.Tensor | None:
        """Mean distance of f_mix to the Resampler tokens over the samples whose ArcFace reached the mixer (the
        feature dropout zeroes it in the others, where f_mix carries no identity to compare)."""
        raw = raw_arcface(batch, self.device)
        keep = id_embeds.ne(0).any(dim=-1)
        if not keep.any():
            return None
        with torch.no_grad():
            target = self.frozen.teacher(raw[keep])
        return distillation_loss(f_mix[keep], target).mean()

    def _id_loss(self, batch, z_t, t, eps, cond) -> torch.Tensor | None:
        c = self.cfg.id_loss
        if c.mode == "x0":
            keep = (t <= c.max_timestep) & batch["has_arcface"].to(self.device)
            if not keep.any():
                return None
            z0_hat = predicted_x0(z_t[keep], eps[keep].float(), self.alphas[t[keep]])  # Diff-PC Eq. 19
        else:
            keep = batch["has_arcface"].to(self.device)
            if not keep.any():
                return None
            z0_hat = self._lightning_sample(z_t.shape, [x[keep] for x in cond])
        images = self.base.codec.decode(z0_hat)
        ref = batch["ref_face"].to(self.device)[keep] * 2 - 1
        kps = batch["kps5"].to(self.device)[keep]  # the target's face: where the landmark hint puts the face
        gate = None
        if self.frozen.face_gate is not None:  # Diff-PC Eq. 20: M_det, and the largest detected face
            gate, detected = detection_gate(self.frozen.face_gate, images)
            kps = torch.where(gate.bool().view(-1, 1, 1), detected, kps)
            self._last_face_rate = float(gate.mean())
        per_sample = id_loss(self.frozen.face_model, images.float(), kps, ref,
                             batch["ref_face_kps5"].to(self.device)[keep])
        return per_sample.mean() if gate is None else (gate * per_sample).mean()

    def _lightning_sample(self, shape, cond) -> torch.Tensor:
        """FaceSnap's lightning branch: a few DDIM steps from pure noise; gradients flow through the last step."""
        context, y, hint, id_embeds, clip_tokens = cond
        steps = self.cfg.id_loss.lightning_steps
        n = len(self.alphas)
        times = [n - 1 - k * (n // steps) for k in range(steps)]  # SDXL-Lightning's "trailing" spacing
        z = torch.randn((context.shape[0], *shape[1:]), device=self.device)
        for k, tk in enumerate(times):
            last = k == steps - 1
            t = torch.full((z.shape[0],), float(tk), device=self.device)
            with torch.set_grad_enabled(last), self.accelerator.autocast():
                eps = self.model(self.frozen.lightning, z, t, context, y, hint, id_embeds, clip_tokens).float()
            x0 = predicted_x0(z, eps, self.alphas[tk].expand(z.shape[0]))
            if last:
                return x0
            a_next = self.alphas[times[k + 1]]
            z = (a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps).detach()
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ loop
    def train(self, stop_after: int | None = None) -> list[float]:
        """Run to ``train.max_steps`` (or ``stop_after`` more steps); returns the per-step total losses."""
        from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint

        t = self.cfg.train
        acc = self.accelerator
        resume = latest_checkpoint(t.output_dir)
        if resume is not None:
            state = load_checkpoint(acc, resume, self.model, self.optimizer, self.scheduler, self.ema)
            self.step, self.micro_step = state["step"], state["micro_step"]
            self._check_same_teacher(state.get("distill_teacher", ""), resume)
            log.info("resumed from %s at step %d", resume, self.step)
        if acc.is_main_process:
            acc.init_trackers("facesnap", config=_flat_hparams(self.cfg))
        loader = iter(self._loader())
        losses = []
        end = t.max_steps if stop_after is None else min(t.max_steps, self.step + stop_after)
        self.model.train()
        while self.step < end:
            accumulated = 0.0
            for _ in range(t.gradient_accumulation_steps):
                batch = next(loader)
                self.micro_step += 1
                with acc.accumulate(self.model):
                    loss, logs = self.compute_loss(batch)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step}")
                    acc.backward(loss)
                    if acc.sync_gradients and t.max_grad_norm > 0:
                        acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                accumulated += loss.item() / t.gradient_accumulation_steps
            self.step += 1
            if self.ema is not None:
                self.ema.update(acc.unwrap_model(self.model))
            losses.append(accumulated)
            if self.step % max(1, t.log_every) == 0 or self.step == end:
                acc.log({k: float(v) for k, v in logs.items()} | {"lr": self.scheduler.get_last_lr()[0]},
                        step=self.step)
            if t.sample_every and self.step % t.sample_every == 0:
                self.log_samples(batch)
            if self.step % t.checkpoint_every == 0 or self.step == end:
                save_checkpoint(acc, t.output_dir, self.step, self.model, self.optimizer, self.scheduler, self.ema,
                                {"micro_step": self.micro_step, "config": self.cfg.to_dict(),
                                 "model_configs": self.model_configs(), "distill_teacher": self.frozen.teacher_key},
                                t.keep_checkpoints)
        acc.end_training()
        return losses

    def _check_same_teacher(self, saved: str, checkpoint) -> None:
        """A resumed run distils from the same Resampler weights (a silent swap would change the objective)."""
        if saved and self.frozen.teacher_key and saved != self.frozen.teacher_key:
            raise ValueError(f"{checkpoint} was trained towards another Resampler (weights {saved}, this "
                             f"model.instantid_ip_adapter: {self.frozen.teacher_key}): set the ip-adapter file of "
                             "that run, or start a new train.output_dir")

    def model_configs(self) -> dict:
        return {"mixer": self.mixer.config.to_dict(), "ffrnet": self.ffrnet.config.to_dict()}

    @torch.no_grad()
    def log_samples(self, batch: dict) -> None:
        """TensorBoard grid: photo | landmark hint | one-step x0 prediction at t = 500."""
        if not self.accelerator.is_main_process:
            return
        pixels = batch["pixels"][:4].to(self.device)
        sub = {k: (v[:4] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()}
        z0 = self.base.codec.encode(pixels).float()
        context, pooled = self.base.text.encode(sub["caption"])
        y = self.base.adm(pooled.to(self.device), pixels.shape[-2], pixels.shape[-1])
        ids, clip = self._features(sub)
        t = torch.full((len(pixels),), 500, device=self.device)
        a = self.alphas[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(z0)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        with self.accelerator.autocast():
            eps = self.model(self.frozen.unet, z_t, t.float(), context.to(self.device), y,
                             sub["control"].to(self.device), ids, clip)
        x0 = self.base.codec.decode(predicted_x0(z_t, eps.float(), self.alphas[t]))
        grid = torch.cat([(pixels + 1) / 2, sub["control"].to(self.device), (x0 + 1) / 2], dim=3)  # side by side
        tracker = self.accelerator.get_tracker("tensorboard", unwrap=True)
        tracker.add_images("samples", grid.clamp(0, 1).float().cpu(), self.step)


def _flat_hparams(cfg: Config) -> dict:
    flat = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat


def run(cfg: Config, stop_after: int | None = None) -> list[float]:
    return Trainer(cfg).train(stop_after)

