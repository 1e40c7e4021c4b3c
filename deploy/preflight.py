"""The pre-flight, in two parts, before anything is sent. ``local``: the tools the command
needs on this machine (ssh, rsync, git; uv beside this Python), each with how to get it — a
missing one is a one-line error and the command stops before it connects anywhere. ``check``:
what the target is (the agent's ``facts``) held against what the release needs — before
anything on the target is touched. ``fail`` stops the deploy; ``warn`` is said and the deploy
goes on."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.programs import always_on_slices
from shared.resources.allocation import AllocationTable

MiB = 1 << 20
VENV_BYTES = 800 * MiB           # a release's venv (seen: ~550 MiB) and code, with a margin


@dataclass(frozen=True)
class Finding:
    level: str                   # ok | warn | fail
    topic: str
    text: str

    def __str__(self) -> str:
        return f"  {self.level.upper() if self.level == 'fail' else self.level:4}  " \
               f"{self.topic:8} {self.text}"


@dataclass(frozen=True)
class Tool:
    """A program a command runs on this machine, why, and how to get it."""

    name: str
    why: str
    get: str                     # "Debian: apt-get install openssh-client", or another way
    required: bool = True        # False: the command works without it, less well (said)


TOOLS = {t.name: t for t in (
    Tool("ssh", "every step on the target runs over it", "Debian: apt-get install "
         "openssh-client"),
    Tool("rsync", "sends the release's code and wheels", "Debian: apt-get install rsync"),
    Tool("git", "reads the release (commit, files) from the checkout", "Debian: apt-get "
         "install git"),
    Tool("uv", "resolves the release's wheels for the target's Python (without it pip does, "
         "for this Python's environment markers)", "make install puts it in .venv from "
         "requirements.lock", required=False),
)}
# what each command of ``python -m deploy`` runs here
NEEDS = {"deploy": ("ssh", "rsync", "git", "uv"), "rollback": ("ssh",), "status": ("ssh",),
         "logs": ("ssh",)}


def find_tool(name: str, which: Callable[[str], str | None] = shutil.which) -> str | None:
    """Where ``name`` is: on PATH, uv beside this Python (where the wheelhouse looks)."""
    if name == "uv":
        uv = Path(sys.executable).with_name("uv")
        return str(uv) if uv.exists() else None
    return which(name)


def local(command: str, which: Callable[[str], str | None] = shutil.which) -> list[Finding]:
    """One finding per tool ``command`` needs on this machine."""
    out = []
    for tool in map(TOOLS.__getitem__, NEEDS[command]):
        path = find_tool(tool.name, which)
        if path:
            out.append(Finding("ok", tool.name, path))
        else:
            out.append(Finding("fail" if tool.required else "warn", tool.name,
                               f"not found on this machine: {tool.why} ({tool.get})"))
    return out


def local_error(command: str, findings: list[Finding]) -> str | None:
    """The one line that stops ``command`` when a tool it needs is missing here, or None."""
    missing = [TOOLS[f.topic] for f in findings if f.level == "fail"]
    if not missing:
        return None
    named = " and ".join(f"{t.name} ({t.get})" for t in missing)
    return f"pre-flight: this machine has no {named}, which `{command}` needs here; " \
           "nothing was sent and nothing on the target was touched"


def mib(n: int | None) -> str:
    return "?" if n is None else f"{n / MiB:.0f} MiB"


def check(facts: dict, table: AllocationTable, *, python: str, machine: str,
          wheelhouse_bytes: int, min_free: int = 512 * MiB) -> list[Finding]:
    """Every finding, in the order the pre-flight prints them."""
    return [*_python(facts, python, machine), *_access(facts), *_init_and_cgroups(facts),
            *_memory(facts, table, min_free), *_disk(facts, wheelhouse_bytes)]


def _python(facts: dict, python: str, machine: str) -> list[Finding]:
    have = ".".join(facts["python"].split(".")[:2])
    if have != python:
        return [Finding("fail", "python", f"the target has Python {facts['python']}, the "
                        f"wheelhouse is for {python} (cp{python.replace('.', '')} wheels): "
                        f"deploy from a machine with Python {have}, or install {python} there")]
    out = [Finding("ok", "python", f"{facts['python']} at {facts['python_exe']} "
                   f"(wheelhouse: {python})")]
    if facts["machine"] != machine:
        out.append(Finding("fail", "python", f"the target is {facts['machine']}, the wheels "
                           f"are for {machine}"))
    if not facts["venv"]:
        out.append(Finding("fail", "python", "python3 has no venv module (Debian: apt-get "
                           "install python3-venv)"))
    return out


def glibc_finding(facts: dict, needed: tuple[int, int] | None) -> Finding:
    """Whether the target's C library is new enough for the release's manylinux wheels."""
    lib, _, version = facts["libc"].partition(" ")
    if needed is None:
        return Finding("ok", "libc", "no wheel needs a particular glibc")
    want = f"{needed[0]}.{needed[1]}"
    try:
        have = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        have = ()
    if lib != "glibc" or have < needed:
        return Finding("fail", "libc", f"the wheels need glibc ≥ {want}; the target has "
                       f"{facts['libc'].strip() or 'no glibc'}")
    return Finding("ok", "libc", f"glibc {version} (the wheels need ≥ {want})")


def _access(facts: dict) -> list[Finding]:
    out = []
    if facts["uid"] != 0 and not facts["sudo"]:
        out.append(Finding("fail", "access", "not root, and `sudo -n` does not work: the "
                           "deploy writes the base directory and the systemd unit"))
    if not facts["rsync"]:
        out.append(Finding("fail", "access", "rsync is not installed on the target "
                           "(Debian: apt-get install rsync)"))
    return out or [Finding("ok", "access", "root" if facts["uid"] == 0 else "sudo -n")]


def _init_and_cgroups(facts: dict) -> list[Finding]:
    cg, sd = facts["cgroup"], facts["systemd"]
    controllers = set(cg["controllers"])
    out = []
    if sd["running"]:
        out.append(Finding("ok", "systemd", f"systemd {sd['version']}: the stack runs as "
                           "bitdaytrader.service (Delegate=yes, Restart=on-failure)"))
    else:
        out.append(Finding("warn", "systemd", "no systemd on the target: supervisord is started "
                           "directly (setsid + nohup, a pid file); nothing restarts it if it "
                           "dies, nor at boot, and there is no outer MemoryMax/CPUQuota"))
    if cg["mode"] == "v2":
        missing = sorted({"memory", "cpu"} - controllers)
        if missing:
            out.append(Finding("warn", "cgroups", f"cgroup v2 without the {', '.join(missing)} "
                               "controller: the slices' limits will NOT be enforced"))
        elif sd["running"]:
            extra = "" if "cpuset" in controllers else " (no cpuset: the slices' cpusets are " \
                "not applied)"
            out.append(Finding("ok", "cgroups", "cgroup v2 with " + " ".join(
                c for c in ("memory", "cpu", "cpuset") if c in controllers)
                + ": delegated to the unit, slices below it" + extra))
        elif cg["writable"]:
            out.append(Finding("warn", "cgroups", f"cgroup v2, no systemd to delegate: the tree "
                               f"goes under the deploying session's cgroup {cg['own']}"))
        else:
            out.append(Finding("warn", "cgroups", "cgroup v2 is read-only here: the slices' "
                               "limits will NOT be enforced (bdt status says so)"))
    elif cg["mode"] in ("v1", "hybrid"):
        out.append(Finding("warn", "cgroups", f"cgroup {cg['mode']}: Delegate=yes is a cgroup v2 "
                           "feature; the v1 backend makes the tree under the unit's cgroups"))
    else:
        out.append(Finding("warn", "cgroups", "no cgroup filesystem: the slices' limits will "
                           "NOT be enforced"))
    return out


def _memory(facts: dict, table: AllocationTable, min_free: int) -> list[Finding]:
    total, available = facts["memory"]["total"], facts["memory"]["available"]
    # a running stack is replaced: what it uses now is ours again
    free = (available or 0) + facts["running"].get("memory", 0)
    parent = table.parent
    always_on = sum(table.slice(name).memory_max
                    for name in always_on_slices(table.slices.values()))
    if free < min_free:
        return [Finding("fail", "memory", f"{mib(free)} available, under the {mib(min_free)} "
                        "the stack needs to start")]
    out = [Finding("ok", "memory", f"{mib(free)} available of {mib(total)}")]
    if total is not None and total < parent.memory_max:
        out.append(Finding("warn", "memory", f"the parent cap ({mib(parent.memory_max)}) is "
                           f"more than the machine has ({mib(total)}): the kernel's own OOM "
                           "killer, not the cap, bounds the whole tree"))
    if free < always_on:
        out.append(Finding("warn", "memory", f"the always-on slices may use up to "
                           f"{mib(always_on)} together, more than is available now"))
    return out


def _disk(facts: dict, wheelhouse_bytes: int) -> list[Finding]:
    need = wheelhouse_bytes + VENV_BYTES
    free = facts["disk_free"]
    if free < need:
        return [Finding("fail", "disk", f"{mib(free)} free at {facts['disk_path']}, a release "
                        f"needs about {mib(need)} (its wheels and venv)")]
    level = "warn" if free < 2 * need else "ok"
    return [Finding(level, "disk", f"{mib(free)} free at {facts['disk_path']} (a release "
                    f"needs about {mib(need)})")]
