"""NASA, Negative-Away Steer Attention (SNOOPI, Nguyen et al. 2024; docs/methods.md section 6):
negative prompts for one-step text-to-image students, training-free and at no extra network evaluation.

A one-step student has no second (unconditional or negative) pass to subtract, so NASA subtracts inside
every cross-attention layer instead:
    Z = Attn(Q, K+, V+) - alpha Attn(Q, K-, V-)
with K+/V+ from the prompt's token embeddings and K-/V- from the negative prompt's, before the layer's
output projection. alpha ~ 0.19 in the paper (which layers it was applied to is not stated; here: every
cross-attention layer, ``attn2`` in diffusers' UNets).

``apply_nasa(unet, negative, alpha)`` installs the processor on a diffusers UNet (the teacher adapter's
``unet``, or a pipeline's after ``load_lora_weights`` of an exported student); ``remove_nasa`` restores
the previous processors. With alpha = 0 the output is the plain attention's (tested).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class NASAProcessor:
    """A diffusers attention processor for cross-attention layers with a negative context."""

    def __init__(self, negative: torch.Tensor, alpha: float = 0.19):
        if negative.ndim != 3:
            raise ValueError(f"negative prompt embeddings must be (1 or B, tokens, dim), got {tuple(negative.shape)}")
        if alpha < 0:
            raise ValueError(f"NASA's alpha must be >= 0, got {alpha}")
        self.negative, self.alpha = negative, float(alpha)

    def _attend(self, attn, query, context):
        b = query.shape[0]
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        key = key.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None or attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("NASA is for text cross-attention (3-D hidden states, a context, no attention mask)")
        b = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        head_dim = query.shape[-1] // attn.heads
        query = query.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        negative = self.negative.to(device=encoder_hidden_states.device, dtype=encoder_hidden_states.dtype)
        z = self._attend(attn, query, encoder_hidden_states)
        if self.alpha:
            z = z - self.alpha * self._attend(attn, query, negative.expand(b, -1, -1))
        z = z.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](z))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def apply_nasa(unet, negative: torch.Tensor, alpha: float = 0.19) -> dict:
    """Install NASA on every cross-attention layer of a diffusers UNet; returns the previous processors
    (for ``remove_nasa``)."""
    before = dict(unet.attn_processors)
    cross = [name for name in before if name.endswith("attn2.processor")]
    if not cross:
        raise ValueError("this network has no cross-attention layers (attn2): NASA needs a text-conditioned UNet")
    proc = NASAProcessor(negative, alpha)
    unet.set_attn_processor({name: (proc if name in cross else p) for name, p in before.items()})
    return before


def remove_nasa(unet, before: dict) -> None:
    unet.set_attn_processor(before)
