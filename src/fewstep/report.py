"""Tables, plots, sample grids and HTML reports from results."""
from __future__ import annotations

import os
from pathlib import Path


def _fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def _features_lines(results: dict) -> tuple[str, list[str]]:
    """The feature network's held-out accuracy (beside the floor) and a warning line when it is low."""
    from .metrics.features import features_note

    acc = (results.get("features") or {}).get("test_acc")
    note = features_note(acc)
    return ("" if acc is None else f"; feature network held-out accuracy {acc:.3f}"), ([f"**Warning:** {note}.", ""] if note else [])


def results_table(results: dict, reference_rows: list[dict] | None = None) -> str:
    """A markdown table of a results file's rows (mean ± std over seeds). Each student row also states
    its speed-up at matched FD: its images/s over the teacher's at the cheapest row (any sampler, grid,
    CFG in the file, or in ``reference_rows``) whose FD is at least as good."""
    teachers = [r for r in (reference_rows or results["rows"]) if r["method"] == "teacher"]
    cost = any(r.get("macs") is not None for r in results["rows"])  # files measured with network cost
    acc_text, warning = _features_lines(results)
    lines = [f"Floor (real vs real) FD: {_fmt(results['floor']['fd'])}{acc_text}", "", *warning]
    lines += ["| method | sampler | NFE | CFG | FD | class acc | precision | recall | images/s | seeds "
              + ("| params (M) | GMACs/image " if cost else "") + "| training | speed-up at matched FD |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if cost else "") + "---|---|"]
    for r in results["rows"]:
        ips = r.get("images_per_s")
        ips_s = "-" if ips is None else f"{ips:.0f}" + ("" if r.get("images_per_s_timed", True) else "*")
        acc = r.get("class_acc")
        name = r["method"] + (f" (real CFG {r['real_cfg']:g})" if r.get("real_cfg", 1.0) != 1.0 else "")
        name += f" `{r['run'].rstrip('/').split('/')[-1]}`" if r.get("run") else ""
        sampler = r.get("sampler", "-") + (f"/{r['grid']}" if r.get("grid", "karras") not in ("karras", None) else "")
        sampler += f" + {r['cache']}" if r.get("cache") else ""
        sizes = (f"{_fmt(_scaled(r.get('params'), 1e6), 2)} | {_fmt(_scaled(r.get('macs'), 1e9), 3)} | " if cost else "")
        lines.append(
            f"| {name} | {sampler}{'' if r.get('dtype', 'bf16') == 'bf16' else ' (fp32)'} | "
            f"{_fmt(r['nfe'], 0)} | {_fmt(r.get('cfg'), 2)} | {_fmt(r.get('fd'))} ± {_fmt(r.get('fd_std'))} | "
            f"{'-' if acc is None else f'{acc:.3f}'} | {_fmt(r.get('precision'), 3)} | {_fmt(r.get('recall'), 3)} | "
            f"{ips_s} | {r.get('seeds', 1)} | {sizes}{_training(r)} | {_speedup(r, teachers)} |")
    lines.append("")
    lines.append("`*` images/s scaled from the same sampler's timed row (NFE <= 8) by NFE, not timed.")
    return "\n".join(lines)


def _scaled(v, unit):
    return None if v is None else v / unit


def _training(row: dict) -> str:
    """A student's cost: iterations (student updates where the schedule skips some), the real training
    images it could read (0 for an image-free run), and wall time."""
    it, secs = row.get("iterations"), row.get("train_s")
    if row["method"] == "teacher" or it is None:
        return ""
    upd = row.get("student_updates")
    updates = f" ({upd} student updates)" if upd is not None and upd != it else ""
    n_real = row.get("real_images")
    if n_real is not None:  # what the run could read, not what its losses used
        updates += ", 0 real images" if n_real == 0 else f", {n_real:,}-image dataset"
    return f"{it} it{updates}, {secs:.0f} s" if secs is not None else f"{it} it{updates}"


def _speedup(row: dict, teachers: list[dict]) -> str:
    from .metrics.benchmark import best_per_nfe, matched_row

    if row["method"] == "teacher" or not teachers or row.get("fd") is None or not row.get("images_per_s"):
        return ""
    m = matched_row(teachers, row["fd"])
    if m is None:  # the student beats every teacher row: compare with the teacher's best
        best = min(best_per_nfe(teachers), key=lambda r: r["fd"])
        scaled = "" if best.get("images_per_s_timed", True) else "*"
        return (f"teacher never matches; {row['images_per_s'] / best['images_per_s']:.1f}x{scaled} vs its best, "
                f"{best['sampler']}/{best.get('grid', 'karras')} {best['nfe']:.0f} NFE (FD {best['fd']:.2f})")
    scaled = "" if m.get("images_per_s_timed", True) else "*"
    return (f"{row['images_per_s'] / m['images_per_s']:.1f}x{scaled} vs {m['sampler']}/{m.get('grid', 'karras')} "
            f"{m['nfe']:.0f} NFE (FD {m['fd']:.2f})")


def _png_b64(fig) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def fd_vs_nfe_plot(teacher_rows: list[dict], student_rows: list[dict], floor: float | None) -> str:
    """FD against NFE (log-log): one line per teacher sampler, one marker per student. Base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics.benchmark import best_per_nfe

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for sampler, grid in sorted({(r["sampler"], r.get("grid", "karras")) for r in teacher_rows}):
        rows = sorted((r for r in teacher_rows if (r["sampler"], r.get("grid", "karras")) == (sampler, grid)),
                      key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in rows], [r["fd"] for r in rows], "o-", alpha=0.45, lw=1,
                label=f"teacher, {sampler}/{grid}")
    best = best_per_nfe(teacher_rows)
    ax.plot([r["nfe"] for r in best], [r["fd"] for r in best], "k-", lw=2.5, label="teacher, best at each NFE")
    for r in student_rows:
        ax.plot([r["nfe"]], [r["fd"]], "*", markersize=14, label=f"{r['method']} student, {r['nfe']} step")
    if floor is not None:
        ax.axhline(floor, color="grey", ls="--", lw=1, label="real-vs-real floor")
    return fd_nfe_png(fig, ax, legend_size=8)


def fd_nfe_png(fig, ax, legend_size: int = 8, legend_cols: int = 1) -> str:
    """An FD-against-NFE figure finished (log-log axes, labels, grid, legend) and returned as base64 PNG."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel("FD (lower is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=legend_size, ncol=legend_cols)
    out = _png_b64(fig)
    plt.close(fig)
    return out


def file_b64(path) -> str:
    import base64
    from pathlib import Path

    return base64.b64encode(Path(path).read_bytes()).decode()


def html_report(title: str, intro: str, plot_b64: str, grids: list[tuple[str, str]], tables: list[tuple[str, list, list]],
                notes: list[str]) -> str:
    """A self-contained HTML page (images inlined as base64)."""
    import html

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
             "th{background:#f3f3f3}.grids{display:flex;gap:18px;flex-wrap:wrap}.grids figure{margin:0}"
             "img.grid{image-rendering:pixelated;width:300px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>{intro}</p>",
             f"<h2>Quality against cost</h2><img src='data:image/png;base64,{plot_b64}'>"]
    for caption, header, rows in tables:
        parts.append(f"<h2>{html.escape(caption)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                     + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Samples</h2><div class='grids'>")
    for caption, b64 in grids:
        parts.append(f"<figure><img class='grid' src='data:image/png;base64,{b64}'><figcaption>{html.escape(caption)}"
                     "</figcaption></figure>")
    parts.append("</div><h2>Notes</h2><ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul></body></html>")
    return "".join(parts)


