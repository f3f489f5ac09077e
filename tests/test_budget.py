"""Time budgets: durations, the frontier's expectations, and a budgeted run that ends with its schedule complete
and its plan recorded (how close a plan comes to its budget is a benchmark, not a test)."""

import json
import math

import pytest

from fmnist.budget import Plan, expected_accuracy, format_outcome, parse_duration
from fmnist.config import TrainConfig
from fmnist.errors import FmnistError
from fmnist.optim import lr_at
from fmnist.recipes import BUDGET_FRONTIER, PRESETS, RECIPE_COST
from fmnist.run import train_run, train_within


@pytest.mark.parametrize(("text", "seconds"), [("2m", 120), ("600s", 600), ("1h30m", 5400), ("90", 90),
                                                ("1.5m", 90), (45, 45), ("10min", 600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2x", "0", "-5", "0s", "m"])
def test_a_bad_duration_is_one_line(text):
    with pytest.raises(FmnistError, match="time budget"):
        parse_duration(text)


def test_the_frontier_is_measured_presets_and_expects_more_of_more_epochs():
    assert {p.recipe for p in BUDGET_FRONTIER} <= set(PRESETS) and set(RECIPE_COST) >= {p.recipe for p in
                                                                                        BUDGET_FRONTIER}
    assert all(0.9 < p.val_accuracy < 1 for p in BUDGET_FRONTIER)
    fast = sorted((p for p in BUDGET_FRONTIER if p.recipe == "fast" and p.views == "flip+shifts"),
                  key=lambda p: p.epochs)
    assert expected_accuracy("fast", fast[0].epochs - 1) is None  # never chosen on a guess
    assert expected_accuracy("fast", fast[0].epochs) == pytest.approx(fast[0].val_accuracy)
    assert expected_accuracy("fast", 10_000) == pytest.approx(max(p.val_accuracy for p in fast))
    curve = [expected_accuracy("fast", e) for e in range(fast[0].epochs, fast[-1].epochs + 1)]
    assert all(b >= a for a, b in zip(curve, curve[1:], strict=False))
    # 10 views are measured better than the mirror alone at every epoch count both were measured at
    flip = {p.epochs: p.val_accuracy for p in BUDGET_FRONTIER if p.recipe == "fast" and p.views == "flip"}
    assert flip and all(expected_accuracy("fast", e, "flip") <= expected_accuracy("fast", e) for e in flip)
    assert expected_accuracy("max", 10_000, "flip") is None  # never measured: never chosen
    lo, hi = fast[-2], fast[-1]
    mid = round(math.sqrt(lo.epochs * hi.epochs))  # half way in log(epochs)
    assert min(lo.val_accuracy, hi.val_accuracy) <= expected_accuracy("fast", mid) <= max(lo.val_accuracy,
                                                                                          hi.val_accuracy)


def test_outcome_line_says_within_or_over():
    plan = Plan(budget_seconds=120, epochs=7, step_seconds=0.06, steps_per_epoch=223, eval_image_seconds=1e-3,
                planned_seconds=110, measured_seconds=3)
    assert "within the budget: 12 s to spare" in format_outcome(plan, 108)
    assert "over the budget by 5 s" in format_outcome(plan, 125)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert "7 epoch(s) of cnn_bn fit here" in plan.describe("cnn_bn")


def test_a_budgeted_run_completes_its_schedule_and_records_the_plan(small_ds, tmp_path):
    config = TrainConfig.for_model("mlp_5x128", epochs=1, schedule="onecycle", lr=3e-3)
    lines = []
    run = train_run(config, small_ds, tmp_path / "r", plots=False, progress=False, log=lines.append,
                    time_budget="10s")
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    plan = Plan.from_dict(saved["time_budget"])
    assert plan.budget_seconds == 10 and plan.epochs > 1  # the plan, not config.epochs=1, set the epochs
    assert saved["epochs"] == plan.epochs == run.metrics.epochs_run == len(run.history.epoch)
    assert plan.planned_seconds <= 10 * 0.93  # planned inside the budget, with its margin
    # the one-cycle schedule ran to its end: the last step's learning rate is the schedule's last
    steps = math.ceil(saved["data"]["train_rows"] / config.batch_size)
    total = steps * plan.epochs
    assert run.history.lr[-1] == pytest.approx(lr_at(total - 1, total, run.config, steps))
    tb = metrics["time_budget"]
    assert tb["epochs"] == plan.epochs and tb["resumed"] is False and tb["actual_seconds"] > plan.measured_seconds
    assert tb["within_budget"] == (tb["actual_seconds"] <= 10)
    assert any(line.startswith("time budget 10 s:") and "epoch(s) of mlp_5x128 fit here" in line for line in lines)
    assert any("planned" in line and "took" in line for line in lines)


def test_a_budget_too_short_is_refused_before_the_directory_is_touched(small_ds, tmp_path):
    config = TrainConfig.for_model("cnn_basic")
    with pytest.raises(FmnistError, match=r"too short for cnn_basic here: one epoch takes about .* give at least"):
        train_run(config, small_ds, tmp_path / "r", plots=False, progress=False, log=lambda *_: None,
                  time_budget=0.5)
    assert not (tmp_path / "r").exists()


def test_resuming_keeps_the_recorded_plan(small_ds, tmp_path):
    from fmnist.run import _budgeted  # the resume branch itself: a real interruption is test_loop's business

    out = tmp_path / "r"
    out.mkdir()
    plan = Plan(60, 3, 0.01, 5, 1e-4, 40, 1)
    (out / "config.json").write_text(json.dumps({"epochs": 3, "time_budget": plan.to_dict()}))
    config, kept = _budgeted(TrainConfig.for_model("mlp_5x128", epochs=50), out, True, None, None, None, None, 60,
                             0.0, lambda *_: None)
    assert kept == plan and config.epochs == 3
    (out / "config.json").write_text(json.dumps({"epochs": 3}))
    with pytest.raises(FmnistError, match="no plan in its config.json"):
        _budgeted(TrainConfig.for_model("mlp_5x128"), out, True, None, None, None, None, 60, 0.0, print)


def test_train_within_refuses_epochs_and_resume(small_ds, tmp_path):
    with pytest.raises(FmnistError, match="epochs or a time budget"):
        train_within("2m", small_ds, tmp_path / "r", epochs=3)
    with pytest.raises(FmnistError, match="needs its model"):
        train_within("2m", small_ds, tmp_path / "r", existing="resume")


@pytest.mark.slow
def test_train_within_chooses_a_frontier_recipe_and_plans_it(small_ds, tmp_path):
    lines = []
    run = train_within("25s", small_ds, tmp_path / "r", progress=False, log=lines.append)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["model"] in {PRESETS[p.recipe].model for p in BUDGET_FRONTIER}
    assert saved["time_budget"]["epochs"] == run.metrics.epochs_run == saved["epochs"]
    assert any(line.startswith("time budget 25 s: recipe ") for line in lines)
    weighed = [line.strip() for line in lines if line.startswith("  ")]  # each recipe and its views weighed
    assert any(w.startswith("fast (resnet_fm_small, flip):") for w in weighed)
    assert any(w.startswith("fast (resnet_fm_small, flip+shifts):") for w in weighed)
    assert run.metrics.test_accuracy > 0.5  # a real model (chance is 0.1), even on 600 images


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "lenet5", "--time-budget", "2x"], "time budget '2x': expected a duration"),
    (["train", "lenet5", "--time-budget", "2m", "--epochs", "3"], "give --epochs or --time-budget, not both"),
    (["train"], "give MODEL"),
    (["train", "--time-budget", "2m", "--set", "width=8"], "need MODEL"),
])
def test_the_command_line_refuses_in_one_line_before_loading(argv, message, tmp_path, capsys):
    from fmnist.cli import main

    assert main([*argv, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()
