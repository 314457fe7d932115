"""``fewstep export --format diffusers``: a student of a diffusers teacher, as diffusers loads it.

A student sampled as its teacher is (a smaller BK-SDM UNet, an Euler-sampled progressive or reflow
student) becomes ``unet/`` (``transformer/`` for SD3 / Flux) plus the teacher's scheduler: load it in the
pipeline in place of the teacher's and sample as the teacher is sampled.
A LoRA student becomes ``pytorch_lora_weights.safetensors`` for ``pipeline.load_lora_weights(DIR)``
(the LoRA scale alpha/rank is folded into the up-projection, so diffusers' default scale reproduces
it); a full fine-tune becomes ``unet/`` or ``transformer/``. Either way ``scheduler/`` holds the scheduler
that samples the student as fewstep does (``LCMScheduler`` for UNet students that re-noise between
steps, ``FlowMatchEulerDiscreteScheduler`` with ``stochastic_sampling`` for flow ones) and
``fewstep_sampling.json`` the timesteps (flow: sigmas) and guidance scale to call the pipeline with.
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


DENOISER_COMPONENT = {"diffusers_unet": "unet", "diffusers_sd3": "transformer", "diffusers_flux": "transformer"}


def export_diffusers(model: str, out: Path) -> Path:
    from .model_io import load_denoiser

    den, cfg = load_denoiser(model)
    arch = cfg["arch"]
    kind = arch.get("arch")
    if kind in ("phase_lora", "phase_experts"):  # Phased DMD: the base network, or an expert's
        arch = arch["base"] if kind == "phase_lora" else arch["expert"]
    component = DENOISER_COMPONENT.get(arch.get("arch"))
    if component is None or "diffusers" not in cfg:
        raise FewstepError("only students of a diffusers teacher (--teacher diffusers:PATH: a UNet, SD3 or Flux "
                           "pipeline) export to diffusers")
    if kind == "phase_experts":
        raise FewstepError("a Phased DMD student of full experts has no diffusers form (one UNet per phase); train it "
                           "with --lora-rank N for one LoRA adapter per phase, which exports")
    import diffusers

    info = cfg["diffusers"]
    pipe_cls = getattr(diffusers, info["model_index"]["_class_name"])
    sampling = cfg.get("sampling", {})
    lora = arch.get("lora")
    if sampling.get("sampler") != "multistep":
        if lora:
            raise FewstepError(f"export supports LoRA students sampled with 'multistep' (consistency / DMD2), "
                               f"not {sampling.get('sampler')!r}")
        if sampling.get("sampler") == "euler":
            return atomic_dir(Path(out), lambda tmp: _write_euler_model(den, component, info, sampling, tmp))
        return atomic_dir(Path(out), lambda tmp: _write_full_model(den, component, info, sampling, tmp))
    flow = component == "transformer"
    levels = flow_sigmas(den, sampling.get("sigmas") or []) if flow else student_timesteps(den, sampling)

    names = (lora or {}).get("names")  # a phased student's adapters, one per step (else the one default adapter)
    net = den.net.net if kind == "phase_lora" else den.net  # the network that carries the adapters

    def write(tmp: Path):
        if lora:
            for name in names or [None]:  # one file per phase adapter: the pipeline switches them by step
                weight_name = f"pytorch_lora_weights_{name}.safetensors" if name else "pytorch_lora_weights.safetensors"
                pipe_cls.save_lora_weights(tmp, **{f"{component}_lora_layers": _scaled_lora(net, lora, name)},
                                           weight_name=weight_name, safe_serialization=True)
        else:
            getattr(den.net, component).save_pretrained(tmp / component, safe_serialization=True)
        _multistep_scheduler(info["scheduler"], flow).save_pretrained(tmp / "scheduler")
        call = "sigmas=SIGMAS" if flow else "timesteps=TIMESTEPS"
        write_json({"format": "fewstep-diffusers-export-v1", "pipeline": info["model_index"]["_class_name"],
                    "base_pipeline": info["pipeline"], "lora": bool(lora),
                    "timesteps": None if flow else levels, "sigmas": levels if flow else None,
                    "num_inference_steps": len(levels), "guidance_scale": _guidance_scale(den, sampling),
                    "phase_adapters": _phase_adapters(names), "usage": _usage(flow, call, names)},
                   tmp / "fewstep_sampling.json")

    return atomic_dir(Path(out), write)


def _scaled_lora(net, lora: dict, name: str | None) -> dict:
    """One adapter's weights in peft's key names, the LoRA scale alpha/rank folded into the up-projection.
    The names stay peft's: diffusers loads them natively, while its old-format conversion rewrites only the
    attention projections and leaves a mixed file it then half-loads."""
    from .nets.lora import lora_state_dict

    sd = {k: v.detach().clone() for k, v in lora_state_dict(net, name or "default").items()}
    scale = lora["alpha"] / lora["rank"]
    return {k: v * scale if "lora_B" in k else v for k, v in sd.items()}


def _phase_adapters(names: list[str] | None) -> list[dict] | None:
    """A phased student's adapters, in step order: adapter k serves step k (Phased DMD, one phase per step)."""
    if not names:
        return None
    return [{"adapter_name": n, "weight_name": f"pytorch_lora_weights_{n}.safetensors", "step": k}
            for k, n in enumerate(names)]


