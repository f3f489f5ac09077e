"""report.html: one self-contained page (pictures embedded) rendered from a study's typed results.

The page opens with the verdict table and one chart of test accuracy against training time; a section per
technique follows. It reads no file by name: the pictures it embeds are those each result lists.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist.files import write_text

if TYPE_CHECKING:
    from fmnist.study import Row, StudyResult

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{padding:4px 8px;border-bottom:1px solid #ddd;
text-align:right;vertical-align:top}th{background:#f3f3f3}td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:4px 0}.above{color:#080;font-weight:bold}.below{color:#b00}
.within{color:#555}.skipped{color:#888}h2{border-bottom:2px solid #333;padding-bottom:4px;margin-top:2em}
code{font-size:12px;background:#f6f6f6;padding:1px 3px}details{margin:.3em 0}
"""
DASH = "—"  # what the page shows where a run has no such figure (never "nan")


def manual_url() -> str:
    """Where the report's links to the manual point: $FMNIST_MANUAL_URL, else the address `mkdocs serve` serves
    the manual at from a checkout (the report is a file, so its links need an address, not a repository path)."""
    url = os.environ.get("FMNIST_MANUAL_URL") or "http://127.0.0.1:8000/"
    return html.escape(url if url.endswith("/") else url + "/", quote=True)


def _pct(v: float | None, digits: int = 2) -> str:
    return DASH if v is None else f"{100 * v:.{digits}f}%"


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(_small_png(path)).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _small_png(path: Path) -> bytes:
    """The PNG with its colours reduced to a 256-colour palette (Pillow), for the page: matplotlib's charts use few
    colours, so they look the same at a third to a half of the bytes, and the page stays under 3 MB."""
    import io

    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    data = buf.getvalue()
    return data if len(data) < path.stat().st_size else path.read_bytes()


def _verdict_class(r: Row) -> str:
    return "above" if r.verdict.startswith("above") else "below" if r.verdict.startswith("below") else "within"


