"""Your own image folder through the CLI: the teacher, the feature net and every later verb take the
folder's own size and colour mode (or --resolution/--channels), and what a model was trained at is what
its students, evaluation and benchmarks load."""
import json

from fewstep.cli import main

from helpers import bar_folder


def test_a_folder_teacher_and_its_student_keep_the_folders_format(tmp_path, capsys):
    data = bar_folder(tmp_path / "imgs", per_class=12, size=12)
    fast = ["--max-iters", "2", "--batch-size", "8", "--eval-every", "0", "--ckpt-every", "0", "--no-progress",
            "--threads", "1"]
    assert main(["train-features", "--data", data, "--iters", "3"]) == 0  # kept inside the folder, found by every verb
    feat = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert feat["shape"] == [1, 12, 12] and feat["features"].endswith(".fewstep/features")
    assert main(["train-teacher", "--data", data, "--out", str(tmp_path / "t"), *fast]) == 0
    cfg = json.loads((tmp_path / "t" / "model" / "config.json").read_text())
    assert cfg["data"]["shape"] == [1, 12, 12] and cfg["arch"]["image_size"] == 12 and cfg["arch"]["ch_mult"] == [1, 2]
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "t"), "--n", "20", "--steps", "2", "--sampler", "euler"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["features_test_acc"] == feat["test_acc"]  # every FD carries its feature net's held-out accuracy
    assert bool(res.get("warnings")) == (feat["test_acc"] < 0.9)
    assert main(["train-teacher", "--data", data, "--out", str(tmp_path / "t8"), "--resolution", "8", "--channels", "3",
                 *fast]) == 0
    cfg8 = json.loads((tmp_path / "t8" / "model" / "config.json").read_text())
    assert cfg8["data"]["shape"] == [3, 8, 8] and cfg8["arch"]["in_channels"] == 3
    capsys.readouterr()  # the folder's feature net is 1x12x12: FD of 3x8x8 images in it is refused, not computed
    assert main(["eval", "--model", str(tmp_path / "t8"), "--n", "20", "--steps", "2", "--sampler", "euler"]) == 1
    assert "trained on 1x12x12 images, these are 3x8x8" in capsys.readouterr().err
    # the student of the 8x8 RGB teacher trains on the folder as the teacher saw it (not the folder's own 12x12 grey)
    assert main(["distill", "--teacher", str(tmp_path / "t8"), "--method", "dmd2", "--out", str(tmp_path / "s"),
                 *fast]) == 0
    scfg = json.loads((tmp_path / "s" / "model" / "config.json").read_text())
    assert scfg["data"]["shape"] == [3, 8, 8]
    assert main(["train-teacher", "--data", data, "--out", str(tmp_path / "bad"), "--channels", "2"]) == 2


def test_a_weak_feature_network_is_flagged_in_the_table():
    from fewstep.report import results_table

    rows = [{"method": "teacher", "sampler": "euler", "nfe": 4, "fd": 3.0, "fd_std": 0.1}]
    weak = results_table({"floor": {"fd": 1.0}, "features": {"test_acc": 0.62}, "rows": rows})
    strong = results_table({"floor": {"fd": 1.0}, "features": {"test_acc": 0.99}, "rows": rows})
    assert "accuracy 0.620" in weak and "weak evidence" in weak
    assert "accuracy 0.990" in strong and "weak evidence" not in strong
