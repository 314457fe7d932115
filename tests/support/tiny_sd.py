"""Tiny randomly initialised Stable Diffusion pipelines of the real diffusers classes, built offline."""
from pathlib import Path

import numpy as np
import torch


def clip_tokenizer(max_length: int = 16):
    """A byte-level CLIP tokenizer built in memory (256 characters, their word-final forms, 2 specials)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def make_sd_pipeline(path: Path, prediction_type: str = "epsilon", seed: int = 0, layers_per_block: int = 1) -> Path:
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=layers_per_block, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=16)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                        num_hidden_layers=2, vocab_size=600, max_position_embeddings=16))
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          num_train_timesteps=1000, prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=clip_tokenizer(), scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


def make_sdxl_pipeline(path: Path, seed: int = 0) -> Path:
    """A tiny StableDiffusionXLPipeline: two CLIP encoders (the second with a projection), a UNet with SDXL's
    added conditioning (pooled text embedding + 6 time ids), the real classes throughout."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    clip = dict(intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, vocab_size=600, max_position_embeddings=16)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, **clip))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, projection_dim=24, **clip))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
                                attention_head_dim=4, norm_num_groups=8, addition_embed_type="text_time",
                                addition_time_embed_dim=8, projection_class_embeddings_input_dim=24 + 6 * 8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=16)
    sched = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text, text_encoder_2=text_2, tokenizer=clip_tokenizer(),
                                     tokenizer_2=clip_tokenizer(), unet=unet, scheduler=sched)
    pipe.save_pretrained(path)
    return path


def make_caption_folder(path: Path, n: int = 6, size: int = 16) -> Path:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        img = (rng.random((size, size, 3)) * 255).astype("uint8")
        Image.fromarray(img).save(path / f"{i}.png")
        lines.append(f'{{"file_name": "{i}.png", "text": "a picture number {i}"}}')
    (path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return path


def t5_tokenizer(max_length: int = 512):
    """A word-level T5-style fast tokenizer built in memory (pad 0, eos 1, unk 2; appends eos as T5 does)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = "a an the picture photo of number digit one two three four five six seven eight nine zero 0 1 2 3 4 5 6 7 8 9"
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(words.split()))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)


def _t5(d_model: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=64, d_model=d_model, d_ff=37, d_kv=8, num_layers=1, num_heads=4,
                                   relative_attention_num_buckets=8))


def _flow_vae(latent_channels: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8, sample_size=16, shift_factor=0.0609, scaling_factor=1.5035)


def make_sd3_pipeline(path: Path, seed: int = 0) -> Path:
    """A tiny StableDiffusion3Pipeline: two CLIP encoders with projections (their penultimate states padded to
    the T5 width and joined with T5's on the sequence axis, their pooled outputs concatenated), a T5
    encoder and an SD3 transformer, the real classes throughout."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    clip = dict(hidden_size=16, intermediate_size=32, num_attention_heads=4, num_hidden_layers=2, vocab_size=600,
                max_position_embeddings=16, projection_dim=16)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                        pooled_projection_dim=32, out_channels=4, pos_embed_max_size=16)
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=_flow_vae(4), text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**clip)),
                                    tokenizer=clip_tokenizer(), text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**clip)),
                                    tokenizer_2=clip_tokenizer(), text_encoder_3=_t5(32), tokenizer_3=t5_tokenizer(256))
    pipe.save_pretrained(path)
    return path


def make_flux_pipeline(path: Path, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """A tiny FluxPipeline: CLIP's pooled output, T5's hidden states, a Flux transformer (2x2-packed latents,
    guidance embedding as in FLUX.1-dev) and a flow scheduler with resolution-dependent (dynamic) shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=16, guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4))
    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=4, num_hidden_layers=2,
                                        vocab_size=600, max_position_embeddings=16, projection_dim=16))
    pipe = FluxPipeline(transformer=transformer, scheduler=sched, vae=_flow_vae(4), text_encoder=text,
                        tokenizer=clip_tokenizer(), text_encoder_2=_t5(32), tokenizer_2=t5_tokenizer(512))
    pipe.save_pretrained(path)
    return path
