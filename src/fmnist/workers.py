"""Optuna studies shared by many workers: tuning trials, cross-validation folds and repeated seeds.

Any number of `fmnist tune` / `fmnist cv` processes, on one machine or many, can work on one study in one Optuna
RDB storage (SQLite for one machine, PostgreSQL for several). This module adds what Optuna leaves to its user:

- **Heartbeats**: each running trial writes a heartbeat; a trial whose worker died (SIGKILL, power loss) goes stale
  after the grace period, is marked FAIL by the next worker that looks, and Optuna's
  RetryHeartbeatStaleTrialCallback queues a copy with the same parameters. Nothing stays RUNNING forever.
- **Exact counts**: `n_trials` counts finished (complete or pruned) trials of the whole study. Optuna's
  MaxTrialsCallback stops a worker only after its own trial, so two workers that start together at N-1 finish
  N+1. Here trials are slots in creation order: a trial that finds N live (running, queued or finished) trials
  numbered before it gives its slot back at once (state FAIL, user attribute `surplus`), before any training.
- **Waiting instead of leaving**: while every remaining slot is held by a running trial, a worker waits: if the
  holder dies, its re-queued copy is picked up, so restarting any worker finishes the study.
- **Clean stop**: the first SIGINT or SIGTERM lets the current trial finish and then stops the worker; a second
  SIGINT abandons the trial, which is re-queued for another worker.
- **Starting together**: workers started at the same moment on a fresh storage race to create Optuna's tables
  (one dies with "UNIQUE constraint failed: alembic_version.version_num"; Optuna's answer in optuna#1092 is to
  create the study first). Here creating the storage and the study is serialized: a file lock beside a SQLite
  file, a PostgreSQL advisory lock, and retries for other databases.
- **Once per study**: work that one worker must do for all (retraining the best configuration) is claimed with
  an atomic insert into a small table of the same storage; the others report who holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from fmnist.errors import FmnistError

HEARTBEAT_SECONDS = 10  # how often a running trial records that its worker is alive
MAX_RETRY = 3  # how many times a trial whose worker died is re-queued
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what --trials counts
LIVE = (TrialState.RUNNING, TrialState.WAITING)  # holds a slot but is not finished


def redact(url: str) -> str:
    """A storage URL without its password, for messages and result files."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def storage_url(storage: str | None, default_db: Path) -> str:
    """The storage given, or a SQLite file for one machine."""
    return storage or f"sqlite:///{default_db.resolve()}"


def sampler_seed(seed: int, storage: str | None) -> int:
    """The seed itself for a study of one process (reproducible); offset by the process id on a shared storage,
    so that workers do not draw the same parameters."""
    return seed + (os.getpid() if storage is not None else 0)


def _engine_kwargs(url: str) -> dict:
    # SQLite: wait up to 60 s for another worker's write instead of failing at once with "database is locked"
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def _check_driver(url: str) -> None:
    if url.startswith(("postgresql://", "postgresql+psycopg://")):  # SQLAlchemy 2.1's default driver: psycopg 3
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise FmnistError("a PostgreSQL storage needs the psycopg driver: pip install 'fmnist[postgres]'") \
                from None


def _storage_error(url: str, e: BaseException) -> FmnistError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return FmnistError(f"cannot open Optuna storage {redact(url)}: {first}")


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Serialize creating tables and studies among workers that start together (optuna#1092)."""
    import sqlalchemy as sa

    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        import fcntl

        path = Path(url[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(f"{path}.lock", "a")  # noqa: SIM115  (held for the block)
        except OSError as e:
            raise _storage_error(url, e) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    elif url.startswith("postgresql"):
        _check_driver(url)
        key = 0x666D6E697374  # "fmnist": one advisory lock for every fmnist worker on this server
        try:
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            conn = engine.connect()
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        except (ImportError, ValueError, sa.exc.SQLAlchemyError) as e:
            raise _storage_error(url, e) from None
        try:
            yield
        finally:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.close()
            engine.dispose()
    else:
        yield


def _racing(e: BaseException) -> bool:
    # what a worker sees while another creates the same tables or rows at the same moment
    text = str(e).lower()
    return any(w in text for w in ("unique constraint", "duplicate key", "already exists", "database is locked"))


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS) -> Any:
    """An Optuna RDBStorage with heartbeats and retry of trials whose worker died."""
    import sqlalchemy.exc

    _check_driver(url)
    if heartbeat < 1:
        raise FmnistError(f"--heartbeat must be at least 1 second, got {heartbeat}")
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: "experimental"
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRY))
            if url.startswith("sqlite"):
                _immediate_transactions(storage.engine)
            return storage
        except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as e:
            if attempt == 5 or not _racing(e):  # a database without a creation lock: try again shortly
                raise _storage_error(url, e) from None
            time.sleep(random.uniform(0.1, 0.5) * (attempt + 1))
    raise AssertionError("unreachable")


