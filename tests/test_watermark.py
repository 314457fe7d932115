"""Watermarked students (methods/provenance/watermark.py) and ``fewstep detect``."""
import json
import math

import pytest
import torch

from fewstep.cli import main
from fewstep.config import build_config
from fewstep.data import load_dataset
from fewstep.methods.provenance.watermark import KeyPatterns, Watermark, WatermarkConfig, augment, detection, key_bits
from fewstep.train.loop import TrainConfig, Trainer

from helpers import toy_denoiser

TINY_UNET = {"arch": "unet", "in_channels": 1, "image_size": 16, "channels": 8, "ch_mult": [1, 2],
             "num_res_blocks": 1, "attn_levels": [], "num_classes": 10, "time_scale": 1000.0}


def test_detection_p_value_is_the_binomial_tail_by_hand():
    key = torch.tensor([1.0, 0.0, 1.0, 1.0])
    logits = torch.tensor([[3.0, -1.0, 2.0, 0.5],  # 4 of 4 bits
                           [3.0, 1.0, 2.0, 0.5],  # 3 of 4
                           [-3.0, 1.0, -2.0, -0.5]])  # 0 of 4
    res = detection(logits, key)
    assert res["bit_acc"] == [1.0, 0.75, 0.0]
    assert res["p_value"] == pytest.approx([1 / 16, 5 / 16, 1.0])


def test_key_from_string_or_seed_and_config_validation():
    assert key_bits(WatermarkConfig(bits=4, key="1001")).tolist() == [1.0, 0.0, 0.0, 1.0]
    a, b = key_bits(WatermarkConfig(bits=32)), key_bits(WatermarkConfig(bits=32, key_seed=7))
    assert a.shape == (32,) and torch.equal(a, key_bits(WatermarkConfig(bits=32))) and not torch.equal(a, b)
    for bad in ({"bits": 4, "key": "10"}, {"bits": 2, "key": "1x"}, {"w_bits": -1.0}, {"bits": 0}):
        with pytest.raises(ValueError):
            WatermarkConfig(**bad)


def test_augment_clips_shifts_and_adds_noise_reproducibly():
    x = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    a = augment(x, 0.0, 1, torch.Generator().manual_seed(3))
    assert sorted(a.flatten().tolist()) == sorted(x.flatten().tolist())  # a roll keeps every pixel
    assert augment(3 * x, 0.0, 0, torch.Generator()).abs().max() == 1.0  # images are clipped to [-1, 1] on the way
    b = augment(x, 0.5, 0, torch.Generator().manual_seed(3))
    assert 0.1 < (b - x).std() < 1.0


def _method(size: int = 16, **over):
    torch.manual_seed(0)
    cfg = build_config(WatermarkConfig, {"bits": 32, "channels": 16, **over})
    return Watermark(toy_denoiser(0, {**TINY_UNET, "image_size": size}), cfg, shape=(1, size, size), num_classes=10)


def _decoder_run(run, m):
    """A watermark run folder as ``fewstep detect`` reads it: the model's config and the decoder's weights."""
    from fewstep.io import save_tensors, write_json

    (run / "model").mkdir(parents=True, exist_ok=True)
    (run / "latest").mkdir(exist_ok=True)
    write_json({"method": m.config(), "data": {"shape": list(m.shape)}}, run / "model" / "config.json")
    save_tensors(m.decoder.state_dict(), run / "latest" / "decoder.safetensors")
    return run


def test_key_patterns_have_the_configured_strength_and_flip_with_the_bits():
    enc = KeyPatterns(8, (1, 6, 6), alpha=0.05)
    m = torch.randint(0, 2, (5, 8)).float()
    r = enc(m).detach()
    assert r.shape == (5, 1, 6, 6)
    assert r.flatten(1).pow(2).mean(1).sqrt().tolist() == pytest.approx([0.05] * 5, rel=1e-5)
    assert torch.allclose(enc(1 - m), -r, atol=1e-7)  # every bit inverted: the residual negated
    with pytest.raises(ValueError):
        WatermarkConfig(alpha=0.0)


