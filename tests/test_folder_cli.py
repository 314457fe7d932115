"""Your own image folder through the CLI: the teacher, the feature net and every later verb take the
folder's own size and colour mode (or --resolution/--channels), and what a model was trained at is what
its students, evaluation and benchmarks load."""
import json

import numpy as np

from fewstep.cli import main


def _folder(root, n=12, size=12):
    from PIL import Image

    g = np.random.default_rng(0)
    for c in ("bars", "dots"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            img = np.zeros((size, size), dtype=np.uint8)
            if c == "bars":
                img[:, g.integers(0, size - 3):][:, :3] = 255
            else:
                img[g.integers(0, size - 3):][:3, g.integers(0, size - 3):][:, :3] = 255
            Image.fromarray(img, mode="L").save(root / c / f"{i}.png")
    return f"folder:{root}"


def test_a_folder_teacher_and_its_student_keep_the_folders_format(tmp_path, capsys):
    data = _folder(tmp_path / "imgs")
    fast = ["--max-iters", "2", "--batch-size", "8", "--eval-every", "0", "--ckpt-every", "0", "--no-progress",
            "--threads", "1"]
    assert main(["train-features", "--data", data, "--out", str(tmp_path / "feat"), "--iters", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["shape"] == [1, 12, 12]
    assert main(["train-teacher", "--data", data, "--out", str(tmp_path / "t"), *fast]) == 0
    cfg = json.loads((tmp_path / "t" / "model" / "config.json").read_text())
    assert cfg["data"]["shape"] == [1, 12, 12] and cfg["arch"]["image_size"] == 12 and cfg["arch"]["ch_mult"] == [1, 2]
    assert main(["train-teacher", "--data", data, "--out", str(tmp_path / "t8"), "--resolution", "8", "--channels", "3",
                 *fast]) == 0
    cfg8 = json.loads((tmp_path / "t8" / "model" / "config.json").read_text())
    assert cfg8["data"]["shape"] == [3, 8, 8] and cfg8["arch"]["in_channels"] == 3
    # the student of the 8x8 RGB teacher trains on the folder as the teacher saw it (not the folder's own 12x12 grey)
    assert main(["distill", "--teacher", str(tmp_path / "t8"), "--method", "dmd2", "--out", str(tmp_path / "s"),
                 *fast]) == 0
    scfg = json.loads((tmp_path / "s" / "model" / "config.json").read_text())
    assert scfg["data"]["shape"] == [3, 8, 8]
    assert main(["train-teacher", "--data", data, "--out", str(tmp_path / "bad"), "--channels", "2"]) == 2
