"""Diffusers models as fewstep networks (diffusers is imported only when one is used).

A Stable Diffusion folder (``model_index.json`` with ``unet/`` and ``scheduler/``, optionally ``vae/``,
``text_encoder/``, ``tokenizer/``) becomes a Denoiser whose noise process and parameterisation come
from the scheduler config (``process_from_scheduler``), so a method never converts time by hand:
DDPM-family schedulers give ``VPDiscrete`` (native time = SD's timestep index, fed to the UNet as is)
with ``eps`` / ``v`` from ``prediction_type``; flow-matching schedulers give ``RectifiedFlow`` with
``flow`` (the UNet/transformer sees 1000 t, as diffusers passes it).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..cond import Cond

UNET_ARCH = "diffusers_unet"
SD3_ARCH = "diffusers_sd3"
FLUX_ARCH = "diffusers_flux"


def _require_diffusers():
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise ImportError("this model needs diffusers: pip install 'fewstep[diffusers]'") from None


def quiet_hf() -> None:
    """For the CLI: silence transformers' and diffusers' per-load progress bars and info lines (fewstep's own
    progress bars stay)."""
    _require_diffusers()
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for lib in (dlog, tlog):
        lib.disable_progress_bar()
        lib.set_verbosity_error()


def dynamic_shift(cfg: dict, image_seq_len: int) -> float:
    """The static shift a resolution-dependent (``use_dynamic_shifting``) flow scheduler applies at one image
    size: the pipelines' ``calculate_shift`` gives mu linear in the latent token count, and the scheduler's
    exponential time shift e^mu / (e^mu + 1/t - 1) is the static shift s t / (1 + (s - 1) t) with s = e^mu
    (the linear one, mu / (mu + 1/t - 1), the same with s = mu). FLUX.1-dev at 1024 px: 4096 tokens, s = e^1.15."""
    lo, hi = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
    b_shift, m_shift = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
    mu = b_shift + (m_shift - b_shift) * (image_seq_len - lo) / (hi - lo)
    kind = cfg.get("time_shift_type", "exponential")
    if kind not in ("exponential", "linear"):
        raise ValueError(f"unsupported time_shift_type {kind!r}")
    return float(math.exp(mu)) if kind == "exponential" else float(mu)


def process_from_scheduler(cfg: dict, image_seq_len: int | None = None) -> tuple[dict, str]:
    """(fewstep process config, parameterisation) for a diffusers scheduler config; a flow scheduler with
    resolution-dependent shift needs the image's latent token count (``image_seq_len``)."""
    name = cfg.get("_class_name", "")
    if "FlowMatch" in name:
        for key in ("shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas"):
            if cfg.get(key):
                raise ValueError(f"{name} with {key} is not supported")
        if cfg.get("use_dynamic_shifting"):
            if image_seq_len is None:
                raise ValueError(f"{name} shifts its timesteps by resolution (use_dynamic_shifting): the image "
                                 "resolution is needed (--resolution)")
            return {"family": "flow", "shift": dynamic_shift(cfg, image_seq_len)}, "flow"
        return {"family": "flow", "shift": float(cfg.get("shift", 1.0))}, "flow"
    if cfg.get("trained_betas"):
        raise ValueError("schedulers with explicit trained_betas are not supported")
    schedule = {"scaled_linear": "scaled_linear", "linear": "linear", "squaredcos_cap_v2": "cosine"}.get(
        cfg.get("beta_schedule", "linear"))
    if schedule is None:
        raise ValueError(f"unsupported beta_schedule {cfg.get('beta_schedule')!r}")
    pred = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}.get(cfg.get("prediction_type", "epsilon"))
    if pred is None:
        raise ValueError(f"unsupported prediction_type {cfg.get('prediction_type')!r}")
    return {"family": "vp", "schedule": schedule, "num_train_timesteps": int(cfg.get("num_train_timesteps", 1000)),
            "beta_start": float(cfg.get("beta_start", 0.0001)), "beta_end": float(cfg.get("beta_end", 0.02))}, pred