def test_student_stage_trains_only_the_student_towards_its_image_with_the_key(tmp_path):
    """After the warm-up the patterns and the decoder stay bit for bit, the original student too, and the
    fidelity target is the original student's image plus the key's pattern (at RMS alpha)."""
    m = _method(decoder_warmup=2)
    data = load_dataset("digits", "train")
    Trainer(m, data, TrainConfig(out=str(tmp_path / "a"), max_iters=2, batch_size=8, ema_decay=0.0, progress=False)).train()
    frozen = [v.clone() for net in (m.encoder, m.decoder, m.original.net) for v in net.state_dict().values()]
    student = [p.detach().clone() for p in m.student.net.parameters()]
    Trainer(m, data, TrainConfig(out=str(tmp_path / "a"), max_iters=4, batch_size=8, ema_decay=0.0,
                                 progress=False)).train(resume=True)
    after = [v for net in (m.encoder, m.decoder, m.original.net) for v in net.state_dict().values()]
    assert len(after) == len(frozen) and all(torch.equal(a, b) for a, b in zip(after, frozen))
    assert any(not torch.equal(a, b) for a, b in zip(student, m.student.net.parameters()))
    x0 = torch.zeros(3, 1, 16, 16)
    marked = m.marked(x0, m.key)
    assert torch.allclose(marked[0], marked[1]) and torch.allclose(marked[0], m.encoder(m.key[None])[0])


@pytest.mark.slow
def test_the_student_learns_to_carry_the_key_and_unmarked_images_do_not(tmp_path):
    """After training, the student's samples (fresh noise) carry the key; the original student's samples
    and real images agree with it at about chance. Controls: before training (the decoder untrained,
    the student the original) the student's samples are at chance too, so the bar cannot pass unlearned."""
    m = _method(bits=16, alpha=0.05, optim={"lr": 1e-3, "grad_clip": 1.0}, decoder_warmup=300)
    data = load_dataset("digits", "train")

    def key_acc(x):
        with torch.no_grad():
            return float(((m.decoder(x.clamp(-1, 1)) > 0).float() == m.key).float().mean())

    def samples(den, seed=5):
        with torch.no_grad():
            return m.render(den, 256, torch.arange(256) % 10, torch.Generator().manual_seed(seed))

    before = key_acc(samples(m.student))
    Trainer(m, data, TrainConfig(out=str(tmp_path / "a"), max_iters=450, batch_size=64, ema_decay=0.0, progress=False)).train()
    after, original = key_acc(samples(m.student)), key_acc(samples(m.original))
    real = key_acc(load_dataset("digits", "test").x[:256])
    assert after > 0.95, after
    for name, value in (("original student", original), ("real images", real), ("before training", before)):
        assert abs(value - 0.5) < 0.2, f"{name} agree with the key at {value}"


def test_sample_images_are_what_detect_reads(tmp_path, capsys):
    """``fewstep sample --images`` writes one PNG per sample at the model's size; detect reads each."""
    run = _decoder_run(tmp_path / "run", _method())
    assert main(["sample", "--model", "mnist", "--sampler", "euler", "--steps", "1", "--n", "3", "--images",
                 "--out", str(tmp_path / "s")]) == 0
    res = json.loads(capsys.readouterr().out.strip())
    assert res["images"] == [str(tmp_path / "s" / f"sample_{i:04d}.png") for i in range(3)]
    assert main(["detect", "--decoder", str(run), *res["images"]]) == 1  # 28x28 digits, a 16x16 decoder: refused
    assert "28x28 pixels" in capsys.readouterr().err
    _decoder_run(run, _method(size=28))
    assert main(["detect", "--decoder", str(run), *res["images"]]) == 0
    assert [json.loads(line)["image"] for line in capsys.readouterr().out.strip().splitlines()] == res["images"]


def test_detect_cli_reads_pngs_and_refuses_other_runs(tmp_path, capsys):
    from PIL import Image

    m = _method()
    run = _decoder_run(tmp_path / "run", m)
    Image.fromarray((torch.rand(16, 16) * 255).to(torch.uint8).numpy()).save(tmp_path / "a.png")
    assert main(["detect", "--decoder", str(run), str(tmp_path / "a.png")]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert len(out["bits"]) == 32 and out["key"] == m.config()["key_resolved"]
    assert out["p_value"] == pytest.approx(sum(math.comb(32, j) for j in range(round(out["bit_acc"] * 32), 33)) / 2**32)
    Image.fromarray((torch.rand(9, 16) * 255).to(torch.uint8).numpy()).save(tmp_path / "b.png")
    assert main(["detect", "--decoder", str(run), str(tmp_path / "b.png")]) == 1
    assert "16x9 pixels" in capsys.readouterr().err
    (tmp_path / "c.png").write_text("not an image")
    assert main(["detect", "--decoder", str(run), str(tmp_path / "c.png")]) == 1
    assert main(["detect", "--decoder", str(tmp_path), str(tmp_path / "a.png")]) == 1
    assert "not a watermark run" in capsys.readouterr().err
