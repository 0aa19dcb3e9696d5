"""The run folder lock: a second run on a folder fails at once naming the holder; a lock left by a
killed run is taken over."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mbt.cli import main
from mbt.train.run_folder import LOCK_NAME, RunLockedError, run_lock

from .tiny_experiment import tiny_config, write_config


def _hold(root, locked, release) -> None:
    with run_lock(root):
        locked.set()
        release.wait(60)


def _holder(root):
    """A process that holds the lock of `root` until `release` is set (or it is killed); forked, so
    it starts without importing anything again."""
    ctx = multiprocessing.get_context("fork")
    locked, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(root, locked, release))
    proc.start()
    assert locked.wait(60)
    proc.release = release
    return proc


def _end(proc) -> None:
    proc.release.set()
    proc.join(60)


def test_a_second_run_fails_at_once_naming_the_holder(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        message = rf"another run is writing to this run folder \(pid {proc.pid} on {socket.gethostname()}, started "
        with pytest.raises(RunLockedError, match=message + r"\d{4}-\d\d-\d\dT"), run_lock(tmp_path / "run"):
            pass
    finally:
        _end(proc)
    with run_lock(tmp_path / "run"):  # released when its holder ended
        assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # emptied on release


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    proc = _holder(tmp_path / "run")
    proc.kill()  # SIGKILL: no chance to release anything
    proc.join(60)
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == proc.pid  # left behind
    with caplog.at_level(logging.WARNING, logger="mbt.train"), run_lock(tmp_path / "run"):
        assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of a run that ended without releasing it (pid {proc.pid}" in caplog.text


def _hold_with_a_worker(root, locked, worker_pid) -> None:
    """Hold the lock, fork a 'loader worker' that outlives this process, then die without releasing."""
    with run_lock(root):
        pid = os.fork()
        if pid == 0:  # the worker: sleeps on, as an orphaned DataLoader worker does for a while
            time.sleep(60)
            os._exit(0)
        worker_pid.value = pid
        locked.set()
        time.sleep(60)


def test_a_killed_runs_orphaned_worker_does_not_keep_the_folder_locked(tmp_path):
    ctx = multiprocessing.get_context("fork")
    locked, worker_pid = ctx.Event(), ctx.Value("i", 0)
    proc = ctx.Process(target=_hold_with_a_worker, args=(tmp_path / "run", locked, worker_pid))
    proc.start()
    assert locked.wait(60)
    proc.kill()  # the run dies; its worker lives on (and holds the sentinel pipe join would wait on)
    deadline = time.monotonic() + 60
    while proc.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.kill(worker_pid.value, 0)  # still alive
        with run_lock(tmp_path / "run"):  # the restart gets the folder
            assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        os.kill(worker_pid.value, signal.SIGKILL)


def test_a_stale_lock_file_with_a_dead_pid_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                   "started": "2026-01-01T00:00:00", "command": "mbt train"}))
    with caplog.at_level(logging.WARNING, logger="mbt.train"), run_lock(tmp_path):
        pass
    assert f"pid {dead.pid} on {socket.gethostname()}, started 2026-01-01T00:00:00" in caplog.text


def test_mbt_train_on_a_folder_in_use_fails_naming_the_holder(tmp_path, capsys):
    config = write_config(tiny_config(), tmp_path / "tiny.yaml")
    proc = _holder(tmp_path / "run")
    try:
        assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--no-progress"]) != 0
    finally:
        _end(proc)
    assert f"another run is writing to this run folder (pid {proc.pid}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written by the second run
