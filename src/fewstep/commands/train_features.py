"""``fewstep train-features``: the feature classifier behind FD and class accuracy."""
from __future__ import annotations

import json
from pathlib import Path

from .common import command_line


def run(a):
    from ..metrics.features import FEATURES_DIR, save_feature_net, train_feature_net

    data = a.data or "mnist"
    out = Path(a.out) if a.out else FEATURES_DIR / data
    net, info = train_feature_net(data, iters=a.iters, seed=a.seed, resolution=a.resolution, channels=a.channels)
    save_feature_net(net, {**info, "command": command_line(), "data": data}, out)
    print(json.dumps({"features": str(out), **info}))
