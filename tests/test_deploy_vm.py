"""`make deploy` proven on a VPS stand-in (issue 19): a Debian bookworm VM under qemu (systemd
252, cgroup v2, 2 GB, 2 vCPUs, software emulation) from ../shared/vm/vps-vm, started once for
this module on a loopback ssh port of its own and stopped by PID at the end.

What is deployed is a snapshot of this checkout (its tracked and untracked-not-ignored files)
committed into a throwaway git repository, so the release id is a real commit's; later
releases are commits on top of it. In order (each test goes on from the state the one before
left): a first deploy refused for a missing system library, then deployed; the stack under
systemd in its delegated cgroup v2 slices with the table's limits; `make status|logs VPS=…`;
a batch job OOM-killed at its cap while the bot trades on; paper trades; the same commit again
restarts nothing; supervisord killed -9 and restarted by systemd with no orphan; a broken
release rolled back; a target without systemd, where a second release is deployed and then
rolled back by hand with `make rollback`. Every stack start costs 1–2 minutes under
emulation, so the scenarios share them. Those tests are marked slow and skip, saying why, only
where the VM cannot be built or run; the first tests of the module (release id, pre-flight,
unit, the ELF reader) need no VM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shared.resources.allocation import load_allocation
from shared.resources.cgroup import resolve_cpus
from shared.resources.supervisor import read_conf
from tests.helpers import REPO, wait_until

pytestmark = pytest.mark.timeout(1500)         # a first deploy under emulation: ~5 min

VPS_VM = REPO.parent / "shared" / "vm" / "vps-vm"
VM_DIR = Path(os.environ.get("VPS_VM_DIR", "/var/tmp/bdt-vps-vm-deploy"))
BASE = "/opt/bitdaytrader"
AUTOSTART = tuple(n for n, p in read_conf().items() if p.get("autostart") == "true")
UNIT_CG = "/system.slice/bitdaytrader.service"
SSH_OPTS = ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR")
BDT = f"BDT_VAR={BASE}/shared/var BDT_CONFIG={BASE}/shared/config.toml {BASE}/current/.venv/bin/bdt"
# A lighter first run under emulation (several times slower than a VPS): fewer bars to train
# on, one bar a second, the SMA strategy (trades come without waiting for a model's
# conviction), the monitor sampling less and its CPU modes out of reach (CPU figures mean
# little under emulation; a "critical" mode would stop batch jobs).
CONFIG = """\
[market]
replay_speed = 60.0
[model]
train_bars = 1000
min_train_bars = 500
[strategy]
name = "sma_cross"
[monitor]
sample_interval_s = 15.0
low_cpu_pct = 300.0
alert_cpu_pct = 400.0
critical_cpu_pct = 500.0
"""


# ---------------------------------------------------------------- without the VM


def git_repo(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).write_text(text)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "one"]):
        subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t",
                        *args], check=True, capture_output=True)
    return path


def test_the_release_id_is_the_commit_and_the_lock_and_a_dirty_tree_is_refused(tmp_path):
    from deploy.deployer import release_id
    from deploy.source import SourceError, read_source

    repo = git_repo(tmp_path, {"requirements.lock": "a==1\n", "x.py": "x = 1\n"})
    src = read_source(repo)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lock = hashlib.sha256(b"a==1\n").hexdigest()
    assert src.id == f"{commit[:12]}-{lock[:8]}" == read_source(repo).id
    assert src.files == ("requirements.lock", "x.py")
    assert release_id(src, "live") == f"{src.id}+live"
    (repo / "x.py").write_text("x = 2\n")
    with pytest.raises(SourceError, match="uncommitted changes"):
        read_source(repo)
    dirty = read_source(repo, allow_dirty=True).id
    assert dirty.startswith(f"{commit[:12]}-dirty") and dirty.endswith(lock[:8])
    (repo / "x.py").write_text("x = 3\n")
    assert read_source(repo, allow_dirty=True).id != dirty


FACTS = {"python": "3.11.2", "python_exe": "/usr/bin/python3", "venv": True,
         "machine": "x86_64", "libc": "glibc 2.36", "uid": 0, "sudo": None,
         "rsync": "/usr/bin/rsync", "cpus": 2,
         "systemd": {"running": True, "version": 252},
         "cgroup": {"mode": "v2", "own": "/user.slice", "writable": True,
                    "controllers": ["cpuset", "cpu", "memory"]},
         "memory": {"total": 8 << 30, "available": 6 << 30}, "disk_free": 20 << 30,
         "disk_path": "/opt", "running": {"init": None, "memory": 0}}


def findings(**changes) -> dict[str, list[str]]:
    from deploy import preflight

    table = load_allocation(REPO / "cgroups" / "allocation.toml")
    found = preflight.check({**FACTS, **changes}, table, python="3.11", machine="x86_64",
                            wheelhouse_bytes=300 << 20)
    return {level: [f.topic for f in found if f.level == level]
            for level in ("ok", "warn", "fail")}


def test_the_preflight_fails_what_cannot_work_and_warns_about_what_is_weaker():
    assert findings()["fail"] == [] and findings()["warn"] == []
    assert findings(python="3.9.2")["fail"] == ["python"]
    assert findings(machine="aarch64")["fail"] == ["python"]
    assert findings(rsync=None)["fail"] == ["access"]
    assert findings(uid=1000, sudo=False)["fail"] == ["access"]
    assert findings(memory={"total": 2 << 30, "available": 300 << 20})["fail"] == ["memory"]
    # a running stack's memory is given back by the deploy
    assert findings(memory={"total": 2 << 30, "available": 300 << 20},
                    running={"init": "systemd", "memory": 400 << 20})["fail"] == []
    assert findings(memory={"total": 2 << 30, "available": 1800 << 20})["warn"] == [
        "memory", "memory"]                  # smaller than the parent cap and the slices
    assert findings(disk_free=500 << 20)["fail"] == ["disk"]
    no_systemd = findings(systemd={"running": False, "version": None})
    assert no_systemd["warn"] == ["systemd", "cgroups"] and no_systemd["fail"] == []
    assert findings(cgroup={**FACTS["cgroup"], "controllers": ["cpu"]})["warn"] == ["cgroups"]


def test_glibc_is_checked_against_the_manylinux_wheels():
    from deploy.preflight import glibc_finding
    from deploy.wheelhouse import Wheelhouse

    wheels = ["a-1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
              "b-1-cp311-cp311-manylinux2014_x86_64.whl", "c-1-py3-none-any.whl"]
    needed = Wheelhouse(Path("/nowhere")).glibc_needed(wheels)
    assert needed == (2, 27)
    assert glibc_finding(FACTS, needed).level == "ok"
    assert glibc_finding({**FACTS, "libc": "glibc 2.26"}, needed).level == "fail"
    assert glibc_finding({**FACTS, "libc": " "}, (2, 17)).level == "fail"     # musl, say
    assert glibc_finding({**FACTS, "libc": " "}, None).level == "ok"


def test_pinned_versions_map_to_the_wheelhouses_files_and_a_missing_one_is_named(tmp_path):
    from deploy.wheelhouse import Wheelhouse, WheelhouseError, lock_pins, wheel_files
    for name in ("async_timeout-5.0.1-py3-none-any.whl", "Foo_Bar-1.0-py3-none-any.whl"):
        (tmp_path / name).touch()
    wh = Wheelhouse(tmp_path)
    pinned = lock_pins("# header\nasync-timeout==5.0.1 ; python_full_version < '3.11.3' \\\n"
                       "    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via redis\n"
                       "foo-bar==1.0 \\\n    --hash=sha256:cc\n")
    assert pinned == ("async-timeout==5.0.1 ; python_full_version < '3.11.3'\n"
                      "foo-bar==1.0\n")
    assert wheel_files(wh, pinned) == ["async_timeout-5.0.1-py3-none-any.whl",
                                       "Foo_Bar-1.0-py3-none-any.whl"]
    with pytest.raises(WheelhouseError, match="for: foo-bar==2.0"):
        wheel_files(wh, "foo-bar==2.0\n")


def test_a_lock_that_pins_a_package_twice_is_refused_for_the_wheelhouse():
    from deploy.wheelhouse import WheelhouseError, every_pin

    one = "numpy==2.4.6 ; python_full_version < '3.12' \\\n    --hash=sha256:aa\n"
    assert every_pin(one) == "numpy==2.4.6 \\\n    --hash=sha256:aa\n"
    with pytest.raises(WheelhouseError, match="pins numpy more than once"):
        every_pin(one + "numpy==2.5.5 ; python_full_version >= '3.12' \\\n    --hash=sha256:bb\n")


def test_pruning_removes_stale_wheels_and_cleans_uv_only_of_packages_no_release_uses(tmp_path):
    """uv cleans its cache by package name, every version: a package a kept release still
    uses (at another version) is not cleaned, or the next release could not hard-link it."""
    import argparse

    from deploy import agent

    layout = agent.Layout(str(tmp_path))
    layout.wheelhouse.mkdir(parents=True)
    layout.uv_cache.mkdir()
    wheels = {"old": ["scipy-1.16.0-cp311-x.whl", "zict-3.0.0-py3-none-any.whl"],
              "new": ["scipy-1.17.1-cp311-x.whl"]}
    for n, (rid, names) in enumerate(wheels.items()):
        rel = layout.release(rid)
        (rel / ".venv" / "bin").mkdir(parents=True)
        (rel / "release.json").write_text(json.dumps({"id": rid, "created": n,
                                                      "wheels": names}))
        for name in names:
            (layout.wheelhouse / name).touch()
    calls = tmp_path / "uv-calls"
    uv = layout.release("new") / ".venv" / "bin" / "uv"      # records how it was called
    uv.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    uv.chmod(0o755)
    layout.current.symlink_to(layout.release("new"))
    assert agent.cmd_prune(layout, argparse.Namespace(keep=1)) == {"removed": ["old"],
                                                                   "kept": ["new"]}
    assert sorted(p.name for p in layout.wheelhouse.iterdir()) == ["scipy-1.17.1-cp311-x.whl"]
    assert calls.read_text().split() == ["cache", "clean", "-q", "--cache-dir",
                                         str(layout.uv_cache), "zict"]


def test_the_unit_carries_the_tables_parent_limits():
    from deploy.unit import render

    table = load_allocation(REPO / "cgroups" / "allocation.toml")
    unit = render("/srv/bdt").splitlines()
    for line in ("ExecStart=/srv/bdt/current/deploy/start-stack /srv/bdt", "Delegate=yes",
                 f"MemoryMax={table.parent.memory_max}",
                 f"CPUQuota={round(table.parent.cpu_quota * 100)}%", "Restart=on-failure",
                 "KillMode=mixed"):
        assert line in unit


def test_the_agent_reads_what_a_shared_object_needs():
    import lightgbm

    from deploy.agent import elf_needed

    [lib] = Path(lightgbm.__file__).parent.rglob("lib_lightgbm.so")
    assert "libgomp.so.1" in elf_needed(lib)             # what the VM's first deploy lacks
    assert elf_needed(REPO / "Makefile") == []


# ---------------------------------------------------------------- on the VM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vps_vm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(VPS_VM), *args], env={**os.environ, "VPS_VM_DIR": str(VM_DIR)},
                          capture_output=True, text=True, timeout=timeout)


def report(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Show a deploy's output in the test's log (-rA, or on failure)."""
    print(f"$ {' '.join(done.args)}\n{done.stdout}{done.stderr}")
    return done


