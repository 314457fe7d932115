import json

import numpy as np
import pytest
import torch

from fewstep.data import BatchSampler, load_dataset


def test_mnist_split_is_balanced_and_disjoint():
    tr, te = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    assert tr.x.shape == (4000, 1, 28, 28) and te.x.shape == (1000, 1, 28, 28)
    assert torch.bincount(tr.labels).tolist() == [400] * 10 and torch.bincount(te.labels).tolist() == [100] * 10
    assert tr.x.min() >= -1 and tr.x.max() <= 1
    a = {hash(x.numpy().tobytes()) for x in tr.x[:500]}
    assert not a & {hash(x.numpy().tobytes()) for x in te.x}


def test_digits_and_toy2d():
    d = load_dataset("digits", "train")
    assert d.x.shape == (1500, 1, 16, 16) and len(load_dataset("digits", "test")) == 297
    t = load_dataset("toy2d", "train")
    assert t.x.shape == (20000, 2) and t.num_classes == 8
    m = load_dataset("toy2d:moons", "test")
    assert m.num_classes == 2


def test_batch_sampler_is_a_function_of_iteration():
    s1, s2 = BatchSampler(100, 32, seed=1), BatchSampler(100, 32, seed=1)
    assert torch.equal(s1.indices(7), s2.indices(7))
    seen = torch.cat([s1.indices(i) for i in range(25)])  # 800 = 8 epochs
    assert torch.bincount(seen, minlength=100).tolist() == [8] * 100
    assert not torch.equal(BatchSampler(100, 32, seed=2).indices(0), s1.indices(0))


def _png(path, value, size=(20, 12)):
    from PIL import Image

    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def test_folder_with_class_subfolders(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(10):
            _png(tmp_path / c / f"{i}.png", 200 if c == "dog" else 10)
    tr = load_dataset(f"folder:{tmp_path}", "train", resolution=8)
    assert tr.x.shape[1:] == (3, 8, 8) and tr.num_classes == 2 and tr.meta["classes"] == ["cat", "dog"]
    assert set(tr.labels.tolist()) == {0, 1}
    assert len(tr) + len(load_dataset(f"folder:{tmp_path}", "test", resolution=8)) == 20


def test_folder_with_captions(tmp_path):
    rows = []
    for i in range(5):
        _png(tmp_path / f"im{i}.png", 30 * i)
        rows.append({"file_name": f"im{i}.png", "text": f"a photo number {i}"})
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    tr = load_dataset(f"folder:{tmp_path}", "train", resolution=4)
    assert tr.captions and tr.captions[0].startswith("a photo")
    assert tr.batch(torch.tensor([0]))["captions"] == [tr.captions[0]]


def test_bad_data_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"folder:{tmp_path}/nope")
    with pytest.raises(ValueError, match="no images"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n')
    with pytest.raises(ValueError, match="line 1"):
        load_dataset(f"folder:{tmp_path}", resolution=5)


def test_class_balanced_labels_keep_the_split_balance():
    te = load_dataset("mnist", "test")  # stored sorted by class
    for n in (100, 500, 1000, 2500):
        counts = torch.bincount(te.class_balanced_labels(n), minlength=10)
        assert counts.tolist() == [n // 10] * 10, n


def test_subset_is_class_balanced():
    te = load_dataset("mnist", "test")
    sub = te.subset(200)
    assert torch.bincount(sub.labels).tolist() == [20] * 10 and sub.x.shape == (200, 1, 28, 28)
    assert te.subset(5000) is te
