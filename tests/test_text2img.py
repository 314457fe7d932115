"""The miniature text-to-image Stable Diffusion (pipelines/mini_sd.py, ``fewstep train-text2img``): captions,
the character tokenizer, the contrastive text-encoder loss, and a pipeline folder that diffusers loads and
fewstep distils through its normal ``diffusers:PATH`` route."""
import json
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from fewstep.cli import main  # noqa: E402
from fewstep.data.captions import (  # noqa: E402
    DIGIT_WORDS,
    HELD_OUT_PHRASINGS,
    MAX_CAPTION_CHARS,
    STROKES,
    TRAIN_PHRASINGS,
    caption,
    captions_for,
    composed_phrasing,
    evaluation_prompts,
    ink_bins,
    ink_tertiles,
    mnist_captions,
    prompts_for,
    to_pipeline_images,
    training_phrasing,
)
from fewstep.pipelines import mini_sd  # noqa: E402


def test_captions_name_their_digit_and_the_held_out_phrasings_are_new_sentences():
    assert not set(TRAIN_PHRASINGS) & set(HELD_OUT_PHRASINGS)
    for p in TRAIN_PHRASINGS + HELD_OUT_PHRASINGS:
        for d in range(10):
            text = caption(d, p, STROKES[2])
            assert str(d) in text or DIGIT_WORDS[d] in text.split(", ")[0].split()
            assert len(text) <= MAX_CAPTION_CHARS
    assert prompts_for([3, 8]) == [caption(3, HELD_OUT_PHRASINGS[0]), caption(8, HELD_OUT_PHRASINGS[1])]


def test_the_training_grammar_names_exactly_one_digit_and_never_writes_held_out_wording():
    """Composed captions put the digit among many words (else the UNet memorises a dozen sentences), but a
    caption naming a second digit would teach the wrong image, and a held-out sentence or word in training
    would make held-out adherence a training number."""
    import re

    g = torch.Generator().manual_seed(0)
    composed = {composed_phrasing(g) for _ in range(3000)}
    assert len(composed) > 1000 and not composed & set(HELD_OUT_PHRASINGS)
    held_only = {"picture", "scanned", "by hand"}
    for template in composed:
        for d in range(10):
            text = caption(d, template, STROKES[2])
            assert len(text) <= MAX_CAPTION_CHARS
            named = [w for w in DIGIT_WORDS if re.search(w, text)] + re.findall(r"\d", text)
            assert named in ([DIGIT_WORDS[d]], [str(d)]), (text, named)
            assert not any(w in text for w in held_only) and "thin" not in text
    fixed = sum(training_phrasing(g) in TRAIN_PHRASINGS for _ in range(2000)) / 2000
    assert 0.2 < fixed < 0.35  # a quarter of training captions keep the fixed sentences adherence reports on


def test_adherence_prompts_split_evenly_between_held_out_and_training_wording_for_every_digit():
    labels = torch.arange(10).repeat_interleave(8).tolist()  # sorted, as class_balanced_labels gives them
    prompts, held_out = evaluation_prompts(labels)
    assert len(prompts) == 80 and int(held_out.sum()) == 40
    held = {caption(d, p) for d in range(10) for p in HELD_OUT_PHRASINGS}
    trained = {caption(d, p) for d in range(10) for p in TRAIN_PHRASINGS}
    for text, h, y in zip(prompts, held_out.tolist(), labels):
        assert text in (held if h else trained) and text in {caption(y, p) for p in HELD_OUT_PHRASINGS + TRAIN_PHRASINGS}
    for d in range(10):
        mine = [h for h, y in zip(held_out.tolist(), labels) if y == d]
        assert sum(mine) == len(mine) // 2
    assert len({p for p, h in zip(prompts, held_out.tolist()) if h}) == 40 and len(set(prompts)) > 60


def test_stroke_width_is_stated_only_for_the_thinnest_and_thickest_thirds():
    x = torch.linspace(-1, 1, 300).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)  # ink rises with the index
    bins = ink_bins(x, ink_tertiles(x))
    assert bins.tolist() == [0] * 100 + [1] * 100 + [2] * 100
    texts, stated = captions_for(torch.zeros(300, dtype=torch.long), bins, torch.Generator().manual_seed(0), p_strokes=1.0)
    assert (stated == torch.where(bins == 1, -1, bins)).all()  # regular ink is never described
    assert all(("thick" in t) == (b == 2) and ("thin" in t) == (b == 0) for t, b in zip(texts, bins.tolist()))
    _, none = captions_for(torch.zeros(300, dtype=torch.long), bins, torch.Generator().manual_seed(0), p_strokes=0.0)
    assert (none == -1).all()