class VM:
    """The running VM: ssh into it, deploy to it (python -m deploy, or make)."""

    def __init__(self, port: int, config: Path) -> None:
        self.port, self.config = port, config
        self.key = str(VM_DIR / "ssh" / "id_ed25519")

    def ssh(self, command: str, check: bool = True, timeout: float = 180) -> str:
        opts = [w for o in SSH_OPTS for w in ("-o", o)]
        done = subprocess.run(["ssh", "-i", self.key, "-p", str(self.port), "-o", "BatchMode=yes",
                               *opts, "root@127.0.0.1", command],
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"ssh {command!r}: {done.returncode}\n{done.stdout}"
                                 f"{done.stderr}")
        return done.stdout

    def bdt(self, *words: str) -> object:
        return json.loads(self.ssh(f"{BDT} {' '.join(words)} --json"))

    def deploy(self, source: Path, *extra: str, timeout: float = 1200):
        argv = [sys.executable, "-m", "deploy", "deploy", "--vps", "root@127.0.0.1",
                "--port", str(self.port), "--identity", self.key, "--source", str(source),
                "--config", str(self.config), "--health-timeout", "600", *extra]
        for option in SSH_OPTS:
            argv += ["--ssh-option", option]
        return report(subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                                     timeout=timeout))

    def make(self, target: str, *assignments: str, timeout: float = 1200):
        """`make TARGET VPS=…` from this checkout (its venv taken as installed: -o)."""
        argv = ["make", "--no-print-directory", "-C", str(REPO), "-o", ".venv/.installed",
                target, "VPS=root@127.0.0.1", f"PORT={self.port}", f"SSH_KEY={self.key}",
                f"SSH_OPTS={' '.join(SSH_OPTS)}", *assignments]
        return report(subprocess.run(argv, capture_output=True, text=True, timeout=timeout))

    def current(self) -> str:
        return self.ssh(f"readlink {BASE}/current").strip().split("/")[-1]

    def program_pids(self) -> dict[str, int]:
        """RUNNING programs and their pids ({} while supervisord is not up)."""
        out = self.ssh(f"{BDT} status --json", check=False)
        status = json.loads(out) if out.strip() else {"programs": []}
        return {p["program"]: p["pid"] for p in status["programs"] if p["state"] == "RUNNING"}

    def bars(self) -> int:
        """The running bot's bar counter, -1 while it does not answer."""
        out = self.ssh(f"{BDT} bot status --json", check=False)
        return json.loads(out)["bars_published"] if out.strip() else -1

    def unit(self, *props: str) -> dict[str, str]:
        text = self.ssh(f"systemctl show bitdaytrader -p {','.join(props)}")
        return dict(line.split("=", 1) for line in text.splitlines())

    def cgroups(self, pids: dict[str, int]) -> dict:
        """In one ssh call: each pid's cgroup (by name), and the limit files of the unit's
        cgroup ("/") and of every cgroup below it (by path relative to it)."""
        script = (
            "import json, pathlib, sys\n"
            f"root = pathlib.Path('/sys/fs/cgroup{UNIT_CG}')\n"
            "out = {n: open(f'/proc/{p}/cgroup').read().strip()[3:]\n"
            "       for n, p in json.loads(sys.argv[1]).items()}\n"
            "for d in [root, *root.rglob('*')]:\n"
            "    if d.is_dir():\n"
            "        out[str(d.relative_to(root)) if d != root else '/'] = {\n"
            "            f: (d / f).read_text().strip() for f in ('memory.max', 'memory.high',\n"
            "            'cpu.max', 'cpu.weight', 'cpu.idle', 'cpuset.cpus') if (d / f).exists()}\n"
            "print(json.dumps(out))\n")
        return json.loads(self.ssh(f"python3 -c {shlex.quote(script)} "
                                   f"{shlex.quote(json.dumps(pids))}"))


