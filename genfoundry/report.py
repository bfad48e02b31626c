"""The tour's report: one self-contained HTML page (images and plots inline as base64 PNG) built from
the numbers of report.json and the image files the stages wrote under the same folder.

`write_report(report, folder)` writes folder/report.html; every number on the page comes from `report`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from pathlib import Path

from genfoundry.hub import write_text_atomic

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: middle; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.tile { width: 140px; font-size: 0.8em; text-align: center; }
.tile img, td img { width: 128px; height: 128px; image-rendering: pixelated; border: 3px solid #ccc; }
.pass img, img.pass { border-color: #2a9d3a; } .fail img, img.fail { border-color: #d33; }
.mark { font-weight: bold; } .pass .mark, .mark.pass { color: #2a9d3a; } .fail .mark, .mark.fail { color: #d33; }
.status-ok { color: #2a9d3a; font-weight: bold; } .status-failed { color: #d33; font-weight: bold; }
.status-skipped { color: #888; } .error { background: #fdecea; border: 1px solid #d33; padding: 0.6em; }
.note { color: #555; font-size: 0.9em; } figure { margin: 1em 0; } figure img { max-width: 100%; }
"""

SYSTEM_COLORS = {"renders": "#888888", "SANA 16-bit": "#1f77b4", "SANA W4A4": "#ff7f0e", "VILA-U": "#2ca02c"}


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, fmt: str = ".3f") -> str:
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return format(value, fmt)


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _image(folder: Path, file: str, correct: bool | None = None, alt: str = "") -> str:
    path = folder / file
    if not file or not path.is_file():
        return '<span class="note">(no image)</span>'
    cls = "" if correct is None else (' class="pass"' if correct else ' class="fail"')
    return f'<img{cls} src="{_data_uri(path.read_bytes())}" alt="{_e(alt)}" title="{_e(alt)}">'


def _mark(correct: bool) -> str:
    return '<span class="mark pass">&#10003; pass</span>' if correct else '<span class="mark fail">&#10007; fail</span>'


def _tiles(folder: Path, rows: Iterable[dict]) -> str:
    """A grid of images, each with its detector mark, caption and the failed constraints."""
    out = ['<div class="grid">']
    for r in rows:
        failed = f'<br><span class="note">failed: {_e(", ".join(r["failed"]))}</span>' if r.get("failed") else ""
        out.append(f'<div class="tile {"pass" if r["correct"] else "fail"}">{_image(folder, r["file"], None, r["caption"])}'
                   f'<br>{_mark(r["correct"])}<br>{_e(r["caption"])}{failed}</div>')
    out.append("</div>")
    return "\n".join(out)


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                      for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


# ------------------------------------------------------------------------------------------------ plots


def _figure(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return _data_uri(buffer.getvalue())


def score_series(stages: dict) -> dict[str, dict[str, float]]:
    """system -> category -> score, from the stages that ran."""
    series = {}
    if stages.get("shapeworld", {}).get("status") == "ok":
        series["renders"] = stages["shapeworld"]["per_category"]
    if stages.get("sana", {}).get("status") == "ok":
        series["SANA 16-bit"] = stages["sana"]["per_category"]
    if stages.get("svdquant", {}).get("status") == "ok":
        series["SANA W4A4"] = stages["svdquant"]["methods"][1]["per_category"]
    if stages.get("vilau", {}).get("status") == "ok":
        series["VILA-U"] = stages["vilau"]["per_category"]
    return series


def plot_scores(series: dict[str, dict[str, float]]) -> str | None:
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genfoundry.shapes import CATEGORIES

    categories = [c for c in CATEGORIES if any(c in per for per in series.values())]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(series)
    for i, (system, per) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(categories))]
        ax.bar(xs, [per.get(c, 0.0) for c in categories], width, label=system, color=SYSTEM_COLORS.get(system))
    ax.set_xticks(range(len(categories)), [c.replace("_", " ") for c in categories])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("detector score")
    ax.set_title("GenEval-style score per category")
    ax.legend(fontsize=8, ncols=len(series), loc="lower center", bbox_to_anchor=(0.5, 1.08))
    return _figure(fig)