def test_the_character_tokenizer_keeps_every_caption_whole_and_round_trips(tmp_path):
    tok = mini_sd.build_tokenizer()
    tok.save_pretrained(tmp_path)
    again = type(tok).from_pretrained(tmp_path, local_files_only=True)
    texts = [caption(d, p, s) for d in range(10) for p in TRAIN_PHRASINGS + HELD_OUT_PHRASINGS for s in (None, STROKES[2])]
    ids = mini_sd._tokens(again, texts)
    assert ids.shape == (len(texts), mini_sd.MAX_TOKENS)
    assert (ids == again.eos_token_id).any(1).all()  # nothing truncated: every caption ends inside the window
    decoded = again.batch_decode(ids, skip_special_tokens=True)
    assert [d.replace(" ", "") for d in decoded] == [t.replace(" ", "") for t in texts]
    assert mini_sd._tokens(again, ["a 7"]).tolist() != mini_sd._tokens(again, ["a 1"]).tolist()


def test_contrastive_loss_is_the_symmetric_multi_positive_cross_entropy():
    labels, bins = torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1])
    stated = torch.tensor([-1, 2, -1])  # caption 1 says "thick": only image 1 matches it
    pos = mini_sd._positives(labels, bins, stated)
    assert pos.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.5, -1.0], [0.0, 0.3, 1.0]])
    ls_row = [[v - math.log(sum(math.exp(u) for u in row)) for v in row] for row in logits.tolist()]
    cols = logits.T.tolist()
    ls_col = [[v - math.log(sum(math.exp(u) for u in col)) for v in col] for col in cols]  # ls_col[b][a]
    t2i = -((ls_row[0][0] + ls_row[0][1]) / 2 + ls_row[1][1] + ls_row[2][2]) / 3
    i2t = -(ls_col[0][0] + (ls_col[1][0] + ls_col[1][1]) / 2 + ls_col[2][2]) / 3
    assert mini_sd.contrastive_loss(logits, pos).item() == pytest.approx((t2i + i2t) / 2, rel=1e-6)


def test_pipeline_images_are_mnist_padded_in_three_grey_channels_and_back():
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    big = to_pipeline_images(x)
    assert big.shape == (5, 3, 32, 32) and (big[..., :2, :] == -1).all() and (big[:, 0] == big[:, 2]).all()
    assert torch.allclose(mini_sd.to_mnist_images(big), x, atol=1e-6)


