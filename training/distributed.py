"""What DeepSpeed needs from the training config before ``accelerator.prepare``.

DeepSpeed fixes the per-GPU batch size, the gradient accumulation and the clipping when its engine is built.
accelerate can infer the batch size only from a DataLoader passed to ``prepare()``; this trainer builds its loader
itself (it resumes mid-epoch from the sample position), so without these values ``prepare()`` raises ValueError.
The training config is the one source for them; the accelerate config must leave them out (or agree).
"""

from __future__ import annotations

from .config import Config


def fill_deepspeed_config(plugin, cfg: Config, accelerate_accumulation: int) -> dict:
    """Write ``data.batch_size``, ``train.gradient_accumulation_steps`` and ``train.max_grad_norm`` into the
    DeepSpeed config of ``plugin`` (accelerate's DeepSpeedPlugin). ``accelerate_accumulation`` is the accumulation
    the Accelerator ended up with: an accelerate launch setting overrides the value the trainer passed."""
    t = cfg.train
    if accelerate_accumulation != t.gradient_accumulation_steps:
        raise ValueError(f"the accelerate launch config sets gradient_accumulation_steps={accelerate_accumulation}, "
                         f"the training config train.gradient_accumulation_steps={t.gradient_accumulation_steps}: "
                         "remove it from the accelerate config (the training config sets it)")
    config = plugin.deepspeed_config
    wanted = {"train_micro_batch_size_per_gpu": cfg.data.batch_size,
              "gradient_accumulation_steps": t.gradient_accumulation_steps,
              "gradient_clipping": float(t.max_grad_norm)}
    for key, value in wanted.items():
        current = config.get(key, "auto")
        if current != "auto" and current != value:
            raise ValueError(f"the DeepSpeed config sets {key}={current} but the training config gives {value}: "
                             f"remove {key} from the DeepSpeed / accelerate config (the training config sets it)")
        config[key] = value
    return config  # train_batch_size stays "auto": accelerate fills it as micro batch x accumulation x processes