def plot_psnr_bytes(methods: list[dict]) -> str | None:
    points = [m for m in methods if m.get("psnr_db") is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for m in points:
        ax.scatter(m["bytes"] / 2**20, m["psnr_db"], s=40)
        ax.annotate(m["label"], (m["bytes"] / 2**20, m["psnr_db"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    reference = next((m for m in methods if m.get("psnr_db") is None), None)
    if reference is not None:
        ax.axvline(reference["bytes"] / 2**20, color="#1f77b4", linestyle="--", linewidth=1)
        ax.annotate(f"{reference['label']} ({reference['bytes'] / 2**20:.1f} MiB)", (reference["bytes"] / 2**20, ax.get_ylim()[0]),
                    textcoords="offset points", xytext=(-5, 5), fontsize=8, ha="right", color="#1f77b4")
    ax.set_xlabel("transformer bytes (MiB; floating-point tensors at 16 bits)")
    ax.set_ylabel("PSNR vs 16-bit (dB)")
    ax.set_title("Image fidelity against size, per quantization method")
    return _figure(fig)


def plot_lego_layers(rows: list[dict]) -> str | None:
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["layer"].removeprefix("transformer_blocks.0.") for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r["lego_cycles"] for r in rows], 0.4, label="LEGO", color="#2ca02c")
    ax.barh([y + 0.2 for y in ys], [r["gemmini_cycles"] for r in rows], 0.4, label="Gemmini-like", color="#888888")
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("cycles for one image's tokens (system model, 16 GB/s DRAM)")
    ax.set_title("Accelerator cycles per quantized layer (first block)")
    ax.legend(fontsize=8)
    return _figure(fig)


def _plot(uri: str | None, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{_e(alt)}"></figure>' if uri else ""


# ------------------------------------------------------------------------------------------------ sections


def _status_table(report: dict) -> str:
    rows = []
    for name, s in report["stages"].items():
        status = s["status"]
        detail = _e(s.get("summary", "")) if status == "ok" else _e(s.get("error", ""))
        rows.append([_e(name), f'<span class="status-{status}">{status}</span>',
                     _num(s.get("seconds"), ".1f"), _num(s.get("cpu_seconds"), ".1f"), detail])
    return _table(["stage", "status", "wall s", "CPU s", "result"], rows, numeric={2, 3})


def _section_shapeworld(s: dict, folder: Path) -> str:
    return (f"<p>Held-out renders of the five categories; the detector's verdict on each "
            f"(score {_num(s['score'], '.2f')}).</p>" + _tiles(folder, s["renders"]))


def _category_table(s: dict) -> str:
    return _table(["category", "score"], [[_e(c), _num(v, ".2f")] for c, v in s["per_category"].items()]
                  + [["<b>overall</b>", f"<b>{_num(s['score'], '.2f')}</b>"]], numeric={1})


def _section_sana(s: dict, folder: Path) -> str:
    return (f"<p>Model <code>{_e(s['model'])}</code>, {s['steps']} steps; each image scored by the detector.</p>"
            + _category_table(s) + _tiles(folder, s["images"]))


def _section_svdquant(s: dict, folder: Path, sana_rows: list[dict] | None) -> str:
    methods = s["methods"]
    rows = [[_e(m["label"]), _num(m["bytes"]), _num(m.get("psnr_db"), ".2f") if m.get("psnr_db") is not None else "∞",
             _num(m.get("ssim"), ".4f"), _num(m["score"], ".2f")] for m in methods]
    cache = "reused from the cached file" if s.get("from_cache") else f"quantized in {s['quantize_seconds']:.0f} s"
    out = [f"<p>Transformer quantized with <code>{_e(s['config'].get('method'))}</code>, weights "
           f"<code>{_e(s['config'].get('weight'))}</code>, activations <code>{_e(s['config'].get('act'))}</code>, "
           f"group {s['config'].get('group_size')}, rank {s['config'].get('rank')} ({cache}: <code>{_e(s['file'])}</code>). "
           "Every method draws the same prompts with the same seeds; PSNR and SSIM are against the 16-bit images.</p>",
           _table(["method", "bytes", "PSNR dB", "SSIM", "score"], rows, numeric={1, 2, 3, 4})]
    main = methods[1]
    side = []
    references = sana_rows or [{"file": "", "correct": None}] * len(main["images"])
    for ref, q in zip(references, main["images"]):
        side.append([_e(q["caption"]), _image(folder, ref["file"], ref.get("correct")) + "<br>" +
                     (_mark(ref["correct"]) if ref.get("correct") is not None else ""),
                     _image(folder, q["file"], q["correct"]) + "<br>" + _mark(q["correct"]),
                     _num(q["psnr_db"], ".2f"), _num(q["ssim"], ".4f")])
    out.append(f"<h3>16-bit and {_e(main['label'])}, side by side</h3>")
    out.append(_table(["prompt", "16-bit", main["label"], "PSNR dB", "SSIM"], side, numeric={3, 4}))
    return "\n".join(out)


def _qa_table(rows: list[dict], folder: Path, note_image: bool) -> str:
    body = []
    for r in rows:
        for i, q in enumerate(r["questions"]):
            image = ""
            if i == 0:
                image = _image(folder, r["file"], r["image_correct"] if note_image else None)
            body.append([image, _e(q["question"]), _e(q["expected"]), _e(q["answer"]), _mark(q["right"])])
    return _table(["image", "question", "expected", "VILA-U", ""], body)


def _section_vilau(s: dict, folder: Path) -> str:
    return "\n".join([
        f"<p>Model <code>{_e(s['model'])}</code>. VQA accuracy on ShapeWorld renders "
        f"<b>{_num(s['vqa_renders'], '.2f')}</b>; on SANA's images <b>{_num(s['vqa_sana'], '.2f')}</b> "
        f"({_num(s['vqa_sana_correct_images'], '.2f')} on those the detector passes: only there must the caption's "
        "answers be true of the picture).</p>",
        "<h3>Questions about ShapeWorld renders</h3>", _qa_table(s["about_renders"], folder, False),
        "<h3>Questions about SANA's images (expected: what the caption implies; border: the detector's verdict)</h3>",
        _qa_table(s["about_sana"], folder, True),
        f"<h3>VILA-U draws the same prompts (cfg {s['cfg']}, best of {s['candidates']} by its own likelihood)</h3>",
        _category_table(s), _tiles(folder, s["images"]),
    ])


def _lanes(lanes: dict) -> str:
    return _e(", ".join(f"{stage} {n}" for stage, n in lanes.items()))


def _section_lego(s: dict) -> str:
    exact = {True: '<span class="mark pass">bit-exact</span>', False: '<span class="mark fail">NOT bit-exact</span>',
             None: '<span class="note">not simulated</span>'}[s.get("bit_exact")]
    summary = _table(["", "value"], [
        ["layer", f"<code>{_e(s['layer'])}</code>"], ["workload", f"<code>{_e(s['spec'])}</code>"],
        ["operand bits", _e(", ".join(f"{k} {v}" for k, v in s["operand_bits"].items()))],
        ["array, dataflows", _e(f"{s['array']}, {' + '.join(s['dataflows'])}")],
        ["cycles", f"{_num(s['cycles'])} ({_e(s['cycles_from'])})"], ["check against numpy", exact],
        ["integer operands reproduce the layer (relative error)", _num(s["integer_reconstruction_rel_error"], ".2e")],
        [f"system cycles (16 GB/s DRAM): LEGO / Gemmini-like, both {s['array']}",
         f"{_num(s['system_cycles'])} / {_num(s['gemmini_system_cycles'])}: <b>{s['speedup']:.2f}x</b>"],
        ["FU utilisation: LEGO / Gemmini-like", f"{s['utilisation']:.1%} / {s['gemmini_utilisation']:.1%}"],
        ["energy, Gemmini-like / LEGO", f"{s['energy_ratio']:.2f}x"],
        ["Verilog", _e(", ".join(s["verilog"])) + f" ({_num(s['verilog_lines'])} lines)"],
    ])
    keys = ["fus", "input_buffer_bits", "output_buffer_bits", "pipeline_register_bits", "mode_muxes", "modes"]
    area = _table(["resource", "LEGO", "Gemmini-like"],
                  [[_e(k.replace("_", " ")), _num(s["resources"][k]), _num(s["gemmini_resources"][k])] for k in keys]
                  + [["multiplier lanes per FU (per stage)", _lanes(s["resources"]["lanes"]),
                      _lanes(s["gemmini_resources"]["lanes"])]],
                  numeric={1, 2})
    layers = s["layers"]
    per_layer = _table(["layer (first block)", "workloads", "LEGO cycles", "Gemmini-like cycles", "speed-up"],
                       [[_e(r["layer"]), _e(" + ".join(filter(None, (r["spec"], r["down_spec"])))), _num(r["lego_cycles"]),
                         _num(r["gemmini_cycles"]), f"{r['speedup']:.2f}x"] for r in layers["rows"]], numeric={2, 3, 4})
    return "\n".join([
        summary,
        "<p class='note'>The array accumulates the int4 products over all of K; SVDQuant's per-group scales "
        "(and the scales of the 16-bit branch) are applied outside it. The reconstruction error above checks that "
        "these integers, with those scales, are the layer's own computation.</p>",
        "<h3>Area: what each design instantiates (from the generator, no synthesis)</h3>", area,
        "<h3>Every quantized layer</h3>", per_layer,
        f"<p>All {layers['quantized_layers']} quantized layers of one forward pass: LEGO {_num(layers['lego_cycles'])} "
        f"cycles, Gemmini-like {_num(layers['gemmini_cycles'])}: <b>{layers['speedup']:.2f}x</b>.</p>",
    ])


def build_html(report: dict, folder: Path) -> str:
    stages = report["stages"]
    ok = {name: s for name, s in stages.items() if s["status"] == "ok"}
    env = report.get("environment", {})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>genfoundry tour</title>"
        f"<style>{CSS}</style></head><body>",
        "<h1>genfoundry tour</h1>",
        f"<p class='note'>SANA, SVDQuant, VILA-U and LEGO on the embedded models; device {_e(report['device'])}, "
        f"{_e(env.get('cpu_count'))} CPU cores, torch {_e(env.get('torch'))}. Whole run {report['seconds']:.0f} s "
        f"({report['cpu_seconds']:.0f} CPU s). Every number here is in report.json.</p>",
        "<h2>Stages</h2>", _status_table(report),
    ]
    for name, s in stages.items():
        if s["status"] == "failed":
            parts.append(f"<div class='error'><b>{_e(name)} failed:</b> {_e(s['error'])}</div>")
    parts += ["<h2>Scores</h2>", _plot(plot_scores(score_series(stages)), "score per category per system")]
    sections = [
        ("shapeworld", "ShapeWorld renders", lambda s: _section_shapeworld(s, folder)),
        ("sana", "SANA", lambda s: _section_sana(s, folder)),
        ("svdquant", "SVDQuant W4A4", lambda s: _plot(plot_psnr_bytes(s["methods"]), "PSNR against bytes")
         + _section_svdquant(s, folder, ok.get("sana", {}).get("images"))),
        ("vilau", "VILA-U", lambda s: _section_vilau(s, folder)),
        ("lego", "LEGO", lambda s: _plot(plot_lego_layers(s["layers"]["rows"]), "LEGO cycles per layer")
         + _section_lego(s)),
    ]
    for name, title, render in sections:
        if name in ok:
            parts += [f"<h2 id='{name}'>{_e(title)}</h2>", render(ok[name])]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: dict, folder: str | Path) -> Path:
    """Write folder/report.html for `report` (the tour's report.json content)."""
    folder = Path(folder)
    path = folder / "report.html"
    write_text_atomic(path, build_html(report, folder))
    return path