class Snapshot:
    """This checkout's files committed into a git repository of their own."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bdt-deploy-src-"))
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached",
                                 "--others", "--exclude-standard"],
                                capture_output=True, check=True).stdout.decode()
        for rel in filter(None, listed.split("\0")):
            if (REPO / rel).is_file():
                (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, self.root / rel)
        self.git("init", "-q")
        self.commit("snapshot of the working tree")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.root), "-c", "user.name=test",
                               "-c", "user.email=test@localhost", *args],
                              capture_output=True, text=True, check=True).stdout

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def release_id(self) -> str:
        from deploy.source import read_source
        return read_source(self.root).id


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    if not VPS_VM.exists():
        pytest.skip(f"no VM recipe at {VPS_VM}")
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed here (the deploy sends releases with it; .ci/run "
                    "installs it)")
    try:
        built = vps_vm("build", timeout=1200)
    except subprocess.TimeoutExpired:
        pytest.skip("vps-vm build did not finish in 20 min")
    if built.returncode != 0:
        pytest.skip(f"the VM image cannot be built here (apt-get, debootstrap from the Debian "
                    f"mirror): {(built.stdout + built.stderr).strip()[-400:]}")
    config = tmp_path_factory.mktemp("deploy") / "vm.toml"
    config.write_text(CONFIG)
    port = free_port()
    started = vps_vm("start", str(port), timeout=400)
    try:
        if started.returncode != 0:
            pytest.skip(f"qemu cannot run the VM here: {started.stdout.strip()[-400:]}")
        yield VM(port, config)
    finally:
        vps_vm("stop", timeout=120)


@pytest.fixture(scope="module")
def snapshot():
    snap = Snapshot()
    yield snap
    shutil.rmtree(snap.root, ignore_errors=True)


@pytest.fixture(scope="module")
def first(vm, snapshot):
    """The first release's id, and what later tests learn (the tests go on from each other)."""
    return {"id": snapshot.release_id()}


