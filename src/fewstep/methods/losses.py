"""Losses more than one method uses. Each returns one value per sample; ``ctx.update`` takes the mean."""
from __future__ import annotations

import torch

from ..noise.base import bcast, from_x0_eps
from ..noise.precond import Denoiser
from ..samplers.ode import level_coeffs


def denoising_loss(den: Denoiser, x0, t, eps, cond) -> torch.Tensor:
    """The denoising loss at times t with noise eps, each parameterisation as its paper trains it:
    ``edm``: lambda(sigma) ||D(x_t) - x0||^2 with lambda = 1/c_out^2 (EDM Eq. 8, Table 1), a unit-weighted
    MSE on the raw network output; ``eps`` / ``v`` / ``x0`` / ``flow``: plain MSE in that prediction space.
    Teachers train with it, and so do the fake scores that track a student's distribution (DMD)."""
    proc = den.process
    xt = proc.add_noise(x0, eps, t)
    x0_hat, eps_hat = den.raw(xt, t, cond)
    a, s = proc.alpha(t).float(), proc.sigma(t).float()
    if den.param == "edm":
        sd = den.sigma_data
        weight = bcast((a * a * sd * sd + s * s) / (s * sd) ** 2, x0)
        err = weight * (x0_hat.float() - x0) ** 2
    else:
        pred = from_x0_eps(den.param, x0_hat.float(), eps_hat.float(), a, s)
        err = (pred - from_x0_eps(den.param, x0, eps, a, s)) ** 2
    return err.flatten(1).mean(1)


def edm_weight(sigma_hat: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 at the normalised level sigma_hat (the weight
    ``denoising_loss`` gives an EDM denoiser; SiDA weights its discriminator with it)."""
    return (sigma_hat ** 2 + sigma_data ** 2) / (sigma_hat * sigma_data) ** 2


def snr_truncated_mse(x0_hat, x0_target, alpha, sigma) -> torch.Tensor:
    """Salimans & Ho 2022 Sec. 4, 'truncated SNR' weighting: max(||x - x~||^2, ||eps - eps~||^2)
    = max(SNR, 1) ||x - x~||^2 with SNR = alpha^2 / sigma^2 (eps errors are x errors times alpha/sigma)."""
    snr = (alpha.float() / sigma.float()) ** 2
    err = ((x0_hat.float() - x0_target.float()) ** 2).flatten(1).mean(1)
    return torch.clamp(snr, min=1.0) * err


CONSISTENCY_LOSSES = ("l2", "huber", "huber_rms")


def consistency_distance(a, b, kind: str = "l2", c: float = 0.03) -> torch.Tensor:
    """Per-sample distance, averaged over elements:
    - ``l2``: mean squared error (CD with L2);
    - ``huber``: pseudo-Huber per element, mean(sqrt((a - b)^2 + c^2) - c), as the LCM/diffusers code
      applies it (c = 0.001 there): about an L1 error once |a - b| >> c;
    - ``huber_rms``: pseudo-Huber of the sample's RMS error, sqrt(mean((a - b)^2) + c^2) - c, which is
      iCT's sqrt(||a - b||^2 + c'^2) - c' (Song & Dhariwal 2023, c' = 0.00054 sqrt(d)) divided by sqrt(d)
      with c' = c sqrt(d): about an RMS error."""
    diff = a.float() - b.float()
    if kind == "l2":
        return (diff ** 2).flatten(1).mean(1)
    if kind == "huber":
        return (torch.sqrt(diff ** 2 + c * c) - c).flatten(1).mean(1)
    if kind == "huber_rms":
        return torch.sqrt((diff ** 2).flatten(1).mean(1) + c * c) - c
    raise ValueError(f"loss must be one of {CONSISTENCY_LOSSES}, got {kind!r}")


def charbonnier_rms(a, b, c: float = 1e-3) -> torch.Tensor:
    """Per-sample mean squared error reweighted by sg(1 / sqrt(mse + c^2)): Barron's robust loss at
    alpha = 1 (Charbonnier) on the sample's MSE with the weight detached, as TwinFlow trains (its
    ``barron_reweighting``, c = 1e-3). Its value is about the RMS error; its gradient is an RMS error's."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return mse / torch.sqrt(mse + c * c).detach()


def pair_regression(gen: Denoiser, sh: float, z, target, cond) -> torch.Tensor:
    """Per-sample L2 between the generator's one step from noise z at level sh and the teacher's ODE
    output for the same z (DMD Sec. 3.3 regression loss; InstaFlow's distillation loss)."""
    t, _, s = level_coeffs(gen.process, torch.full((z.shape[0],), float(sh), dtype=torch.float64))
    out = gen(bcast(s, z) * z, t.to(z.device), cond)
    return ((out.float() - target) ** 2).flatten(1).mean(1)


# -- architecture distillation (methods/compress) ----------------------------------------------------
def prediction_mse(den: Denoiser, x0_a, x0_b, x_t, t) -> torch.Tensor:
    """Per-sample error between two x0 estimates at the same (x_t, t), weighted the way ``denoising_loss``
    weights a denoiser's own error: lambda(sigma) ||x0_a - x0_b||^2 for EDM (a unit MSE on the raw network
    outputs), plain MSE in the parameterisation's prediction space otherwise. With x0_b the clean image it
    is the denoising loss; with the teacher's estimate it is BK-SDM's output-level KD (Kim et al. Eq. 2)."""
    proc = den.process
    a, s = proc.alpha(t).float(), proc.sigma(t).float()
    if den.param == "edm":
        sd = den.sigma_data
        weight = bcast((a * a * sd * sd + s * s) / (s * sd) ** 2, x_t)
        return (weight * (x0_a.float() - x0_b.float()) ** 2).flatten(1).mean(1)

    def pred(x0):
        x0 = x0.float()
        return from_x0_eps(den.param, x0, (x_t.float() - bcast(a, x0) * x0) / bcast(s, x0), a, s)

    return ((pred(x0_a) - pred(x0_b)) ** 2).flatten(1).mean(1)


def feature_kd(student: dict, teacher: dict, normalise: bool = False) -> torch.Tensor:
    """Per-sample feature distillation over the student's stages: sum_l mean (F_s^l - sg F_t^l)^2 (BK-SDM
    Eq. 3, every stage output); ``normalise`` divides each stage's term by mean (F_t^l)^2 (LAPTOP-Diff's
    normalised KD, so wide deep stages do not dominate)."""
    if not student:
        raise ValueError("feature KD needs at least one stage the student shares with the teacher")
    total = 0.0
    for name, f_s in student.items():
        f_t = teacher.get(name)
        if f_t is None or f_t.shape != f_s.shape:
            raise ValueError(f"stage {name!r}: the teacher has {None if f_t is None else tuple(f_t.shape)}, "
                             f"the student {tuple(f_s.shape)}")
        f_t = f_t.detach().float()
        term = ((f_s.float() - f_t) ** 2).flatten(1).mean(1)
        if normalise:
            term = term / (f_t ** 2).flatten(1).mean(1).clamp_min(1e-8)
        total = total + term
    return total
