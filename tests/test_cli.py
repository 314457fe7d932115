import json
import pickle
import subprocess
import sys

import pytest
import torch

from fewstep.cli import main
from fewstep.model_io import save_denoiser

from helpers import toy_denoiser

BAD = [
    [],
    ["nonsense"],
    ["train-teacher", "--max-iters", "0", "--out", "x"],
    ["train-teacher", "--max-iters", "ten", "--out", "x"],
    ["train-teacher", "--lr", "-1", "--out", "x"],
    ["train-teacher", "--lr", "nan", "--out", "x"],
    ["train-teacher", "--data", "cifar", "--out", "x"],
    ["train-teacher", "--data", "mnist"],
    ["sample", "--model", "/no/such/model"],
    ["sample", "--model", "mnist", "--sampler", "rk45"],
    ["sample", "--model", "mnist", "--steps", "-3"],
    ["sample", "--model", "mnist", "--cfg", "-2"],
    ["bench", "--model", "mnist", "--name", "x", "--nfe", "1,zero"],
    ["bench", "--model", "mnist", "--name", "x", "--samplers", "euler,magic"],
    ["eval", "--model", "mnist", "--data", "folder:/no/such/dir"],
]


@pytest.mark.parametrize("argv", BAD, ids=lambda a: " ".join(a) or "<empty>")
def test_bad_arguments_give_one_line_errors(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("fewstep: error:") and "\n" not in err and "Traceback" not in err


def test_pickled_model_is_refused(tmp_path, capsys):
    den = toy_denoiser()
    save_denoiser(den, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps({"w": torch.zeros(3)}))
    assert main(["sample", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "s.png")]) == 1
    err = capsys.readouterr().err
    assert "pickle" in err and "model.safetensors" in err and err.count("\n") == 1


def test_real_process_prints_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fewstep", "train-teacher", "--batch-size", "0", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_train_sample_eval_on_toy2d(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-teacher", "--data", "toy2d", "--out", str(out), "--max-iters", "30", "--no-progress",
                 "--batch-size", "128"]) == 0
    assert (out / "model" / "config.json").is_file()
    assert main(["sample", "--model", str(out), "--steps", "4", "--out", str(tmp_path / "g.png"), "--n", "50"]) == 0
    assert (tmp_path / "g.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--steps", "3", "--sampler", "euler", "--n", "200"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["nfe"] == 3 and res["fd"] > 0 and res["images_per_s"] > 0


def test_a_run_records_a_shipped_teacher_by_name_not_by_the_installed_folder(tmp_path, capsys):
    """The package's folder moves (a new virtual environment, another clone): a run from ``mnist`` must still find
    its teacher, and a run recorded by an old install's folder resolves to the shipped teacher of the same name."""
    from fewstep.model_io import SHIPPED_TEACHERS, model_ref, resolve_model_dir

    out = tmp_path / "dmd2"
    assert main(["distill", "--teacher", "mnist", "--method", "dmd2", "--out", str(out), "--max-iters", "1",
                 "--eval-every", "0", "--no-progress"]) == 0
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["teacher"] == "mnist" and cfg["training"]["teacher"] == "mnist"
    assert model_ref(str(SHIPPED_TEACHERS / "mnist")) == "mnist" and model_ref(str(out)) == str(out / "model")
    moved = "/an/old/clone/src/fewstep/assets/teachers/mnist"
    assert resolve_model_dir(moved) == SHIPPED_TEACHERS / "mnist"
    with pytest.raises(Exception, match="neither a folder nor a shipped teacher"):
        resolve_model_dir("/an/old/clone/src/fewstep/assets/teachers/cifar")
