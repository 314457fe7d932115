"""Stable-Diffusion-scale code paths on tiny random models of the real diffusers classes (offline):
scheduler -> noise process, the UNet adapter, LoRA students of LCM and DMD2 through the CLI, and an
export that diffusers' own pipeline loads and samples exactly as fewstep does."""
import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from fewstep.cli import main  # noqa: E402
from fewstep.nets import Cond  # noqa: E402
from fewstep.nets.adapters.diffusers import process_from_scheduler  # noqa: E402
from fewstep.noise import process_from_config  # noqa: E402

from tiny_sd import make_caption_folder, make_flux_pipeline, make_sd3_pipeline, make_sd_pipeline, make_sdxl_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    return make_sd_pipeline(root / "pipe"), make_caption_folder(root / "data")


@pytest.mark.parametrize("cls,kw,family,param", [
    ("DDPMScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, "vp", "eps"),
    ("EulerDiscreteScheduler", {"beta_schedule": "scaled_linear", "prediction_type": "v_prediction"}, "vp", "v"),
    ("DDIMScheduler", {"beta_schedule": "linear"}, "vp", "eps"),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, "flow", "flow"),
])
def test_scheduler_config_maps_to_our_process(cls, kw, family, param):
    sched = getattr(diffusers, cls)(**kw)
    proc_cfg, p = process_from_scheduler(dict(sched.config, _class_name=cls))
    assert proc_cfg["family"] == family and p == param
    proc = process_from_config(proc_cfg)
    if family == "vp":  # same alphas_cumprod at every integer timestep
        t = torch.arange(0, 1000, 37, dtype=torch.float64)
        ours = proc.alpha(t) ** 2
        assert torch.allclose(ours, sched.alphas_cumprod[t.long()].double(), rtol=1e-5)
    else:
        assert proc.shift == 3.0


def test_unsupported_scheduler_is_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        process_from_scheduler({"_class_name": "DDPMScheduler", "prediction_type": "magic"})


def test_teacher_adapter_is_the_unet(sd):
    from fewstep.model_io import load_denoiser

    pipe_dir, _ = sd
    den, info = load_denoiser(f"diffusers:{pipe_dir}")
    assert den.param == "eps" and info["diffusers"]["scheduler"]["_class_name"] == "DDPMScheduler"
    unet = diffusers.UNet2DConditionModel.from_pretrained(pipe_dir / "unet")
    x, text = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 32)
    t = torch.tensor([999.0, 250.0])
    eps = den.predict("eps", x, t, Cond(text=text))
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=text).sample
    assert torch.allclose(eps, ref, atol=1e-5)


def test_a_lora_student_of_a_diffusers_teacher_holds_no_second_copy_of_the_unet(sd):
    """DMD2-LoRA keeps teacher, student, EMA and a full fake score: two UNets' weights (teacher + fake)
    and three sets of adapters, where separate copies would hold four UNets; adapters off, the student
    is the teacher bit for bit."""
    from fewstep.methods.base import LoRAConfig
    from fewstep.methods.distribution_matching.dmd2 import DMD2, DMD2Config
    from fewstep.model_io import load_denoiser
    from fewstep.nets.ema import EMA
    from fewstep.nets.lora import adapters
    from fewstep.nets.sharing import unique_bytes

    pipe_dir, _ = sd
    teacher, _ = load_denoiser(f"diffusers:{pipe_dir}")
    m = DMD2(teacher, DMD2Config(nfe=1, lora=LoRAConfig(rank=4)), shape=(4, 8, 8))
    ema = EMA(m.student.net, 0.99)
    unet = unique_bytes(teacher.net)
    lora = sum(p.numel() * p.element_size() for n, p in m.student.net.named_parameters() if "lora_" in n)
    assert unique_bytes(teacher.net, m.student.net, ema.net, m.fake.net) == 2 * unet + 2 * lora
    with torch.no_grad():
        for n, p in m.student.net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([999.0, 250.0]), Cond(text=torch.randn(2, 16, 32))
    ref = teacher(x, t, c)
    assert not torch.allclose(m.student(x, t, c), ref)
    with adapters(m.student.net, False):
        assert torch.equal(m.student(x, t, c), ref)


