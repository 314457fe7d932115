"""Results files: every table is generated from its JSON, and every JSON says how to reproduce it."""
import json
from pathlib import Path

import pytest

from fewstep.report import results_table, table_for

from helpers import benchmark_script

RESULTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "results").glob("*.json"))


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_the_markdown_table_is_its_json(path):
    table = path.with_suffix(".md").read_text().strip()
    assert table == table_for(json.loads(path.read_text())).strip()


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_results_record_their_command_and_commit(path):
    res = json.loads(path.read_text())
    script = res["command"].split()[1] if res["command"].startswith("python ") else None
    assert res["command"].startswith("fewstep bench") or (script and (path.parents[2] / script).is_file()), res["command"]
    assert res.get("git_commit") and res.get("machine")
    assert res["complete"] is True and res["rows"]
    for row in res["rows"]:
        # a row without a method measures no trained model (linfusion_resolution's timings of one call per size)
        if row.get("method", "teacher") != "teacher" and not row.get("from_baseline"):
            # the training command of each student (or the script that built an untrained one)
            assert row.get("command", "").startswith(("fewstep ", "python benchmarks/")), row


def test_a_student_row_states_its_training_cost():
    row = {"method": "dmd2", "sampler": "multistep", "nfe": 1, "cfg": 1.0, "fd": 9.0, "fd_std": 0.1, "class_acc": 0.97,
           "precision": 0.9, "recall": 0.8, "images_per_s": 150.0, "seeds": 3, "dtype": "fp32",
           "iterations": 1200, "student_updates": 240, "train_s": 3476.6}
    table = results_table({"floor": {"fd": 5.88}, "rows": [row]})
    assert "| 1200 it (240 student updates), 3477 s |" in table
    one_to_one = dict(row, student_updates=1200)
    assert "| 1200 it, 3477 s |" in results_table({"floor": {"fd": 5.88}, "rows": [one_to_one]})
    # the real images a run could read: none for an image-free method, the dataset's size otherwise
    image_free = results_table({"floor": {"fd": 5.88}, "rows": [dict(one_to_one, real_images=0)]})
    assert "| 1200 it, 0 real images, 3477 s |" in image_free
    with_data = results_table({"floor": {"fd": 5.88}, "rows": [dict(one_to_one, real_images=4000)]})
    assert "| 1200 it, 4,000-image dataset, 3477 s |" in with_data


def test_provenance_ignores_only_the_results_file_being_written(monkeypatch, tmp_path):
    """A resumed benchmark's own half-written JSON does not make the tree dirty; any other change does."""
    from fewstep.metrics import benchmark

    out = tmp_path / "benchmarks" / "results" / "t.json"
    status = {"value": "M benchmarks/results/t.json"}  # as _git returns it: stripped, so the first line lost its blank
    answers = {("rev-parse", "HEAD"): "abc", ("rev-parse", "--show-toplevel"): str(tmp_path)}
    monkeypatch.setattr(benchmark, "_git", lambda *a: status["value"] if a[0] == "status" else answers[a])
    assert benchmark.provenance(exclude=out)["git_dirty"] is False
    assert benchmark.provenance()["git_dirty"] is True
    status["value"] = "M benchmarks/results/t.json\n M benchmarks/results/t.md"  # its own table too
    assert benchmark.provenance(exclude=out)["git_dirty"] is False
    status["value"] = " M benchmarks/results/t.json\n M src/fewstep/cli.py"
    assert benchmark.provenance(exclude=out)["git_dirty"] is True


def test_seed_means_averages_the_students_own_rows_and_counts_the_runs_under_a_bar(tmp_path, capsys):
    """benchmarks/seed_means.py: teacher rows carried as a baseline and other NFEs are not runs of the recipe."""
    mod = benchmark_script("seed_means")

    def student(fd, acc, nfe=1, run="r"):
        return {"method": "dmd2", "nfe": nfe, "fd": fd, "fd_std": 0.5, "class_acc": acc, "run": run}

    teacher = {"method": "teacher", "nfe": 1, "fd": 400.0, "fd_std": 1.0, "class_acc": 0.1}
    carried = dict(student(1.0, 1.0), from_baseline="t.json")
    files = []
    for i, rows in enumerate([[student(8.0, 0.975), teacher, carried, student(3.0, 0.99, nfe=4)],
                              [student(9.0, 0.965, run="a"), student(10.0, 0.971, run="b")]]):
        files.append(tmp_path / f"run{i}.json")
        files[-1].write_text(json.dumps({"complete": True, "rows": rows}))
    mod.main(["--nfe", "1", "--fd-bar", "9.0", "--acc-bar", "0.97", *map(str, files)])
    out = capsys.readouterr().out
    assert "run1: a" in out and "run1: b" in out  # a multi-model file names each row by its run folder
    assert "mean of 3 runs (std over runs)" in out and " 9.00 ± 1.00" in out and "0.970" in out
    assert "runs holding FD <= 9.0 with class acc >= 0.97: 1 of 3" in out  # 9.0 at 0.965 misses the accuracy
    mod.main(["--nfe", "1", "--fd-bar", "9.5", "--method", "dmd2", str(files[1])])  # one bar alone; a method's rows
    assert "runs holding FD <= 9.5: 1 of 2" in capsys.readouterr().out
    mod.main(["--run", "b", str(files[0]), str(files[1])])  # rows picked by run folder
    assert "mean of 1 run (std over runs)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no student rows at 1 NFE of sid"):
        mod.main(["--method", "sid", str(files[1])])
    files[0].write_text(json.dumps({"complete": False, "rows": [student(8.0, 0.975)]}))
    with pytest.raises(SystemExit, match="incomplete"):
        mod.main([str(files[0])])
