"""The main job end to end on a tiny (untrained) MNIST-shaped teacher: distil, measure, report."""
import json

import pytest
import torch

from fewstep.cli import main
from fewstep.model_io import build_denoiser, save_denoiser

from helpers import bar_folder


@pytest.fixture
def tiny_mnist_teacher(tmp_path):
    torch.manual_seed(0)
    den = build_denoiser({"arch": {"arch": "unet", "in_channels": 1, "image_size": 28, "channels": 8,
                                   "ch_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [], "num_classes": 10,
                                   "time_scale": 1000.0},
                          "process": {"family": "edm"}, "param": "edm"})
    return save_denoiser(den, tmp_path / "teacher", {"data": {"name": "mnist", "shape": [1, 28, 28], "num_classes": 10},
                                                     "sampling": {"sampler": "heun", "steps": 4, "grid": "karras"}})


def test_distill_cli_resumes_and_refuses_a_different_method(tiny_mnist_teacher, tmp_path, capsys):
    out = tmp_path / "s"
    args = ["distill", "--teacher", str(tiny_mnist_teacher), "--method", "dmd2", "--nfe", "2", "--out", str(out),
            "--max-iters", "3", "--batch-size", "8", "--eval-every", "0", "--no-progress"]
    assert main(args) == 0
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["sampling"]["sampler"] == "multistep" and len(cfg["sampling"]["sigmas"]) == 3
    assert main(args[:-5] + ["--max-iters", "5", "--batch-size", "8", "--resume", "--no-progress"]) == 0
    assert json.loads((out / "latest" / "trainer_state.json").read_text())["iteration"] == 5
    capsys.readouterr()
    assert main(["distill", "--teacher", str(tiny_mnist_teacher), "--method", "dmd", "--nfe", "2", "--out", str(out),
                 "--resume", "--no-progress"]) == 1
    assert "refusing to resume" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(tiny_mnist_teacher), "--method", "nope", "--out", str(out)]) == 2