class DiffusersUNet(nn.Module):
    """``UNet2DConditionModel`` behind fewstep's ``net(x, c_noise, cond, return_bottleneck)``.

    ``cond`` is a :class:`Cond` with ``text`` (encoder hidden states); SDXL's added conditioning comes
    from ``cond.pooled`` (text_embeds) and ``cond.extra['time_ids']``. The bottleneck is the mid
    block's output (DMD2's GAN head reads it)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.cfg = None  # no guidance-scale embedding (see Denoiser.embeds_guidance)
        self._mid = None
        if unet.mid_block is not None:  # a block-removed student (BK-SDM Small/Tiny) has none
            unet.mid_block.register_forward_hook(self._keep_mid)

    def example_cond(self, n: int) -> Cond:
        """A placeholder condition of the right shape (for probing feature shapes)."""
        c = self.unet.config
        if c.get("addition_embed_type") == "text_time":  # SDXL: pooled embedding + 6 time ids
            pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
            return Cond(text=torch.zeros(n, 1, c.cross_attention_dim), pooled=torch.zeros(n, pooled),
                        extra={"time_ids": torch.zeros(n, 6)})
        return Cond(text=torch.zeros(n, 1, c.cross_attention_dim))

    def _keep_mid(self, module, inputs, output):
        self._mid = output

    def forward(self, x, c_noise, cond=None, return_bottleneck: bool = False, return_features: bool = False):
        if not isinstance(cond, Cond) or cond.text is None:
            raise ValueError("a diffusers UNet needs Cond(text=...) (prompt embeddings)")
        if return_bottleneck and self.unet.mid_block is None:
            raise ValueError("this UNet has no mid block (a BK-SDM Small/Tiny student) to read a bottleneck from")
        added = None
        if self.unet.config.get("addition_embed_type") == "text_time":  # SDXL's added conditioning
            if cond.pooled is None or "time_ids" not in cond.extra:
                raise ValueError("an SDXL-class UNet (addition_embed_type 'text_time') needs pooled prompt embeddings "
                                 "and time_ids: Cond(pooled=..., extra={'time_ids': ...})")
            added = {"text_embeds": cond.pooled.to(x.dtype), "time_ids": cond.extra["time_ids"].to(x.dtype)}
        feats: dict = {}
        hooks = self._feature_hooks(feats) if return_features else []
        try:
            out = self.unet(x, c_noise.to(x.dtype), encoder_hidden_states=cond.text.to(x.dtype),
                            added_cond_kwargs=added, return_dict=False)[0]
        finally:
            for h in hooks:
                h.remove()
        if return_features:
            return out, feats
        if return_bottleneck:
            return out, self._mid
        return out

    def _feature_hooks(self, feats: dict) -> list:
        """Hooks that record each stage's last residual/attention output, before its down/upsampler, as
        ``down{l}`` / ``mid`` / ``up{l}`` with l the stage's resolution level (fewstep's UNet's names, so a
        BK-SDM student's stages meet the teacher's of the same level)."""
        unet, hooks = self.unet, []
        n = len(unet.down_blocks)

        def keep(name, pick):
            return lambda module, inputs, output: feats.__setitem__(name, pick(inputs, output))

        for lvl, blk in enumerate(unet.down_blocks):  # output = (hidden, per-layer outputs + downsampled)
            k = -2 if blk.downsamplers is not None else -1
            hooks.append(blk.register_forward_hook(keep(f"down{lvl}", lambda i, o, k=k: o[1][k])))
        if unet.mid_block is not None:
            hooks.append(unet.mid_block.register_forward_hook(keep("mid", lambda i, o: o)))
        for j, blk in enumerate(unet.up_blocks):
            name = f"up{n - 1 - j}"
            if blk.upsamplers is not None:
                hooks.append(blk.upsamplers[0].register_forward_hook(keep(name, lambda i, o: i[0])))
            else:
                hooks.append(blk.register_forward_hook(keep(name, lambda i, o: o)))
        return hooks

    def config(self) -> dict:
        return {"arch": UNET_ARCH, "config": _plain(self.unet.config)}


class DiffusersSD3(nn.Module):
    """``SD3Transformer2DModel`` behind fewstep's net interface (flow; timestep = 1000 t)."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        self.cfg = None

    def forward(self, x, c_noise, cond=None, return_bottleneck: bool = False):
        if return_bottleneck:
            raise NotImplementedError("no bottleneck features for SD3 transformers (DMD2's GAN head)")
        if not isinstance(cond, Cond) or cond.text is None or cond.pooled is None:
            raise ValueError("an SD3 transformer needs Cond(text=..., pooled=...)")
        return self.transformer(hidden_states=x, encoder_hidden_states=cond.text.to(x.dtype),
                                pooled_projections=cond.pooled.to(x.dtype), timestep=c_noise.to(x.dtype),
                                return_dict=False)[0]

    def config(self) -> dict:
        return {"arch": SD3_ARCH, "config": _plain(self.transformer.config)}


