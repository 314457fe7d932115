"""``fewstep export --format diffusers``: a student of a diffusers teacher, as diffusers loads it.

A student with its own smaller UNet (architecture distillation, BK-SDM) becomes ``unet/`` plus the
teacher's scheduler: load it as the pipeline's ``unet`` and sample as the teacher is sampled.
A LoRA student becomes ``pytorch_lora_weights.safetensors`` for ``pipeline.load_lora_weights(DIR)``
(the LoRA scale alpha/rank is folded into the up-projection, so diffusers' default scale reproduces
it); a full fine-tune becomes ``unet/``. Either way ``scheduler/`` holds the scheduler that samples the
student as fewstep does (``LCMScheduler`` for students that re-noise between steps) and
``fewstep_sampling.json`` the timesteps and guidance scale to call the pipeline with.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import FewstepError
from .io import atomic_dir, write_json


def student_timesteps(den, sampling: dict) -> list[int]:
    """The student's levels as the integer timesteps a diffusers scheduler takes."""
    sig = [s for s in (sampling.get("sigmas") or []) if s > 0]
    t = den.process.t_from_sigma_hat(torch.tensor(sig, dtype=torch.float64))
    return [int(round(float(v))) for v in t]


def export_diffusers(model: str, out: Path) -> Path:
    from .model_io import load_denoiser

    den, cfg = load_denoiser(model)
    arch = cfg["arch"]
    if arch.get("arch") != "diffusers_unet" or "diffusers" not in cfg:
        raise FewstepError("only students of a diffusers UNet teacher (--teacher diffusers:PATH) export to diffusers")
    import diffusers
    from diffusers import LCMScheduler

    info = cfg["diffusers"]
    pipe_cls = getattr(diffusers, info["model_index"]["_class_name"])
    sampling = cfg.get("sampling", {})
    lora = arch.get("lora")
    if sampling.get("sampler") != "multistep":
        if lora:
            raise FewstepError(f"export supports LoRA students sampled with 'multistep' (consistency / DMD2), "
                               f"not {sampling.get('sampler')!r}")
        return atomic_dir(Path(out), lambda tmp: _write_full_model(den, info, sampling, tmp))
    timesteps = student_timesteps(den, sampling)

    def write(tmp: Path):
        if lora:
            from .nets.lora import lora_state_dict

            sd = {k: v.detach().clone() for k, v in lora_state_dict(den.net).items()}
            scale = lora["alpha"] / lora["rank"]
            for k in sd:
                if "lora_B" in k:
                    sd[k] = sd[k] * scale
            # peft key names as they are: diffusers loads them natively, while its old-format conversion
            # rewrites only the attention projections and leaves a mixed file it then half-loads
            pipe_cls.save_lora_weights(tmp, unet_lora_layers=sd, safe_serialization=True)
        else:
            den.net.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        LCMScheduler.from_config(info["scheduler"]).save_pretrained(tmp / "scheduler")
        write_json({"format": "fewstep-diffusers-export-v1", "pipeline": info["model_index"]["_class_name"],
                    "base_pipeline": info["pipeline"], "lora": bool(lora), "timesteps": timesteps,
                    "num_inference_steps": len(timesteps), "guidance_scale": float(sampling.get("cfg", 1.0)),
                    "usage": "pipe.scheduler = LCMScheduler.from_pretrained(DIR, subfolder='scheduler'); "
                             "pipe.load_lora_weights(DIR); pipe(prompt, timesteps=TIMESTEPS, guidance_scale=G)"},
                   tmp / "fewstep_sampling.json")

    return atomic_dir(Path(out), write)


def _write_full_model(den, info: dict, sampling: dict, tmp: Path) -> None:
    """A many-step student with its own architecture (architecture distillation: BK-SDM's smaller UNet):
    ``unet/`` in place of the pipeline's UNet, sampled with the teacher's scheduler as the teacher is."""
    den.net.unet.save_pretrained(tmp / "unet", safe_serialization=True)
    sched_cls = info["scheduler"].get("_class_name", "DDPMScheduler")
    import diffusers

    getattr(diffusers, sched_cls).from_config(info["scheduler"]).save_pretrained(tmp / "scheduler")
    write_json({"format": "fewstep-diffusers-export-v1", "pipeline": info["model_index"]["_class_name"],
                "base_pipeline": info["pipeline"], "lora": False, "timesteps": None,
                "num_inference_steps": int(sampling.get("steps", 25)),
                "guidance_scale": float(sampling.get("cfg", 1.0)),
                "usage": "unet = UNet2DConditionModel.from_pretrained(DIR, subfolder='unet'); "
                         "pipe = PIPELINE.from_pretrained(BASE, unet=unet); pipe(prompt, num_inference_steps=N)"},
               tmp / "fewstep_sampling.json")