def test_demo_writes_a_self_contained_report(tiny_mnist_teacher, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--teacher", str(tiny_mnist_teacher), "--out", str(out), "--max-iters", "2", "--n", "100",
            "--seeds", "1", "--eval-every", "0", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "src='http" not in page
    assert summary["speedup"] > 0 and (out / "grid_student.png").is_file()
    mtime = (out / "teacher_curve.json").stat().st_mtime
    assert main(argv) == 0  # re-running reuses every finished stage
    assert (out / "teacher_curve.json").stat().st_mtime == mtime


def test_bench_writes_the_results_schema_and_resumes(tiny_mnist_teacher, tmp_path, capsys):
    res_dir = tmp_path / "results"
    argv = ["bench", "--model", str(tiny_mnist_teacher), "--name", "t", "--nfe", "1,4", "--cfg", "1,2",
            "--samplers", "euler,heun", "--seeds", "2", "--n", "100", "--results-dir", str(res_dir)]
    assert main(argv) == 0
    res = json.loads((res_dir / "t.json").read_text())
    for key in ("benchmark", "command", "created", "machine", "git_commit", "teacher", "floor", "rows"):
        assert key in res
    assert res["complete"] and res["floor"]["fd"] > 0
    rows = res["rows"]
    for r in rows:
        for key in ("method", "sampler", "nfe", "cfg", "fd", "fd_std", "class_acc", "precision", "recall",
                    "images_per_s", "train_s", "iterations"):
            assert key in r
    guided = [r for r in rows if r["cfg"] == 2.0]
    assert guided and all(r["nfe"] % 2 == 0 for r in guided)  # CFG counted honestly
    assert {r["nfe"] for r in rows if r["sampler"] == "heun" and r["cfg"] == 1.0} == {3}
    assert any(r["dtype"] == "fp32" for r in rows)
    assert all(r["seeds"] == 2 for r in rows)
    # an interrupted sweep resumes: finished rows are reused as they are
    partial = dict(res, complete=False, rows=rows[:2])
    partial["rows"][0] = dict(rows[0], fd=-1.0)  # marker: must survive the resume untouched
    (res_dir / "t.json").write_text(json.dumps(partial))
    assert main(argv) == 0
    resumed = json.loads((res_dir / "t.json").read_text())
    assert resumed["complete"] and resumed["rows"][0]["fd"] == -1.0 and len(resumed["rows"]) == len(rows)
    (res_dir / "t.json").write_text(json.dumps(res))
    # a student row reuses the teacher rows of a baseline file
    out = tmp_path / "s"
    assert main(["distill", "--teacher", str(tiny_mnist_teacher), "--method", "dmd2", "--out", str(out),
                 "--max-iters", "2", "--batch-size", "8", "--eval-every", "0", "--no-progress"]) == 0
    assert main(["bench", "--model", str(out), "--name", "s", "--n", "100", "--seeds", "1", "--results-dir",
                 str(res_dir), "--baseline", str(res_dir / "t.json")]) == 0
    res2 = json.loads((res_dir / "s.json").read_text())
    student = [r for r in res2["rows"] if r["method"] == "dmd2"]
    assert len(student) == 1 and student[0]["nfe"] == 1 and student[0]["iterations"] == 2
    assert len(res2["rows"]) == len(rows) + 1 and res2["floor"] == res["floor"]


@pytest.mark.parametrize("method", ["sid", "vsd"])
def test_image_free_distillation_never_loads_a_training_set(tiny_mnist_teacher, tmp_path, monkeypatch, method):
    """SiD and VSD train on conditions alone: the training split is never loaded (evaluation reads the
    test split, as every metric does), and the model records that it saw 0 real images."""
    import fewstep.data as data

    load = data.load_dataset

    def no_training_images(name, split="train", *a, **kw):
        assert split != "train", "an image-free run loaded the training set"
        return load(name, split, *a, **kw)

    monkeypatch.setattr(data, "load_dataset", no_training_images)
    out = tmp_path / method
    assert main(["distill", "--teacher", str(tiny_mnist_teacher), "--method", method, "--out", str(out),
                 "--max-iters", "2", "--batch-size", "4", "--eval-every", "0", "--no-progress"]) == 0
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["data"]["real_images"] == 0 and cfg["data"]["num_classes"] == 10
    with pytest.raises(AssertionError, match="loaded the training set"):  # the guard itself can fail
        data.load_dataset("mnist", "train")


@pytest.mark.slow
def test_demo_on_your_own_folder_trains_features_teacher_and_student(tmp_path, capsys):
    """``demo --data folder:PATH``: the plan is printed first, the feature net lands in the folder, the
    teacher is sized to the 8x8 grey images, the report says so, and a second run reuses everything."""
    data = bar_folder(tmp_path / "imgs")
    out = tmp_path / "demo"
    argv = ["demo", "--data", data, "--out", str(out), "--budget-min", "0.01", "--max-iters", "2", "--n", "100",
            "--seeds", "1", "--eval-every", "0", "--no-progress", "--threads", "2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.index("plan for a 0.01-minute budget") < captured.err.index("feature network:")
    assert (tmp_path / "imgs" / ".fewstep" / "features" / "config.json").is_file()
    tcfg = json.loads((out / "teacher" / "model" / "config.json").read_text())
    assert tcfg["data"]["shape"] == [1, 8, 8] and tcfg["arch"]["image_size"] == 8
    assert "images 1x8x8" in (out / "report.html").read_text()
    mtime = (out / "teacher" / "model" / "config.json").stat().st_mtime
    assert main(argv) == 0
    assert (out / "teacher" / "model" / "config.json").stat().st_mtime == mtime
    unconditional = tmp_path / "flat"
    unconditional.mkdir()
    for f in sorted((tmp_path / "imgs" / "left").iterdir())[:5]:
        (unconditional / f.name).write_bytes(f.read_bytes())
    capsys.readouterr()
    assert main(["demo", "--data", f"folder:{unconditional}", "--out", str(tmp_path / "d2")]) == 1
    assert "needs class sub-folders" in capsys.readouterr().err


def test_folder_demo_replans_the_student_from_the_teachers_measured_step_time(tmp_path):
    """The student's iterations come from the teacher run's recorded step time (so the budget the startup
    estimate over-states is not left unused), and from the startup plan when the run has no record."""
    from fewstep.commands.folder_demo import SHARES, STUDENT_COST, Plan, replan_student

    plan = Plan(features=100, teacher=1000, student=777, seconds={})
    run = tmp_path / "teacher"
    assert replan_student(run, plan, 30, print) == 777
    (run / "latest").mkdir(parents=True)
    (run / "latest" / "trainer_state.json").write_text(json.dumps({"iteration": 1000, "train_s": 250.0}))
    logged = []
    n = replan_student(run, plan, 30, logged.append)
    assert n == int(SHARES["student"] * 30 * 60 / (STUDENT_COST * 0.25))
    assert "re-planned" in logged[0] and "0.250 s/iteration" in logged[0]
    (run / "latest" / "trainer_state.json").write_text(json.dumps({"iteration": 10, "train_s": 0.01}))
    assert replan_student(run, plan, 30, print) == 2000  # capped like the startup plan
