import json
import math

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
    assert (out / "report.html").stat().st_size < 3e6
    capsys.readouterr()
    assert main(["study", "--profile", "tiny", "--out", str(out), "--quiet"]) == 0  # resumes: all done
    assert capsys.readouterr().out.count("(done earlier)") == len(r["rows"])
    assert json.loads((out / "results.json").read_text())["rows"] == r["rows"]


def test_interval_functions_against_known_values():
    from fmnist.metrics import mean_interval, paired_comparison, wilson_interval

    # Wilson's closed form for 9,000 of 10,000: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    z, n, p = 1.959963984540054, 10000, 0.9
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(9000, 10000)
    assert (lo, hi) == pytest.approx(((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)))
    assert (round(lo, 4), round(hi, 4)) == (0.894, 0.9057)
    lo, hi = mean_interval([0.90, 0.91, 0.92])  # mean 0.91, sd 0.01, t(0.975, 2) = 4.303
    assert (lo, hi) == pytest.approx((0.91 - 4.302653 * 0.01 / math.sqrt(3), 0.91 + 4.302653 * 0.01 / math.sqrt(3)))
    import numpy as np

    a = np.array([True] * 60 + [False] * 40)  # a right on 60, b right on 50: 15 only a, 5 only b
    b = np.array([True] * 45 + [False] * 15 + [True] * 5 + [False] * 35)
    c = paired_comparison(a, b)
    assert (c.only_a, c.only_b, c.difference) == (15, 5, pytest.approx(0.10))
    assert c.p_value == pytest.approx(0.04138947, rel=1e-5)  # exact two-sided binomial test of 15 of 20
    half = 1.959963984540054 * math.sqrt((20 - 10 ** 2 / 100) / 100 ** 2)
    assert c.ci95 == pytest.approx((0.10 - half, 0.10 + half))


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
