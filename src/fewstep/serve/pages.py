"""The server's two pages: the playground (static HTML + script over the JSON API) and the leaderboard
built from the benchmark results files (every measured row, sortable, with an FD-vs-NFE plot)."""
from __future__ import annotations

import html
import json
from pathlib import Path

STATIC = Path(__file__).parent / "static"

COLUMNS = [  # (header, row -> value); numbers sort as numbers in the page's script
    ("file", lambda f, r: f),
    ("method", lambda f, r: r.get("method", "")),
    ("sampler", lambda f, r: r.get("sampler", "")),
    ("grid", lambda f, r: r.get("grid", "")),
    ("NFE", lambda f, r: r.get("nfe")),
    ("CFG", lambda f, r: r.get("cfg")),
    ("FD", lambda f, r: r.get("fd")),
    ("FD std", lambda f, r: r.get("fd_std")),
    ("seeds", lambda f, r: r.get("seeds")),
    ("class acc", lambda f, r: r.get("class_acc")),
    ("recall", lambda f, r: r.get("recall")),
    ("images/s", lambda f, r: r.get("images_per_s")),
    ("timed", lambda f, r: "yes" if r.get("images_per_s_timed", True) else "extrapolated"),
]


def index_html() -> str:
    return (STATIC / "index.html").read_text()


def results_rows(results_dir: Path) -> list[tuple[str, dict]]:
    """(file name, row) for every row measured in a complete results file; rows a file copied from a
    baseline file are listed once, under the file that measured them."""
    out = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            res = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(res, dict) or not res.get("complete"):
            continue
        # rows measured on another canvas (tiled any-size sampling) are not comparable with the rest
        out += [(path.name, r) for r in res.get("rows", []) if isinstance(r, dict) and not r.get("from_baseline")
                and r.get("fd") is not None and "canvas" not in r]
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def fd_nfe_plot(rows: list[tuple[str, dict]]) -> str | None:
    """Base64 PNG: the teacher's best FD at each NFE (every file, sampler and grid) as a line, and each
    method's best FD at each NFE as markers."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..metrics.benchmark import best_per_nfe
    from ..report import fd_nfe_png

    teacher = [r for _, r in rows if r.get("method") == "teacher"]
    students: dict[str, list] = {}
    for _, r in rows:
        if r.get("method") != "teacher":
            students.setdefault(r["method"], []).append(r)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if teacher:
        best = best_per_nfe(teacher)
        ax.plot([r["nfe"] for r in best], [r["fd"] for r in best], "k-", lw=2.5, label="teacher, best at each NFE")
    markers = "os^vD<>pP*Xh"
    for i, (method, rs) in enumerate(sorted(students.items())):
        best = best_per_nfe(rs)
        ax.plot([r["nfe"] for r in best], [r["fd"] for r in best], markers[i % len(markers)], ms=7, alpha=0.8, label=method)
    return fd_nfe_png(fig, ax, legend_size=7, legend_cols=2)


def leaderboard_html(results_dir: Path) -> str:
    rows = results_rows(results_dir)
    plot = fd_nfe_plot(rows)
    head = "".join(f"<th data-col='{i}'>{html.escape(h)}</th>" for i, (h, _) in enumerate(COLUMNS))
    body = []
    for f, r in sorted(rows, key=lambda fr: (fr[1].get("method", ""), fr[1].get("nfe") or 0, fr[1]["fd"])):
        cells = []
        for _, get in COLUMNS:
            v = get(f, r)
            num = f" data-v='{v}'" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{num}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    img = f"<img id='plot' alt='FD against NFE' src='data:image/png;base64,{plot}'>" if plot else "<p>No results yet.</p>"
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>fewstep leaderboard</title>
<style>body{{font-family:sans-serif;margin:1.5em;color:#222}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3;cursor:pointer}}
th.asc::after{{content:' \\25B2'}}th.desc::after{{content:' \\25BC'}}</style></head><body>
<h1>fewstep leaderboard</h1><p><a href='/'>playground</a> &middot; {len(rows)} measured rows from
<code>{html.escape(str(results_dir))}</code>; FD on the benchmark's feature net, lower is better. Click a column to sort.</p>
{img}<table id='board'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
<script>
document.querySelectorAll('#board th').forEach(th => th.addEventListener('click', () => {{
  const i = +th.dataset.col, asc = !th.classList.contains('asc');
  document.querySelectorAll('#board th').forEach(h => h.classList.remove('asc', 'desc'));
  th.classList.add(asc ? 'asc' : 'desc');
  const tbody = document.querySelector('#board tbody');
  const key = tr => {{ const td = tr.children[i]; return td.dataset.v !== undefined ? +td.dataset.v : td.textContent; }};
  const rows = [...tbody.rows].sort((a, b) => {{ const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }});
  rows.forEach(r => tbody.appendChild(r));
}}));
</script></body></html>"""