def libgomp_deb() -> Path:
    """Debian's libgomp1 for the VM (which has no network to Debian), downloaded here once."""
    folder = VM_DIR / "debs"
    folder.mkdir(exist_ok=True)
    found = sorted(folder.glob("libgomp1_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", "-qq", "libgomp1"], cwd=folder, check=True,
                       capture_output=True)
        found = sorted(folder.glob("libgomp1_*.deb"))
    return found[-1]


@pytest.mark.slow
def test_a_missing_system_library_stops_the_deploy_before_anything_runs(vm, snapshot, first):
    done = vm.deploy(snapshot.root)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "ok    cgroups  cgroup v2 with memory cpu cpuset" in out
    assert "libgomp.so.1, for lib/python3.11/site-packages/lightgbm" in out
    assert "apt-get install libgomp1" in out
    assert vm.ssh(f"test -e {BASE}/current && echo yes || echo no").strip() == "no"
    assert vm.ssh("systemctl is-active bitdaytrader", check=False).strip() == "inactive"
    # the operator installs it (here: the .deb brought over, the VM has no mirror)
    deb = libgomp_deb()
    subprocess.run(["scp", "-q", "-i", vm.key, "-P", str(vm.port),
                    *[w for o in SSH_OPTS for w in ("-o", o)], str(deb),
                    f"root@127.0.0.1:/tmp/{deb.name}"], check=True)
    vm.ssh(f"dpkg -i /tmp/{deb.name} >/dev/null")