def verdict_table(rows: list[Row]) -> str:
    """The table a reader wants first: fmnist against each reference figure, with intervals."""
    out = ["<table><tr><th class='l'>technique</th><th class='l'>model</th><th>fmnist test accuracy</th>"
           "<th>95% interval</th><th>reference</th><th>difference</th><th class='l'>verdict</th>"
           "<th>train time</th></tr>"]
    for r in rows:
        diff = DASH if r.difference is None else f"{100 * r.difference:+.2f}"
        out.append(f"<tr><td class='l'><a href='#{html.escape(r.key)}'>{html.escape(r.technique)}</a></td>"
                   f"<td class='l'>{html.escape(r.model)}</td><td><b>{_pct(r.test_accuracy)}</b></td>"
                   f"<td>{_pct(r.ci95[0])} – {_pct(r.ci95[1])}</td><td>{_pct(r.reference_figure)}</td><td>{diff}</td>"
                   f"<td class='l {_verdict_class(r)}'>{html.escape(r.verdict)}</td>"
                   f"<td>{r.train_seconds:,.0f} s</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _trust(details: dict) -> str:
    """A row's calibration and prediction sets in one sentence ("" when the row has none)."""
    c, s = details.get("calibration"), details.get("conformal")
    if not c:
        return ""
    text = f"Calibration: expected calibration error {_pct(c['ece'])} as trained"
    if c.get("temperature") is not None:
        text += (f", {_pct(c['ece_calibrated'])} with the temperature {c['temperature']:.2f} fitted on held-out "
                 "images")
    if s:
        text += (f"; {_pct(s['level'], 0)} prediction sets held the true class for {_pct(s['coverage'])} of the "
                 f"test images, {s['mean_set_size']:.2f} classes on average")
    return f"<p>{text}.</p>"


def write_report(result: StudyResult, out: Path) -> Path:
    """Write out/report.html (and out/accuracy_vs_time.png, the chart it opens with)."""
    from fmnist import plots

    p = result.profile
    rows = result.rows
    if rows:
        plots.accuracy_vs_time([r.model if r.technique == "reference recipe" else
                                f"{r.model} ({r.technique.split(' (')[0]})" for r in rows],
                               [r.test_accuracy for r in rows], [r.train_seconds for r in rows],
                               [r.ci95 for r in rows], [r.reference_figure for r in rows], out / "accuracy_vs_time.png")
    prov = result.provenance
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>fmnist study ({p.name})</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>fmnist study: profile <code>{p.name}</code></h1>",
             f"<p>Data: <code>{html.escape(result.source)}</code>. Total time {result.seconds / 60:.1f} min. "
             + ("Each row reproduces a technique of one of five public Fashion-MNIST projects (the reference "
                f"projects 000 to 004, described in <a href='{manual_url()}reference-projects/'>the manual</a>) and "
                "compares its test accuracy with the figure the project published. Test accuracy is measured once "
                "per row on the official test set" if result.fashion else
                "This data is not Fashion-MNIST: the rows that reproduce the reference projects' models are left "
                "out, and no row is compared with their figures (published on Fashion-MNIST); each technique runs "
                "as it does there. Test accuracy is measured once per row on the data's test split")
             + (f" (a slice of it: its first {p.test_limit:,} images)" if p.test_limit else
                f" ({result.data['rows_kept'].get('test', 0):,} images)")
             + ", which chose nothing: "
             "recipes, tuning and early stopping were chosen on validation splits. The 95% interval is the test "
             "set's own sampling noise (Wilson), or the spread over folds where a row trained several models; the "
             "verdict says whether the reference figure lies outside it. "
             + ("Recipes: each reference model with fmnist's loop and a one-cycle schedule, enough epochs to "
                "converge, on the training data less a 10% validation split (the reference projects kept one too). "
                if p.recipes else "Recipes: the reference projects' own. ")
             + (f"This profile caps every recipe at {p.epoch_cap} epoch(s) (a smoke test): its figures say nothing "
                "about the techniques. " if p.epoch_cap else "")
             + f"fmnist {html.escape(str(prov.get('fmnist')))}, torch {html.escape(str(prov.get('torch')))}, git "
               f"{html.escape(str(prov.get('git_revision')))}, {prov.get('cpu_threads')} CPU threads"
             + (f", GPU {html.escape(str(prov['cuda']))}" if prov.get("cuda") else "") + ".</p>",
             "<h2>Verdict</h2>", verdict_table(rows)]
    for s in result.skipped:
        parts.append(f"<p class='skipped'>Skipped {html.escape(s['title'])}: {html.escape(s['skipped'])}</p>")
    parts.append(_img(out / "accuracy_vs_time.png", "test accuracy against training time"))
    if result.paired:
        parts.append("<h3>Each row against fmnist's preset, on the same test images</h3><p>The images exactly one "
                     "of the two models gets right decide: the difference with its 95% interval, and McNemar's exact "
                     "test.</p><table><tr><th class='l'>row</th><th>difference</th><th>95% interval</th>"
                     "<th>McNemar p</th><th>right only here / only the preset</th></tr>")
        for c in result.paired:
            parts.append(f"<tr><td class='l'>{html.escape(c.technique)}: {html.escape(c.model)}</td>"
                         f"<td>{100 * c.accuracy_difference:+.2f}</td><td>{100 * c.ci95[0]:+.2f} – "
                         f"{100 * c.ci95[1]:+.2f}</td><td>{c.p_value:.2g}</td>"
                         f"<td>{c.only_this} / {c.only_preset}</td></tr>")
        parts.append("</table>")

    parts.append("<h2 id='data'>Data audit</h2>"
                 f"<p>Rows kept: {', '.join(f'{k} {v:,}' for k, v in result.data['rows_kept'].items())}; "
                 "train/test overlap: "
                 f"{result.data['train_test_overlap']}. Full audit in <code>steps/data/data_report.json</code>.</p>")
    parts += [_img(out / pic, Path(pic).stem) for pic in result.data.get("pictures", [])]
    for r in rows:
        parts.append(f"<h2 id='{html.escape(r.key)}'>{html.escape(r.technique)}: {html.escape(r.model)}</h2>")
        parts.append(f"<p>Test accuracy <b>{_pct(r.test_accuracy)}</b>, 95% interval {_pct(r.ci95[0])} – "
                     f"{_pct(r.ci95[1])} ({html.escape(r.interval)}); validation accuracy {_pct(r.val_accuracy)}; "
                     f"{r.train_seconds:,.0f} s of training"
                     + (f"; {r.parameters:,} parameters" if r.parameters else "") + ".</p>")
        if r.reference_figure is not None:
            parts.append(f"<p>Reference: {html.escape(r.reference or '')}, {_pct(r.reference_figure)}. "
                         f"<span class='{_verdict_class(r)}'>{html.escape(r.verdict)}</span>.</p>")
        elif r.technique.startswith("augmentation"):
            parts.append(f"<p><b>{html.escape(r.verdict)}</b> (with: {_pct(r.details['with_test_accuracy'])}, "
                         f"without: {_pct(r.details['without_test_accuracy'])}, the same model, recipe, seed and "
                         f"{r.details['epochs']} epochs each).</p>")
        parts.append(f"<p>Recipe: {html.escape(r.recipe)}.</p><p>Reproduce: <code>{html.escape(r.command)}</code>"
                     "</p>")
        parts.append(_trust(r.details))
        rest = {k: v for k, v in r.details.items() if k not in ("calibration", "conformal")}
        if rest and not r.technique.startswith("augmentation"):
            parts.append(f"<details><summary>details</summary><code>{html.escape(str(rest))}</code></details>")
        parts += [_img(out / pic, Path(pic).stem) for pic in r.pictures]
    parts.append("</body></html>")
    path = out / "report.html"
    write_text(path, "\n".join(parts))
    return path
