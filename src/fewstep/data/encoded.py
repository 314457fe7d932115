"""Latent, text-conditioned data for diffusers teachers: images through the pipeline's VAE, prompts
through its text encoder, both cached on disk (safetensors) keyed by content, so a run and its
resumes encode once.

``folder:DIR`` needs ``DIR/metadata.jsonl`` (``file_name``, ``text``); ``prompts:FILE`` is one prompt
per line for data-free methods (the latents are then zeros of the right shape: only the batch size
and the prompts are used).

Prompts are encoded as the pipeline class itself encodes them: ``StableDiffusionPipeline`` with its one
CLIP encoder (last hidden state); ``StableDiffusionXLPipeline`` with both CLIP encoders (penultimate hidden
states concatenated, the second encoder's projected pooled embedding, and the size/crop ``time_ids``).
Pipelines whose prompts need T5 (SD3, Flux) are refused in one line until their encoding is built.
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
    """Latents ``x`` with per-item prompt embeddings; ``batch`` hands methods a ``Cond``. ``prompt`` holds
    ``text`` and ``null_text``, and for SDXL also ``pooled``, ``null_pooled`` and ``time_ids`` (one row,
    the same for every item: the training resolution, no crop)."""

    def __init__(self, name, x, prompt: dict, captions):
        super().__init__(name, x, None, 0, captions, {})
        self.prompt = prompt

    def batch(self, idx):
        p = self.prompt
        n = len(self.x[idx])
        pooled = p.get("pooled")
        extra = {"time_ids": p["time_ids"].expand(n, -1)} if "time_ids" in p else {}
        return {"x": self.x[idx], "cond": Cond(text=p["text"][idx], null_text=p["null_text"],
                                               pooled=None if pooled is None else pooled[idx],
                                               null_pooled=p.get("null_pooled"), extra=extra)}

    def subset(self, n):
        if n >= len(self):
            return self
        per_item = {"text", "pooled"}
        return EncodedDataset(self.name, self.x[:n], {k: v[:n] if k in per_item else v for k, v in self.prompt.items()},
                              self.captions[:n])


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def model_index(pipeline: Path) -> dict:
    return json.loads((Path(pipeline) / "model_index.json").read_text())


def pipeline_class(pipeline: Path) -> str:
    return model_index(pipeline).get("_class_name", "")


def refuse_unencodable(pipeline: Path) -> None:
    """One clear line for pipelines whose prompt encoding is not built (SD3's three encoders, Flux's T5)."""
    cls = pipeline_class(pipeline)
    if cls.startswith("StableDiffusionXL"):
        return
    if (Path(pipeline) / "text_encoder_2").is_dir() or (Path(pipeline) / "text_encoder_3").is_dir():
        raise ValueError(f"{pipeline}: prompt encoding for {cls or 'this pipeline'} (several text encoders / T5) is not "
                         "built yet; fewstep encodes prompts for StableDiffusionPipeline and StableDiffusionXLPipeline")


def _batched(run, prompts: list[str], batch: int):
    outs = [run(prompts[i:i + batch]) for i in range(0, len(prompts), batch)]
    return tuple(torch.cat(parts) for parts in zip(*outs))


@torch.no_grad()
def encode_prompts(pipeline: Path, prompts: list[str], batch: int = 64, resolution: int | None = None) -> dict:
    """The prompts' embeddings as the pipeline class computes them: ``text`` (N, L, D) and ``null_text``
    (1, L, D), the empty prompt's; for SDXL also ``pooled`` (N, P), ``null_pooled`` (1, P) and ``time_ids``
    (1, 6) for a ``resolution`` x ``resolution`` image."""
    pipeline = Path(pipeline)
    refuse_unencodable(pipeline)
    if pipeline_class(pipeline).startswith("StableDiffusionXL"):
        return _encode_sdxl(pipeline, prompts, batch, resolution)
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(pipeline / "tokenizer", local_files_only=True)
    enc = CLIPTextModel.from_pretrained(pipeline / "text_encoder", local_files_only=True).eval()

    def run(texts):  # StableDiffusionPipeline.encode_prompt: last hidden state, max-length padding
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return (enc(ids)[0],)

    (text,) = _batched(run, prompts, batch)
    return {"text": text, "null_text": run([""])[0]}


def _encode_sdxl(pipeline: Path, prompts: list[str], batch: int, resolution: int | None) -> dict:
    """StableDiffusionXLPipeline.encode_prompt (no clip skip): each CLIP encoder's penultimate hidden state,
    concatenated on the feature axis; the pooled embedding is the second encoder's projected output. The
    null prompt is zeros where the pipeline forces zeros for an empty negative prompt (its default), else
    the empty prompt encoded. time_ids = (original size, crop top-left, target size) = (R, R, 0, 0, R, R)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if resolution is None:
        raise ValueError("SDXL prompt encoding needs the image resolution (its time_ids)")
    pairs = []
    for tok_dir, enc_dir in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        if not (pipeline / enc_dir).is_dir():
            continue  # SDXL refiners ship only the second encoder
        cls = CLIPTextModelWithProjection if enc_dir == "text_encoder_2" else CLIPTextModel
        pairs.append((CLIPTokenizer.from_pretrained(pipeline / tok_dir, local_files_only=True),
                      cls.from_pretrained(pipeline / enc_dir, local_files_only=True).eval()))

    def run(texts):
        hidden, pooled = [], None
        for tok, enc in pairs:
            ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            out = enc(ids, output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:  # the projection model's text_embeds
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1), pooled

    text, pooled = _batched(run, prompts, batch)
    force_zeros = model_index(pipeline).get("force_zeros_for_empty_prompt", True)
    null_text, null_pooled = (torch.zeros_like(text[:1]), torch.zeros_like(pooled[:1])) if force_zeros else run([""])
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32)
    return {"text": text, "null_text": null_text, "pooled": pooled, "null_pooled": null_pooled, "time_ids": time_ids}


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
    refuse_unencodable(pipeline)  # before any image is encoded
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
        prompt = encode_prompts(pipeline, captions, resolution=resolution or int(src.x.shape[-1]))
        t = {"x": x, **prompt}
        t = {k: v.float().contiguous() for k, v in t.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(t, path)
    ds = EncodedDataset(data, t["x"], {k: v for k, v in t.items() if k != "x"}, captions)
    ds.meta["image_free"] = data.startswith("prompts:")  # zero latents: only the prompts are data
    return ds
