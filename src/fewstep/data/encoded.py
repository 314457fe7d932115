"""Latent, text-conditioned data for diffusers teachers: images through the pipeline's VAE, prompts
through its text encoder, both cached on disk (safetensors) keyed by content, so a run and its
resumes encode once.

``folder:DIR`` needs ``DIR/metadata.jsonl`` (``file_name``, ``text``); ``prompts:FILE`` is one prompt
per line for data-free methods (the latents are then zeros of the right shape: only the batch size
and the prompts are used).

Prompts are encoded as the pipeline class itself encodes them: ``StableDiffusionPipeline`` with its one
CLIP encoder (last hidden state); ``StableDiffusionXLPipeline`` with both CLIP encoders (penultimate hidden
states concatenated, the second encoder's projected pooled embedding, and the size/crop ``time_ids``);
``StableDiffusion3Pipeline`` with two CLIP encoders and T5 (the CLIP states padded to T5's width and put
before T5's on the sequence axis, both projected pooled outputs concatenated); ``FluxPipeline`` with
CLIP's pooled output and T5's hidden states. Other pipelines with several text encoders are refused in
one line.
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


ENCODERS = {"StableDiffusionXL": "_sdxl_encoder", "StableDiffusion3": "_sd3_encoder", "Flux": "_flux_encoder"}


def _encoder_family(pipeline: Path) -> str | None:
    cls = pipeline_class(pipeline)
    return next((k for k in ENCODERS if cls.startswith(k)), None)


def refuse_unencodable(pipeline: Path) -> None:
    """One clear line for pipelines whose prompt encoding is not built (several text encoders of a class
    not listed in ``ENCODERS``)."""
    if _encoder_family(pipeline) is not None:
        return
    if (Path(pipeline) / "text_encoder_2").is_dir() or (Path(pipeline) / "text_encoder_3").is_dir():
        cls = pipeline_class(pipeline)
        raise ValueError(f"{pipeline}: prompt encoding for {cls or 'this pipeline'} (several text encoders) is not built; "
                         "fewstep encodes prompts for the StableDiffusion, StableDiffusionXL, StableDiffusion3 and Flux pipelines")


def _batched(run, prompts: list[str], batch: int):
    outs = [run(prompts[i:i + batch]) for i in range(0, len(prompts), batch)]
    return tuple(torch.cat(parts) for parts in zip(*outs))


class PromptEncoder:
    """A pipeline's text encoders, loaded once: ``encoder(prompts)`` gives the dict ``encode_prompts`` does
    (training caches it; a server encodes each request's prompt with the same object). ``keys`` names what
    one prompt gives: ``text`` and, for SDXL / SD3 / Flux, ``pooled``."""

    def __init__(self, pipeline: Path | str, resolution: int | None = None):
        self.pipeline = Path(pipeline)
        refuse_unencodable(self.pipeline)
        family = _encoder_family(self.pipeline)
        build = globals()[ENCODERS[family]] if family is not None else _sd_encoder
        self.run, self.keys, self._null_fn, self.extra = build(self.pipeline, resolution)
        self._null = None

    @torch.no_grad()
    def __call__(self, prompts: list[str], batch: int = 64) -> dict:
        out = dict(zip(self.keys, _batched(self.run, list(prompts), batch)))
        out.update({f"null_{k}": v for k, v in self.null().items()})
        return {**out, **self.extra}

    @torch.no_grad()
    def null(self) -> dict:
        """The null condition's embeddings, (1, ...) per key (CFG's unconditional branch)."""
        if self._null is None:
            self._null = dict(zip(self.keys, self._null_fn()))
        return self._null


def encode_prompts(pipeline: Path, prompts: list[str], batch: int = 64, resolution: int | None = None) -> dict:
    """The prompts' embeddings as the pipeline class computes them: ``text`` (N, L, D) and ``null_text``
    (1, L, D), the empty prompt's; for SDXL, SD3 and Flux also ``pooled`` (N, P) and ``null_pooled`` (1, P),
    and for SDXL ``time_ids`` (1, 6) for a ``resolution`` x ``resolution`` image."""
    return PromptEncoder(pipeline, resolution)(prompts, batch)


def _sd_encoder(pipeline: Path, resolution: int | None = None):
    """StableDiffusionPipeline.encode_prompt: the CLIP encoder's last hidden state, max-length padding; the
    null prompt is the empty prompt encoded. Returns (run, keys, null, extra), as every builder here."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(pipeline / "tokenizer", local_files_only=True)
    enc = CLIPTextModel.from_pretrained(pipeline / "text_encoder", local_files_only=True).eval()

    def run(texts):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return (enc(ids)[0],)

    return run, ("text",), lambda: run([""]), {}