@pytest.mark.slow
def test_first_deploy_runs_the_stack_under_systemd(vm, snapshot, first):
    done = vm.make("deploy", f"SOURCE={snapshot.root}", f"CONFIG={vm.config}",
                   "HEALTH_TIMEOUT=900")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"deploy of {first['id']}: OK" in out
    assert "venv built" in out and "from the wheelhouse by uv" in out
    assert vm.current() == first["id"]
    assert vm.ssh("systemctl is-active bitdaytrader").strip() == "active"
    assert vm.ssh("systemctl is-enabled bitdaytrader").strip() == "enabled"
    assert vm.unit("Delegate", "MemoryMax", "CPUQuotaPerSecUSec", "KillMode", "Restart") == {
        "Delegate": "yes", "MemoryMax": str(4 << 30), "CPUQuotaPerSecUSec": "1s",
        "KillMode": "mixed", "Restart": "on-failure"}
    # state lives in the shared directory, never in the release
    assert vm.ssh(f"readlink {BASE}/current/var").strip() == f"{BASE}/shared/var"
    assert {"trading.db", "jobs.db", "market"} <= set(vm.ssh(f"ls {BASE}/shared/var/data")
                                                      .split())


@pytest.mark.slow
def test_the_wheels_are_chosen_for_the_targets_own_python(vm, first):
    """The lock covers every CPython 3.11: Debian 12's 3.11.2 needs async-timeout for redis
    (``python_full_version < '3.11.3'``) where this machine's newer 3.11 does not."""
    from deploy import wheelhouse
    target = vm.ssh("python3 -c 'import platform; print(platform.python_version())'").strip()
    lock = REPO / "requirements.lock"
    wh = wheelhouse.ensure(lock, hashlib.sha256(lock.read_bytes()).hexdigest())  # the deploy's
    chosen = {py: wheelhouse.resolve(wh, REPO, "dev", python=py) for py in (target, "3.11.99")}
    assert target == "3.11.2"
    assert any(n.startswith("async_timeout-") for n in chosen[target])
    assert not any(n.startswith("async_timeout-") for n in chosen["3.11.99"])
    assert vm.ssh(f"{BASE}/current/.venv/bin/uv --version").startswith("uv ")
    # the venv's files are hard links into shared/uv-cache: no second copy on the VPS's disk
    site = f"{BASE}/current/.venv/lib/python3.11/site-packages"
    assert int(vm.ssh(f"stat -c %h {site}/numpy/__init__.py")) >= 2
    assert vm.ssh(f"find {BASE}/shared/uv-cache -samefile {site}/numpy/__init__.py").strip()