class DiffusersFlux(nn.Module):
    """``FluxTransformer2DModel`` behind fewstep's net interface (flow). Latents (B, C, H, W) are packed
    into 2x2 patches and unpacked as FluxPipeline does; the model gets t in [0, 1] (the pipeline passes
    timestep / 1000) and, for guidance-distilled checkpoints, ``cond.extra['guidance']`` (default 3.5)."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        self.cfg = None

    @staticmethod
    def _ids(h: int, w: int, device, dtype):
        ids = torch.zeros(h, w, 3, device=device, dtype=dtype)
        ids[..., 1] += torch.arange(h, device=device, dtype=dtype)[:, None]
        ids[..., 2] += torch.arange(w, device=device, dtype=dtype)[None, :]
        return ids.reshape(h * w, 3)

    def forward(self, x, c_noise, cond=None, return_bottleneck: bool = False):
        if return_bottleneck:
            raise NotImplementedError("no bottleneck features for Flux transformers (DMD2's GAN head)")
        if not isinstance(cond, Cond) or cond.text is None or cond.pooled is None:
            raise ValueError("a Flux transformer needs Cond(text=..., pooled=...)")
        b, c, h, w = x.shape
        packed = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
        guidance = None
        if self.transformer.config.guidance_embeds:
            g = cond.extra.get("guidance")
            guidance = torch.full((b,), 3.5, device=x.device) if g is None else g.to(x.device).float()
        out = self.transformer(hidden_states=packed, encoder_hidden_states=cond.text.to(x.dtype),
                               pooled_projections=cond.pooled.to(x.dtype), timestep=(c_noise / 1000).to(x.dtype),
                               img_ids=self._ids(h // 2, w // 2, x.device, x.dtype),
                               txt_ids=torch.zeros(cond.text.shape[1], 3, device=x.device, dtype=x.dtype),
                               guidance=guidance, return_dict=False)[0]
        return out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def config(self) -> dict:
        return {"arch": FLUX_ARCH, "config": _plain(self.transformer.config)}


def _plain(cfg) -> dict:
    return json.loads(json.dumps({k: v for k, v in dict(cfg).items() if not k.startswith("_")}, default=list))


def build(cfg: dict) -> nn.Module:
    """Rebuild an adapter (random weights) from its ``config()``; model_io then loads the weights."""
    _require_diffusers()
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

    if cfg["arch"] == UNET_ARCH:
        net = DiffusersUNet(UNet2DConditionModel.from_config(cfg["config"]))
    elif cfg["arch"] == FLUX_ARCH:
        net = DiffusersFlux(FluxTransformer2DModel.from_config(cfg["config"]))
    else:
        net = DiffusersSD3(SD3Transformer2DModel.from_config(cfg["config"]))
    if cfg.get("lora"):
        from ..lora import add_lora

        add_lora(net, **cfg["lora"])
    return net


def vae_config(root: Path) -> dict:
    return json.loads((Path(root) / "vae" / "config.json").read_text())


def vae_downsample(root: Path) -> int:
    """How many pixels one latent pixel covers: the pipeline's VAE halves the side once per block after the first."""
    return 2 ** (len(vae_config(root).get("block_out_channels", [0] * 4)) - 1)


