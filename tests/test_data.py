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


def _grey(path, value, size):
    from PIL import Image

    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint8), mode="L").save(path)


def test_folder_format_is_the_folders_own(tmp_path):
    """Grey 16x16 stays 16x16 grey; mixed sizes take the most common short side; one RGB image makes
    the folder RGB; --resolution/--channels override; one class sub-folder is unconditional."""
    grey = tmp_path / "grey"
    for c in ("a", "b"):
        (grey / c).mkdir(parents=True)
        for i in range(6):
            _grey(grey / c / f"{i}.png", 40 * i, (16, 16))
    (grey / "a" / "notes.txt").write_text("not an image")  # skipped: not an image extension
    tr = load_dataset(f"folder:{grey}", "train")
    assert tr.shape == (1, 16, 16) and tr.num_classes == 2 and tr.meta["resolution"] == 16
    assert load_dataset(f"folder:{grey}", "test").shape == (1, 16, 16)
    assert load_dataset(f"folder:{grey}", "train", resolution=8, channels=3).shape == (3, 8, 8)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, size in enumerate([(20, 12), (12, 30), (12, 12), (24, 24), (8, 8)]):
        _grey(mixed / f"{i}.png", 100, size)
    assert load_dataset(f"folder:{mixed}", "train").shape == (1, 12, 12)  # short sides 12, 12, 12, 24, 8
    _png(mixed / "colour.png", 100, (12, 12))
    assert load_dataset(f"folder:{mixed}", "test").shape == (3, 12, 12)
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    for i in range(4):
        _grey(one / f"{i}.png", 60, (10, 10))
    ds = load_dataset(f"folder:{tmp_path / 'one'}", "train")
    assert ds.labels is None and ds.num_classes == 0 and ds.shape == (1, 10, 10)


def test_a_corrupt_image_is_an_error_naming_it(tmp_path):
    for i in range(3):
        _grey(tmp_path / f"{i}.png", 10, (8, 8))
    (tmp_path / "2.png").write_bytes((tmp_path / "2.png").read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match=r"cannot read image .*2\.png"):
        load_dataset(f"folder:{tmp_path}", "train")
    (tmp_path / "2.png").write_text("plain text with a .png name")
    with pytest.raises(ValueError, match=r"cannot read image .*2\.png"):
        load_dataset(f"folder:{tmp_path}", "test", resolution=8, channels=1)  # 2.png is the held-out image
    with pytest.raises(ValueError, match="channels"):
        load_dataset(f"folder:{tmp_path}", "train", channels=2)


def test_a_folder_teacher_is_sized_from_its_images():
    from fewstep.methods.teacher import unet_for

    assert unet_for((1, 16, 16))["ch_mult"] == (1, 2, 2) and unet_for((1, 16, 16))["attn_levels"] == (2,)
    assert unet_for((3, 32, 32))["ch_mult"] == (1, 2, 2, 2) and unet_for((3, 32, 32))["in_channels"] == 3
    assert unet_for((1, 8, 8))["ch_mult"] == (1, 2)


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