@pytest.mark.slow
def test_every_program_is_in_its_slice_with_the_tables_limits(vm, snapshot, first):
    table = load_allocation(snapshot.root / "cgroups" / "allocation.toml")
    pids = vm.program_pids()
    assert set(AUTOSTART) <= set(pids)
    pids["supervisord"] = int(vm.unit("MainPID")["MainPID"])
    kernel = vm.cgroups(pids)
    assert kernel["supervisord"] == f"{UNIT_CG}/bitdaytrader-manager"
    assert kernel["/"]["memory.max"] == str(4 << 30)             # the unit's MemoryMax
    parent = kernel["bitdaytrader"]
    assert (parent["memory.max"], parent["memory.high"], parent["cpu.max"]) == (
        str(table.parent.memory_max), str(table.parent.memory_high), "100000 100000")
    cpus = {0, 1}                                                 # the VM's two vCPUs
    for name in AUTOSTART:
        sl = table.slice_for_program(name)
        assert kernel[name] == f"{UNIT_CG}/bitdaytrader/{sl.name}", name
        quota = "max" if sl.cpu_quota is None else str(int(sl.cpu_quota * 100_000))
        found = kernel[f"bitdaytrader/{sl.name}"]
        assert (found["memory.max"], found["cpu.max"], found["cpu.weight"],
                found.get("cpuset.cpus", "not delegated")) == (
            str(sl.memory_max), f"{quota} 100000", str(sl.cpu_weight),
            resolve_cpus(sl.cpuset, cpus) if sl.cpuset else ""), name
    batch = table.slices["batch"]        # made by the first run's training: idle, its own quota
    found = kernel["bitdaytrader/batch"]
    assert (found["memory.max"], found["cpu.max"], found["cpu.idle"],
            found.get("cpuset.cpus")) == (
        str(batch.memory_max), f"{int(batch.cpu_quota * 100_000)} 100000", "1",
        resolve_cpus(batch.cpuset, cpus))


