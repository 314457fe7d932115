"""Latent, text-conditioned data for diffusers teachers: images through the pipeline's VAE, prompts
through its text encoder, both cached on disk (safetensors) keyed by content, so a run and its
resumes encode once.

``folder:DIR`` needs ``DIR/metadata.jsonl`` (``file_name``, ``text``); ``prompts:FILE`` is one prompt
per line for data-free methods (the latents are then zeros of the right shape: only the batch size
and the prompts are used).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..io import load_tensors, save_tensors_atomic
from ..nets.cond import Cond
from .base import ArrayDataset


class EncodedDataset(ArrayDataset):
    """Latents ``x`` with per-item prompt embeddings; ``batch`` hands methods a ``Cond``."""

    def __init__(self, name, x, text, null_text, captions):
        super().__init__(name, x, None, 0, captions, {})
        self.text, self.null_text = text, null_text

    def batch(self, idx):
        return {"x": self.x[idx], "cond": Cond(text=self.text[idx], null_text=self.null_text)}

    def subset(self, n):
        return self if n >= len(self) else EncodedDataset(self.name, self.x[:n], self.text[:n], self.null_text,
                                                          self.captions[:n])


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@torch.no_grad()
def encode_prompts(pipeline: Path, prompts: list[str], batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (N, L, D), empty-prompt embedding (1, L, D)) from the pipeline's CLIP text encoder,
    as StableDiffusionPipeline.encode_prompt computes them (last hidden state, max-length padding)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(pipeline / "tokenizer", local_files_only=True)
    enc = CLIPTextModel.from_pretrained(pipeline / "text_encoder", local_files_only=True).eval()

    def run(texts):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return enc(ids)[0]

    embs = torch.cat([run(prompts[i:i + batch]) for i in range(0, len(prompts), batch)])
    return embs, run([""])


@torch.no_grad()
def encode_images(pipeline: Path, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Latents = VAE posterior mean, shifted and scaled as the pipeline's VAE config says."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(pipeline / "vae", local_files_only=True).eval()
    sf, shift = vae.config.scaling_factor, vae.config.get("shift_factor") or 0.0
    out = [(vae.encode(x[i:i + batch]).latent_dist.mean - shift) * sf for i in range(0, len(x), batch)]
    return torch.cat(out)


def encoded_dataset(pipeline: str | Path, data: str, resolution: int, cache_dir: Path,
                    latent_channels: int = 4, downsample: int = 8) -> EncodedDataset:
    pipeline = Path(pipeline)
    if data.startswith("prompts:"):
        path = Path(data.split(":", 1)[1])
        if not path.is_file():
            raise FileNotFoundError(f"prompts file {path} does not exist")
        captions = [l.strip() for l in path.read_text().splitlines() if l.strip()]
        if not captions:
            raise ValueError(f"{path} holds no prompts")
        x = torch.zeros(len(captions), latent_channels, resolution // downsample, resolution // downsample)
        src = path.read_text()
    elif data.startswith("folder:"):
        from .folder import folder

        ds = folder(data.split(":", 1)[1], "train", resolution, 3)
        if ds.captions is None:
            raise ValueError(f"{data} needs a metadata.jsonl with file_name and text for a text-to-image teacher")
        captions, x, src = ds.captions, None, ds
    else:
        raise ValueError(f"a diffusers teacher needs --data folder:DIR (with metadata.jsonl) or prompts:FILE, got {data!r}")
    key = _key(str(pipeline.resolve()), data, resolution, captions)
    path = Path(cache_dir) / f"encoded-{key}.safetensors"
    if path.is_file():
        t = load_tensors(path)
    else:
        if x is None:
            x = encode_images(pipeline, src.x)
        text, null = encode_prompts(pipeline, captions)
        t = {"x": x.float().contiguous(), "text": text.float().contiguous(), "null_text": null.float().contiguous()}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(t, path)
    ds = EncodedDataset(data, t["x"], t["text"], t["null_text"], captions)
    ds.meta["image_free"] = data.startswith("prompts:")  # zero latents: only the prompts are data
    return ds
