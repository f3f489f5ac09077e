"""report.html: one self-contained page (pictures embedded) from a study's results dict."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from fmnist.files import write_text

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2),th:first-child,th:nth-child(2){text-align:left}
img{max-width:100%;border:1px solid #eee;margin:4px 0}.better{color:#080;font-weight:bold}.worse{color:#b00}
.skipped{color:#888}h2{border-bottom:2px solid #333;padding-bottom:4px;margin-top:2em}
"""


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def comparison_rows(results: dict) -> list[dict]:
    """The steps that produced a test accuracy, in study order."""
    return [s for s in results["steps"] if s.get("test_accuracy") is not None]


def write_report(results: dict, out: Path) -> Path:
    """Write out/report.html and out/comparison.png."""
    from fmnist import plots

    rows = comparison_rows(results)
    labels = [f"{r['model']} ({r['technique']})" for r in rows]
    if rows:
        ref = {lab: r["reference_accuracy"] for lab, r in zip(labels, rows, strict=True) if r.get("reference_accuracy")}
        plots.bar_compare(labels, [r["test_accuracy"] for r in rows], out / "comparison.png", reference=ref,
                          title="Test accuracy (red mark: the reference project's published figure)")
    p = results["profile"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>fmnist study ({p['name']})</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>fmnist study: profile <code>{p['name']}</code></h1>",
             f"<p>Data: <code>{html.escape(results['data'])}</code>. Total time {results['seconds'] / 60:.1f} min. "
             f"Accuracy is measured on the official test set{'' if not p['test_limit'] else ' (a slice of it)'}; "
             "every choice (tuning, early stopping) was made on validation splits. "
             + (f"Profile <code>{p['name']}</code> caps every reference recipe at {p['max_epochs']} epoch(s)"
                + (" with a cosine schedule" if p["short_schedule"] else "")
                + " where the reference projects trained 8 to 50, so compare with their figures on the full "
                  "profile; fmnist's "
                  f"preset <code>{p['preset']}</code> runs as designed. "
                if p["max_epochs"] else "") +
             f"fmnist {html.escape(str(results['provenance'].get('fmnist')))}, torch "
             f"{html.escape(str(results['provenance'].get('torch')))}, git "
             f"{html.escape(str(results['provenance'].get('git_revision')))}.</p>",
             "<h2>Comparison</h2><table><tr><th>model</th><th>technique</th><th>test acc</th><th>val acc</th>"
             "<th>reference figure</th><th>train time</th><th>parameters</th></tr>"]
    for r in rows:
        seed = r.get("reference_accuracy")
        cls = "" if seed is None else ("better" if r["test_accuracy"] >= seed else "worse")
        spread = f" ± {100 * r['test_accuracy_std']:.2f}" if r.get("test_accuracy_std") is not None else ""
        params = f"{r['parameters']:,}" if r.get("parameters") else ""
        parts.append(f"<tr><td>{html.escape(r['model'])}</td><td>{html.escape(r['technique'])}</td>"
                     f"<td class='{cls}'>{_pct(r['test_accuracy'])}{spread}</td><td>{_pct(r.get('val_accuracy'))}"
                     f"</td><td>{_pct(seed)}</td><td>{r.get('train_seconds', 0):.0f} s</td><td>{params}</td></tr>")
    for r in results["steps"]:
        if "skipped" in r:
            parts.append(f"<tr class='skipped'><td>{html.escape(str(r['model']))}</td><td>"
                         f"{html.escape(r['technique'])}</td><td colspan='5'>skipped: {html.escape(r['skipped'])}"
                         "</td></tr>")
    parts.append("</table>")
    parts.append(_img(out / "comparison.png", "test accuracy comparison"))

    for s in results["steps"]:
        d = out / s["dir"]
        title = s["technique"] + (f": {s['model']}" if s.get("model") else "")
        parts.append(f"<h2 id='{html.escape(s['key'])}'>{html.escape(title)}</h2>")
        if "skipped" in s:
            parts.append(f"<p class='skipped'>Skipped: {html.escape(s['skipped'])}</p>")
            continue
        if s["key"] == "data":
            parts.append(f"<p>Rows kept: {s['rows_kept']}; train/test overlap: {s['train_test_overlap']}. "
                         "Full audit in <code>steps/data/data_report.json</code>.</p>")
            for f in ("class_distribution", "samples", "mean_images", "pixel_histogram"):
                parts.append(_img(d / f"{f}.png", f))
            continue
        cfg = s.get("config", {})
        parts.append(f"<p>Test accuracy <b>{_pct(s.get('test_accuracy'))}</b>"
                     + (f" ± {100 * s['test_accuracy_std']:.2f} (over folds)" if s.get("test_accuracy_std") else "")
                     + f"; {cfg.get('epochs')} epochs, {cfg.get('optimizer')} lr {cfg.get('lr')}, batch "
                     f"{cfg.get('batch_size')}, schedule {cfg.get('schedule')}"
                     + (f", augment {cfg['augment']}" if cfg.get("augment") else "")
                     + (f"; best parameters {html.escape(str(s['best_params']))} of {s['n_trials']} trials"
                        if s.get("best_params") else "") + ".</p>")
        if s["key"].startswith("cv-"):
            figs = ("fold_curves", "fold_metrics")
        elif s["key"].startswith("tune-"):
            figs = ("optimization_history", "params", "param_importances", "best/learning_curves",
                    "best/confusion_matrix", "best/misclassified")
        else:
            figs = ("learning_curves", "augmentation", "confusion_matrix", "misclassified")
        for f in figs:
            parts.append(_img(d / f"{f}.png", f))
    parts.append("</body></html>")
    path = out / "report.html"
    write_text(path, "\n".join(parts))
    return path
