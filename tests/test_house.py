"""The shape of the house: no import cycles, small source files, the README's method table from the
registry, and a run that holds its output folder."""
import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewstep.cli import main
from fewstep.methods.registry import method_table_markdown

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "fewstep"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every fewstep module -> the fewstep modules it imports (at module level or inside functions)."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # "from pkg import name": the submodule pkg.name if there is one, else pkg itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            graph[mod] |= {t for t in targets if t in files and t != mod}
    return graph


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dependencies_point_down():
    """Ground floors never import the floors above them (docs/design.md, Layout)."""
    graph = _import_graph()
    upper = ("fewstep.cli", "fewstep.commands")
    for mod, deps in graph.items():
        if not mod.startswith(upper) and mod != "fewstep.__main__":
            assert not {d for d in deps if d.startswith(upper)}, mod
        if mod.startswith(("fewstep.noise", "fewstep.nets", "fewstep.samplers", "fewstep.io", "fewstep.config")):
            assert not {d for d in deps if d.startswith(("fewstep.methods", "fewstep.train", "fewstep.metrics"))}, mod


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_readme_method_table_is_the_registry():
    assert method_table_markdown() in (ROOT / "README.md").read_text()


def test_distill_help_lists_every_method(capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    from fewstep.methods.registry import method_names

    assert all(n in out for n in method_names())


# -- a run holds its output folder --------------------------------------------------------------------
def _fewstep(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fewstep", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kw)


def test_a_live_run_holds_its_folder_and_a_killed_one_is_taken_over_by_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-teacher", "--data", "toy2d", "--batch-size", "64", "--ckpt-every", "5", "--eval-every", "0",
            "--threads", "1", "--no-progress", "--out", str(out)]
    live = _fewstep(args + ["--max-iters", "100000"])
    try:
        deadline = time.time() + 120
        while not (out / "latest").exists():  # held from the start, and it has checkpointed
            assert live.poll() is None and time.time() < deadline, live.stderr.read() if live.poll() is not None else ""
            time.sleep(0.2)
        assert main(args + ["--max-iters", "10"]) == 1  # a second run on the held folder
        err = capsys.readouterr().err.strip()
        assert err.startswith("fewstep: error:") and "in use by a running fewstep process" in err
        assert f"pid {live.pid}" in err and "\n" not in err
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    resumed = _fewstep(args + ["--max-iters", "12", "--resume"])
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-2000:]
    assert "resumed from" in stderr and (out / "model" / "config.json").is_file()
