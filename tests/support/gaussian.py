"""The ideal denoiser for Gaussian data, and the exact PF-ODE solution it induces."""
import torch


class GaussianDenoiser(torch.nn.Module):
    """E[x0 | x_t] for x0 ~ N(mu, diag(var)) under any Gaussian path x_t = a x0 + s eps."""

    def __init__(self, process, mu, var):
        super().__init__()
        self.process, self.mu, self.var = process, torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)

    def raw(self, x, t, cond=None):
        a = self.process.alpha(t).to(x.dtype)[:, None]
        s = self.process.sigma(t).to(x.dtype)[:, None]
        x0 = self.mu + a * self.var / (a * a * self.var + s * s) * (x - a * self.mu)
        return x0, (x - a * x0) / s


def exact_ode(mu, var, y0, sh0, sh1):
    """Solution of dy/dsh = eps(y, sh) in y = x/alpha: y(sh1) = mu + sqrt((var+sh1^2)/(var+sh0^2)) (y0 - mu)."""
    return mu + torch.sqrt((var + sh1 ** 2) / (var + sh0 ** 2)) * (y0 - mu)
