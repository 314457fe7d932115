"""Regenerate the tables in benchmarks/README.md from benchmarks/results/*.json."""
from __future__ import annotations

import json
from pathlib import Path

from fewstep.report import table_for

HERE = Path(__file__).parent


def main() -> None:
    parts = []
    for path in sorted((HERE / "results").glob("*.json")):
        res = json.loads(path.read_text())
        if not res.get("complete", False):
            continue
        own = dict(res, rows=[r for r in res["rows"] if not r.get("from_baseline")])
        base = res.get("baseline_from")
        files = [b["file"] for b in (base if isinstance(base, list) else [base] if base else [])]
        note = f" (teacher rows from {', '.join(f'`{f}`' for f in files)})" if files else ""
        t = res.get("teacher", {})
        parts.append(f"### `{path.name}`{note}\n\n```bash\n{res['command']}\n```\n\n"
                     f"Machine: {res['machine']}; commit `{(res.get('git_commit') or '?')[:10]}`; "
                     + (f"teacher: {t.get('iterations')} iterations, {t.get('train_s')} s of training." if t else "")
                     + "\n\n" + table_for(own, reference_rows=res["rows"]) + "\n")
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = "<!-- tables:start -->", "<!-- tables:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    readme.write_text(head + start + "\n" + "\n".join(parts) + end + tail)


if __name__ == "__main__":
    main()
