"""Text-to-image models in the server: a diffusers teacher (``diffusers:PATH``) or a fewstep student of one.

Such a model samples latents; the server encodes each request's prompt with the pipeline's own text
encoders (data/encoded.py ``PromptEncoder``, loaded once per pipeline and shared by every model of it)
and decodes the latents with the pipeline's VAE. The request's negative prompt replaces the empty prompt
as the unconditional branch of CFG, per request, so requests with different prompts still share a batch.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..nets.cond import Cond


class TextPipeline:
    """One diffusers pipeline's text encoders and VAE, for every served model that samples its latents."""

    def __init__(self, pipeline: str | Path, latent_shape: tuple):
        from diffusers import AutoencoderKL

        from ..data.encoded import PromptEncoder
        from ..nets.adapters.diffusers import vae_downsample

        self.pipeline = Path(pipeline)
        self.factor = vae_downsample(self.pipeline)
        self.resolution = int(latent_shape[-1]) * self.factor
        self.encoder = PromptEncoder(self.pipeline, self.resolution)
        self.vae = AutoencoderKL.from_pretrained(self.pipeline / "vae", local_files_only=True).eval().requires_grad_(False)

    def image_shape(self, latent_shape: tuple) -> tuple:
        return (3, latent_shape[1] * self.factor, latent_shape[2] * self.factor)

    @torch.no_grad()
    def cond(self, prompt: str, negative: str | None, n: int) -> Cond:
        """``n`` copies of the prompt's condition, with the negative prompt (or the pipeline's null) as the
        unconditional branch."""
        p = self.encoder([prompt])
        null = self.encoder.null() if negative is None else dict(zip(self.encoder.keys, self.encoder.run([negative])))
        rep = lambda v: None if v is None else v.expand(n, *v.shape[1:]).contiguous()  # noqa: E731
        extra = {"time_ids": rep(p["time_ids"])} if "time_ids" in p else {}
        return Cond(text=rep(p["text"]), pooled=rep(p.get("pooled")), extra=extra, null_text=rep(null["text"]),
                    null_pooled=rep(null.get("pooled")))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from latents, undoing the scaling the pipeline's VAE config names."""
        c = self.vae.config
        z = latents / c.scaling_factor + (c.get("shift_factor") or 0.0)
        return self.vae.decode(z.to(self.vae.dtype)).sample.float().clamp(-1, 1)


def diffusers_teacher_config(den, info: dict) -> tuple[dict, tuple]:
    """(model config, latent shape) for a ``diffusers:PATH`` teacher, in the form of a model folder's: its
    process and parameterisation (so its LoRA students share its network in the pool), Euler sampling
    on the flow grid over 25 steps, and the denoiser's native latent size."""
    from dataclasses import asdict

    from ..samplers.generate import SamplingSpec

    inner = getattr(den.net, "unet", None) or getattr(den.net, "transformer", None)
    c = inner.config
    shape = (int(c.get("in_channels", 4)), int(c.get("sample_size", 64)), int(c.get("sample_size", 64)))
    if type(den.net).__name__ == "DiffusersFlux":  # packed 2x2 patches: the latent has a quarter of the channels
        shape = (shape[0] // 4, *shape[1:])
    cfg = {"process": den.process.config(), "param": den.param, "sigma_data": den.sigma_data, "boundary": None,
           "diffusers": info, "data": {"shape": list(shape), "num_classes": 0},
           "sampling": asdict(SamplingSpec(sampler="euler", steps=25, grid="flow"))}
    return cfg, shape