def _uint8(samples):
    """Images in [-1, 1] as 0..255 bytes."""
    import torch

    return ((samples.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _pil(chw):
    """One (C, H, W) byte image as a PIL image (grey for one channel)."""
    from PIL import Image

    return Image.fromarray(chw[0].numpy() if chw.shape[0] == 1 else chw.permute(1, 2, 0).numpy())


def _save_png(img, path: Path) -> Path:
    tmp = path.parent / f".{path.stem}.tmp-{os.getpid()}.png"
    img.save(tmp)
    tmp.replace(path)  # a half-written PNG never carries the final name
    return path


def save_images(samples, folder) -> list[Path]:
    """Each image in [-1, 1] as its own PNG at its own size (sample_0000.png, ...), written atomically;
    nothing for 2-D points."""
    if samples.ndim != 4:
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [_save_png(_pil(img), folder / f"sample_{i:04d}.png") for i, img in enumerate(_uint8(samples))]


def save_grid(samples, path, nrow: int = 10) -> Path:
    """Save images in [-1, 1] as a PNG grid (or a scatter plot for 2-D points)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path
    from PIL import Image

    x = _uint8(samples)
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = torch.zeros(c, nrows * (h + 2) + 2, ncol * (w + 2) + 2, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[:, 2 + r * (h + 2):2 + r * (h + 2) + h, 2 + q * (w + 2):2 + q * (w + 2) + w] = x[i]
    img = _pil(grid)
    img = img.resize((img.width * 2, img.height * 2), Image.NEAREST) if h <= 32 else img
    return _save_png(img, path)


def resolution_table(results: dict) -> str:
    """benchmarks/linfusion_resolution.py's table: seconds per call and peak memory of softmax and linear
    self-attention networks as the image grows."""
    def soft(r, key, fmt):
        return "not run" if r.get(key) is None else format(r[key], fmt)

    lines = ["| image size | attention tokens | softmax attention matrix (MB/image, computed) | softmax s/call | "
             "softmax peak memory (MB) | linear s/call | linear peak memory (MB) | linear speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['size']} | {r['attention_tokens']} | {r['softmax_matrix_mb']:.1f} | {soft(r, 'softmax_s', '.3f')} | "
              f"{soft(r, 'softmax_peak_mb', '.0f')} | {r['linear_s']:.3f} | {soft(r, 'linear_peak_mb', '.0f')} | "
              f"{'-' if r.get('softmax_s') is None else format(r['softmax_s'] / r['linear_s'], '.2f') + 'x'} |"
              for r in results["rows"]]
    if any(r.get("softmax_s") is None for r in results["rows"]):
        lines += ["", f"\"not run\": the softmax attention matrix alone exceeds {results.get('max_softmax_gb', 8):g} GB per image."]
    return "\n".join(lines) + "\n"


def serve_table(results: dict) -> str:
    """benchmarks/serve_load.py's tables: load, overload and LoRA sharing rows."""
    rows = results["rows"]
    lines = ["| batching | clients | requests | images/s | p50 ms | p95 ms | mean batch | answers |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {'on' if r['batching'] else 'off'} | {r['clients']} | {r['requests']} | {r['images_per_s']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['mean_batch_images']:.2f} | "
              + ", ".join(f"{k}: {v}" for k, v in r["status"].items()) + " |" for r in rows if r["scenario"] == "load"]
    for r in (r for r in rows if r["scenario"] == "overload"):
        lines += ["", f"Overload: {r['concurrent']} concurrent requests of {r['n']} images at a queue limit of {r['max_queue']}: "
                  + ", ".join(f"{k}: {v}" for k, v in r["status"].items())
                  + f" in {r['wall_s']:.2f} s; /healthz answered {r['healthz_checks']} checks meanwhile "
                  f"(p95 {r['healthz_p95_ms']} ms); "
                  f"server memory {r['rss_mb_before']} MB before, {r['rss_mb_peak']} MB at peak, {r['rss_mb_after']} MB after."]
    for r in (r for r in rows if r["scenario"] == "lora_sharing"):
        lines += ["", f"LoRA sharing: the teacher and {r['lora_students']} LoRA students hold {r['shared_param_mb']} MB of "
                  f"parameters in one pool against {r['separate_param_mb']} MB loaded separately (one base: "
                  f"{r['one_base_param_mb']} MB); switching the active student takes {r['switch_ms_median']} ms (median) "
                  f"against {r['reload_ms_median']} ms to reload it from disk."]
    return "\n".join(lines) + "\n"


def gpu_step_table(results: dict) -> str:
    """benchmarks/gpu_dmd2_sd15.py's table: a DMD2 training iteration's time, throughput and MFU."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    lines = [f"DMD2 on a {results['unet_params'] / 1e6:.0f}M-parameter UNet, batch {results['batch']} at "
             f"{results['resolution']} px, {results['dtype']}, LoRA rank {results['lora_rank'] or 'none (full generator)'}, "
             f"on {results['device']} (torch {results['torch']}); peak memory "
             + ("-" if results.get("peak_memory_gib") is None else f"{results['peak_memory_gib']:.1f} GiB")
             + f"; MFU against {results['peak_tflops']:g} TFLOP/s.", "",
             "| iteration | s | images/s | TFLOP/s | MFU |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['kind']} | {r['step_s']:.3f} | {r['images_per_s']:.2f} | {r['tflops_per_s']:.1f} | {pct(r['mfu'])} |"
              for r in results["rows"]]
    return "\n".join(lines) + "\n"


def watermark_anysize_table(results: dict) -> str:
    """benchmarks/watermark_anysize_mnist.py's tables: plain against watermarked student; each any-size mode's canvases
    (crops against enlarged real digits, the canvas shrunk back to native size) against the native samples."""
    rows, lines = results["rows"], []
    if any("bit_acc" in r for r in rows):
        lines += ["| student | FD | class acc | recall | key bit accuracy | images detected (p < 1e-6) |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['method']} ({r['sampler']}, {r['nfe']:g} NFE) | {r['fd']:.2f} ± {r['fd_std']:.2f} | {r['class_acc']:.3f} | "
                  f"{r['recall']:.2f} | {r['bit_acc']:.3f} | {r['detected']:.3f} |" for r in rows if "bit_acc" in r] + [""]
    floors = results.get("anysize_floors")
    if floors:
        lines += [f"Real-vs-real floors: crops {floors['crops']:.2f}, shrunk canvases {floors['canvas']:.2f}, whole digits "
                  f"{floors['native']:.2f}.", ""]
    lines += ["| model | sampling | canvas | mode | NFE (native-size) | FD of 28x28 crops | crops / floor | canvas FD at 28x28 "
              "| canvas class acc | native FD | native / floor | seam score |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['sampler']}/{r['grid']} | {r['canvas'][0]}x{r['canvas'][1]} ({r['tile'][0]}x{r['tile'][1]} "
              f"tiles, overlap {r['overlap']}) | {r['mode']} | {r['nfe']:g} | {r['fd']:.2f} ± {r['fd_std']:.2f} | "
              f"{r['crops_over_floor']:.2f}x | {r['canvas_fd']:.2f} ± {r['canvas_fd_std']:.2f} | {r['canvas_class_acc']:.3f} | "
              f"{r['native_fd']:.2f} ± {r['native_fd_std']:.2f} | {r['native_over_floor']:.2f}x | {r['seam_score']:.2f} |"
              for r in rows if "canvas" in r]
    return "\n".join(lines) + "\n"


def folder_demo_table(results: dict) -> str:
    """benchmarks/folder_demo.py's table: one line per folder the demo ran on (FDs to 3 significant digits:
    each folder's feature network has its own scale)."""
    lines = ["| folder | images | classes | feature net acc | floor FD | teacher best FD (sampler, NFE) | teacher 1 NFE | "
             "1-step student FD | student / teacher best | teacher best / floor | s/it teacher, student | demo wall time |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|"]
    for name, d in results["datasets"].items():
        tb = d["teacher_best"]
        lines.append(f"| {name} | {'x'.join(map(str, d['shape']))} | {d['classes']} | {d['feature_acc']:.3f} | "
                     f"{d['floor']:.3g} | {tb['fd']:.3g} ({tb['sampler']}/{tb['grid']}, {tb['nfe']:g}) | "
                     f"{d['teacher_1nfe_fd']:.3g} | {d['student_fd']:.3g} ± {d['student_fd_std']:.2g} | "
                     f"{d['student_fd'] / tb['fd']:.2f}x | {tb['fd'] / d['floor']:.2f}x | "
                     f"{d['teacher_s_per_it']:.2f}, {d['student_s_per_it']:.2f} | {d['wall_min']:.1f} min |")
    return "\n".join(lines) + "\n"


def _adherence(r: dict) -> str:
    split = f" ({r['prompt_acc_held_out']:.3f} / {r['prompt_acc_train_phrasings']:.3f})" if "prompt_acc_held_out" in r else ""
    return f"{r['prompt_acc']:.3f}{split}"


def text2img_table(results: dict) -> str:
    """benchmarks/text2img_mnist.py's table: the mini SD teacher per NFE and CFG, each student in fewstep and
    as sampled by diffusers from its export; the teacher's best FD at or below each row's NFE for comparison."""
    rows = results["rows"]
    teacher = [r for r in rows if r["method"] == "teacher"]

    def best_at(nfe):
        cand = [r for r in teacher if r["nfe"] <= nfe]
        return min(cand, key=lambda r: r["fd"]) if cand else None

    lines = ["| model | sampling | NFE | CFG | FD | prompt adherence (held-out / training phrasings) | precision | recall | "
             "images/s | teacher best FD, <= this NFE |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    carried = sorted({r["carried"] for r in rows if r.get("carried")})
    for r in rows:
        name = r["method"] + (" (export, diffusers)" if r.get("exported") else "") + (" *" if r.get("carried") else "")
        b = best_at(r["nfe"])
        ref = f"{b['fd']:.2f} ({b['nfe']:g} NFE, CFG {b['cfg']:g})" if b is not None else "-"
        lines.append(f"| {name} | {r['sampler']}/{r['grid']}, {r['steps']} steps | {r['nfe']:g} | {r['cfg']:g} | "
                     f"{r['fd']:.2f} ± {r['fd_std']:.2f} | {_adherence(r)} | {r['precision']:.2f} | {r['recall']:.2f} | "
                     f"{r['images_per_s']:.0f} | {ref} |")
    if carried:
        lines += ["", f"\\* carried from {', '.join(f'`{c}`' for c in carried)} (the same teacher), not re-measured."]
    return "\n".join(lines) + "\n"


def table_for(results: dict, reference_rows: list[dict] | None = None) -> str:
    """The markdown table of any results file fewstep's benchmarks write."""
    if results.get("benchmark") == "linfusion_resolution":
        return resolution_table(results)
    if results.get("benchmark") == "serve":
        return serve_table(results)
    if results.get("benchmark") == "watermark_anysize":
        return watermark_anysize_table(results)
    if results.get("benchmark") == "folder_demo":
        return folder_demo_table(results)
    if results.get("benchmark") == "text2img_mnist":
        return text2img_table(results)
    if str(results.get("benchmark", "")).startswith("gpu_dmd2_sd15"):
        return gpu_step_table(results)
    return results_table(results, reference_rows)
