"""Saving and loading a Denoiser as a model folder: ``config.json`` + ``model.safetensors``.

A model folder is self-describing: the architecture config, the noise process, the
parameterisation and how to sample it. Shipped teachers live in ``fewstep/assets/teachers/<name>``
and load by name (``load_denoiser("mnist")``).
"""
from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError, FewstepError
from .io import atomic_dir, load_state_strict, load_tensors, read_json, save_tensors, write_json
from .nets import build_net
from .noise import process_from_config
from .noise.precond import Denoiser

ASSETS = Path(__file__).parent / "assets"
SHIPPED_TEACHERS = ASSETS / "teachers"


def denoiser_config(den: Denoiser) -> dict:
    arch = {**den.net.config(), **getattr(den.net, "lora_config", {})}
    return {"arch": arch, "process": den.process.config(), "param": den.param,
            "sigma_data": den.sigma_data, "boundary": den.boundary}


def build_denoiser(cfg: dict) -> Denoiser:
    try:
        return Denoiser(build_net(cfg["arch"]), process_from_config(cfg["process"]), cfg["param"],
                        cfg.get("sigma_data", 0.5), cfg.get("boundary"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"model config is invalid: {e}") from None


def save_denoiser(den: Denoiser, path, extra: dict | None = None) -> Path:
    cfg = {"format": "fewstep-model-v1", **denoiser_config(den), **(extra or {})}

    def write(tmp: Path):
        write_json(cfg, tmp / "config.json")
        save_tensors(den.net.state_dict(), tmp / "model.safetensors")

    return atomic_dir(Path(path), write)


def resolve_model_dir(spec: str) -> Path:
    """A model folder path, or the name of a shipped teacher."""
    p = Path(spec)
    if p.is_dir():
        if (p / "model" / "config.json").is_file() and not (p / "config.json").is_file():
            return p / "model"  # a training output folder: use its final model
        return p
    shipped = SHIPPED_TEACHERS / spec
    if "/" not in spec and shipped.is_dir():
        return shipped
    if p.parent.name == "teachers" and p.parent.parent.name == "assets" and (SHIPPED_TEACHERS / p.name).is_dir():
        return SHIPPED_TEACHERS / p.name  # a shipped teacher recorded by the folder of another install (older runs)
    names = sorted(d.name for d in SHIPPED_TEACHERS.iterdir()) if SHIPPED_TEACHERS.is_dir() else []
    raise FewstepError(f"model {spec!r} is neither a folder nor a shipped teacher (shipped: {', '.join(names) or 'none'})")


def model_ref(spec: str) -> str:
    """How a run records the model it started from: a shipped teacher by its name, since its folder moves
    with the installed package; any other model by its folder."""
    d = resolve_model_dir(spec)
    return d.name if d.resolve().parent == SHIPPED_TEACHERS.resolve() else str(d)


def pipeline_spec(spec: str) -> str:
    """``diffusers:NAME`` for the name of a diffusers pipeline shipped with fewstep (``mnist-t2i``), so it
    loads like ``diffusers:PATH``; any other spec unchanged."""
    if "/" not in spec and ":" not in spec and (SHIPPED_TEACHERS / spec / "model_index.json").is_file():
        return f"diffusers:{spec}"
    return spec


def load_denoiser(spec: str) -> tuple[Denoiser, dict]:
    """A model folder, a training output folder, a shipped teacher (``mnist``; ``mnist-t2i`` is a diffusers
    pipeline), or ``diffusers:PATH`` (a local diffusers pipeline folder)."""
    spec = pipeline_spec(spec)
    if spec.startswith("diffusers:"):
        from .nets.adapters.diffusers import load_pipeline_teacher

        den, info = load_pipeline_teacher(spec.split(":", 1)[1])
        return den, {"diffusers": info}
    d = resolve_model_dir(spec)
    cfg = read_json(d / "config.json")
    den = build_denoiser(cfg)
    load_state_strict(den.net, load_tensors(d / "model.safetensors"), d / "model.safetensors")
    den.eval()
    return den, cfg


def sample_shape(model_cfg: dict) -> tuple:
    """One sample's shape, from a model folder's config: its data's, else its architecture's."""
    if model_cfg.get("data", {}).get("shape"):
        return tuple(model_cfg["data"]["shape"])
    arch = model_cfg["arch"]
    if arch["arch"] == "mlp":
        return (arch["dim"],)
    return (arch["in_channels"], arch["image_size"], arch["image_size"])
