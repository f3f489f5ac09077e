"""The data audit as files: data_report.json, a printed summary and the pictures."""

from __future__ import annotations

import os

from fmnist.data import Dataset
from fmnist.files import write_json

SUMMARY_ROWS = (
    ("rows read", "rows_read"),
    ("rows with missing values", "rows_with_missing_values"),
    ("rows with invalid values", "rows_with_invalid_values"),
    ("exact duplicates removed", "duplicates_removed"),
    ("conflicting duplicates removed", "conflicting_duplicates_removed"),
    ("also in test, removed", "overlap_removed"),
    ("rows kept", "rows_kept"),
)


def describe_data(ds: Dataset, out_dir: str | os.PathLike | None, plots: bool = True) -> dict:
    """Write data_report.json and the data pictures into out_dir (if given); return the report."""
    report = ds.report()
    if out_dir is None:
        return report
    from fmnist.files import prepare_out_dir

    out = prepare_out_dir(out_dir, existing="keep")
    report["pictures"] = []
    if plots:
        from fmnist import plots as P

        counts = {name: a.class_counts for name, a in ds.audit.items()}
        for name, draw in (
            ("class_distribution.png", lambda path: P.class_distribution(counts, path)),
            ("samples.png", lambda path: P.sample_grid(ds.train.images, ds.train.labels, ds.class_names, path)),
            ("mean_images.png", lambda path: P.mean_images(ds.train.images, ds.train.labels, ds.class_names, path)),
            ("pixel_histogram.png", lambda path: P.pixel_histogram(ds.train.images, path)),
        ):
            draw(out / name)
            report["pictures"].append(name)
    write_json(out / "data_report.json", report)
    return report


def format_summary(report: dict) -> str:
    """A readable table of the audit."""
    splits = [s for s in ("train", "test") if s in report]
    w = max(len(r[0]) for r in SUMMARY_ROWS) + 2
    lines = [f"data: {report['source']}" + ("" if report["cleaned"] else "  (--no-clean: nothing dropped)"),
             " " * w + "".join(f"{s:>10}" for s in splits)]
    for label, key in SUMMARY_ROWS:
        lines.append(f"{label:<{w}}" + "".join(f"{report[s][key]:>10,}" for s in splits))
    lines.append(f"{'balanced classes':<{w}}" + "".join(f"{'yes' if report[s]['balanced'] else 'NO':>10}"
                                                     for s in splits))
    lines.append(f"train/test overlap (images in both): {report['train_test_overlap']}")
    names = list(report[splits[0]]["class_counts"])
    lines.append("class counts (after cleaning):")
    for n in names:
        lines.append(f"  {n:<{w - 2}}" + "".join(f"{report[s]['class_counts'][n]:>10,}" for s in splits))
    for s in splits:
        for problem, ex in report[s]["examples"].items():
            lines.append(f"{s} {problem.replace('_', ' ')}: " + "; ".join(ex[:3]))
    return "\n".join(lines)
