"""MLflow tracking against a real SQLite-backed store, read back through MLflow's client."""

import pytest

from fmnist.cli import main


def test_train_logs_params_curves_results_and_files_to_mlflow(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="fmnist[mlflow] is part of the dev extra scripts/test.sh installs")
    monkeypatch.chdir(tmp_path)  # the store's artifacts land beside it
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    assert main(["train", "lenet5", "--limit", "300", "--test-limit", "100", "--epochs", "2", "--quiet",
                 "--out", str(out), "--mlflow", uri]) == 0
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fmnist").experiment_id])
    assert run.data.params["model"] == "lenet5" and run.data.params["epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    import json

    assert run.data.metrics["test_accuracy"] == pytest.approx(json.loads((out / "metrics.json").read_text())
                                                              ["test_accuracy"])
    assert run.data.tags["model"] == "lenet5" and "version.torch" in run.data.tags
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "metrics.json", "learning_curves.png", "config.json"} <= files


def test_mlflow_without_the_extra_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert main(["train", "lenet5", "--limit", "300", "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--mlflow"]) == 2
    assert "pip install 'fmnist[mlflow]'" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_tuning_trials_and_cv_folds_are_nested_runs(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="fmnist[mlflow] is part of the dev extra scripts/test.sh installs")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--limit", "300", "--test-limit", "100", "--epochs", "1", "--quiet", "--mlflow", uri]
    assert main(["tune", "lenet5", "--trials", "2", "--out", str(tmp_path / "t"), *common]) == 0
    assert main(["cv", "lenet5", "--folds", "2", "--out", str(tmp_path / "c"), *common]) == 0
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("fmnist").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    tune = next(r for n, r in by_name.items() if n.startswith("tune "))
    cv = next(r for n, r in by_name.items() if n.startswith("cv "))

    def children(parent):
        return sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)

    assert children(tune) == ["best", "trial 0", "trial 1"]  # the trials, and the retrained best configuration
    assert children(cv) == ["fold 1", "fold 2"]
    assert "best_val_accuracy" in tune.data.metrics and by_name["fold 1"].data.metrics["test_accuracy"] >= 0


@pytest.mark.slow
def test_tiny_study_logs_its_steps_under_one_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="fmnist[mlflow] is part of the dev extra scripts/test.sh installs")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["study", "--profile", "tiny", "--out", str(tmp_path / "s"), "--quiet", "--mlflow", uri]) == 0
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("fmnist").experiment_id])
    (study,) = [r for r in runs if r.info.run_name == "study tiny"]
    under = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    assert {"train-cnn_bn", "preset-fast"} <= {r.info.run_name for r in under}
    assert any(r.info.run_name.startswith("tune ") for r in under)  # the search, its trials nested below it