def _usage(flow: bool, call: str, names: list[str] | None) -> str:
    sched = f"pipe.scheduler = {_multistep_scheduler_name(flow)}.from_pretrained(DIR, subfolder='scheduler'); "
    if not names:
        return sched + f"pipe.load_lora_weights(DIR); pipe(prompt, {call}, guidance_scale=G)"
    return (sched + "for a in PHASE_ADAPTERS: pipe.load_lora_weights(DIR, weight_name=a['weight_name'], "
            "adapter_name=a['adapter_name']); pipe.set_adapters(PHASE_ADAPTERS[0]['adapter_name']); "
            "pipe(prompt, " + call + ", guidance_scale=G, callback_on_step_end=lambda p, i, t, kw: "
            "(p.set_adapters(PHASE_ADAPTERS[min(i + 1, len(PHASE_ADAPTERS) - 1)]['adapter_name']), kw)[1])")


def flow_sigmas(den, levels) -> list[float]:
    """Levels (sigma_hat) as a flow pipeline's ``sigmas=``: the flow time t (the noise fraction), without the final 0."""
    sig = [s for s in levels if s > 0]
    return [float(v) for v in den.process.t_from_sigma_hat(torch.tensor(sig, dtype=torch.float64))]


def _multistep_scheduler_name(flow: bool) -> str:
    return "FlowMatchEulerDiscreteScheduler" if flow else "LCMScheduler"


def _multistep_scheduler(sched_cfg: dict, flow: bool):
    """The diffusers scheduler that samples as fewstep's multistep sampler does: denoise, then re-noise to
    the next level with fresh noise (LCMScheduler; for flow models FlowMatchEulerDiscreteScheduler with
    ``stochastic_sampling``, unshifted, since the exported ``sigmas`` are the levels themselves)."""
    import diffusers

    if not flow:
        return diffusers.LCMScheduler.from_config(sched_cfg)
    return diffusers.FlowMatchEulerDiscreteScheduler.from_config(sched_cfg, stochastic_sampling=True, shift=1.0,
                                                                 use_dynamic_shifting=False)


def _guidance_scale(den, sampling: dict) -> float:
    """The pipeline's ``guidance_scale``: the student's CFG scale, or for a guidance-embedding transformer
    (FLUX.1-dev) the guidance value its adapter feeds (nets/adapters/diffusers.py, 3.5)."""
    tr = getattr(den.net, "transformer", None)
    if tr is not None and getattr(tr.config, "guidance_embeds", False):
        return 3.5
    return float(sampling.get("cfg", 1.0))


def euler_levels(den, sampling: dict) -> list[float]:
    """An Euler-sampled student's levels (sigma_hat, ending at 0): its explicit grid, else its grid rule."""
    from .samplers.grids import make_grid

    if sampling.get("sigmas"):
        return [float(s) for s in sampling["sigmas"]]
    return [float(s) for s in make_grid(sampling.get("grid", "karras"), den.process, int(sampling.get("steps", 1)))]


def _write_euler_model(den, component: str, info: dict, sampling: dict, tmp: Path) -> None:
    """A student sampled with deterministic Euler on its own grid (progressive distillation, reflow):
    ``unet/`` or ``transformer/`` plus the diffusers Euler scheduler that takes the same levels as
    ``sigmas`` (``EulerDiscreteScheduler`` in sigma_hat, which is DDIM on a VP teacher, as fewstep's Euler
    is; ``FlowMatchEulerDiscreteScheduler`` unshifted, in t, for flow teachers)."""
    import diffusers

    getattr(den.net, component).save_pretrained(tmp / component, safe_serialization=True)
    sh = euler_levels(den, sampling)
    if component == "transformer":
        sched = diffusers.FlowMatchEulerDiscreteScheduler.from_config(info["scheduler"], shift=1.0, use_dynamic_shifting=False,
                                                                       stochastic_sampling=False)
        sigmas, name = flow_sigmas(den, sh), "FlowMatchEulerDiscreteScheduler"
    else:
        sched = diffusers.EulerDiscreteScheduler.from_config(info["scheduler"])
        sigmas, name = sh, "EulerDiscreteScheduler"
    sched.save_pretrained(tmp / "scheduler")
    write_json({"format": "fewstep-diffusers-export-v1", "pipeline": info["model_index"]["_class_name"],
                "base_pipeline": info["pipeline"], "lora": False, "timesteps": None, "sigmas": sigmas,
                "num_inference_steps": len([s for s in sh if s > 0]), "guidance_scale": _guidance_scale(den, sampling),
                "usage": f"{component} = {type(getattr(den.net, component)).__name__}.from_pretrained(DIR, subfolder='{component}'); "
                         f"pipe = PIPELINE.from_pretrained(BASE, {component}={component}); "
                         f"pipe.scheduler = {name}.from_pretrained(DIR, subfolder='scheduler'); pipe(prompt, sigmas=SIGMAS)"},
               tmp / "fewstep_sampling.json")


def _write_full_model(den, component: str, info: dict, sampling: dict, tmp: Path) -> None:
    """A student sampled as the teacher is (architecture distillation: BK-SDM's smaller UNet):
    ``unet/`` or ``transformer/`` in place of the pipeline's, with the teacher's scheduler."""
    getattr(den.net, component).save_pretrained(tmp / component, safe_serialization=True)
    sched_cls = info["scheduler"].get("_class_name", "DDPMScheduler")
    import diffusers

    getattr(diffusers, sched_cls).from_config(info["scheduler"]).save_pretrained(tmp / "scheduler")
    write_json({"format": "fewstep-diffusers-export-v1", "pipeline": info["model_index"]["_class_name"],
                "base_pipeline": info["pipeline"], "lora": False, "timesteps": None,
                "num_inference_steps": int(sampling.get("steps", 25)),
                "guidance_scale": float(sampling.get("cfg", 1.0)),
                "usage": f"{component} = {type(getattr(den.net, component)).__name__}.from_pretrained(DIR, subfolder='{component}'); "
                         f"pipe = PIPELINE.from_pretrained(BASE, {component}={component}); pipe(prompt, num_inference_steps=N)"},
               tmp / "fewstep_sampling.json")
