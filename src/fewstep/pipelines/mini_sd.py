"""A miniature Stable Diffusion trained on the embedded MNIST digits, in diffusers' own format.

Same classes and the same data flow as SD 1.x (``StableDiffusionPipeline`` loads the folder):
an ``AutoencoderKL`` (32x32 RGB digits <-> 4x8x8 latents), a ``CLIPTextModel`` with a ``CLIPTokenizer``,
a ``UNet2DConditionModel`` with cross-attention on the text encoder's last hidden state, and SD's
DDPM noise schedule (scaled-linear betas 0.00085 -> 0.012, 1,000 steps, epsilon prediction).

Three stages, each cached in the output folder (a finished stage is not retrained):
1. ``vae``: reconstruction (MSE) plus a small KL term; afterwards ``scaling_factor`` = 1 / std of the
   training latents, as SD chose its 0.18215.
2. ``text``: the text encoder, pretrained CLIP-style against images (Radford et al. 2021): captions of
   the training digits (data/captions.py) against the shipped MNIST classifier's features through a
   learned projection. The contrastive targets treat every image a caption describes as a positive (same
   digit, and the same stroke width when the caption states one). No pretrained text encoder installs
   offline from a package with its weights, so the project trains this one (docs/decisions.md).
3. ``unet``: fewstep's own teacher training (methods/teacher.py, the generic trainer: resumable,
   EMA 0.999) on the VAE's latents with captions encoded by the assembled pipeline's text encoder exactly as
   the pipeline encodes prompts; 10% of captions are dropped to the empty prompt for CFG.

The characters are the tokens (an empty merges list): the captions' alphabet is small, and a character
tokenizer lets prompts with unseen words still tokenize.
"""
from __future__ import annotations

import json
import math
import string
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.captions import PAD, RESOLUTION
from ..data.encoded import vae_latents
from ..io import atomic_dir, write_json

MAX_TOKENS = 48  # the tokenizer's model_max_length (SD: 77)
ALPHABET = string.ascii_lowercase + string.digits + ",.'-!?"

VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=RESOLUTION, layers_per_block=1,
                  block_out_channels=(32, 64, 64), norm_num_groups=32,
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
TEXT_CONFIG = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                   max_position_embeddings=MAX_TOKENS, projection_dim=64)
# ~1.1 M parameters, the shipped pixel-space MNIST teacher's size (a 4.5 MB checkpoint).
UNET_CONFIG = dict(sample_size=RESOLUTION // 4, in_channels=4, out_channels=4, layers_per_block=2,
                   block_out_channels=(32, 64), norm_num_groups=16, cross_attention_dim=TEXT_CONFIG["hidden_size"],
                   attention_head_dim=8,
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
# SD 1.x's training schedule; the shipped sampling scheduler is DDIM on the same betas.
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


# -- images: MNIST <-> the pipeline's 32x32 RGB ---------------------------------------------------
def to_mnist_images(x: torch.Tensor) -> torch.Tensor:
    """The pipeline's (N, 3, 32, 32) images in [-1, 1] -> (N, 1, 28, 28): channel mean, centre crop, the
    shipped classifier's input."""
    side = x.shape[-1]
    if side != RESOLUTION:
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True, align_corners=False)
    return x.float().mean(1, keepdim=True)[..., PAD:RESOLUTION - PAD, PAD:RESOLUTION - PAD].clamp(-1, 1)


# -- components --------------------------------------------------------------------------------
def build_tokenizer():
    """A CLIP tokenizer whose tokens are characters (vocab: the alphabet, each also as a word end)."""
    import tempfile

    from transformers import CLIPTokenizer

    vocab = {c: i for i, c in enumerate(ALPHABET)}
    vocab.update({c + "</w>": len(ALPHABET) + i for i, c in enumerate(ALPHABET)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    with tempfile.TemporaryDirectory() as d:
        write_json(vocab, Path(d) / "vocab.json")
        (Path(d) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(Path(d) / "vocab.json"), str(Path(d) / "merges.txt"), model_max_length=MAX_TOKENS,
                             pad_token="<|endoftext|>")


def build_text_encoder(tok):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **TEXT_CONFIG)
    return CLIPTextModel(cfg)


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def scheduler_config(cls: str = "DDIMScheduler") -> dict:
    return {"_class_name": cls, **SCHEDULE}


def _tokens(tok, texts: list[str]) -> torch.Tensor:
    return tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, dynamic_ncols=True)


