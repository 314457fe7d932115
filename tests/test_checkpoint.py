import os
import pickle

import pytest
import torch

from fewstep.errors import CheckpointError
from fewstep.io import atomic_dir, load_state_strict, load_tensors, save_tensors
from fewstep.model_io import load_denoiser, save_denoiser

from helpers import benchmark_script, toy_denoiser


def _saved(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors({"a": torch.randn(64, 64), "b": torch.arange(10)}, path)
    return path


def test_round_trip(tmp_path):
    t = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    save_tensors(t, tmp_path / "t.safetensors")
    back = load_tensors(tmp_path / "t.safetensors")
    assert torch.equal(back["a"], t["a"]) and torch.equal(back["b"], t["b"])


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_with_code_payload_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_tensors(p)
    torch.save({"w": torch.zeros(2)}, tmp_path / "torchsave.safetensors")
    with pytest.raises(CheckpointError, match="pickle"):
        load_tensors(tmp_path / "torchsave.safetensors")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("damage", ["truncate", "zero", "bitflip_header", "garbage"])
def test_corrupt_files_give_one_clear_error(tmp_path, damage):
    p = _saved(tmp_path)
    raw = bytearray(p.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "zero":
        raw = bytearray(len(raw))
    elif damage == "bitflip_header":
        raw[10] ^= 0xFF
    else:
        raw = bytearray(b"not a checkpoint at all")
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as e:
        load_tensors(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_nan_weights_refused(tmp_path):
    save_tensors({"a": torch.tensor([1.0, float("nan")])}, tmp_path / "n.safetensors")
    with pytest.raises(CheckpointError, match="NaN"):
        load_tensors(tmp_path / "n.safetensors")


def test_strict_loading(tmp_path):
    net = torch.nn.Linear(3, 2)
    sd = net.state_dict()
    with pytest.raises(CheckpointError, match="missing"):
        load_state_strict(net, {"weight": sd["weight"]}, "f")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_state_strict(net, {**sd, "extra": torch.zeros(1)}, "f")
    with pytest.raises(CheckpointError, match="shape"):
        load_state_strict(net, {"weight": torch.zeros(2, 4), "bias": sd["bias"]}, "f")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    def write(tmp):
        (tmp / "half.json").write_text("{")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_dir(tmp_path / "ckpt", write)
    assert not (tmp_path / "ckpt").exists()
    assert list(tmp_path.iterdir()) == []


def test_model_folder_round_trip(tmp_path):
    den = toy_denoiser()
    save_denoiser(den, tmp_path / "m", {"note": 1})
    back, cfg = load_denoiser(str(tmp_path / "m"))
    x, t = torch.randn(5, 2), torch.full((5,), 1.0)
    assert cfg["note"] == 1
    assert torch.equal(back(x, t), den(x, t))


def test_shipped_mnist_teacher_loads_by_name_and_records_its_training():
    from fewstep.samplers import SamplingSpec, generate

    den, cfg = load_denoiser("mnist")
    training = cfg["training"]
    assert training["command"].startswith("fewstep train-teacher") and training["iterations"] > 0
    assert training["train_s"] > 0
    x = generate(den, 10, SamplingSpec("euler", 2, "karras"), (1, 28, 28), torch.arange(10), seed=0)
    assert x.shape == (10, 1, 28, 28) and torch.isfinite(x).all()


@pytest.mark.slow
def test_shipped_mnist_teacher_draws_the_digits_it_is_asked_for():
    """The trained weights, not just their shapes: 8 DPM-Solver++ steps give digits the shipped
    classifier reads as the requested class (random weights would score ~0.1)."""
    from fewstep.metrics.features import load_features
    from fewstep.samplers import SamplingSpec, generate

    den, _ = load_denoiser("mnist")
    labels = torch.arange(100) % 10
    x = generate(den, 100, SamplingSpec("dpmpp2m", 8, "karras"), (1, 28, 28), labels, seed=0, bf16=True)
    feats = load_features("mnist")
    acc = (feats.head(feats.features(x.clamp(-1, 1))).argmax(1) == labels).float().mean().item()
    assert acc > 0.8, acc


def test_weight_average_probe_writes_the_mean_of_a_windows_student_checkpoints(tmp_path):
    """benchmarks/weight_average_probe.py: the model folder holds the mean of the raw student weights of the
    checkpoints inside the window (integer tensors from the last), the run's config, and nothing when no checkpoint
    lies in the window."""
    probe = benchmark_script("weight_average_probe")
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text('{"kind": "test"}')
    weights = {it: {"w": torch.full((3,), float(it)), "n": torch.tensor([it])} for it in (100, 200, 300)}
    for it, state in weights.items():
        (run / "checkpoints" / f"{it:08d}").mkdir(parents=True)
        save_tensors(state, run / "checkpoints" / f"{it:08d}" / "student.safetensors")
    probe.main(["--run", str(run), "--window", "150:300", "--out", str(tmp_path / "avg")])
    out = tmp_path / "avg" / "avg150-300"
    avg = load_tensors(out / "model.safetensors")
    assert torch.allclose(avg["w"], torch.full((3,), 250.0)) and int(avg["n"]) == 300
    assert (out / "config.json").read_text() == '{"kind": "test"}'
    with pytest.raises(SystemExit, match="no checkpoint"):
        probe.main(["--run", str(run), "--window", "10:20", "--out", str(tmp_path / "avg")])
    assert not (tmp_path / "avg" / "avg10-20").exists()