@pytest.mark.parametrize("method", ["lcm", "dmd2"])
def test_lora_distillation_trains_through_the_cli(sd, tmp_path, method, capsys):
    pipe_dir, data = sd
    out = tmp_path / method
    argv = ["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", method, "--lora-rank", "4", "--data",
            f"folder:{data}", "--resolution", "16", "--max-iters", "2", "--batch-size", "2", "--out", str(out),
            "--lr", "1e-2", "--no-progress", "--threads", "1", "--ckpt-every", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["arch"]["arch"] == "diffusers_unet" and cfg["arch"]["lora"]["rank"] == 4
    from fewstep.io import load_tensors

    w = load_tensors(out / "model" / "model.safetensors")
    lora_b = [v for k, v in w.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # the adapters trained (B starts at zero)
    more = [("3" if a == "2" and argv[i - 1] == "--max-iters" else a) for i, a in enumerate(argv)] + ["--resume"]
    assert main(more) == 0  # resumes from the checkpoint at 2 and trains one more iteration
    assert json.loads((out / "latest" / "trainer_state.json").read_text())["iteration"] == 3


@pytest.mark.parametrize("method", ["vsd", "snoopi", "sid"])
def test_image_free_methods_train_a_lora_student_from_prompts_alone(sd, tmp_path, method, capsys):
    """SD scale without images: a prompts file, a LoRA student, and (vsd/snoopi) a LoRA fake score on the
    teacher's own UNet; the student exports like any other."""
    pipe_dir, _ = sd
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a picture number 3\na picture number 7\n")
    out = tmp_path / method
    argv = ["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", method, "--lora-rank", "4", "--data",
            f"prompts:{prompts}", "--resolution", "16", "--max-iters", "2", "--batch-size", "2", "--out", str(out),
            "--lr", "1e-2", "--no-progress", "--threads", "1"]
    if method != "sid":
        argv += ["--set", "fake_lora.rank=4", "--set", "guidance_range=[1.5,3]" if method == "snoopi" else
                 "guidance_range=[2,2]"]
    assert main(argv) == 0, capsys.readouterr().err
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["arch"]["lora"]["rank"] == 4 and cfg["data"]["real_images"] == 0
    assert main(["export", "--model", str(out), "--format", "diffusers", "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "fewstep_sampling.json").is_file()


def test_an_image_method_refuses_a_prompts_only_dataset(sd, tmp_path, capsys):
    pipe_dir, _ = sd
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a picture number 3\n")
    assert main(["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", "dmd2", "--lora-rank", "4", "--data",
                 f"prompts:{prompts}", "--resolution", "16", "--max-iters", "1", "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 1
    assert "trains on images" in capsys.readouterr().err


@pytest.mark.slow
def test_export_loads_in_diffusers_and_reproduces_fewstep_sampling(sd, tmp_path, capsys):
    """pipeline.load_lora_weights(export) + the exported scheduler and timesteps give fewstep's output."""
    from fewstep.model_io import load_denoiser
    from fewstep.samplers import SamplingSpec, initial_noise, sample

    pipe_dir, data = sd
    out = tmp_path / "dmd2"
    assert main(["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", "dmd2", "--lora-rank", "4", "--lora-alpha",
                 "8", "--data", f"folder:{data}", "--resolution", "16", "--max-iters", "3", "--batch-size", "2",
                 "--lr", "1e-2", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    assert main(["export", "--model", str(out), "--format", "diffusers", "--out", str(tmp_path / "export")]) == 0
    meta = json.loads((tmp_path / "export" / "fewstep_sampling.json").read_text())
    assert meta["timesteps"] == [999] and meta["lora"]

    student, cfg = load_denoiser(str(out))
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(pipe_dir, local_files_only=True)
    prompt = "a picture number 3"
    with torch.no_grad():
        text = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
    spec = SamplingSpec(**cfg["sampling"])
    sig = torch.tensor(spec.sigmas, dtype=torch.float64)  # the student levels, ending at 0
    x = initial_noise(student.process, sig, (1, 4, 2, 2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = sample(student, x, sig, "multistep", cond=Cond(text=text))
        base = pipe(prompt, timesteps=meta["timesteps"], guidance_scale=1.0, latents=x.clone(),
                    output_type="latent").images
    pipe.scheduler = diffusers.LCMScheduler.from_pretrained(tmp_path / "export", subfolder="scheduler")
    with torch.no_grad():
        base = pipe(prompt, timesteps=meta["timesteps"], guidance_scale=1.0, latents=x.clone(),
                    output_type="latent").images
    pipe.load_lora_weights(tmp_path / "export")
    with torch.no_grad():
        theirs = pipe(prompt, timesteps=meta["timesteps"], guidance_scale=1.0, latents=x.clone(),
                      output_type="latent").images
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=1e-3), (theirs - ours).abs().max()
    assert not torch.allclose(base, ours, atol=1e-4)  # the LoRA matters: without it the output differs


@pytest.mark.slow
def test_a_phased_lora_student_exports_one_adapter_per_step_that_the_pipeline_switches(sd, tmp_path, capsys):
    """Phased DMD with --lora-rank: one adapter per phase on the frozen UNet. Exported, each adapter is its own
    file; loaded under its name and switched after each step (callback_on_step_end), the pipeline gives
    fewstep's sample from the same noise, and switching matters (the first adapter alone gives another)."""
    from fewstep.model_io import load_denoiser
    from fewstep.samplers import SamplingSpec, initial_noise, sample

    pipe_dir, data = sd
    out = tmp_path / "phased"
    assert main(["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", "phased_dmd", "--nfe", "2", "--lora-rank",
                 "4", "--data", f"folder:{data}", "--resolution", "16", "--max-iters", "4", "--batch-size", "2",
                 "--set", "gen_every=1", "--lr", "1e-2", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["arch"]["arch"] == "phase_lora" and cfg["arch"]["base"]["arch"] == "diffusers_unet"
    assert main(["export", "--model", str(out), "--format", "diffusers", "--out", str(tmp_path / "export")]) == 0
    meta = json.loads((tmp_path / "export" / "fewstep_sampling.json").read_text())
    adapters = meta["phase_adapters"]
    assert [a["adapter_name"] for a in adapters] == ["phase0", "phase1"] and len(meta["timesteps"]) == 2

    student, cfg = load_denoiser(str(out))
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(pipe_dir, local_files_only=True)
    pipe.scheduler = diffusers.LCMScheduler.from_pretrained(tmp_path / "export", subfolder="scheduler")
    for a in adapters:
        pipe.load_lora_weights(tmp_path / "export", weight_name=a["weight_name"], adapter_name=a["adapter_name"])
    prompt = "a picture number 3"
    with torch.no_grad():
        text = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
    sig = torch.tensor(SamplingSpec(**cfg["sampling"]).sigmas, dtype=torch.float64)
    x = initial_noise(student.process, sig, (1, 4, 2, 2), generator=torch.Generator().manual_seed(0))

    def next_phase(p, i, t, kw):
        p.set_adapters(adapters[min(i + 1, len(adapters) - 1)]["adapter_name"])
        return kw

    def run(**kw):  # the re-noising between steps drawn from the same seed as fewstep's
        with torch.no_grad():
            return pipe(prompt, timesteps=meta["timesteps"], guidance_scale=1.0, latents=x.clone(),
                        output_type="latent", generator=torch.Generator().manual_seed(1), **kw).images

    with torch.no_grad():
        ours = sample(student, x, sig, "multistep", cond=Cond(text=text), generator=torch.Generator().manual_seed(1))
    pipe.set_adapters("phase0")
    theirs = run(callback_on_step_end=next_phase)
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=1e-3), (theirs - ours).abs().max()
    pipe.set_adapters("phase0")
    assert not torch.allclose(run(), ours, atol=1e-4)  # the second step needs the second adapter


def test_a_phased_student_of_full_experts_is_refused_by_export_with_the_way_out(sd, tmp_path, capsys):
    pipe_dir, data = sd
    out = tmp_path / "phased_full"
    assert main(["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", "phased_dmd", "--nfe", "2", "--data",
                 f"folder:{data}", "--resolution", "16", "--max-iters", "1", "--batch-size", "2", "--out", str(out),
                 "--no-progress", "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["export", "--model", str(out), "--format", "diffusers", "--out", str(tmp_path / "export")]) != 0
    assert "--lora-rank" in capsys.readouterr().err and not (tmp_path / "export").exists()


@pytest.mark.slow
def test_an_euler_sampled_student_exports_with_the_euler_scheduler_on_its_own_levels(sd, tmp_path, capsys):
    """Progressive distillation's student (deterministic Euler on its nested grid) exports as ``unet/`` with
    EulerDiscreteScheduler and its levels as ``sigmas``: the pipeline reproduces fewstep's sample."""
    from fewstep.model_io import load_denoiser
    from fewstep.samplers import initial_noise, sample

    pipe_dir, data = sd
    out = tmp_path / "prog"
    assert main(["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", "progressive", "--nfe", "2", "--data",
                 f"folder:{data}", "--resolution", "16", "--max-iters", "2", "--batch-size", "2", "--lr", "1e-2",
                 "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    assert main(["export", "--model", str(out), "--format", "diffusers", "--out", str(tmp_path / "export")]) == 0
    meta = json.loads((tmp_path / "export" / "fewstep_sampling.json").read_text())
    assert meta["num_inference_steps"] == 2 and len(meta["sigmas"]) == 3 and meta["sigmas"][-1] == 0

    student, _ = load_denoiser(str(out))
    unet = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "export", subfolder="unet")
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(pipe_dir, unet=unet, local_files_only=True)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_pretrained(tmp_path / "export", subfolder="scheduler")
    prompt = "digit 3"
    with torch.no_grad():
        text = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
    sig = torch.tensor(meta["sigmas"], dtype=torch.float64)
    x = initial_noise(student.process, sig, (1, 4, 2, 2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = sample(student, x, sig, "euler", cond=Cond(text=text))
        theirs = pipe(prompt, sigmas=meta["sigmas"], guidance_scale=1.0, latents=x.clone().float(),
                      output_type="latent").images
    assert torch.allclose(theirs, ours.float(), atol=1e-4, rtol=1e-3), (theirs - ours).abs().max()


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl")
    return make_sdxl_pipeline(root / "pipe"), make_caption_folder(root / "data")


def test_sdxl_prompts_are_encoded_as_the_sdxl_pipeline_encodes_them(sdxl):
    from fewstep.data.encoded import encode_prompts

    pipe_dir, _ = sdxl
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(pipe_dir, local_files_only=True)
    prompts = ["a picture number 3", "a picture number 7"]
    ours = encode_prompts(pipe_dir, prompts, resolution=16)
    with torch.no_grad():
        text, null_text, pooled, null_pooled = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=True)
    assert ours["text"].shape == (2, 16, 64) and ours["pooled"].shape == (2, 24)
    assert torch.allclose(ours["text"], text, atol=1e-6) and torch.allclose(ours["pooled"], pooled, atol=1e-6)
    assert torch.equal(ours["null_text"].expand_as(null_text), null_text)  # zeros: force_zeros_for_empty_prompt
    assert torch.equal(ours["null_pooled"].expand_as(null_pooled), null_pooled)
    ids = pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), dtype=torch.float32,
                                 text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert torch.equal(ours["time_ids"], ids)


def test_sdxl_unet_without_pooled_embeddings_is_refused_in_one_line(sdxl):
    from fewstep.model_io import load_denoiser

    den, _ = load_denoiser(f"diffusers:{sdxl[0]}")
    with pytest.raises(ValueError, match="SDXL-class UNet"):
        den.predict("eps", torch.randn(1, 4, 8, 8), torch.tensor([500.0]), Cond(text=torch.randn(1, 16, 64)))


def test_sdxl_lora_student_distils_exports_and_samples_in_the_sdxl_pipeline(sdxl, tmp_path, capsys):
    """distill --teacher diffusers:<SDXL folder> --method lcm --lora-rank 4 (a traceback from inside diffusers
    before SDXL prompts were encoded); the export loads into StableDiffusionXLPipeline and generates."""
    pipe_dir, data = sdxl
    out = tmp_path / "lcm"
    assert main(["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", "lcm", "--lora-rank", "4", "--data",
                 f"folder:{data}", "--resolution", "16", "--max-iters", "2", "--batch-size", "2", "--lr", "1e-2",
                 "--out", str(out), "--no-progress", "--threads", "1"]) == 0, capsys.readouterr().err
    assert main(["export", "--model", str(out), "--format", "diffusers", "--out", str(tmp_path / "export")]) == 0
    meta = json.loads((tmp_path / "export" / "fewstep_sampling.json").read_text())
    assert meta["pipeline"] == "StableDiffusionXLPipeline" and meta["lora"]
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(pipe_dir, local_files_only=True)
    pipe.scheduler = diffusers.LCMScheduler.from_pretrained(tmp_path / "export", subfolder="scheduler")
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # 16 px through the VAE's 2x
    with torch.no_grad():
        base = pipe("a picture number 3", timesteps=meta["timesteps"], guidance_scale=1.0, latents=x.clone(),
                    height=16, width=16, output_type="latent").images
        pipe.load_lora_weights(tmp_path / "export")
        theirs = pipe("a picture number 3", timesteps=meta["timesteps"], guidance_scale=1.0, latents=x.clone(),
                      height=16, width=16, output_type="latent").images
    assert torch.isfinite(theirs).all() and not torch.allclose(base, theirs, atol=1e-5)  # the adapters load and act


@pytest.fixture(scope="module")
def flow_pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    return {"sd3": make_sd3_pipeline(root / "sd3"), "flux": make_flux_pipeline(root / "flux"),
            "data": make_caption_folder(root / "data")}


def _pipeline_prompts(pipe, kind: str, prompts: list[str]):
    """(text, pooled, null text, null pooled) from the pipeline's own encode_prompt."""
    with torch.no_grad():
        if kind == "sd3":
            text, null, pooled, null_pooled = pipe.encode_prompt(prompts, None, None, device="cpu",
                                                                 do_classifier_free_guidance=True, negative_prompt="")
            return text, pooled, null[:1], null_pooled[:1]
        text, pooled, _ = pipe.encode_prompt(prompts, None, device="cpu")
        null, null_pooled, _ = pipe.encode_prompt([""], None, device="cpu")
        return text, pooled, null, null_pooled


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_sd3_and_flux_prompts_are_encoded_as_their_pipelines_encode_them(flow_pipes, kind):
    """SD3: two CLIP encoders' penultimate states padded to T5's width, then T5's states; pooled = both
    projections. Flux: T5's states; pooled = CLIP's pooler output. Equal to the pipelines' encode_prompt."""
    from fewstep.data.encoded import encode_prompts

    path = flow_pipes[kind]
    cls = diffusers.StableDiffusion3Pipeline if kind == "sd3" else diffusers.FluxPipeline
    pipe = cls.from_pretrained(path, local_files_only=True)
    prompts = ["a picture number 3", "the digit seven"]
    got = encode_prompts(path, prompts, resolution=16)
    want = _pipeline_prompts(pipe, kind, prompts)
    for key, ref in zip(("text", "pooled", "null_text", "null_pooled"), want):
        assert got[key].shape == ref.shape and torch.allclose(got[key], ref, atol=1e-6), key
    assert got["text"].shape[1] == (16 + 256 if kind == "sd3" else 512)  # CLIP's 16 tokens + T5's 256; Flux: T5's 512


def test_flux_dynamic_shift_is_the_static_shift_its_scheduler_applies_at_that_resolution(flow_pipes):
    """FLUX.1-dev shifts its timesteps by image size (use_dynamic_shifting): fixed at the training resolution
    it is one static shift, and fewstep's process then reproduces the scheduler's sigmas."""
    from fewstep.nets.adapters.diffusers import dynamic_shift, latent_tokens, load_pipeline_teacher
    from fewstep.samplers.grids import make_grid

    path = flow_pipes["flux"]
    sched = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler")
    for res in (16, 64):
        seq = latent_tokens(path, res)
        assert seq == (res // 2 // 2) ** 2  # VAE /2, then 2x2 packing
        mu = 0.5 + (1.15 - 0.5) * (seq - 256) / (4096 - 256)  # FluxPipeline.calculate_shift
        den, _ = load_pipeline_teacher(path, res)
        assert den.process.shift == pytest.approx(dynamic_shift(sched.config, seq))
        flat = make_grid("flow", type(den.process)(), 4)[:-1]  # the unshifted flow grid (sigma_hat), without the final 0
        sched.set_timesteps(sigmas=(flat / (1 + flat)).tolist(), mu=mu)  # diffusers shifts them by mu
        ours = make_grid("flow", den.process, 4)[:-1]
        assert torch.allclose((ours / (1 + ours)).float(), sched.sigmas[:-1].float(), atol=1e-6)
    with pytest.raises(ValueError, match="resolution"):
        load_pipeline_teacher(path)


@pytest.mark.slow
@pytest.mark.parametrize("kind,method", [
    ("sd3", ["dmd2", "--set", "gan_gen_weight=0", "--set", "gan_disc_weight=0", "--max-iters", "6"]),
    ("flux", ["lcm", "--max-iters", "2"]),
])
def test_sd3_and_flux_lora_students_distil_export_and_sample_in_their_pipelines(flow_pipes, kind, method, tmp_path, capsys):
    """A 1-step LoRA student of an SD3 teacher (DMD2 without its GAN head: transformers have no bottleneck;
    its second student update is the first with a non-zero DM gradient) or a Flux teacher (LCM) trains,
    exports, and the pipeline with the export's scheduler, sigmas and LoRA reproduces fewstep's sample;
    without the LoRA it does not."""
    from fewstep.model_io import load_denoiser
    from fewstep.samplers import SamplingSpec, initial_noise, sample

    path = flow_pipes[kind]
    out = tmp_path / "student"
    assert main(["distill", "--teacher", f"diffusers:{path}", "--method", *method, "--nfe", "1", "--lora-rank", "4",
                 "--data", f"folder:{flow_pipes['data']}", "--resolution", "16", "--batch-size", "2", "--lr", "1e-2",
                 "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    assert main(["export", "--model", str(out), "--format", "diffusers", "--out", str(tmp_path / "export")]) == 0
    meta = json.loads((tmp_path / "export" / "fewstep_sampling.json").read_text())
    assert meta["lora"] and meta["timesteps"] is None and len(meta["sigmas"]) == 1

    student, cfg = load_denoiser(str(out))
    cls = diffusers.StableDiffusion3Pipeline if kind == "sd3" else diffusers.FluxPipeline
    pipe = cls.from_pretrained(path, local_files_only=True)
    prompt = "a picture number 3"
    text, pooled, _, _ = _pipeline_prompts(pipe, kind, [prompt])
    spec = SamplingSpec(**cfg["sampling"])
    sig = torch.tensor(spec.sigmas, dtype=torch.float64)
    x = initial_noise(student.process, sig, (1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = sample(student, x, sig, "multistep", cond=Cond(text=text, pooled=pooled))
    pack = (lambda z: cls._pack_latents(z, 1, 4, 8, 8)) if kind == "flux" else (lambda z: z)
    unpack = (lambda z: cls._unpack_latents(z, 16, 16, 2)) if kind == "flux" else (lambda z: z)
    pipe.scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(tmp_path / "export", subfolder="scheduler")
    call = dict(sigmas=meta["sigmas"], guidance_scale=meta["guidance_scale"], output_type="latent", height=16, width=16)
    with torch.no_grad():
        base = unpack(pipe(prompt, latents=pack(x.clone().float()), **call).images)
    pipe.load_lora_weights(tmp_path / "export")
    with torch.no_grad():
        theirs = unpack(pipe(prompt, latents=pack(x.clone().float()), **call).images)
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=1e-3), (theirs - ours).abs().max()
    assert not torch.allclose(base, ours, atol=1e-4)  # the LoRA matters: without it the output differs


def test_an_unknown_pipeline_with_several_text_encoders_is_refused_before_any_encoding(tmp_path):
    from fewstep.data.encoded import encoded_dataset

    pipe = tmp_path / "hunyuan"
    (pipe / "text_encoder_2").mkdir(parents=True)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanDiTPipeline"}))
    with pytest.raises(ValueError, match="HunyuanDiTPipeline.*not built"):
        encoded_dataset(pipe, "folder:/nonexistent", 16, tmp_path / "cache")


def test_export_refuses_a_student_of_a_non_diffusers_teacher(tmp_path, capsys):
    from fewstep.model_io import save_denoiser

    from helpers import toy_denoiser

    save_denoiser(toy_denoiser(), tmp_path / "m")
    assert main(["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "e")]) != 0
    assert "diffusers" in capsys.readouterr().err and not (tmp_path / "e").exists()


@pytest.mark.slow
def test_gpu_benchmark_script_runs_on_a_tiny_unet(tmp_path):
    """The GPU benchmark's code path (SD-style UNet, DMD2 step, bf16 autocast, FLOP count), on CPU."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "gpu_dmd2_sd15.py"
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(script), "--tiny", "--device", "cpu", "--steps", "1", "--batch", "1",
                        "--real-cfg", "1", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["flops"]["gen"] > res["flops"]["critic"] > 0 and res["step_s"]["gen"] > 0
    assert res["mfu"] is None and res["benchmark"] == "gpu_dmd2_sd15_tiny"


def test_sd3_transformer_adapter_is_the_transformer_in_flow_time():
    """SD3 / flow teachers: the adapter feeds 1000 t as diffusers does and predicts the velocity."""
    from fewstep.nets.adapters.diffusers import DiffusersSD3, build
    from fewstep.noise.precond import Denoiser

    torch.manual_seed(0)
    tr = diffusers.SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                         num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                         pooled_projection_dim=8, out_channels=4, pos_embed_max_size=16)
    proc_cfg, param = process_from_scheduler({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0})
    den = Denoiser(DiffusersSD3(tr), process_from_config(proc_cfg), param)
    x, text, pooled = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16), torch.randn(2, 8)
    t = torch.tensor([0.9, 0.3])
    v = den.predict("flow", x, t, Cond(text=text, pooled=pooled))
    with torch.no_grad():
        ref = tr(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=1000 * t).sample
    assert torch.allclose(v, ref, atol=1e-5)
    rebuilt = build(den.net.config())  # a saved SD3 student rebuilds from its config
    assert isinstance(rebuilt, DiffusersSD3)


def test_flux_transformer_adapter_packs_latents_as_the_pipeline():
    """Flux: 2x2 packing / unpacking and t in [0, 1] exactly as FluxPipeline feeds the transformer."""
    from diffusers import FluxPipeline

    from fewstep.nets.adapters.diffusers import DiffusersFlux, build
    from fewstep.noise.precond import Denoiser

    torch.manual_seed(0)
    tr = diffusers.FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                          attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                          pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(2, 2, 4))
    proc_cfg, param = process_from_scheduler({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0})
    den = Denoiser(DiffusersFlux(tr), process_from_config(proc_cfg), param)
    x, text, pooled = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16), torch.randn(2, 8)
    t = torch.tensor([0.8, 0.2])
    v = den.predict("flow", x, t, Cond(text=text, pooled=pooled, extra={"guidance": torch.full((2,), 3.5)}))
    packed = FluxPipeline._pack_latents(x, 2, 4, 8, 8)
    ids = FluxPipeline._prepare_latent_image_ids(2, 4, 4, "cpu", x.dtype)
    with torch.no_grad():
        ref = tr(hidden_states=packed, encoder_hidden_states=text, pooled_projections=pooled, timestep=t,
                 img_ids=ids, txt_ids=torch.zeros(5, 3), guidance=torch.full((2,), 3.5)).sample
    assert torch.allclose(v, FluxPipeline._unpack_latents(ref, 64, 64, 8), atol=1e-5)
    assert isinstance(build(den.net.config()), DiffusersFlux)


def test_nasa_subtracts_the_negative_prompt_inside_cross_attention(sd):
    """SNOOPI's NASA: alpha 0 is the plain attention; otherwise one cross-attention layer's output is
    to_out(Attn(Q, K+, V+) - alpha Attn(Q, K-, V-)), by hand; removing it restores the UNet."""
    from fewstep.nets.adapters.nasa import NASAProcessor, apply_nasa, remove_nasa

    pipe_dir, _ = sd
    unet = diffusers.UNet2DConditionModel.from_pretrained(pipe_dir / "unet").eval()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([999.0, 250.0])
    text, negative = torch.randn(2, 16, 32, generator=g), torch.randn(1, 16, 32, generator=g)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=text).sample
        before = apply_nasa(unet, negative, alpha=0.0)
        assert torch.allclose(unet(x, t, encoder_hidden_states=text).sample, ref, atol=1e-5)
        remove_nasa(unet, before)
        before = apply_nasa(unet, negative, alpha=0.5)
        assert not torch.allclose(unet(x, t, encoder_hidden_states=text).sample, ref, atol=1e-3)
        remove_nasa(unet, before)
        assert torch.allclose(unet(x, t, encoder_hidden_states=text).sample, ref, atol=1e-6)

        attn = next(m for n, m in unet.named_modules() if n.endswith("attn2"))
        h = torch.randn(2, 5, attn.to_q.in_features, generator=g)
        heads = attn.heads

        def core(ctx):
            q, k, v = attn.to_q(h), attn.to_k(ctx), attn.to_v(ctx)
            split = lambda a: a.view(2, -1, heads, a.shape[-1] // heads).transpose(1, 2)  # noqa: E731
            w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (q.shape[-1] // heads) ** 0.5, dim=-1)
            return (w @ split(v)).transpose(1, 2).reshape(2, 5, -1)

        expected = attn.to_out[0](core(text) - 0.5 * core(negative.expand(2, -1, -1)))
        got = NASAProcessor(negative, 0.5)(attn, h, encoder_hidden_states=text)
        assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="cross-attention"):
        NASAProcessor(negative)(attn, h)


def _sd_like_unet(seed=0):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=4, norm_num_groups=8).eval()


@pytest.mark.parametrize("variant", ["base", "small", "tiny"])
def test_bk_sdm_removes_blocks_of_a_diffusers_unet_from_the_teachers_weights(variant):
    """BK-SDM's own target: SD-v1's layout (two resnets per encoder stage) loses one pair per stage, the
    decoder's middle pair, the mid block (small, tiny) and the innermost stage (tiny); every student weight
    is the teacher's weight of the block it starts from, and the stages line up for feature KD."""
    from fewstep.nets.adapters.diffusers import DiffusersUNet
    from fewstep.nets.surgery import diffusers_teacher_name, remove_blocks

    teacher = DiffusersUNet(_sd_like_unet())
    student = remove_blocks(teacher, variant)
    t_cfg, s_cfg = dict(teacher.unet.config), dict(student.unet.config)
    assert s_cfg["layers_per_block"] == 1 and (s_cfg["mid_block_type"] is None) == (variant != "base")
    assert len(s_cfg["down_block_types"]) == (2 if variant == "tiny" else 3)
    src = teacher.unet.state_dict()
    for name, value in student.unet.state_dict().items():
        assert torch.equal(value, src[diffusers_teacher_name(name, t_cfg, s_cfg)]), name
    assert diffusers_teacher_name("up_blocks.1.resnets.1.conv1.weight", t_cfg, s_cfg).startswith(
        "up_blocks.2.resnets.2" if variant == "tiny" else "up_blocks.1.resnets.2")  # the middle pair went
    g = torch.Generator().manual_seed(0)
    x, t, text = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([900.0, 100.0]), torch.randn(2, 5, 32, generator=g)
    with torch.no_grad():
        out_t, f_t = teacher(x, t, Cond(text=text), return_features=True)
        out_s, f_s = student(x, t, Cond(text=text), return_features=True)
        assert torch.equal(out_t, teacher(x, t, Cond(text=text)))  # the hooks change nothing and are gone
    assert set(f_t) == {"down0", "down1", "down2", "mid", "up0", "up1", "up2"}
    assert set(f_s) <= set(f_t) and all(f_s[k].shape == f_t[k].shape for k in f_s)
    assert out_s.shape == out_t.shape and torch.isfinite(out_s).all()


def test_bk_sdm_student_of_a_diffusers_teacher_trains_exports_and_loads_in_diffusers(tmp_path):
    """Through the CLI: a BK-SDM-Small student of a tiny SD pipeline, exported as ``unet/``; diffusers loads
    it, it computes what fewstep's copy computes, and StableDiffusionPipeline samples with it."""
    from fewstep.model_io import load_denoiser

    pipe_dir = make_sd_pipeline(tmp_path / "pipe", layers_per_block=2)
    data = make_caption_folder(tmp_path / "data")
    out = tmp_path / "bk"
    assert main(["distill", "--teacher", f"diffusers:{pipe_dir}", "--method", "bk_sdm", "--data", f"folder:{data}",
                 "--resolution", "16", "--max-iters", "2", "--batch-size", "2", "--out", str(out), "--no-progress",
                 "--threads", "1", "--set", "nfe=4"]) == 0
    assert main(["export", "--model", str(out), "--format", "diffusers", "--out", str(tmp_path / "export")]) == 0
    meta = json.loads((tmp_path / "export" / "fewstep_sampling.json").read_text())
    assert not meta["lora"] and meta["num_inference_steps"] == 4
    unet = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "export" / "unet").eval()
    teacher_unet = diffusers.UNet2DConditionModel.from_pretrained(pipe_dir / "unet")
    assert unet.mid_block is None and sum(p.numel() for p in unet.parameters()) < 0.8 * sum(
        p.numel() for p in teacher_unet.parameters())
    student, _ = load_denoiser(str(out))
    g = torch.Generator().manual_seed(0)
    x, t, text = torch.randn(2, 4, 2, 2, generator=g), torch.tensor([800.0, 50.0]), torch.randn(2, 16, 32, generator=g)
    with torch.no_grad():
        assert torch.allclose(unet(x, t, encoder_hidden_states=text).sample, student.net(x, t, Cond(text=text)),
                              atol=1e-5)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(pipe_dir, unet=unet, local_files_only=True)
    with torch.no_grad():
        lat = pipe("a picture number 3", num_inference_steps=2, output_type="latent").images
    assert torch.isfinite(lat).all()