def native_resolution(root: Path) -> int:
    """The image side a pipeline generates by default: its UNet's / transformer's ``sample_size`` (latent
    pixels) times the VAE's downsampling, as the diffusers pipelines compute their default height."""
    root = Path(root)
    net = root / "unet" if (root / "unet").is_dir() else root / "transformer"
    size = json.loads((net / "config.json").read_text()).get("sample_size") or 64
    size = size[0] if isinstance(size, (list, tuple)) else size
    return int(size) * vae_downsample(root)


def latent_tokens(root: Path, resolution: int) -> int:
    """The transformer's image token count at ``resolution`` px, as the SD3 / Flux pipelines compute it for
    their dynamic shift: latent side = resolution / the VAE's downsampling, in 2x2 patches (SD3's
    patch_size, Flux's packing)."""
    side = resolution // vae_downsample(root)
    tr = root / "transformer" / "config.json"
    cfg = json.loads(tr.read_text()) if tr.is_file() else {"patch_size": 1}
    patch = 2 if cfg.get("_class_name") == "FluxTransformer2DModel" else cfg.get("patch_size", 2)
    return (side // patch) ** 2


def resolve_pipeline(spec: str | Path) -> Path:
    """A diffusers pipeline folder: a path, or the name of one shipped with fewstep (``mnist-t2i``: the
    miniature text-to-image SD of pipelines/mini_sd.py, in ``fewstep/assets/teachers``)."""
    p = Path(spec)
    if p.is_dir() or "/" in str(spec):
        return p
    shipped = Path(__file__).resolve().parents[2] / "assets" / "teachers" / str(spec)  # model_io.SHIPPED_TEACHERS
    return shipped if (shipped / "model_index.json").is_file() else p


def load_pipeline_teacher(path: str | Path, resolution: int | None = None):
    """(Denoiser, info) from a local diffusers pipeline folder (UNet, SD3 or Flux); info names its other components.
    ``resolution`` (px) fixes a resolution-dependent flow shift (FLUX.1-dev's) at that image size."""
    _require_diffusers()
    from ...noise import process_from_config
    from ...noise.precond import Denoiser

    root = resolve_pipeline(path)
    index = root / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{root} is not a diffusers pipeline folder (no model_index.json)")
    sched_cfg = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    seq = latent_tokens(root, resolution) if resolution and sched_cfg.get("use_dynamic_shifting") else None
    proc_cfg, param = process_from_scheduler(sched_cfg, seq)
    if (root / "unet").is_dir():
        from diffusers import UNet2DConditionModel

        net = DiffusersUNet(UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True))
    elif (root / "transformer").is_dir():
        cls_name = json.loads((root / "transformer" / "config.json").read_text()).get("_class_name", "")
        if cls_name == "FluxTransformer2DModel":
            from diffusers import FluxTransformer2DModel

            net = DiffusersFlux(FluxTransformer2DModel.from_pretrained(root / "transformer", local_files_only=True))
        else:
            from diffusers import SD3Transformer2DModel

            net = DiffusersSD3(SD3Transformer2DModel.from_pretrained(root / "transformer", local_files_only=True))
    else:
        raise FileNotFoundError(f"{root} has neither unet/ nor transformer/")
    den = Denoiser(net, process_from_config(proc_cfg), param).eval().requires_grad_(False)
    info = {"pipeline": str(root.resolve()), "scheduler": sched_cfg, "model_index": json.loads(index.read_text())}
    return den, info