def _immediate_transactions(engine: Any) -> None:
    """SQLite transactions that take the write lock when they begin (SQLAlchemy's documented pysqlite recipe).

    pysqlite runs a SELECT outside any transaction, so Optuna's "pop a queued trial" (read WAITING, then write
    RUNNING, made atomic elsewhere by SELECT ... FOR UPDATE) lets two workers on one SQLite file both start the
    same queued trial. With BEGIN IMMEDIATE the read and the write are one transaction; others wait (timeout 60 s).
    """
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections were opened before the listeners


def claim_once(url: str, study_name: str, task: str) -> str | None:
    """Claim a task that one worker does for the whole study; None when this worker got it, else the holder.

    An atomic insert into the table fmnist_claims of the study's own storage, so it holds across machines.
    """
    import sqlalchemy as sa

    table = sa.Table("fmnist_claims", sa.MetaData(), sa.Column("study", sa.String(512), primary_key=True),
                     sa.Column("task", sa.String(128), primary_key=True), sa.Column("worker", sa.String(256)))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, **_engine_kwargs(url))
    try:
        with creation_lock(url):
            table.metadata.create_all(engine)
        try:
            with engine.begin() as conn:
                conn.execute(table.insert().values(study=study_name, task=task, worker=worker_id()))
            return None
        except sa.exc.IntegrityError:
            with engine.connect() as conn:
                return conn.execute(sa.select(table.c.worker).where(
                    (table.c.study == study_name) & (table.c.task == task))).scalar_one()
    except sa.exc.SQLAlchemyError as e:
        raise _storage_error(url, e) from None
    finally:
        engine.dispose()