def _sdxl_encoder(pipeline: Path, resolution: int | None):
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

    force_zeros = model_index(pipeline).get("force_zeros_for_empty_prompt", True)

    def null():
        text, pooled = run([""])
        return (torch.zeros_like(text), torch.zeros_like(pooled)) if force_zeros else (text, pooled)

    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32)
    return run, ("text", "pooled"), null, {"time_ids": time_ids}


def _t5(pipeline: Path, tok_dir: str, enc_dir: str):
    from transformers import AutoTokenizer, T5EncoderModel

    return (AutoTokenizer.from_pretrained(pipeline / tok_dir, local_files_only=True),
            T5EncoderModel.from_pretrained(pipeline / enc_dir, local_files_only=True).eval())


def _t5_states(tok, enc, texts: list[str], max_length: int) -> torch.Tensor:
    ids = tok(texts, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
              return_tensors="pt").input_ids
    return enc(ids)[0]


def _sd3_encoder(pipeline: Path, resolution: int | None = None, max_sequence_length: int = 256):
    """StableDiffusion3Pipeline.encode_prompt (no clip skip, its default 256 T5 tokens): each CLIP encoder's
    penultimate hidden state, concatenated on the feature axis and zero-padded to T5's width, then T5's
    states after them on the sequence axis (zeros where the pipeline ships no T5); pooled = both CLIP
    encoders' projected outputs concatenated. The null prompt is the empty prompt encoded (SD3 forces no
    zeros)."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    clips = [(CLIPTokenizer.from_pretrained(pipeline / t, local_files_only=True),
              CLIPTextModelWithProjection.from_pretrained(pipeline / e, local_files_only=True).eval())
             for t, e in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))]
    t5 = _t5(pipeline, "tokenizer_3", "text_encoder_3") if (pipeline / "text_encoder_3").is_dir() else None
    width = json.loads((pipeline / "transformer" / "config.json").read_text())["joint_attention_dim"]
    max_clip = clips[0][0].model_max_length  # the pipeline's tokenizer_max_length, for both CLIP encoders

    def run(texts):
        hidden, pooled = [], []
        for tok, enc in clips:
            ids = tok(texts, padding="max_length", max_length=max_clip, truncation=True, return_tensors="pt").input_ids
            out = enc(ids, output_hidden_states=True)
            pooled.append(out[0])
            hidden.append(out.hidden_states[-2])
        t5_states = (_t5_states(*t5, texts, max_sequence_length) if t5 is not None
                     else torch.zeros(len(texts), max_sequence_length, width))
        clip = torch.cat(hidden, dim=-1)
        clip = torch.nn.functional.pad(clip, (0, t5_states.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5_states], dim=-2), torch.cat(pooled, dim=-1)

    return run, ("text", "pooled"), lambda: run([""]), {}


def _flux_encoder(pipeline: Path, resolution: int | None = None, max_sequence_length: int = 512):
    """FluxPipeline.encode_prompt (its default 512 T5 tokens): T5's hidden states are the text, CLIP's pooled
    output the pooled embedding. The null prompt (true CFG's negative) is the empty prompt encoded."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(pipeline / "tokenizer", local_files_only=True)
    clip = CLIPTextModel.from_pretrained(pipeline / "text_encoder", local_files_only=True).eval()
    t5 = _t5(pipeline, "tokenizer_2", "text_encoder_2")

    def run(texts):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        return _t5_states(*t5, texts, max_sequence_length), clip(ids, output_hidden_states=False).pooler_output

    return run, ("text", "pooled"), lambda: run([""]), {}


@torch.no_grad()
def vae_latents(vae, x: torch.Tensor, batch: int = 16, scaled: bool = True) -> torch.Tensor:
    """Latents = an ``AutoencoderKL``'s posterior mean, shifted and scaled as its config says (``scaled``
    False: raw, as when choosing the scaling factor)."""
    sf, shift = (vae.config.scaling_factor, vae.config.get("shift_factor") or 0.0) if scaled else (1.0, 0.0)
    return torch.cat([(vae.encode(x[i:i + batch]).latent_dist.mean - shift) * sf for i in range(0, len(x), batch)])


def encode_images(pipeline: Path, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Latents of images through the pipeline's own VAE (``vae_latents``)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(Path(pipeline) / "vae", local_files_only=True).eval()
    return vae_latents(vae, x, batch)


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
    elif data == "mnist-captions":  # the embedded digits with captions (data/captions.py), as the mini SD trained
        from .captions import mnist_captions

        src = mnist_captions(resolution)
        captions, x = src.captions, None
    elif data.startswith("folder:"):
        from .folder import folder

        ds = folder(data.split(":", 1)[1], "train", resolution, 3)
        if ds.captions is None:
            raise ValueError(f"{data} needs a metadata.jsonl with file_name and text for a text-to-image teacher")
        captions, x, src = ds.captions, None, ds
    else:
        raise ValueError("a diffusers teacher needs --data folder:DIR (with metadata.jsonl), prompts:FILE or mnist-captions, "
                         f"got {data!r}")
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
