"""The deploy's hands on the target: every step that must run *there*.

It runs under the target's own ``python3`` with the standard library only, and is not installed
anywhere: for each step the deploying machine sends this file over ssh on standard input
(``ssh HOST python3 - STEP --base BASE …``). So it also answers ``facts`` on a machine whose
Python is too old for the wheelhouse (the pre-flight then says so), and rollback works with
whatever is on the target. Each step prints what it does on stderr and ONE JSON object on the
last line of stdout (``status`` and ``logs`` print for a person instead).

Layout under BASE (docs/deploy.md)::

    releases/<id>/        the code of one release, its .venv, release.json, var -> shared/var
    current -> releases/<id>   switched by rename(2), never unlink-then-link
    shared/var/           run/ (0700), log/, data/ (trading state, market store), models
    shared/wheelhouse/    the wheels the venvs are built from (--no-index)
    shared/uv-cache/      uv's unpacked wheels; the venvs' files are hard links into it
    shared/config.toml    the operator's configuration (BDT_CONFIG), kept across releases
    shared/backups/<id>/  the state databases as they were before <id> went live
    shared/deploy.log     one JSON line per deploy / rollback
"""

from __future__ import annotations

import argparse
import base64
import configparser
import hashlib
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

UNIT = "bitdaytrader.service"
UNIT_PATH = Path("/etc/systemd/system") / UNIT
GROUP = "bitdaytrader"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PIP_OPTS = ("--disable-pip-version-check", "--no-input", "-q", "--no-index", "--no-deps",
            "--no-compile")
# uv's cache sits beside the releases (shared/uv-cache, same filesystem): the venvs' files are
# hard links into it, so it costs no second copy, and a new release reuses what is unpacked
UV_OPTS = ("-q", "--offline", "--no-index", "--no-deps", "--link-mode", "hardlink")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


def sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def run(argv: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], text=True, **kw)


