import json

from fmnist.cli import main


def test_tiny_study_writes_report_listing_every_technique(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "--profile", "tiny", "--out", str(out), "--quiet"]) == 0
    r = json.loads((out / "results.json").read_text())
    techniques = {s["technique"] for s in r["steps"] if s.get("test_accuracy") is not None}
    assert {"reference recipe", "augmentation", "tuning (reference project 001 random search)",
            "2-fold cross-validation", "transfer learning"} <= techniques
    assert "fmnist preset fast" in techniques
    page = (out / "report.html").read_text()
    for t in techniques:
        assert t in page
    assert page.count("data:image/png;base64,") >= 10 and 'src="http' not in page
    capsys.readouterr()
    assert main(["study", "--profile", "tiny", "--out", str(out), "--quiet"]) == 0  # resumes: all done
    assert capsys.readouterr().out.count("(done earlier)") == len(r["steps"])