# -- stage 1: the autoencoder ------------------------------------------------------------------
def train_vae(x: torch.Tensor, iters: int = 1500, batch_size: int = 64, lr: float = 1e-3, kl_weight: float = 1e-4,
              seed: int = 0, progress: bool = True):
    """``x``: (N, 3, 32, 32) in [-1, 1]. Loss = MSE(decode(z), x) + kl_weight * KL per latent element, z drawn
    from the posterior (Kingma & Welling 2014; SD's VAE adds LPIPS and a patch GAN, which digits do not need).
    Returns the VAE with ``scaling_factor`` set and the loss log."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vae = build_vae().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i / iters, 1.0))))
    log = []
    for it in _progress(range(iters), progress, "vae"):
        xb = x[torch.randint(len(x), (batch_size,), generator=g)]
        post = vae.encode(xb).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        kl = post.kl().mean() / post.mean[0].numel()
        loss = F.mse_loss(rec, xb) + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if it % 100 == 0 or it == iters - 1:
            log.append({"it": it, "loss": float(loss.detach()), "kl": float(kl.detach())})
    vae.eval().requires_grad_(False)
    z = vae_latents(vae, x[:1000], batch=250, scaled=False)
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae, log


@torch.no_grad()
def decode(vae, z: torch.Tensor, batch: int = 250) -> torch.Tensor:
    """Latents (scaled, as the UNet sees them) -> images in [-1, 1]."""
    return torch.cat([vae.decode(z[i:i + batch] / vae.config.scaling_factor).sample for i in range(0, len(z), batch)]).clamp(-1, 1)


@torch.no_grad()
def vae_report(vae, x: torch.Tensor, labels: torch.Tensor, classifier: nn.Module) -> dict:
    """Reconstruction quality on held-out digits: PSNR (images in [0, 1]) and the classifier's accuracy on
    the reconstructions (against the originals')."""
    rec = decode(vae, vae_latents(vae, x, batch=250))
    mse = F.mse_loss((rec + 1) / 2, (x + 1) / 2, reduction="none").flatten(1).mean(1)
    acc = lambda imgs: float((classifier(to_mnist_images(imgs)).argmax(1) == labels).float().mean())  # noqa: E731
    return {"psnr_db": float((-10 * torch.log10(mse.clamp_min(1e-10))).mean()), "class_acc_recon": acc(rec),
            "class_acc_original": acc(x)}


# -- stage 2: the text encoder ------------------------------------------------------------------
class _ContrastiveHeads(nn.Module):
    """CLIP's two projections and temperature (Radford et al. 2021, Fig. 3); only the text tower ships."""

    def __init__(self, text_dim: int, image_dim: int, dim: int = 64):
        super().__init__()
        self.text = nn.Linear(text_dim, dim, bias=False)
        self.image = nn.Sequential(nn.Linear(image_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


def _positives(labels: torch.Tensor, bins: torch.Tensor, stated: torch.Tensor) -> torch.Tensor:
    """positives[a, b]: caption a describes image b (same digit; the same stroke third if a states one)."""
    same = labels[:, None] == labels[None, :]
    strokes_ok = (stated[:, None] < 0) | (stated[:, None] == bins[None, :])
    return (same & strokes_ok).float()


def contrastive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with several positives per row: cross-entropy against the uniform distribution
    over each caption's matching images, and over each image's matching captions."""
    t2i = -(F.log_softmax(logits, 1) * positives / positives.sum(1, keepdim=True)).sum(1).mean()
    i2t = -(F.log_softmax(logits, 0) * positives / positives.sum(0, keepdim=True)).sum(0).mean()
    return (t2i + i2t) / 2


def train_text_encoder(tok, image_features: torch.Tensor, labels: torch.Tensor, bins: torch.Tensor, iters: int = 1500,
                       batch_size: int = 256, lr: float = 1e-3, seed: int = 0, progress: bool = True):
    """CLIP-style pretraining of the text encoder on training captions (TRAIN_PHRASINGS) against the
    classifier's features of the images they describe. Returns (text encoder, loss log)."""
    from ..data.captions import captions_for

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = build_text_encoder(tok).train()
    heads = _ContrastiveHeads(enc.config.hidden_size, image_features.shape[1], TEXT_CONFIG["projection_dim"])
    params = list(enc.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, iters // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i / iters, 1.0))))
    log = []
    for it in _progress(range(iters), progress, "text encoder"):
        idx = torch.randint(len(labels), (batch_size,), generator=g)
        texts, stated = captions_for(labels[idx], bins[idx], g)
        t = F.normalize(heads.text(enc(_tokens(tok, texts)).pooler_output), dim=-1)
        i = F.normalize(heads.image(image_features[idx]), dim=-1)
        logits = heads.log_scale.clamp(max=math.log(100)).exp() * t @ i.T
        loss = contrastive_loss(logits, _positives(labels[idx], bins[idx], stated))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if it % 100 == 0 or it == iters - 1:
            log.append({"it": it, "loss": float(loss.detach())})
    enc.eval().requires_grad_(False)
    return enc, heads.eval(), log


@torch.no_grad()
def zero_shot_accuracy(tok, enc, heads, image_features: torch.Tensor, labels: torch.Tensor, phrasings) -> float:
    """CLIP's zero-shot test: classify images by the nearest digit prompt (mean over ``phrasings``)."""
    from ..data.captions import caption

    protos = []
    for d in range(10):
        t = heads.text(enc(_tokens(tok, [caption(d, p) for p in phrasings])).pooler_output)
        protos.append(F.normalize(F.normalize(t, dim=-1).mean(0), dim=-1))
    i = F.normalize(heads.image(image_features), dim=-1)
    return float(((i @ torch.stack(protos).T).argmax(1) == labels).float().mean())


# -- assembling the diffusers folder -----------------------------------------------------------
def save_pipeline(folder: Path, vae, tok, text_encoder, unet, info: dict | None = None) -> Path:
    """Write a complete ``StableDiffusionPipeline`` folder atomically (no safety checker: digits)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    sched = DDIMScheduler.from_config(scheduler_config())
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    def write(tmp: Path):
        pipe.save_pretrained(tmp, safe_serialization=True)
        if info is not None:
            write_json(info, tmp / "fewstep_training.json")

    return atomic_dir(Path(folder), write)


def read_info(folder: Path) -> dict:
    p = Path(folder) / "fewstep_training.json"
    return json.loads(p.read_text()) if p.is_file() else {}


# -- measuring a text-to-image model on MNIST ---------------------------------------------------
class TextEvaluator:
    """FD, precision/recall and prompt adherence of a latent text-to-image denoiser (teacher or student):
    ``n`` prompts naming balanced digits, half in held-out phrasings and half in the training ones
    (data/captions.py ``evaluation_prompts``), encoded as the pipeline encodes them, sampled with ``spec``,
    decoded by the pipeline's VAE and measured in the shipped classifier's features against the held-out
    MNIST digits. Prompt adherence = the classifier's accuracy against the prompted digit: ``prompt_acc``
    over all prompts, ``prompt_acc_held_out`` and ``prompt_acc_train_phrasings`` per half (wording the text
    encoder and UNet never saw, and wording they trained on). Usable as the trainer's periodic evaluator."""

    def __init__(self, pipeline: Path, n: int = 500, seed: int = 0, spec=None):
        from ..data.captions import evaluation_prompts
        from ..data.embedded import mnist
        from ..data.encoded import encode_prompts
        from ..metrics.features import load_features
        from ..nets.cond import Cond

        self.pipeline, self.seed, self.spec = Path(pipeline), seed, spec
        self.vae = load_vae(self.pipeline)
        self.features = load_features("mnist")
        test = mnist("test")
        self.ref = test.x
        self.reference = (test.x, test.labels)  # what the collapse monitor compares samples with
        self.ref_feats = self.features.features(test.x)
        self.labels = test.class_balanced_labels(n)
        self.prompts, self.held_out = evaluation_prompts(self.labels.tolist())
        enc = encode_prompts(self.pipeline, self.prompts)
        self.cond = Cond(text=enc["text"], null_text=enc["null_text"])
        side = RESOLUTION // 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.shape = (self.vae.config.latent_channels, side, side)

    def images(self, den, spec, seed: int | None = None) -> torch.Tensor:
        """The prompts' samples as MNIST images (N, 1, 28, 28)."""
        from ..samplers.generate import generate

        z = generate(den, len(self.labels), spec, self.shape, self.cond, seed=self.seed if seed is None else seed)
        return to_mnist_images(decode(self.vae, z))

    def __call__(self, den, it=None) -> dict:
        return self.measure(den, self.spec)

    def measure(self, den, spec, seed: int | None = None) -> dict:
        return self.measure_images(self.images(den, spec, seed))

    def measure_images(self, images: torch.Tensor) -> dict:
        """The metrics of samples (N, 1, 28, 28) drawn for ``self.prompts`` in order."""
        from ..metrics.evaluate import collapse_signals, measure

        res = measure(images, self.labels, self.ref, self.features, self.ref_feats)
        res["prompt_acc"] = res.pop("class_acc")
        with torch.no_grad():
            right = (self.features(images.clamp(-1, 1)).argmax(1) == self.labels).float()
        res["prompt_acc_held_out"] = right[self.held_out].mean().item()
        res["prompt_acc_train_phrasings"] = right[~self.held_out].mean().item()
        res.update(collapse_signals(images, self.labels))
        return res


def load_vae(folder: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(folder) / "vae", local_files_only=True).eval().requires_grad_(False)
