"""Collapse monitor: compare generated-sample statistics with the real data's at every eval.

Mode collapse in distillation shows in sample statistics long before it shows in the loss
(docs/methods.md §1 pitfalls: static or solid-colour outputs). Signals: overall mean drift, overall
std, and the smallest per-class spread (std across samples of one class, averaged over pixels).
"""
from __future__ import annotations

from .evaluate import collapse_signals


class CollapseMonitor:
    def __init__(self, real_x, real_labels=None, std_ratio: float = 0.5, spread_ratio: float = 0.3,
                 mean_drift: float = 0.5):
        self.ref = collapse_signals(real_x, real_labels)
        self.std_ratio, self.spread_ratio, self.mean_drift = std_ratio, spread_ratio, mean_drift

    def check(self, res: dict) -> list[str]:
        warn, ref = [], self.ref
        if res["sample_std"] < self.std_ratio * ref["sample_std"]:
            warn.append(f"sample std {res['sample_std']:.3f} < {self.std_ratio} x real {ref['sample_std']:.3f}")
        if abs(res["sample_mean"] - ref["sample_mean"]) > self.mean_drift * ref["sample_std"]:
            warn.append(f"sample mean {res['sample_mean']:.3f} drifted from real {ref['sample_mean']:.3f}")
        if "min_class_spread" in res and res["min_class_spread"] < self.spread_ratio * ref["min_class_spread"]:
            warn.append(f"a class collapsed: spread {res['min_class_spread']:.3f} < {self.spread_ratio} x real "
                        f"{ref['min_class_spread']:.3f}")
        return warn


def with_collapse_monitor(evaluator, monitor: CollapseMonitor):
    def run(den, it):
        res = evaluator(den, it)
        res["warnings"] = ["possible collapse: " + w for w in monitor.check(res)]
        return res

    return run
