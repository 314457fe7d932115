"""Name -> method, as a lazy table of ``"module:Class"`` paths: nothing is imported until a method is
asked for. The trainer and the CLI look methods up here and never branch on a name; the CLI's help
and the README's method table are read from this table (a test keeps the README in step).

Adding a method: write its file (its Config, its class with ``name`` and ``presets``) and add one
line below. Code outside the package (a plugin, a test) calls ``register_method`` instead.
"""
from __future__ import annotations

import importlib

# name -> (family, "module:Class", one-line summary)
METHOD_TABLE: dict[str, tuple[str, str, str]] = {
    "dmd": ("distribution matching", "fewstep.methods.distribution_matching.dmd:DMD",
            "DMD: distribution-matching gradient + regression to teacher ODE pairs (Yin et al. 2023)"),
    "dmd2": ("distribution matching", "fewstep.methods.distribution_matching.dmd2:DMD2",
             "DMD2: DM gradient + GAN on the fake score, two time-scale updates, backward simulation (Yin et al. 2024)"),
    "decoupled_dmd": ("distribution matching", "fewstep.methods.distribution_matching.decoupled_dmd:DecoupledDMD",
                      "Decoupled DMD: the real-CFG DMD gradient split into CA and DM terms, re-noised apart (Z-Image 2025)"),
    "asd": ("distribution matching", "fewstep.methods.distribution_matching.asd:ASD",
            "adversarial self-distillation: DMD2 + a discriminator pulling n-step outputs to the student's own n+1"),
    "sc_dmd": ("distribution matching", "fewstep.methods.distribution_matching.sc_dmd:SCDMD",
               "SC-DMD (Salt): DMD2 + a semigroup-defect regulariser; one deterministic model for 1/2/4 steps"),
    "phased_dmd": ("distribution matching", "fewstep.methods.distribution_matching.phased_dmd:PhasedDMD",
                   "Phased DMD: one expert per SNR phase, trained phase by phase, fake score matched within subintervals"),
    "flash_dmd": ("distribution matching", "fewstep.methods.distribution_matching.flash_dmd:FlashDMD",
                  "Flash-DMD: DM levels follow the student's step (timestep-aware), then a joint reward stage"),
    "disback": ("distribution matching", "fewstep.methods.distribution_matching.disback:DisBack",
                "DisBack: DMD2 whose real score backtracks a recorded degradation path to the teacher (Zhang et al. 2024)"),
    "sid": ("distribution matching", "fewstep.methods.distribution_matching.sid:SiD",
            "SiD: image-free one-step generator from the score identity loss, fake score and generator 1:1 (Zhou et al. 2024)"),
    "sida": ("distribution matching", "fewstep.methods.distribution_matching.sida:SiDA",
             "SiDA: SiD + a discriminator on the fake score's encoder against real images (Zhou et al. 2024)"),
    "vsd": ("distribution matching", "fewstep.methods.distribution_matching.vsd:VSD",
            "SwiftBrush VSD: image-free one-step student against LoRA adapters on the teacher (Nguyen & Tran 2024)"),
    "snoopi": ("distribution matching", "fewstep.methods.distribution_matching.snoopi:SNOOPI",
               "SNOOPI PG-SB: VSD with the guidance scale of both scores drawn per iteration (Nguyen et al. 2024)"),
    "bk_sdm": ("architecture", "fewstep.methods.compress.bk_sdm:BKSDM",
               "BK-SDM: residual/attention blocks removed, student trained with output + feature KD (Kim et al. 2023)"),
    "koala": ("architecture", "fewstep.methods.compress.koala:KOALA",
              "KOALA: depth cut in the deep stages and the middle block, KD on decoder self-attention (Lee et al. 2023)"),
    "linfusion": ("architecture", "fewstep.methods.compress.linfusion:LinFusion",
                  "LinFusion: self-attention made normalised linear attention, new projections trained by KD (Liu et al. 2024)"),
    "laptop": ("architecture", "fewstep.methods.compress.laptop:Laptop",
               "LAPTOP-Diff: one-shot layer pruning by measured output distortion, normalised feature KD (Zhang et al. 2024)"),
    "disca": ("architecture", "fewstep.methods.compress.disca:DisCa",
              "DisCa: a small learned predictor of the deep features DeepCache would reuse, trained on teacher trajectories"),
    "cd": ("consistency", "fewstep.methods.consistency.cd:ConsistencyDistillation",
           "consistency distillation with a Heun teacher step and an EMA target (Song et al. 2023)"),
    "lcm": ("consistency", "fewstep.methods.consistency.lcm:LatentConsistency",
            "latent consistency: skipping-step guided DDIM, guidance-scale student; LCM-LoRA (Luo et al. 2023)"),
    "hyper_sd": ("consistency", "fewstep.methods.consistency.hyper_sd:HyperSD",
                 "Hyper-SD TSCD: consistency within M trajectory segments, stages 8 -> 4 -> 2 -> 1 (Ren et al. 2024)"),
    "twinflow": ("consistency", "fewstep.methods.consistency.twinflow:TwinFlow",
                 "TwinFlow: one any-step network from data, RCGM target and a self-adversarial twin branch (2025)"),
    "progressive": ("trajectory", "fewstep.methods.trajectory.progressive:Progressive",
                    "progressive distillation: N student steps learn 2N teacher steps (Salimans & Ho 2022)"),
    "reflow": ("trajectory", "fewstep.methods.trajectory.reflow:Reflow",
               "rectified-flow reflow on teacher couplings: straighter paths (Liu et al. 2022)"),
    "instaflow": ("trajectory", "fewstep.methods.trajectory.instaflow:InstaFlow",
                  "InstaFlow: one-step distillation of a reflowed model (Liu et al. 2023)"),
    "arcflow": ("trajectory", "fewstep.methods.trajectory.arcflow:ArcFlow",
                "ArcFlow: a K-velocity policy with momentum per step, closed-form arcs, on-policy imitation (2026)"),
    "guidance_distill": ("trajectory", "fewstep.methods.trajectory.guidance_distill:GuidanceDistill",
                         "guidance distillation: CFG in one call of a w-conditioned student (Meng et al. 2023)"),
    "watermark": ("provenance", "fewstep.methods.provenance.watermark:Watermark",
                  "watermarked student: Stable Signature's fine-tune, the key read back from 99.5% of bits at unchanged FD on MNIST"),
}
TEACHER = ("teacher", "fewstep.methods.teacher:DenoisingTeacher", "denoising score matching (the teacher itself)")

