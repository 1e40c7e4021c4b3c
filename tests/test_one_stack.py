"""Issue 12 case 1: a stack never runs twice on one var directory. Programs end with their
supervisord (a parent-death signal set by bdt cgexec), a second instance of a service refuses
to start (a lock held for the service's life), a process unlinks only the socket file it bound,
and bdt doctor names duplicate or foreign processes in the project's slices."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
import zmq

from shared.bus.client import wait_for
from shared.bus.endpoints import bind, close, endpoint
from tests.cgroup_helpers import writable_backend
from tests.helpers import child_env, start_module, stop_process, wait_until
from tests.stack import AUTOSTART, small_stack


def test_a_second_instance_of_a_service_refuses_and_leaves_the_first_alone(cfg, var_dir):
    first = start_module("services.cache", var_dir)
    try:
        reply = wait_for("cache", cfg)
        socket_file = cfg.run_dir / "cache.sock"
        inode = socket_file.stat().st_ino
        second = subprocess.run([sys.executable, "-m", "services.cache"], env=child_env(var_dir),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"another cache (pid {reply['pid']}) is running" in second.stderr
        assert socket_file.stat().st_ino == inode          # its socket file untouched
        assert wait_for("cache", cfg)["pid"] == reply["pid"]
    finally:
        assert stop_process(first) == 0


def test_a_process_unlinks_only_the_socket_file_it_bound(cfg):
    ctx = zmq.Context.instance()
    ep = endpoint(cfg, "cache")
    old = ctx.socket(zmq.ROUTER)
    old_inode = bind(old, ep)
    new = ctx.socket(zmq.ROUTER)
    new_inode = bind(new, ep)                 # a new process took the name over
    assert new_inode != old_inode
    close(old, ep, old_inode)                 # the old one shuts down later …
    assert (cfg.run_dir / "cache.sock").stat().st_ino == new_inode   # … and leaves it
    close(new, ep, new_inode)
    assert not (cfg.run_dir / "cache.sock").exists()


@pytest.fixture
def stack():
    yield from small_stack()


def test_programs_end_when_supervisord_is_killed(stack):
    """kill -9 of supervisord: before, every service lived on with parent 1 and a second
    supervisord started a second full stack on the same var directory."""
    pids = stack.pids()
    assert set(AUTOSTART) <= set(pids)
    os.kill(stack.proc.pid, signal.SIGKILL)
    stack.proc.wait()

    def gone() -> bool:
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in pids.values())
    wait_until(gone, timeout=15, what="every program to end with its supervisord")
    stack.start().wait_running(AUTOSTART)     # the next supervisord starts one clean stack
    assert not set(stack.pids().values()) & set(pids.values())


def test_doctor_names_duplicate_and_foreign_processes_in_the_slices(stack):
    backend, reason = writable_backend(stack.tree)
    if backend is None:
        pytest.skip(f"cgroups not writable here: {reason}")
    out = stack.bdt("doctor")
    assert "holds" not in out.stdout, out.stdout
    # a stray process in the cache slice (what a second stack's leftovers look like)
    stray = subprocess.Popen(["bdt", "cgexec", "cache", "--", sys.executable, "-c",
                              "import time; time.sleep(60)"], env=stack.env)
    try:
        wait_until(lambda: stray.pid in backend.stats("cache").pids, what="the stray placed")
        out = stack.bdt("doctor")
        assert out.returncode == 1
        assert f"slice cache holds a foreign process: pid {stray.pid}" in out.stdout
    finally:
        stray.kill()
        stray.wait()
