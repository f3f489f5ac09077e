import json

import pytest

from fmnist.cli import main


@pytest.mark.slow
def test_tiny_study_writes_strict_rows_and_a_report_without_nan(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "--profile", "tiny", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    techniques = {row["technique"] for row in r["rows"]}
    assert {"reference recipe", "tuning (reference project 001 random search)", "2-fold cross-validation",
            "augmentation (crop, flip) vs none", "transfer learning", "fmnist preset fast"} <= techniques
    for row in r["rows"]:
        for k in ("technique", "model", "test_accuracy", "ci95", "reference_figure", "train_seconds", "parameters",
                  "command", "verdict"):
            assert k in row, (row["key"], k)
        lo, hi = row["ci95"]
        assert 0 <= lo <= row["test_accuracy"] <= hi <= 1 and row["command"].startswith("fmnist ")
    for row in r["rows"]:  # each command parses back to exactly the config its row trained with
        check_command(row, out)
    assert {row["model"]: row["reference_figure"] for row in r["rows"] if row["technique"] == "reference recipe"}[
        "cnn_bn"] == 0.9137
    paired = {c["key"]: c for c in r["paired_with_preset"]}  # every one-model row against the preset, paired
    assert {"train-cnn_bn", "tune-lenet5_tuned", "augment-cnn_basic"} <= set(paired)
    for c in paired.values():
        assert 0 <= c["p_value"] <= 1 and c["ci95"][0] <= c["accuracy_difference"] <= c["ci95"][1]
    page = (out / "report.html").read_text()
    import re

    text = re.sub(r'src="data:image/png;base64,[^"]*"', "", page)  # the pictures' bytes are no words
    assert not re.search(r"\bnan\b", text, flags=re.I) and "Verdict" in page and "against fmnist's preset" in page
    assert page.count("data:image/png;base64,") >= 10 and 'src="http' not in page
    # the reference projects are a page of the manual, not a path in a repository
    assert "reference-projects/'>the manual</a>" in page and "docs/reference-projects.md" not in page
    assert (out / "report.html").stat().st_size < 3e6
    capsys.readouterr()
    assert main(["study", "--profile", "tiny", "--out", str(out), "--quiet"]) == 0  # resumes: all done
    assert capsys.readouterr().out.count("(done earlier)") == len(r["rows"])
    assert json.loads((out / "results.json").read_text())["rows"] == r["rows"]


def check_command(row, out):
    import shlex

    from fmnist.cli import build_parser
    from fmnist.cli import train_config_from_args as config_of
    from fmnist.config import TrainConfig

    step = out / "steps" / row["key"]
    if row["technique"].startswith("augmentation"):  # "<with>  # vs <without>": check the arm with augmentation
        command, saved = row["command"].split("  # vs ")[0], step / "with" / "config.json"
    elif row["technique"].startswith("tuning"):  # "<search>  # then: <retrain>": check the retrain
        command, saved = row["command"].split("  # then: ")[1], step / "best" / "config.json"
    else:
        command, saved = row["command"], step / "config.json"
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert config_of(args.model, args) == TrainConfig.from_dict(json.loads(saved.read_text())), row["key"]
    assert args.limit == 500 and args.test_limit == 200  # the tiny profile's slice is in the command
