"""``fewstep eval``: FD, class accuracy, precision/recall and speed of one model at one sampling (JSON)."""
from __future__ import annotations

import json
from dataclasses import asdict

from ..errors import FewstepError
from ..io import write_text_atomic
from .common import cached, data_format, spec_from


def run(a):
    from ..data import load_dataset
    from ..metrics.evaluate import mean_std, measure
    from ..metrics.features import features_accuracy, features_note, load_features
    from ..metrics.speed import images_per_second, macs_per_image, parameter_count
    from ..model_io import load_denoiser
    from ..nets.cache import cache_label
    from ..samplers.generate import generate

    den, mcfg = load_denoiser(a.model)
    den = cached(den, a.cache)
    spec = spec_from(a, mcfg)
    data = a.data or mcfg.get("data", {}).get("name")
    if not data:
        raise FewstepError("--data is required (the model does not record its dataset)")
    test = load_dataset(data, "test", *data_format(mcfg))
    feats = load_features(data, a.features, shape=test.shape)
    n = a.n or len(test)
    test = test.subset(n)
    labels = test.class_balanced_labels(n)
    ref_feats = feats.features(test.x)
    rows, nfe = [], None
    for s in range(a.seeds):
        samples, nfe = generate(den, n, spec, test.shape, labels, seed=a.seed + s, bf16=a.bf16, return_nfe=True)
        rows.append(measure(samples, labels, test.x, feats, ref_feats))
    res = {"model": a.model, "data": data, "n": n, "seeds": a.seeds, "nfe": nfe, "sampling": asdict(spec),
           **mean_std(rows)}
    gen = lambda b: generate(den, b, spec, test.shape, test.class_balanced_labels(b), seed=0, batch=b, bf16=a.bf16)  # noqa: E731
    res["images_per_s"] = images_per_second(gen)
    res["features_test_acc"] = features_accuracy(data, a.features)
    note = features_note(res["features_test_acc"])
    if note:
        res["warnings"] = [note]
    res.update(cache=a.cache or cache_label(den), params=parameter_count(den), macs=macs_per_image(gen))
    text = json.dumps(res, indent=2)
    if a.out:
        write_text_atomic(a.out, text + "\n")
    print(text)
