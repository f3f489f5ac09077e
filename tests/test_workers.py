"""Scale-out on a real PostgreSQL server: workers sharing one study, one of them killed mid-trial.

The server is Debian's `postgresql` (scripts/test.sh installs it), started here on loopback in a temporary
directory, as the `postgres` user when the tests run as root.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [p for p in [shutil.which(name)] if p]
    if not found:
        why = f"PostgreSQL's {name} not found: apt-get install postgresql (scripts/test.sh does)"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    return found[-1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1; yields its URL."""
    root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))
    as_pg = ["runuser", "-u", "postgres", "--"] if root else []
    if root:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_pg, _pg_bin("initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "fmnist"], check=True,
                   capture_output=True)
    subprocess.run([*as_pg, _pg_bin("pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql://fmnist@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, _pg_bin("pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _worker(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "fmnist", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_one_killed_mid_trial_finish_exactly_the_requested_trials(postgres_url, tmp_path):
    n = 6
    name = "kill-test"

    def args(out: str) -> list[str]:
        return ["tune", "lenet5", "--space", "lr-wd", "--sampler", "random", "--trials", str(n), "--storage",
                postgres_url, "--study-name", name, "--heartbeat", "1", "--limit", "2000", "--test-limit", "100",
                "--epochs", "6", "--no-retrain", "--quiet", "--out", str(tmp_path / out)]

    a = _worker(args("a"), tmp_path / "a.log")
    b = _worker(args("b"), tmp_path / "b.log")
    # wait until worker a is inside a trial, then SIGKILL it: no chance to clean up
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and a.poll() is None:
        try:
            study = optuna.load_study(study_name=name, storage=postgres_url)
            victim = next((t for t in study.get_trials(states=(TrialState.RUNNING,))
                           if t.user_attrs.get("worker", "").endswith(f":{a.pid}")), None)
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.1)
    assert victim is not None, (tmp_path / "a.log").read_text()
    a.kill()
    a.wait()
    a2 = _worker(args("a2"), tmp_path / "a2.log")  # the restarted worker
    assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
    assert a2.wait(timeout=300) == 0, (tmp_path / "a2.log").read_text()

    study = optuna.load_study(study_name=name, storage=postgres_url)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n  # exactly the requested number, across all workers
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL  # marked failed by a heartbeat check, not left running
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retried and retried[0].params == killed.params and retried[0].state in FINISHED
    for out in ("b", "a2"):
        r = json.loads((tmp_path / out / "tune.json").read_text())
        assert r["complete"] and r["n_finished"] == n


@pytest.mark.slow
@pytest.mark.postgres
def test_cv_folds_shared_by_two_workers(postgres_url, tmp_path):
    def args(out: str) -> list[str]:
        return ["cv", "lenet5", "--folds", "3", "--repeats", "2", "--storage", postgres_url, "--limit", "600",
                "--test-limit", "100", "--epochs", "2", "--quiet", "--out", str(tmp_path / out)]

    workers = [_worker(args(o), tmp_path / f"{o}.log") for o in ("a", "b")]
    for w, o in zip(workers, ("a", "b"), strict=True):
        assert w.wait(timeout=300) == 0, (tmp_path / f"{o}.log").read_text()
    ran = [(tmp_path / f"{o}.log").read_text().count(" train / ") for o in ("a", "b")]
    assert sum(ran) == 6  # every fold of every repeat trained once, by one worker or the other
    for o in ("a", "b"):  # both wrote the whole result
        s = json.loads((tmp_path / o / "cv.json").read_text())
        assert sorted((r["repeat"], r["fold"]) for r in s["per_fold"]) == [(r, k) for r in range(2) for k in (1, 2, 3)]


def test_storage_errors_are_one_line_and_hide_the_password(tmp_path):
    from fmnist.errors import FmnistError
    from fmnist.workers import open_storage, redact

    assert redact("postgresql://me:secret@db.example/fm") == "postgresql://me:***@db.example/fm"
    with pytest.raises(FmnistError, match=r"cannot open Optuna storage postgresql://me:\*\*\*@127.0.0.1:1/x"):
        open_storage("postgresql://me:secret@127.0.0.1:1/x")


def _fresh_postgres_db(url: str, name: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_three_workers_started_together_on_a_fresh_storage(backend, request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'fresh.db'}" if backend == "sqlite"
           else _fresh_postgres_db(request.getfixturevalue("postgres_url"), "fresh_together"))
    n = 4
    args = ["tune", "lenet5", "--space", "lr-wd", "--sampler", "random", "--trials", str(n), "--storage", url,
            "--study-name", "together", "--limit", "600", "--test-limit", "100", "--epochs", "1", "--quiet",
            "--out", str(tmp_path / "out")]  # one --out for all three, as on one machine
    workers = [_worker(args, tmp_path / f"{i}.log") for i in range(3)]
    logs = []
    for i, w in enumerate(workers):
        rc = w.wait(timeout=300)
        logs.append((tmp_path / f"{i}.log").read_text())
        assert rc == 0, logs[-1]
    study = optuna.load_study(study_name="together", storage=url)
    assert len([t for t in study.get_trials() if t.state in FINISHED]) == n
    text = "".join(logs)
    assert text.count("retraining the best configuration") == 1, text  # once, by one of them
    assert text.count("is retrained by worker") == 2, text
    assert json.loads((tmp_path / "out" / "best" / "metrics.json").read_text())["test_accuracy"] is not None


def test_workers_creating_one_storage_at_the_same_instant_all_join(tmp_path):
    import threading

    from fmnist.workers import open_study

    url = f"sqlite:///{tmp_path / 'race.db'}"
    barrier = threading.Barrier(6)

    def join() -> optuna.Study:
        barrier.wait()
        return open_study(url, 10, "race", optuna.samplers.RandomSampler(), "maximize", {"k": 1})

    studies = _in_threads(join, 6)
    assert all(isinstance(s, optuna.Study) for s in studies), studies
    assert len({s._study_id for s in studies}) == 1


def _in_threads(fn: Callable[[], Any], n: int) -> list:
    """fn's result, or the exception it raised, in each of n threads started together."""
    import threading

    out: list = []

    def call() -> None:
        try:
            out.append(fn())
        except Exception as e:  # noqa: BLE001
            out.append(e)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _grid_study(url: str, grid: dict) -> optuna.Study:
    from fmnist.workers import open_study

    return open_study(url, 10, "grid", optuna.samplers.GridSampler(grid), "maximize", {"k": 1})


def test_a_grid_point_whose_trial_failed_is_run_again(tmp_path):
    from fmnist.workers import grid_points, run_worker

    grid = {"fold": [1, 2, 3, 4, 5, 6]}
    url, failed = f"sqlite:///{tmp_path / 'g.db'}", []

    def suggest(trial: optuna.Trial) -> dict:
        return {"fold": trial.suggest_categorical("fold", grid["fold"])}

    def run(trial: optuna.Trial, p: dict) -> float:
        if p["fold"] == 3 and not failed:
            failed.append(trial.number)
            raise RuntimeError("the worker's fold 3 crashed")
        return float(p["fold"])

    with pytest.raises(RuntimeError, match="fold 3 crashed"):
        run_worker(_grid_study(url, grid), suggest, run, 6, grid=grid_points(grid), log=lambda _: None)
    study = _grid_study(url, grid)  # the command run again
    w = run_worker(study, suggest, run, 6, grid=grid_points(grid), log=lambda _: None)
    assert w.complete and w.finished == 6
    done = sorted(t.params["fold"] for t in study.get_trials(states=(TrialState.COMPLETE,)))
    assert done == [1, 2, 3, 4, 5, 6]  # fold 3 once more, and nothing twice
    assert not [t for t in study.trials if t.user_attrs.get("surplus")]  # no retries by luck


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_three_workers_on_one_grid_run_each_point_once(backend, request, tmp_path):
    from fmnist.workers import WorkerResult, grid_points, run_worker

    grid = {"lr": [1, 2, 3], "wd": [0, 1, 2, 3]}
    url = (f"sqlite:///{tmp_path / 'g.db'}" if backend == "sqlite"
           else _fresh_postgres_db(request.getfixturevalue("postgres_url"), f"grid_{time.time_ns()}"))
    ran_by = []

    def suggest(trial: optuna.Trial) -> dict:
        return {k: trial.suggest_categorical(k, v) for k, v in grid.items()}

    def run(trial: optuna.Trial, p: dict) -> float:
        ran_by.append((p["lr"], p["wd"]))
        time.sleep(0.02)
        return float(p["lr"] + p["wd"])

    def work() -> WorkerResult:
        return run_worker(_grid_study(url, grid), suggest, run, 12, grid=grid_points(grid), poll=0.1,
                          log=lambda _: None)

    results = _in_threads(work, 3)
    assert [getattr(r, "complete", r) for r in results] == [True, True, True]
    assert sorted(ran_by) == sorted((p["lr"], p["wd"]) for p in grid_points(grid))  # each point trained once
    assert sum(r.ran for r in results) == 12


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test plays the other worker with ask and tell
def test_a_surplus_trial_gives_its_slot_back_without_a_traceback(tmp_path):
    import logging

    from fmnist.workers import grid_points, run_worker

    grid = {"fold": [1, 2]}
    study = _grid_study(f"sqlite:///{tmp_path / 'g.db'}", grid)
    study.enqueue_trial({"fold": 1})
    held = study.ask()  # another worker's trial of fold 1, still running
    study.enqueue_trial({"fold": 1})  # a second copy, as two workers queueing one point at once leave

    def run(trial: optuna.Trial, p: dict) -> float:
        study.tell(held, 1.0)  # the other worker finishes meanwhile
        return 2.0

    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append
    optuna_log = logging.getLogger("optuna.study._optimize")  # where Optuna logs an objective that raised
    optuna_log.addHandler(handler)
    try:
        w = run_worker(study, lambda t: {"fold": t.suggest_categorical("fold", grid["fold"])}, run, 2,
                       grid=grid_points(grid), log=lambda _: None)
    finally:
        optuna_log.removeHandler(handler)
    assert w.complete and w.ran == 1
    assert [t.user_attrs.get("surplus") for t in study.trials] == [None, True, None]
    assert not [r.getMessage() for r in logged if r.levelno >= logging.WARNING]