_LOADED: dict[str, type] = {}


def register_method(name: str, path: str, family: str = "plugin", summary: str = "") -> None:
    """Make ``name`` a method, loaded lazily from ``"module:Class"`` (for code outside this package)."""
    if ":" not in path:
        raise ValueError(f"method path must be 'module:Class', got {path!r}")
    METHOD_TABLE[name] = (family, path, summary)
    _LOADED.pop(name, None)


def unregister_method(name: str) -> None:
    METHOD_TABLE.pop(name, None)
    _LOADED.pop(name, None)


def method_names() -> list[str]:
    """Every distillation method's name (the teacher method excluded)."""
    return sorted(METHOD_TABLE)


def get_method(name: str) -> type:
    if name in _LOADED:
        return _LOADED[name]
    entry = TEACHER if name == "teacher" else METHOD_TABLE.get(name)
    if entry is None:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(method_names())}")
    module, _, cls_name = entry[1].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    if getattr(cls, "name", None) != name:
        raise ValueError(f"{entry[1]} declares name {getattr(cls, 'name', None)!r}, registered as {name!r}")
    _LOADED[name] = cls
    return cls


def method_help() -> str:
    """One line per method for the CLI's help."""
    return "; ".join(f"{n} ({METHOD_TABLE[n][0]})" for n in method_names())


def method_table_markdown() -> str:
    """The README's method table, generated from the registry."""
    rows = ["| method | family | what it does |", "|---|---|---|"]
    rows += [f"| `{n}` | {METHOD_TABLE[n][0]} | {METHOD_TABLE[n][2]} |" for n in method_names()]
    return "\n".join(rows)
