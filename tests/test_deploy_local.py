"""Issue 24 case 7: the deploy checks this machine's tools before anything is sent.

On the running system ``make deploy`` from a machine without rsync ended in a traceback
(``FileNotFoundError: 'rsync'`` from deploy/remote.py) after the pre-flight said everything was
fine: the pre-flight checked the target's tools, not the deploying machine's. Now the
documented command fails at once, in one line naming the tool and its Debian package, before
it connects anywhere. No VM: a fake ``ssh`` records whether it was ever called.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploy import preflight
from deploy.remote import RemoteError, Target
from tests.helpers import REPO

HOST = "root@127.0.0.1"


def path_without(tmp: Path, *missing: str) -> Path:
    """A directory of symlinks to every program on PATH but ``missing``, and a fake ssh that
    writes down that it was called (and fails as an unreachable host does)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            link = bin_dir / entry.name
            if entry.name not in missing and not link.exists() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    if "ssh" not in missing:
        ssh = bin_dir / "ssh"
        ssh.unlink(missing_ok=True)
        ssh.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp / 'ssh-called'}\nexit 255\n")
        ssh.chmod(0o755)
    return bin_dir


def make(tmp: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The documented command, ``make deploy VPS=…``, with PATH = ``bin_dir`` (``-o``: the
    venv counts as installed, so make never reinstalls it here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BDT_")}
    env.update(PATH=str(bin_dir), HOME=str(tmp), BDT_WHEELHOUSE_CACHE=str(tmp / "wheelhouse"))
    return subprocess.run([str(bin_dir / "make"), "-s", "-C", str(REPO), "-o", ".venv/.installed",
                           *args], env=env, capture_output=True, text=True, timeout=120)


def deploy_lines(stderr: str) -> list[str]:
    """What the deploy module said (make's own "Error 2" line left out)."""
    return [line for line in stderr.splitlines() if not line.startswith("make")]


def test_make_deploy_without_rsync_fails_in_one_line_before_connecting(tmp_path):
    bin_dir = path_without(tmp_path, "rsync")
    done = make(tmp_path, bin_dir, "deploy", f"VPS={HOST}", "ALLOW_DIRTY=1")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "FileNotFoundError" not in done.stderr
    assert deploy_lines(done.stderr) == [
        "[   0.0s] FAILED: pre-flight: this machine has no rsync (Debian: apt-get install "
        "rsync), which `deploy` needs here; nothing was sent and nothing on the target was "
        "touched"]
    assert not (tmp_path / "ssh-called").exists(), "the deploy connected before its pre-flight"


def test_every_missing_tool_is_named_with_its_package(tmp_path):
    bin_dir = path_without(tmp_path, "rsync", "ssh")
    done = make(tmp_path, bin_dir, "deploy", f"VPS={HOST}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = deploy_lines(done.stderr)
    assert "no ssh (Debian: apt-get install openssh-client) and rsync (Debian: apt-get install " \
           "rsync)" in line
    status = make(tmp_path, bin_dir, "status", f"VPS={HOST}")
    assert status.returncode != 0 and "Traceback" not in status.stderr
    assert deploy_lines(status.stderr) == [
        f"FAILED: status on {HOST}: cannot run ssh on this machine: No such file or directory "
        "(Debian: apt-get install openssh-client)"]


def test_with_every_tool_the_preflight_names_them_and_goes_on_to_the_target(tmp_path):
    bin_dir = path_without(tmp_path, "rsync")
    (bin_dir / "rsync").symlink_to("/bin/true")               # present (never reached)
    done = make(tmp_path, bin_dir, "deploy", f"VPS={HOST}", "ALLOW_DIRTY=1")
    lines = deploy_lines(done.stderr)
    assert lines[0].endswith(f"pre-flight (this machine): ssh {bin_dir}/ssh, rsync "
                             f"{bin_dir}/rsync, git {bin_dir}/git, uv {REPO}/.venv/bin/uv")
    assert (tmp_path / "ssh-called").exists()                # then it asked the target
    assert done.returncode != 0 and lines[-1].endswith(
        f"FAILED: facts on {HOST} failed (ssh could not connect)")


def test_local_findings_name_each_tool_and_how_to_get_it():
    have = {"ssh": "/usr/bin/ssh", "git": "/usr/bin/git"}
    findings = preflight.local("deploy", which=have.get)
    assert [(f.level, f.topic) for f in findings][:3] == [
        ("ok", "ssh"), ("fail", "rsync"), ("ok", "git")]
    assert "Debian: apt-get install rsync" in findings[1].text
    assert preflight.local_error("deploy", findings).startswith(
        "pre-flight: this machine has no rsync (Debian: apt-get install rsync)")
    assert preflight.local_error("rollback", preflight.local("rollback", which=have.get)) is None
    assert set(preflight.NEEDS) == {"deploy", "rollback", "status", "logs"}


def test_a_tool_gone_after_the_preflight_is_a_clear_error_not_a_traceback(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    target = Target(HOST)
    with pytest.raises(RemoteError, match=r"cannot run rsync on this machine: .*\(Debian: "
                                          r"apt-get install rsync\)"):
        target.rsync("/tmp/", "releases/x/")
    with pytest.raises(RemoteError, match="cannot run ssh on this machine"):
        target.agent("facts")