def _train_tiny(out, unet_iters, capsys):
    assert main(["train-text2img", "--out", str(out), "--vae-iters", "3", "--text-iters", "3", "--unet-iters", str(unet_iters),
                 "--batch-size", "8", "--caption-copies", "1", "--eval-every", "0", "--eval-n", "10", "--threads", "1",
                 "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("t2i") / "run"
    assert main(["train-text2img", "--out", str(out), "--vae-iters", "3", "--text-iters", "3", "--unet-iters", "2",
                 "--batch-size", "8", "--caption-copies", "1", "--eval-every", "0", "--eval-n", "0", "--threads", "1",
                 "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_train_text2img_writes_a_pipeline_diffusers_loads_and_continues_only_the_unfinished_stage(tiny_pipeline, capsys):
    out, pipe_dir = tiny_pipeline, tiny_pipeline / "pipeline"
    info = json.loads((pipe_dir / "fewstep_training.json").read_text())
    assert info["unet"]["iterations"] == 2 and info["vae"]["iterations"] == 3
    assert "zero_shot_acc_held_out_phrasings" in info["text"]["report"]
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(pipe_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(["a handwritten 7", "the digit two"], num_inference_steps=2, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 3, 32, 32)  # the pipeline's own default size: UNet sample_size x VAE factor

    vae_mtime = (out / "vae" / "done.json").stat().st_mtime_ns
    res = _train_tiny(out, 4, capsys)  # more UNet iterations: only the UNet stage runs, from its checkpoint
    assert (out / "vae" / "done.json").stat().st_mtime_ns == vae_mtime
    state = json.loads((out / "unet_run" / "latest" / "trainer_state.json").read_text())
    assert state["iteration"] == 4
    assert json.loads((pipe_dir / "fewstep_training.json").read_text())["unet"]["iterations"] == 4
    assert set(res["eval"]) == {"cfg 1", "cfg 2"} and 0 <= res["eval"]["cfg 2"]["prompt_acc"] <= 1


@pytest.mark.slow
def test_a_lora_student_of_the_mini_sd_distils_on_mnist_captions_and_loads_in_diffusers(tiny_pipeline, tmp_path, capsys):
    pipe_dir = tiny_pipeline / "pipeline"
    out = tmp_path / "lcm"
    assert main(["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", "lcm", "--lora-rank", "4", "--data",
                 "mnist-captions", "--max-iters", "2", "--batch-size", "4", "--eval-every", "0", "--out", str(out),
                 "--threads", "1", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "prompt_acc" in res  # the periodic/final eval decodes and classifies the samples
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["data"]["name"] == "mnist-captions" and cfg["data"]["shape"] == [4, 8, 8]  # the pipeline's own 32 px
    assert main(["export", "--model", str(out), "--format", "diffusers", "--out", str(tmp_path / "export")]) == 0
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(pipe_dir, local_files_only=True)
    sched = json.loads((tmp_path / "export" / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    pipe.scheduler = getattr(diffusers, sched).from_pretrained(tmp_path / "export", subfolder="scheduler")
    pipe.load_lora_weights(tmp_path / "export")
    pipe.set_progress_bar_config(disable=True)
    meta = json.loads((tmp_path / "export" / "fewstep_sampling.json").read_text())
    images = pipe("the number 4", timesteps=meta["timesteps"], guidance_scale=1.0, output_type="pt").images
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()


def test_mnist_captions_refuses_another_resolution():
    with pytest.raises(ValueError, match="32x32"):
        mnist_captions(64)


def test_the_shipped_mini_sd_loads_by_name_through_the_diffusers_route():
    from fewstep.model_io import load_denoiser, pipeline_spec
    from fewstep.nets.adapters.diffusers import resolve_pipeline

    assert pipeline_spec("mnist-t2i") == "diffusers:mnist-t2i"
    assert pipeline_spec("mnist") == "mnist" and pipeline_spec("runs/t2i") == "runs/t2i"
    pipe_dir = resolve_pipeline("mnist-t2i")
    assert (pipe_dir / "model_index.json").is_file(), "the mini SD is not shipped in fewstep/assets/teachers/mnist-t2i"
    info = json.loads((pipe_dir / "fewstep_training.json").read_text())
    assert "train-text2img" in info["command"]  # the command that trained it travels with it
    den, cfg = load_denoiser("mnist-t2i")
    assert cfg["diffusers"]["pipeline"] == str(pipe_dir)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert den(x, torch.full((2,), 500.0), den.net.example_cond(2)).shape == x.shape  # SD timestep index


@pytest.mark.slow
def test_the_shipped_mini_sd_draws_the_prompted_digit_in_diffusers():
    """The shipped pipeline loads in diffusers offline and, with its own DDIM scheduler, draws the digit each
    prompt names, in training wording and in held-out wording alike: the shipped classifier agrees on nearly
    all of a small batch (an untrained UNet scores ~0.1; the teacher trained on twelve fixed sentences scored
    0.68 on held-out wording; benchmarks/results/text2img_mnist.json has the full measurement)."""
    from fewstep.metrics.features import load_features
    from fewstep.nets.adapters.diffusers import resolve_pipeline

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(resolve_pipeline("mnist-t2i"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    labels = sorted(list(range(10)) * 4)
    prompts, held_out = evaluation_prompts(labels)
    images = pipe(prompts, num_inference_steps=20, guidance_scale=2.0, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images
    with torch.no_grad():
        digits = load_features("mnist")(mini_sd.to_mnist_images(images * 2 - 1)).argmax(1)
    right = (digits == torch.tensor(labels)).float()
    assert right[~held_out].mean() >= 0.9 and right[held_out].mean() >= 0.85


def test_the_text2img_results_table_is_its_json_and_marks_carried_rows():
    """benchmarks/results/text2img_mnist.md is text2img_table of the JSON beside it; rows carried from an
    earlier file of the same teacher (the benchmark's --carry) say so, in the row and below the table."""
    from pathlib import Path

    from fewstep.report import text2img_table

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    res = json.loads((results / "text2img_mnist.json").read_text())
    assert (results / "text2img_mnist.md").read_text() == text2img_table(res)
    row = {"model": "teacher", "method": "teacher", "sampler": "euler", "grid": "trailing", "steps": 2, "nfe": 2, "cfg": 1.0,
           "fd": 20.0, "fd_std": 1.0, "prompt_acc": 0.95, "precision": 0.9, "recall": 0.8, "images_per_s": 100}
    fresh = text2img_table({"rows": [row]})
    carried = text2img_table({"rows": [{**row, "carried": "old.json"}]})
    assert "*" not in fresh and "| teacher * |" in carried and "carried from `old.json`" in carried
