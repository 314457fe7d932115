"""Results files: every table is generated from its JSON, and every JSON says how to reproduce it."""
import json
from pathlib import Path

import pytest

from fewstep.report import results_table

RESULTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "results").glob("*.json"))


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_the_markdown_table_is_its_json(path):
    table = path.with_suffix(".md").read_text().strip()
    assert table == results_table(json.loads(path.read_text())).strip()


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_results_record_their_command_and_commit(path):
    res = json.loads(path.read_text())
    assert res["command"].startswith("fewstep bench") and res.get("git_commit") and res.get("machine")
    assert res["complete"] is True and res["rows"]
    for row in res["rows"]:
        if row["method"] != "teacher" and not row.get("from_baseline"):
            assert row.get("command", "").startswith("fewstep "), row  # the training command of each student