def signature_name(prefix: str, signature: dict) -> str:
    """A study name that changes whenever the settings do: 'cv-lenet5-1a2b3c4d'."""
    digest = hashlib.sha1(json.dumps(signature, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{prefix}-{digest}"


def open_study(url: str, heartbeat: int, name: str, sampler: Any, direction: str, signature: dict,
               pruner: Any = None) -> Any:
    """Create or join a study; a study made with other settings is refused (workers must agree)."""
    mine = json.loads(json.dumps(signature, sort_keys=True, default=str))
    with creation_lock(url):  # workers started together create the tables and the study one after the other
        study = optuna.create_study(storage=open_storage(url, heartbeat), study_name=name, sampler=sampler,
                                    direction=direction, pruner=pruner, load_if_exists=True)
        theirs = study.user_attrs.get("fmnist")
        if theirs is None:
            study.set_user_attr("fmnist", mine)
    if theirs is not None and theirs != mine:
        import pandas as pd

        # flattened ({'config': {'lr': 1}} -> {'config.lr': 1}) so that a mismatch names the very setting
        a, b = (pd.json_normalize(s, sep=".").to_dict("records")[0] for s in (mine, theirs))
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise FmnistError(f"study '{name}' was created with other settings (different: {', '.join(keys)}); "
                          "give the same options as its other workers, or another --study-name")
    return study


class _Surplus(Exception):
    """The trial found every slot taken: it ends at once and does not count."""


class _GracefulStop:
    """First SIGINT/SIGTERM: finish the current trial, then stop. Second SIGINT: stop now (KeyboardInterrupt)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.requested = False
        self._log = log
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self._log(f"{signal.Signals(signum).name}: stopping after the current trial "
                  "(Ctrl-C again to abandon it; it will be re-queued)")

    def __enter__(self) -> _GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class WorkerResult:
    """What one worker did, and where the study stands."""

    ran: int = 0  # trials this worker finished (complete or pruned)
    finished: int = 0  # finished trials of the whole study
    target: int = 0

    @property
    def complete(self) -> bool:
        return self.finished >= self.target


def count_finished(study: Any, grid: list[dict] | None = None) -> int:
    """Complete and pruned trials of the study; with `grid`, the distinct grid points they hold."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    return len({_key(_point(t)) for t in trials}) if grid is not None else len(trials)


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of a grid's values, as the parameter dicts its trials take."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def _point(trial: Any) -> dict | None:
    """The grid point a trial holds: fixed when it was queued, so visible to others before it starts."""
    return trial.system_attrs.get("fixed_params") or trial.params or None


def _key(point: dict | None) -> str:
    """A grid point as a set member."""
    return json.dumps(point, sort_keys=True)


@contextlib.contextmanager
def _quiet_surplus(current: dict) -> Iterator[None]:
    """While a worker runs, Optuna's two warnings about a surplus trial of its own are dropped."""
    optuna_log, quiet = logging.getLogger("optuna.study._optimize"), _QuietSurplus(current)
    optuna_log.addFilter(quiet)
    try:
        yield
    finally:
        optuna_log.removeFilter(quiet)


class _QuietSurplus(logging.Filter):
    """Optuna logs every trial whose objective raised, with a traceback; a surplus trial (a slot given back before
    any training) is no error, so its two warnings are dropped."""

    def __init__(self, current: dict) -> None:
        super().__init__()
        self.current = current

    def filter(self, record: logging.LogRecord) -> bool:
        c = self.current
        return not (c.get("surplus") and record.getMessage().startswith(f"Trial {c['trial'].number} failed "))


def run_worker(study: Any, suggest: Callable[[Any], dict], run: Callable[[Any, dict], float], n_trials: int,
               grid: list[dict] | None = None, timeout: float | None = None, poll: float = 2.0,
               log: Callable[[str], None] = print) -> WorkerResult:
    """Run trials of `study` until it has `n_trials` finished trials (all workers together), then return.

    `suggest(trial)` draws the parameters; `run(trial, params)` trains and returns the objective.

    With `grid` (the points of a grid search, or the folds of a cross-validation), `n_trials` counts distinct
    points, and points are handed out here rather than by Optuna's GridSampler: each new trial is queued with a
    point that no finished or live trial holds, so its parameters are in the storage before it starts, and a trial
    numbered after another holding the same point gives its slot back. A point whose trial failed (its worker
    raised or was killed and not re-queued) is queued again: GridSampler counts a failed point as visited and
    would only come back to it by chance.
    """
    result = WorkerResult(target=n_trials)
    t0 = time.monotonic()
    surplus_in_a_row = 0
    queued_here: dict[str, int] = {}  # grid point -> times this worker queued it
    current: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        current.update(trial=trial, surplus=False)
        params = None if grid is not None else suggest(trial)  # a grid trial draws once it is known to run
        trials = study.get_trials(deepcopy=False, states=FINISHED + LIVE)
        before = [t for t in trials if t.number < trial.number]
        if grid is not None:  # not a queued point (Optuna's own draw), or a point an earlier trial holds
            point = next(_point(t) for t in trials if t.number == trial.number)
            surplus = point is None or any(_point(t) == point for t in before)
        else:
            surplus = len(before) >= n_trials
        if surplus:
            current["surplus"] = True
            trial.set_user_attr("surplus", True)
            raise _Surplus
        trial.set_user_attr("worker", worker_id())
        return run(trial, suggest(trial) if params is None else params)

    with _GracefulStop(log) as stop, _quiet_surplus(current):
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fail_stale_trials is marked experimental
                optuna.storages.fail_stale_trials(study)  # dead workers' trials -> FAIL + re-queued copy
            trials = study.get_trials(deepcopy=False)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            if grid is not None:
                points = [(t.state, _key(_point(t))) for t in trials if _point(t)]
                done = {key for state, key in points if state in FINISHED}
                held = done | {key for state, key in points if state in LIVE}
                finished, occupied = len(done), len(held)
                missing = [p for p in grid if _key(p) not in held]
            else:
                finished = sum(t.state in FINISHED for t in trials)
                occupied = finished + sum(t.state in LIVE for t in trials)
            result.finished = finished
            if finished >= n_trials:
                break
            if stop.requested or (timeout is not None and time.monotonic() - t0 > timeout):
                break
            if occupied >= n_trials and not waiting:
                time.sleep(poll)  # the remaining slots are held by running trials; wait in case one dies
                continue
            if grid is not None and not waiting:
                point = random.choice(missing)  # random: two workers seldom queue the same point at once
                key = _key(point)
                queued_here[key] = queued_here.get(key, 0) + 1
                if queued_here[key] > MAX_RETRY + 1:
                    raise FmnistError(f"study '{study.study_name}' cannot finish: the trial of {point} failed "
                                      f"{queued_here[key] - 1} times")
                study.enqueue_trial(point)
            current.clear()
            try:
                study.optimize(objective, n_trials=1, catch=(_Surplus,))
            except KeyboardInterrupt:
                if "trial" in current and not current["surplus"]:
                    t = current["trial"]
                    study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
                    log(f"trial {t.number} abandoned and re-queued for another worker")
                break
            if current.get("surplus"):
                surplus_in_a_row += 1
                if surplus_in_a_row >= 20:
                    raise FmnistError(f"study '{study.study_name}' cannot finish: {finished} of {n_trials} trials "
                                      f"finished and no new trial can be made (trials failed more than "
                                      f"{MAX_RETRY} times?)")
            elif current:
                surplus_in_a_row = 0
                result.ran += 1
    result.finished = count_finished(study, grid)
    return result


def worker_id() -> str:
    """host:pid, recorded on each trial so a study shows who ran what."""
    return f"{os.uname().nodename}:{os.getpid()}"
