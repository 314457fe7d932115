"""The models a server holds: each loaded once, LoRA students of one base sharing that base's weights.

SwiftDiffusion's point (docs/methods.md, serving): many LoRA add-ons over one base are served from one
copy of the base, switching the active adapter per request instead of reloading a network. Here every
model folder is fingerprinted by its base network (architecture without the adapters, noise process,
parameterisation, and the bytes of the non-adapter weights); models with the same fingerprint share
one network, each LoRA student as a named peft adapter inside it, the teacher as that network with its
adapters switched off.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import torch

from ..errors import FewstepError
from ..model_io import load_denoiser, pipeline_spec, sample_shape
from ..nets.lora import _inner, _tuner_layers, has_adapters
from ..noise.precond import Denoiser
from ..samplers.generate import SamplingSpec, respec

LORA_MARK = ".lora_"  # peft's adapter tensors: <layer>.lora_A.<adapter>.weight, ...


def base_key(name: str) -> str:
    """A tensor's name in the plain network: peft wraps an adapted layer as ``<layer>.base_layer``."""
    return name.replace(".base_layer", "")


def base_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {base_key(k): v for k, v in net.state_dict().items() if LORA_MARK not in k}


def fingerprint(den: Denoiser, cfg: dict) -> str:
    """Same string <=> same base network: architecture (adapters aside), process, parameterisation, weights."""
    h = hashlib.sha256()
    # the built network's own config: a file written before an architecture field existed reads the same
    arch = {k: v for k, v in den.net.config().items() if k != "lora"}
    # canonical JSON: a config read from a file and one built in memory list their keys in different orders
    h.update(json.dumps([arch, cfg.get("process"), cfg.get("param"), cfg.get("sigma_data"), cfg.get("boundary")],
                        sort_keys=True, default=str).encode())
    for k, v in sorted(base_state(den.net).items()):
        h.update(k.encode())
        h.update(v.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class ServedModel:
    """One name a client can ask for."""

    name: str
    path: str
    den: Denoiser  # the (possibly shared) network it runs on
    cfg: dict  # its model folder's config
    spec: SamplingSpec  # its own sampling: sampler, grid, steps
    shape: tuple  # one sample's shape (C, H, W) or (D,)
    num_classes: int  # 0: unconditional
    adapter: str | None  # peft adapter to activate (None: adapters off, or a network without any)
    group: str  # fingerprint of the base network
    load_s: float  # seconds this model took to load (or to attach to a loaded base)
    text: object = None  # serve/text.py TextPipeline for text-to-image (latent) models, else None

    @property
    def kind(self) -> str:
        if self.adapter is not None:
            return "lora-student"
        return "student" if "method" in self.cfg else "teacher"

    @property
    def nfe(self) -> int:
        from ..samplers import nfe_of

        return nfe_of(self.spec.sampler, self.spec.steps)

    def describe(self) -> dict:
        method = self.cfg.get("method", {}).get("method")
        return {"name": self.name, "kind": self.kind, "method": method, "default_steps": self.nfe,
                "sampler": self.spec.sampler, "grid": self.spec.grid,
                "conditioning": "text" if self.text is not None else "class" if self.num_classes else "none",
                "classes": self.num_classes, "shape": list(self.image_shape), "cfg": self.spec.cfg, "shares_base_with": None}

    @property
    def image_shape(self) -> tuple:
        """What a request gets back: the decoded image's shape for latent models, else the sample's."""
        return self.text.image_shape(self.shape) if self.text is not None else self.shape

    def spec_for(self, steps: int | None, cfg: float | None) -> SamplingSpec:
        """Its sampling with a request's NFE and CFG (ValueError when the sampler cannot spend that NFE)."""
        return respec(self.spec, nfe=steps, cfg=cfg)


@dataclass
class ModelPool:
    models: dict[str, ServedModel] = field(default_factory=dict)
    bases: dict[str, Denoiser] = field(default_factory=dict)  # fingerprint -> the shared denoiser
    texts: dict[str, object] = field(default_factory=dict)  # pipeline@latent size -> its TextPipeline (shared)
    active: dict[str, str | None] = field(default_factory=dict)  # fingerprint -> active adapter (None: off)

    def load(self, name: str, path: str) -> ServedModel:
        if name in self.models:
            raise FewstepError(f"model name {name!r} given twice")
        t0 = time.perf_counter()
        den, cfg = load_denoiser(path)
        if pipeline_spec(path).startswith("diffusers:"):  # a pipeline as a teacher (also mnist-t2i by name): its config
            #                                               in a model folder's form
            from .text import diffusers_teacher_config

            cfg, _ = diffusers_teacher_config(den, cfg["diffusers"])
        den.eval().requires_grad_(False)
        group = fingerprint(den, cfg)
        adapter = None
        # a LoRA student whose one adapter the pool switches on and off; a phased LoRA student (Phased DMD,
        # nets/experts.py) picks its own adapter per step and is served as a network of its own
        pooled = has_adapters(den.net) and "lora" in cfg.get("arch", {})
        if group not in self.bases:
            self.bases[group] = den
            if pooled:
                adapter = "default"  # the name peft gave this student's adapter when it was trained
                self.switch(group, None)  # a known state: adapters off until a request asks for one
            else:
                self.active[group] = None
        elif pooled:
            adapter = self._attach(group, name, den, cfg)
        shape = sample_shape(cfg)
        k = cfg.get("data", {}).get("num_classes", 0) or cfg.get("arch", {}).get("num_classes", 0)
        model = ServedModel(name, path, self.bases[group], cfg, SamplingSpec(**cfg.get("sampling", {})), shape, int(k or 0),
                            adapter, group, time.perf_counter() - t0, self._text(cfg, shape))
        self.models[name] = model
        return model

    def _text(self, cfg: dict, shape: tuple):
        """The pipeline's text encoders and VAE for a model of a diffusers teacher (one per pipeline)."""
        if "diffusers" not in cfg:
            return None
        from .text import TextPipeline

        pipe = cfg["diffusers"]["pipeline"]
        key = f"{pipe}@{shape[-1]}"  # per latent size: SDXL's time ids name the image size
        if key not in self.texts:
            self.texts[key] = TextPipeline(pipe, shape)
        return self.texts[key]

    def _attach(self, group: str, name: str, den: Denoiser, cfg: dict) -> str:
        """Add a LoRA student's adapter to the loaded base under its own name; its copy of the base is dropped."""
        import warnings

        from peft import LoraConfig, inject_adapter_in_model

        base = self.bases[group]
        lora = cfg["arch"]["lora"]
        adapter = f"a{len([m for m in self.models.values() if m.group == group and m.adapter])}"
        with warnings.catch_warnings():  # peft warns that a second adapter is being added: that is the point
            warnings.simplefilter("ignore", UserWarning)
            inject_adapter_in_model(LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], target_modules=lora["targets"]),
                                    _inner(base.net), adapter_name=adapter)
        own = {k.replace(".default.", f".{adapter}."): v for k, v in den.net.state_dict().items() if LORA_MARK in k}
        target = base.net.state_dict()
        missing = [k for k in own if k not in target]
        if missing:
            raise FewstepError(f"{name}: its adapter does not fit the shared base (e.g. {missing[0]!r})")
        with torch.no_grad():
            for k, v in own.items():
                target[k].copy_(v)
        base.net.requires_grad_(False)
        self.switch(group, self.active[group])  # injecting may have changed peft's active adapter
        return adapter

    def switch(self, group: str, adapter: str | None) -> None:
        """Make ``adapter`` the one the group's network runs (None: the plain base)."""
        for layer in _tuner_layers(self.bases[group].net):
            if adapter is None:
                layer._disable_adapters = True
            else:
                layer.set_adapter(adapter)
                layer._disable_adapters = False
        self.active[group] = adapter

    def activate(self, model: ServedModel) -> Denoiser:
        if self.active[model.group] != model.adapter:
            self.switch(model.group, model.adapter)
        return model.den

    def describe(self) -> list[dict]:
        out = []
        for m in self.models.values():
            d = m.describe()
            d["shares_base_with"] = [o.name for o in self.models.values() if o.group == m.group and o.name != m.name] or None
            out.append(d)
        return out

    def param_bytes(self) -> int:
        """Bytes of every distinct tensor the pool holds (shared storage counted once)."""
        from ..nets.sharing import unique_bytes

        return unique_bytes(*(den.net for den in self.bases.values()))
