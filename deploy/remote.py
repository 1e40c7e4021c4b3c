"""The target machine over plain ssh and rsync (OpenSSH's and rsync's own clients, as an
operator would type them): no deploy library, nothing installed on the target for us."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

AGENT = Path(__file__).with_name("agent.py")


class RemoteError(RuntimeError):
    """ssh, rsync or an agent step failed; the message says which and why."""


def b64(data: bytes | str | dict) -> str:
    """An argument that survives any shell: JSON or text, base64-encoded."""
    if isinstance(data, dict):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


@dataclass
class Target:
    """``user@host`` (ssh port, key and options as ssh takes them) and the base directory."""

    host: str
    base: str = "/opt/bitdaytrader"
    port: int | None = None
    identity: str | None = None
    options: tuple[str, ...] = ()
    sudo: bool = False            # prefix `sudo -n` (a user other than root)

    def ssh_argv(self) -> list[str]:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.identity:
            argv += ["-i", self.identity]
        for option in self.options:
            argv += ["-o", option]
        return argv

    def remote(self, words: list[str]) -> str:
        command = shlex.join(words)
        return f"sudo -n {command}" if self.sudo else command

    def agent(self, step: str, *args: str, timeout: float = 1800) -> dict:
        """Run one agent step on the target: its progress lines go to our stderr as they
        come, its JSON result is returned."""
        words = ["python3", "-", step, "--base", self.base, *args]
        try:
            done = subprocess.run([*self.ssh_argv(), self.host, self.remote(words)],
                                  input=AGENT.read_text(), stdout=subprocess.PIPE,
                                  stderr=None, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{step} on {self.host}: no answer in {timeout:.0f} s") from None
        except OSError as exc:
            raise RemoteError(f"{step} on {self.host}: {not_runnable(exc)}") from None
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            why = "ssh could not connect" if done.returncode == 255 else \
                f"exit status {done.returncode}"
            raise RemoteError(f"{step} on {self.host} failed ({why})")
        return json.loads(lines[-1])

    def interactive(self, step: str, *args: str) -> int:
        """An agent step that prints for a person (status, logs): its output is passed on."""
        words = ["python3", "-c", AGENT.read_text(), step, "--base", self.base, *args]
        try:
            return subprocess.run([*self.ssh_argv(), self.host, self.remote(words)],
                                  stdin=subprocess.DEVNULL).returncode
        except OSError as exc:
            note(f"FAILED: {step} on {self.host}: {not_runnable(exc)}")
            return 2

    def rsync(self, src: str, dest: str, *, files: tuple[str, ...] | None = None) -> None:
        """``src`` (a local directory, with a trailing slash) to ``dest`` under the base: all
        of it, or only ``files`` (paths relative to it)."""
        argv = ["rsync", "-a", "--chmod=Dg-w,Do-w,Fg-w,Fo-w",
                "-e", shlex.join(self.ssh_argv())]
        if self.sudo:
            argv += ["--rsync-path", "sudo -n rsync"]
        if files is not None:
            argv += ["--from0", "--files-from=-"]
        argv += [src, f"{self.host}:{self.base}/{dest}"]
        data = "\0".join(files).encode() if files is not None else None
        try:
            done = subprocess.run(argv, input=data, capture_output=True)
        except OSError as exc:
            raise RemoteError(f"rsync {src} → {dest}: {not_runnable(exc)}") from None
        if done.returncode != 0:
            raise RemoteError(f"rsync {src} → {dest}: {done.stderr.decode().strip()}")


def not_runnable(exc: OSError) -> str:
    """Why a local program could not be started, with how to get it when it is a known one
    (the pre-flight names missing tools first; this is for one that went missing since)."""
    from deploy.preflight import TOOLS

    name = Path(str(exc.filename or "")).name
    tool = TOOLS.get(name)
    how = f" ({tool.get})" if tool else ""
    return f"cannot run {name or 'a program'} on this machine: {exc.strerror}{how}"


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