@pytest.mark.slow
def test_make_status_and_logs_run_on_the_target(vm, first):
    done = vm.make("status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"* {first['id']}  ready" in done.stdout
    assert "bitdaytrader.service" in done.stdout and "active (running)" in done.stdout
    assert "bot" in done.stdout and "RUNNING" in done.stdout        # bdt status's screen
    done = vm.make("logs", "FOLLOW=0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "supervisord started with pid" in done.stdout                # the journal
    assert f"==> {BASE}/shared/var/log/bot.log <==" in done.stdout


@pytest.mark.slow
def test_a_job_over_the_batch_cap_is_oom_killed_and_the_bot_goes_on(vm, snapshot, first):
    """The v1 OOM proof on v2: the scheduler starts the backtest (through supervisord, into
    the batch slice) under an 80 MiB cap; the kernel kills it (memory.events), `bdt status`
    shows the kill, and the bot's bars keep coming."""
    table = (snapshot.root / "cgroups" / "allocation.toml").read_text()
    tight = table.replace('memory_max = "1.5G"', 'memory_max = "80M"')
    assert tight != table
    config = f"{BASE}/shared/config.toml"
    original = vm.ssh(f"cat {config}")
    vm.ssh(f"cat > {BASE}/shared/tight.toml <<'EOF'\n{tight}EOF\n"
           f"printf '[cgroups]\\nallocation = \"{BASE}/shared/tight.toml\"\\n' >> {config}")
    batch = f"/sys/fs/cgroup{UNIT_CG}/bitdaytrader/batch"
    try:
        kills_before = int(vm.ssh(f"grep oom_kill {batch}/memory.events").split()[1])
        bars = vm.bars()
        vm.ssh(f"{BDT} job run backtest")
        wait_until(lambda: any(r["state"] not in ("queued", "running")
                               for r in vm.bdt("job", "history")), timeout=240, interval=5,
                   what="the backtest's outcome")
        [run] = vm.bdt("job", "history")
        assert run["state"] == "oom_killed", run
        assert int(vm.ssh(f"grep oom_kill {batch}/memory.events").split()[1]) > kills_before
        assert vm.ssh(f"cat {batch}/memory.max").strip() == str(80 << 20)
        wait_until(lambda: vm.bars() > bars + 5, timeout=120, interval=5,
                   what="the bot's bars going on")
        shown = {p["program"]: p for p in vm.bdt("status")["programs"]}
        assert shown["backtest"]["oom_kills"] >= 1
        assert shown["bot"]["state"] == "RUNNING"
    finally:
        vm.ssh(f"cat > {config} <<'EOF'\n{original}EOF\nrm -f {BASE}/shared/tight.toml")


@pytest.mark.slow
def test_paper_trades_are_recorded(vm, first):
    wait_until(lambda: len(vm.bdt("trades")) >= 1, timeout=300, interval=10,
               what="a paper fill")
    assert vm.bdt("bot", "status")["mode"] == "paper"


@pytest.mark.slow
def test_the_same_commit_again_changes_nothing_and_restarts_nothing(vm, snapshot, first):
    before = vm.program_pids(), vm.unit("MainPID", "ActiveEnterTimestamp")
    link = vm.ssh(f"stat -c %Y {BASE}/current")
    done = vm.make("deploy", f"SOURCE={snapshot.root}", f"CONFIG={vm.config}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "already current and running (systemd); nothing changed, nothing restarted" in \
        done.stderr
    # nothing built or stopped ("venv" alone would match the local pre-flight's uv path)
    assert "venv built" not in done.stderr and "stopped" not in done.stderr
    assert (vm.program_pids(), vm.unit("MainPID", "ActiveEnterTimestamp")) == before
    assert vm.ssh(f"stat -c %Y {BASE}/current") == link


@pytest.mark.slow
def test_supervisord_killed_9_is_restarted_by_systemd_and_leaves_no_orphan(vm, first):
    main_pid = int(vm.unit("MainPID")["MainPID"])
    restarts = int(vm.unit("NRestarts")["NRestarts"])
    old = vm.program_pids()
    starts = {pid: vm.ssh(f"cut -d' ' -f22 /proc/{pid}/stat").strip() for pid in old.values()}
    vm.ssh(f"kill -9 {main_pid}")
    wait_until(lambda: vm.unit("NRestarts")["NRestarts"] == str(restarts + 1)
               and vm.unit("ActiveState")["ActiveState"] == "active", timeout=120,
               interval=3, what="systemd restarting the unit")
    wait_until(lambda: set(AUTOSTART) <= set(vm.program_pids()), timeout=300, interval=5,
               what="every program RUNNING again")
    for pid, start in starts.items():     # gone (or the pid reused by a new process)
        now = vm.ssh(f"cut -d' ' -f22 /proc/{pid}/stat 2>/dev/null || true").strip()
        assert now != start, f"pid {pid} of the killed supervisord survived"
    # every process in the unit's cgroup tree is the new supervisord or descends from it
    new_main = int(vm.unit("MainPID")["MainPID"])
    assert new_main != main_pid
    chains = vm.ssh(f"for pid in $(cat $(find /sys/fs/cgroup{UNIT_CG} -name cgroup.procs)); do "
                    f"p=$pid; while [ $p -gt 1 ] && [ $p != {new_main} ]; do "
                    f"p=$(cut -d' ' -f4 /proc/$p/stat 2>/dev/null || echo 1); done; "
                    f"echo $pid $p; done")
    for line in filter(None, chains.split("\n")):
        pid, top = line.split()
        assert top == str(new_main), f"pid {pid} in the unit's cgroup is no child of " \
            f"supervisord {new_main}"
    wait_until(lambda: vm.bars() > 0, timeout=180, interval=5,
               what="the new bot publishing bars")


@pytest.mark.slow
def test_a_broken_release_is_rolled_back_and_the_previous_one_runs_again(vm, snapshot, first):
    bot_main = snapshot.root / "services" / "bot" / "__main__.py"
    original = bot_main.read_text()
    bot_main.write_text('raise SystemExit("a broken release (test_deploy_vm)")\n' + original)
    snapshot.commit("a broken bot")
    broken = snapshot.release_id()
    try:
        done = vm.deploy(snapshot.root)
    finally:
        snapshot.git("reset", "-q", "--hard", "HEAD~1")      # back to the first release
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "health check FAILED: bot keeps exiting" in out
    assert "a broken release (test_deploy_vm)" in out            # the bot's log, quoted
    assert f"rolling back to {first['id']}" in out
    assert f"FAILED: deploy of {broken}" in out and f"{first['id']} runs again" in out
    assert vm.current() == first["id"]
    info = json.loads(vm.ssh(f"cat {BASE}/releases/{broken}/release.json"))
    assert info["state"] == "failed"
    assert set(AUTOSTART) <= set(vm.program_pids())
    bars = vm.bars()
    wait_until(lambda: vm.bars() > bars, timeout=60, interval=5, what="bars after rollback")
    first["broken"] = broken


@pytest.mark.slow
def test_a_target_without_systemd_deploys_with_a_clear_note(vm, snapshot, first):
    """/run/systemd/system hidden: what a machine without systemd looks like to the deploy
    (and to systemctl). A second release is deployed there, started directly."""
    with open(snapshot.root / "docs" / "deploy.md", "a") as f:
        f.write("\n<!-- a second release (test_deploy_vm) -->\n")
    snapshot.commit("a second release")
    second = snapshot.release_id()
    vm.ssh("systemctl disable --now bitdaytrader && mv /run/systemd/system /run/systemd/off")
    done = vm.deploy(snapshot.root)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "warn  systemd  no systemd on the target: supervisord is started directly" in out
    assert "NOTE: no systemd on this target: supervisord started directly" in out
    assert "started (direct)" in out and f"deploy of {second}: OK" in out
    assert "cgroup limits: enforced (v2)" in out      # bdt status: what the target allows
    assert vm.current() == second
    pid = vm.ssh(f"cat {BASE}/shared/var/run/supervisord.pid").strip()
    assert vm.ssh(f"cat {BASE}/shared/var/run/start-stack.pid").strip() == pid
    assert vm.ssh(f"ps -o ppid= -p {pid}").strip() == "1"       # setsid + nohup: detached
    first["second"] = second


@pytest.mark.slow
def test_make_rollback_by_hand(vm, first):
    """Back from the second release to the first (the broken one between them is skipped),
    here on the target without systemd."""
    done = vm.make("rollback")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"rollback on root@127.0.0.1: {first['second']} → {first['id']}" in out
    assert f"rollback of {first['id']}: OK" in out
    assert vm.current() == first["id"]
    pid = vm.ssh(f"cat {BASE}/shared/var/run/supervisord.pid").strip()
    assert f"{BASE}/releases/{first['id']}/supervisord.conf" in vm.ssh(
        f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    log = [json.loads(line) for line in vm.ssh(f"cat {BASE}/shared/deploy.log").splitlines()]
    assert [(e["action"], e["outcome"]) for e in log] == [
        ("deploy", "ok"), ("deploy", "rolled back"), ("deploy", "ok"), ("rollback", "ok")]
    assert sorted(vm.ssh(f"ls {BASE}/releases").split()) == sorted(
        [first["id"], first["broken"], first["second"]])          # KEEP=3: all kept
