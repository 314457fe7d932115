"""``fewstep train-features``: the feature classifier behind FD and class accuracy."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import command_line


def run(a):
    from ..metrics.features import features_dir, features_note, save_feature_net, train_feature_net

    data = a.data or "mnist"
    out = Path(a.out) if a.out else features_dir(data)
    net, info = train_feature_net(data, iters=a.iters, seed=a.seed, resolution=a.resolution, channels=a.channels)
    save_feature_net(net, {**info, "command": command_line(), "data": data}, out)
    note = features_note(info["test_acc"])
    if note:
        print(f"warning: {note}", file=sys.stderr)
    print(json.dumps({"features": str(out), **info}))