def output(argv: list, timeout: float = 60) -> str:
    """stdout of a command, "" when it cannot run or fails."""
    try:
        return run(argv, capture_output=True, timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


class Layout:
    def __init__(self, base: str) -> None:
        self.base = Path(base)
        self.releases = self.base / "releases"
        self.current = self.base / "current"
        self.shared = self.base / "shared"
        self.var = self.shared / "var"
        self.wheelhouse = self.shared / "wheelhouse"
        self.uv_cache = self.shared / "uv-cache"
        self.config = self.shared / "config.toml"
        self.backups = self.shared / "backups"
        self.history = self.shared / "deploy.log"
        self.launcher_pid = self.var / "run" / "start-stack.pid"

    def direct_pid(self) -> int | None:
        """The pid of a directly started supervisord (or of its launcher), if alive."""
        return pid_alive(self.var / "run" / "supervisord.pid") or pid_alive(self.launcher_pid)

    def release(self, rid: str) -> Path:
        if not rid or "/" in rid or rid.startswith("."):
            raise SystemExit(f"agent: bad release id {rid!r}")
        return self.releases / rid

    def current_id(self) -> str | None:
        try:
            return os.readlink(self.current).rstrip("/").split("/")[-1]
        except OSError:
            return None

    def env(self, release: Path) -> dict:
        """The environment bdt needs here: the shared var dir and the operator's config."""
        env = dict(os.environ, BDT_VAR=str(self.var),
                   PATH=f"{release / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        env.pop("BDT_CONFIG", None)
        if self.config.exists():
            env["BDT_CONFIG"] = str(self.config)
        return env


def release_info(path: Path) -> dict:
    try:
        return json.loads((path / "release.json").read_text())
    except (OSError, ValueError):
        return {"id": path.name, "state": "incomplete", "created": path.stat().st_mtime}


def releases(layout: Layout) -> list:
    """Every release directory, oldest first (by when it was built)."""
    if not layout.releases.is_dir():
        return []
    found = [release_info(p) for p in layout.releases.iterdir() if p.is_dir()]
    return sorted(found, key=lambda r: r.get("created", 0))


# ---------------------------------------------------------------- facts (the pre-flight)

def systemd_running() -> bool:
    """systemd is PID 1 (sd_booted: /run/systemd/system exists)."""
    return Path("/run/systemd/system").is_dir()


def systemd_facts() -> dict:
    """systemd as PID 1 and its version (one `systemctl --version`: for the facts only)."""
    if not systemd_running():
        return {"running": False, "version": None}
    first = output(["systemctl", "--version"]).split("\n", 1)[0].split()
    version = int(first[1]) if len(first) > 1 and first[1].isdigit() else None
    return {"running": True, "version": version}


def cgroup_facts() -> dict:
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    kinds = {line.split()[2] for line in mounts if len(line.split()) > 2}
    v1, v2 = "cgroup" in kinds, "cgroup2" in kinds
    mode = "hybrid" if v1 and v2 else "v1" if v1 else "v2" if v2 else "none"
    own = ""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            own = line[3:]
    facts = {"mode": mode, "own": own, "controllers": [], "writable": False}
    if mode == "v2":
        try:
            facts["controllers"] = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
        except OSError:
            pass
        facts["writable"] = os.access(CGROUP_ROOT / own.lstrip("/") / "cgroup.procs", os.W_OK)
    return facts


def meminfo() -> dict:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            values[key] = int(rest.split()[0]) * 1024
    return {"total": values.get("MemTotal"), "available": values.get("MemAvailable")}


def unit_state() -> dict:
    text = output(["systemctl", "show", UNIT, "-p",
                   "ActiveState,SubState,NRestarts,Result,MainPID,ControlGroup"])
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def pid_alive(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def running(layout: Layout, systemd: bool) -> dict:
    """Is a stack of this layout up, and under which init; its memory if the unit has a cgroup."""
    state = {"init": None, "memory": 0}
    if systemd and UNIT_PATH.exists():
        unit = unit_state()
        if unit.get("ActiveState") in ("active", "activating", "reloading"):
            state["init"] = "systemd"
            cgroup = unit.get("ControlGroup") or ""
            try:
                cur = CGROUP_ROOT / cgroup.lstrip("/") / "memory.current"
                state["memory"] = int(cur.read_text()) if cgroup else 0
            except (OSError, ValueError):
                pass
            return state
    pid = layout.direct_pid()
    if pid:
        state["init"] = "direct"
        state["pid"] = pid
    return state


def cmd_facts(layout: Layout, args: argparse.Namespace) -> dict:
    sd = systemd_facts()
    probe = layout.base
    while not probe.exists():
        probe = probe.parent
    disk = os.statvfs(probe)
    try:
        import venv  # noqa: F401
        has_venv = True
    except ImportError:
        has_venv = False
    sudo = None
    if os.getuid() != 0:
        sudo = run(["sudo", "-n", "true"], capture_output=True).returncode == 0 \
            if shutil.which("sudo") else False
    return {
        "python": platform.python_version(), "python_exe": sys.executable, "venv": has_venv,
        "machine": platform.machine(), "libc": " ".join(platform.libc_ver()),
        "uid": os.getuid(), "sudo": sudo, "rsync": shutil.which("rsync"),
        "cpus": os.cpu_count(), "systemd": sd, "cgroup": cgroup_facts(), "memory": meminfo(),
        "disk_free": disk.f_bavail * disk.f_frsize, "disk_path": str(probe),
        "current": layout.current_id(), "releases": releases(layout),
        "unit_sha": sha256_of(UNIT_PATH), "config_sha": sha256_of(layout.config),
        "running": running(layout, sd["running"]),
    }


# ---------------------------------------------------------------- building a release

def cmd_prepare(layout: Layout, args: argparse.Namespace) -> dict:
    """Make the shared directories and the release's directory."""
    for path in (layout.var / "log", layout.var / "data", layout.wheelhouse, layout.backups):
        path.mkdir(parents=True, exist_ok=True)
    (layout.var / "run").mkdir(mode=0o700, exist_ok=True)
    os.chmod(layout.var / "run", 0o700)
    rel = layout.release(args.id)
    rel.mkdir(parents=True, exist_ok=True)
    return {"ready": release_info(rel).get("state") == "ready"}


def cmd_build(layout: Layout, args: argparse.Namespace) -> dict:
    """The release's own venv, from the wheelhouse only (venvs cannot be moved: it is built
    where it runs). Then every native library its extension modules load must be found on
    the target."""
    rel = layout.release(args.id)
    venv = rel / ".venv"
    started = time.monotonic()
    if not (venv / ".built").exists():
        failed = build_venv(layout, rel, venv, args)
        if failed:
            return failed
    missing = missing_libraries(venv)
    if missing:
        return {"ok": False, "libraries": missing}
    var_link = rel / "var"
    if not var_link.is_symlink():
        if var_link.exists():
            shutil.rmtree(var_link)
        var_link.symlink_to(layout.var)
    meta = json.loads(base64.b64decode(args.meta))
    meta.update(state="ready", created=time.time(), python=platform.python_version(),
                extras=args.extras,
                wheels=json.loads(base64.b64decode(args.wheels)),
                venv_seconds=round(time.monotonic() - started, 1))
    (rel / "release.json").write_text(json.dumps(meta, indent=1))
    return {"ok": True, "seconds": meta["venv_seconds"]}


def build_venv(layout: Layout, rel: Path, venv: Path, args: argparse.Namespace) -> dict | None:
    """The wheels chosen by the deploying machine (uv's among them: wheelhouse.resolve always
    asks for it), installed as they are (``--no-deps``: no resolution here): pip, run from its
    own wheel (the target needs no pip), installs uv, then uv the wheels, the project editable,
    and checks the dependencies; None when done, else what failed."""
    if venv.exists():
        shutil.rmtree(venv)          # a build that did not finish
    run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    py = venv / "bin" / "python"
    wheels = [layout.wheelhouse / name for name in json.loads(base64.b64decode(args.wheels))]
    uv_wheel = next((w for w in wheels if w.name.startswith("uv-")), None)
    if uv_wheel is None:
        return {"ok": False, "error": "no uv wheel among the release's wheels", "check": False}
    uv = [venv / "bin" / "uv", "pip"]
    opts = [*UV_OPTS, "--cache-dir", layout.uv_cache, "--python", py]
    steps = [[py, layout.wheelhouse / args.pip_wheel / "pip", "install", *PIP_OPTS, uv_wheel],
             [*uv, "install", *opts, *wheels],
             [*uv, "install", *opts, "--no-build-isolation", "-e", "."],
             [*uv, "check", "--python", py]]
    for n, argv in enumerate(steps, 1):
        done = run(argv, cwd=rel, capture_output=True)
        if done.returncode != 0:
            text = (done.stdout + done.stderr).strip()
            check = n == len(steps)
            if not check:
                shutil.rmtree(venv, ignore_errors=True)
            return {"ok": False, "error": text[-3000:], "check": check}
    (venv / ".built").touch()
    return None


def elf_needed(path: Path) -> list:
    """DT_NEEDED entries of a 64-bit little-endian ELF shared object ([] for anything else);
    reads only its headers and dynamic section."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return []
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        loads, dynamic = [], None
        for i in range(phnum):
            ptype, _, offset, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", table,
                                                                    i * phentsize)
            if ptype == 1:
                loads.append((vaddr, offset, filesz))
            elif ptype == 2:
                dynamic = (offset, filesz)
        if dynamic is None:
            return []
        f.seek(dynamic[0])
        raw = f.read(dynamic[1])
        entries = [struct.unpack_from("<qQ", raw, i) for i in range(0, len(raw) - 15, 16)]
        strtab = next((v for t, v in entries if t == 5), None)
        offsets = [v for t, v in entries if t == 1]
        base = next((off + strtab - va for va, off, size in loads
                     if strtab is not None and va <= strtab < va + size), None)
        names = []
        for rel_off in offsets if base is not None else []:
            f.seek(base + rel_off)
            names.append(f.read(256).split(b"\0", 1)[0].decode(errors="replace"))
        return names


def missing_libraries(venv: Path) -> dict:
    """soname → the venv's files that need it, for every library found neither in the venv
    (wheels vendor theirs) nor by the target's dynamic loader (ldconfig -p)."""
    files = [p for p in venv.rglob("*.so*") if p.is_file() and not p.is_symlink()]
    have = {p.name for p in files}
    for line in output(["/sbin/ldconfig", "-p"]).splitlines()[1:]:
        have.add(line.strip().split(" ", 1)[0])
    missing: dict = {}
    for path in files:
        for name in elf_needed(path):
            if name not in have and not name.startswith("ld-linux"):
                missing.setdefault(name, []).append(str(path.relative_to(venv)))
    return missing


def cmd_mark(layout: Layout, args: argparse.Namespace) -> dict:
    rel = layout.release(args.id)
    info = release_info(rel)
    info["state"] = args.state
    (rel / "release.json").write_text(json.dumps(info, indent=1))
    return {"ok": True}


def cmd_config(layout: Layout, args: argparse.Namespace) -> dict:
    """Install the operator's config (shared/config.toml) if it differs."""
    text = base64.b64decode(args.text)
    if layout.config.exists() and layout.config.read_bytes() == text:
        return {"changed": False}
    layout.shared.mkdir(parents=True, exist_ok=True)
    tmp = layout.config.with_suffix(".tmp")
    tmp.write_bytes(text)
    os.replace(tmp, layout.config)
    return {"changed": True}


# ---------------------------------------------------------------- stop, migrate, switch, start

def systemctl(*words: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["systemctl", *words], check=check, capture_output=True)


def stop_direct(layout: Layout) -> int | None:
    """SIGTERM to a directly started supervisord (or its launcher), SIGKILL after 90 s."""
    pid = layout.direct_pid()
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return pid
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return pid


def cmd_stop(layout: Layout, args: argparse.Namespace) -> dict:
    stopped = []
    if systemd_running() and UNIT_PATH.exists() and unit_state().get(
            "ActiveState") in ("active", "activating", "reloading", "failed"):
        systemctl("stop", UNIT)
        stopped.append("systemd unit " + UNIT)
    if args.disable and systemd_running() and UNIT_PATH.exists():
        systemctl("disable", "--quiet", UNIT)     # not at boot either: nothing good to start
    pid = stop_direct(layout)
    if pid:
        stopped.append(f"supervisord pid {pid} (started directly)")
    return {"stopped": stopped}


def cmd_migrate(layout: Layout, args: argparse.Namespace) -> dict:
    """Run the release's own migration (deploy/migrate.py, in its venv) while nothing runs."""
    rel = layout.release(args.id)
    backup = layout.backups / args.id
    done = run([rel / ".venv" / "bin" / "python", "-m", "deploy.migrate", "--var", layout.var,
                "--backup", backup], cwd=rel, env=layout.env(rel), capture_output=True)
    for line in (done.stdout + done.stderr).strip().splitlines():
        say(f"  {line}")
    return {"ok": done.returncode == 0, "error": done.stderr.strip()[-2000:]}


def cmd_switch(layout: Layout, args: argparse.Namespace) -> dict:
    """Point ``current`` at the release atomically: a new link under a temporary name, renamed
    over ``current`` (rename(2) replaces it in one step: there is never no ``current``)."""
    layout.release(args.id)
    previous = layout.current_id()
    tmp = layout.base / f".current.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(f"releases/{args.id}", tmp)
    os.replace(tmp, layout.current)
    fd = os.open(layout.base, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"previous": previous, "current": args.id}


def rendered_unit(layout: Layout, rel: Path) -> str:
    """The unit as the release renders it from its own template and allocation table."""
    done = run([rel / ".venv" / "bin" / "python", "-m", "deploy.unit", "--base", layout.base],
               cwd=rel, capture_output=True, check=True)
    return done.stdout


def cmd_start(layout: Layout, args: argparse.Namespace) -> dict:
    """Start the stack of ``current``: the systemd unit (written from the release's template
    when it differs) or, without systemd, the launcher under setsid + nohup with a pid file."""
    rel = layout.release(layout.current_id() or "")
    result: dict = {"init": "systemd" if systemd_running() else "direct"}
    if result["init"] == "systemd":
        text = rendered_unit(layout, rel)
        result["unit_changed"] = sha256_of(UNIT_PATH) != hashlib.sha256(text.encode()).hexdigest()
        if result["unit_changed"]:
            tmp = UNIT_PATH.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, UNIT_PATH)
            systemctl("daemon-reload")
        systemctl("enable", "--quiet", UNIT)
        result["restarts_before"] = int(unit_state().get("NRestarts") or 0)
        systemctl("reset-failed", UNIT, check=False)
        systemctl("start", UNIT)
    else:
        log = open(layout.var / "log" / "start-stack.log", "ab")  # noqa: SIM115 (the child's)
        child = subprocess.Popen(
            [str(layout.current / "deploy" / "start-stack"), str(layout.base)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env={k: v for k, v in os.environ.items()
                                         if not k.startswith("BDT_")})
        layout.launcher_pid.write_text(f"{child.pid}\n")
        result["pid"] = child.pid
        result["note"] = ("no systemd on this target: supervisord started directly (setsid, "
                          f"nohup; pid file {layout.launcher_pid}); it is not restarted if it "
                          "dies and does not start at boot")
    return result


# ---------------------------------------------------------------- health

def autostart_programs(rel: Path) -> list:
    conf = configparser.RawConfigParser()
    conf.read(rel / "supervisord.conf")
    names = [n.strip() for n in conf.get(f"group:{GROUP}", "programs").split(",")]
    return [n for n in names
            if conf.get(f"program:{n}", "autostart", fallback="true").lower() == "true"]


def bdt_json(layout: Layout, rel: Path, *words: str) -> tuple:
    try:
        done = run([rel / ".venv" / "bin" / "bdt", *words, "--json"], env=layout.env(rel),
                   capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None, f"bdt {' '.join(words)} timed out"
    try:
        return json.loads(done.stdout), ""
    except ValueError:
        return None, (done.stderr or done.stdout).strip()[-500:]


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def init_problem(layout: Layout, init: str, restarts_before: int) -> str:
    """Why the stack's process is gone (the unit failed or restarted; the launcher died)."""
    if init == "systemd":
        unit = unit_state()
        restarts = int(unit.get("NRestarts") or 0) - restarts_before
        if unit.get("ActiveState") == "failed" or restarts > 0:
            journal = output(["journalctl", "-u", UNIT, "-n", "12", "--no-pager", "-o", "cat"])
            return (f"systemd unit {UNIT} is {unit.get('ActiveState')} ({unit.get('Result')}), "
                    f"restarted {restarts} time(s) since the start:\n{journal.rstrip()}")
        return ""
    if layout.direct_pid():
        return ""
    return ("the directly started stack exited:\n"
            + tail(layout.var / "log" / "start-stack.log", 12))


def cmd_health(layout: Layout, args: argparse.Namespace) -> dict:
    """Every autostart program RUNNING (twice in a row, same pids), the bot's bar counter
    rising between those looks, and `bdt status` answering — or what failed: a program FATAL
    or restarting over and over, the unit failed or restarted, or the time is up."""
    rel = layout.release(layout.current_id() or "")
    want = autostart_programs(rel)
    deadline = time.monotonic() + args.timeout
    seen: dict = {}
    pids_seen: dict = {n: set() for n in want}
    previous = None
    why = "no answer from supervisord yet"
    while True:
        status, error = bdt_json(layout, rel, "status")
        if status and status.get("supervisord") == "running":
            seen = {p["program"]: p for p in status["programs"]}
            pids = {n: seen.get(n, {}).get("pid") for n in want}
            for name, pid in pids.items():
                if pid:
                    pids_seen[name].add(pid)
            bars = (seen.get("bot", {}).get("service") or {}).get("bars_published")
            down = [n for n in want if seen.get(n, {}).get("state") != "RUNNING"]
            fatal = [n for n in down if seen.get(n, {}).get("state") == "FATAL"]
            looping = [n for n in want if len(pids_seen[n]) >= 3]
            if fatal or looping:
                return health_failure(layout, want, seen, ", ".join(
                    [f"{n} FATAL (supervisord gave up starting it)" for n in fatal]
                    + [f"{n} keeps exiting (started {len(pids_seen[n])} times)"
                       for n in looping]), also=looping)
            if not down and previous and previous[0] == pids and bars is not None \
                    and previous[1] is not None and bars > previous[1]:
                screen = run([rel / ".venv" / "bin" / "bdt", "status"], env=layout.env(rel),
                             capture_output=True, timeout=60)
                if screen.returncode == 0:
                    return {"ok": True, "programs": {n: seen[n]["state"] for n in want},
                            "bars": [previous[1], bars], "status": screen.stdout}
                why = f"bdt status failed: {screen.stdout}{screen.stderr}"
            elif down:
                why = "not RUNNING: " + ", ".join(
                    f"{n} {seen.get(n, {}).get('state', 'missing')}" for n in down)
            elif bars is None:
                why = "the bot does not report its bars"
            else:
                why = f"the bot's bar counter did not rise (bars_published {bars})"
            previous = (pids, bars) if not down else None
        else:
            why = error or (status or {}).get("supervisord") or why
        problem = init_problem(layout, args.init, args.restarts_before)
        if problem:
            return health_failure(layout, want, seen, problem)
        if time.monotonic() > deadline:
            return health_failure(layout, want, seen, f"not healthy after {args.timeout:.0f} s: "
                                  f"{why}")
        time.sleep(3)


def health_failure(layout: Layout, want: list, seen: dict, why: str, also: tuple = ()) -> dict:
    """The failure, with the last lines of the log of every program that is not up."""
    details = []
    for name in want:
        entry = seen.get(name, {})
        if entry.get("state") != "RUNNING" or name in also:
            spawn = f" ({entry['spawn_error']})" if entry.get("spawn_error") else ""
            details.append(f"--- {name}: {entry.get('state', 'not started')}{spawn}\n"
                           f"{tail(layout.var / 'log' / f'{name}.log')}")
    return {"ok": False, "why": why, "details": "\n".join(details),
            "programs": {n: seen.get(n, {}).get("state") for n in want}}


# ---------------------------------------------------------------- bookkeeping and reports

def cmd_record(layout: Layout, args: argparse.Namespace) -> dict:
    entry = json.loads(base64.b64decode(args.entry))
    entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(layout.history, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return {"ok": True}


def cmd_prune(layout: Layout, args: argparse.Namespace) -> dict:
    """Keep the newest ``keep`` releases and ``current``; remove the rest, their backups, and
    the wheels no kept release was built from."""
    current = layout.current_id()
    found = releases(layout)
    keep = {r["id"] for r in found[-args.keep:]} | {current}
    removed = []
    for r in found:
        if r["id"] not in keep:
            shutil.rmtree(layout.release(r["id"]), ignore_errors=True)
            shutil.rmtree(layout.backups / r["id"], ignore_errors=True)
            removed.append(r["id"])
    kept = [r for r in found if r["id"] in keep]
    if all("wheels" in r for r in kept):        # else a kept release's wheels are unknown
        used = {w for r in kept for w in r["wheels"]}
        stale = [w for w in layout.wheelhouse.glob("*.whl") if w.name not in used]
        for wheel in stale:
            wheel.unlink()
        # and their unpacked copies in uv's cache (a kept venv keeps its own hard links). uv
        # cleans a package by name, every version: only names no kept release uses at all
        uv = layout.release(current) / ".venv" / "bin" / "uv" if current else None
        names = sorted({w.name.split("-")[0] for w in stale}
                       - {w.split("-")[0] for w in used})
        if names and uv is not None and uv.exists() and layout.uv_cache.is_dir():
            run([uv, "cache", "clean", "-q", "--cache-dir", layout.uv_cache, *names],
                capture_output=True)
    return {"removed": removed, "kept": sorted(keep - {None})}


def cmd_status(layout: Layout, args: argparse.Namespace) -> None:
    """For a person: the releases, the init and its state, then `bdt status`."""
    current = layout.current_id()
    if current is None:
        print(f"nothing deployed in {layout.base}")
        return
    for r in releases(layout):
        mark = "*" if r["id"] == current else " "
        print(f"{mark} {r['id']}  {r.get('state', '?'):10}  built "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(r.get('created', 0)))}"
              f"  commit {r.get('commit', '?')[:12]}{' (dirty tree)' if r.get('dirty') else ''}")
    sd = systemd_running()
    state = running(layout, sd)
    if state["init"] == "systemd":
        print(output(["systemctl", "status", UNIT, "--no-pager", "-n", "0"]).rstrip())
    elif state["init"] == "direct":
        print(f"supervisord started directly (no systemd), pid {state['pid']}")
    else:
        print("the stack is not running")
    sys.stdout.flush()
    rel = layout.release(current)
    if state["init"]:
        sys.exit(run([rel / ".venv" / "bin" / "bdt", "status"], env=layout.env(rel)).returncode)
    sys.exit(1)


def cmd_logs(layout: Layout, args: argparse.Namespace) -> None:
    """The journal's last lines (systemd) and every program's log; follows unless told not."""
    if systemd_running() and UNIT_PATH.exists():
        print(output(["journalctl", "-u", UNIT, "-n", str(args.lines), "--no-pager"]).rstrip(),
              flush=True)
    logs = sorted(str(p) for p in (layout.var / "log").glob("*.log"))
    if not logs:
        print(f"no logs in {layout.var / 'log'}")
        return
    os.execvp("tail", ["tail", "-n", str(args.lines), *(["-F"] if args.follow else []), *logs])


STEPS = {"facts": cmd_facts, "prepare": cmd_prepare, "build": cmd_build, "mark": cmd_mark,
         "config": cmd_config, "stop": cmd_stop, "migrate": cmd_migrate, "switch": cmd_switch,
         "start": cmd_start, "health": cmd_health, "record": cmd_record, "prune": cmd_prune,
         "status": cmd_status, "logs": cmd_logs}


def main(argv: list) -> None:
    parser = argparse.ArgumentParser(prog="agent")
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--base", required=True)
    parser.add_argument("--id", default="")
    parser.add_argument("--state", default="failed")
    parser.add_argument("--extras", default="")
    parser.add_argument("--pip-wheel", default="")
    parser.add_argument("--wheels", default="W10=")
    parser.add_argument("--meta", default="e30=")
    parser.add_argument("--text", default="")
    parser.add_argument("--entry", default="e30=")
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--init", default="systemd")
    parser.add_argument("--restarts-before", type=int, default=0)
    parser.add_argument("--lines", type=int, default=50)
    parser.add_argument("--follow", action="store_true")
    parser.add_argument("--disable", action="store_true")
    args = parser.parse_args(argv)
    result = STEPS[args.step](Layout(args.base), args)
    if result is not None:
        emit(result)


if __name__ == "__main__":
    main(sys.argv[1:])
