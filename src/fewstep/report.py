"""Tables and plots from results files."""
from __future__ import annotations


def _fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def results_table(results: dict) -> str:
    """A markdown table of a results file's rows (mean ± std over seeds)."""
    lines = [f"Floor (real vs real) FD: {_fmt(results['floor']['fd'])}", "",
             "| method | sampler | NFE | CFG | FD | class acc | precision | recall | images/s | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        ips = r.get("images_per_s")
        ips_s = "-" if ips is None else f"{ips:.0f}" + ("" if r.get("images_per_s_timed", True) else "*")
        acc = r.get("class_acc")
        lines.append(
            f"| {r['method']} | {r.get('sampler', '-')}{'' if r.get('dtype', 'bf16') == 'bf16' else ' (fp32)'} | "
            f"{_fmt(r['nfe'], 0)} | {_fmt(r.get('cfg'), 1)} | {_fmt(r.get('fd'))} ± {_fmt(r.get('fd_std'))} | "
            f"{'-' if acc is None else f'{acc:.3f}'} | {_fmt(r.get('precision'), 3)} | {_fmt(r.get('recall'), 3)} | "
            f"{ips_s} | {r.get('seeds', 1)} |")
    lines.append("")
    lines.append("`*` images/s scaled from the same sampler's timed row (NFE <= 8) by NFE.")
    return "\n".join(lines)
