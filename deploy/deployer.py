"""``make deploy``, ``make rollback``, ``make status``, ``make logs`` with ``VPS=user@host``.

A deploy: this machine's tools (ssh, rsync, git, uv) → pre-flight → wheelhouse (built here,
cached) → ``releases/<id>/`` (rsync) → its venv built there from the wheelhouse
(``--no-index``) → the running stack stopped → state migrated → ``current`` switched (rename)
→ started → health check → kept, or rolled back to the release that was running, saying what
failed. The same release again changes nothing and restarts
nothing. docs/deploy.md tells the whole story.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from deploy import preflight, wheelhouse
from deploy.remote import RemoteError, Target, b64, note
from deploy.source import Source, SourceError, read_source
from deploy.unit import render
from shared.config import ConfigError, load_config
from shared.resources.allocation import load_allocation

# where a wheel leaves a library to the system (lightgbm: OpenMP), the package to install
DEBIAN = {"libgomp.so.1": "libgomp1", "libstdc++.so.6": "libstdc++6",
          "libgfortran.so.5": "libgfortran5", "libquadmath.so.0": "libquadmath0",
          "libatomic.so.1": "libatomic1"}


@dataclass
class Options:
    keep: int = 3                      # releases kept on the target (current always is)
    extras: str = ""                   # the project's extras installed in the venv ("live")
    config: Path | None = None         # the operator's config TOML → shared/config.toml
    health_timeout: float = 300.0
    allow_dirty: bool = False
    min_free_mib: int = 512


class Clock:
    """Progress lines with the seconds since the command started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        note(f"[{time.monotonic() - self.t0:6.1f}s] {text}")


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def up_to_date(facts: dict, rid: str, unit: str, config: bytes | None) -> bool:
    """The release is current and built, the stack runs, and neither its unit (under systemd)
    nor the operator's config would change."""
    ready = any(r["id"] == rid and r.get("state") == "ready" for r in facts["releases"])
    init = facts["running"]["init"]
    return (facts["current"] == rid and ready and init is not None
            and (init != "systemd" or facts["unit_sha"] == sha(unit))
            and (config is None or facts["config_sha"] == sha(config)))


def release_id(src: Source, extras: str) -> str:
    """The source's id (commit and lock), and the extras when there are any: another venv."""
    names = sorted(filter(None, (e.strip() for e in extras.split(","))))
    return src.id + "".join(f"+{n}" for n in names)


def local_preflight(command: str, say: Clock) -> bool:
    """The tools ``command`` needs on this machine (preflight.local): one line naming them,
    or one FAILED line naming what is missing and how to get it."""
    findings = preflight.local(command)
    error = preflight.local_error(command, findings)
    if error:
        say(f"FAILED: {error}")
        return False
    say("pre-flight (this machine): " + ", ".join(
        f"{f.topic} {f.text}" for f in findings if f.level == "ok"))
    for finding in findings:
        if finding.level == "warn":
            say(f"NOTE: {finding.topic} {finding.text}")
    return True


def deploy(target: Target, root: Path, opts: Options) -> int:
    say = Clock()
    if not local_preflight("deploy", say):
        return 2
    src = read_source(root, opts.allow_dirty)
    rid = release_id(src, opts.extras)
    say(f"release {rid} (commit {src.commit[:12]}"
        f"{', uncommitted changes included' if src.dirty_sha else ''}) → "
        f"{target.host}:{target.base}")
    config = opts.config.read_bytes() if opts.config else None
    if opts.config:
        try:
            load_config({"BDT_CONFIG": str(opts.config)})
        except ConfigError as exc:
            say(f"FAILED: {exc}")
            return 2
    facts = target.agent("facts")
    if up_to_date(facts, rid, render(target.base, src.root), config):
        say(f"release {rid} is already current and running ({facts['running']['init']}); "
            "nothing changed, nothing restarted")
        return 0
    table = load_allocation(src.root / "cgroups" / "allocation.toml")
    wh = wheelhouse.ensure(src.lock, src.lock_sha, log=say)
    wheels = wheelhouse.resolve(wh, src.root, opts.extras, python=facts["python"])
    findings = preflight.check(facts, table, python=wheelhouse.python_version(),
                               machine=platform.machine(), wheelhouse_bytes=wh.size(wheels),
                               min_free=opts.min_free_mib << 20)
    findings.append(preflight.glibc_finding(facts, wh.glibc_needed(wheels)))
    say("pre-flight:\n" + "\n".join(map(str, findings)))
    if any(f.level == "fail" for f in findings):
        say("FAILED: pre-flight; nothing on the target was changed")
        return 2
    if target.agent("prepare", "--id", rid)["ready"]:
        say(f"releases/{rid} is already built on the target (an earlier deploy)")
    elif not build(target, src, rid, wh, wheels, opts, say):
        return 1
    if config is not None and target.agent("config", "--text", b64(config))["changed"]:
        say(f"configuration {opts.config} installed as shared/config.toml")
    previous = facts["current"] if facts["current"] != rid else None
    return activate(target, rid, previous, opts, say, action="deploy")


def build(target: Target, src: Source, rid: str, wh: wheelhouse.Wheelhouse, wheels: list[str],
          opts: Options, say: Clock) -> bool:
    """The release's wheels and code to the target, then its venv built there."""
    target.rsync(f"{wh.path}/", "shared/wheelhouse/", files=tuple(wheels))
    say(f"{len(wheels)} wheels ({wh.size(wheels) >> 20} MiB) of the {len(wh.wheels)} in the "
        "wheelhouse in shared/wheelhouse (rsync sends only what the target lacks)")
    target.rsync(f"{src.root}/", f"releases/{rid}/", files=src.files)
    say(f"code in releases/{rid} ({len(src.files)} files)")
    meta = {"id": rid, "commit": src.commit, "lock_sha256": src.lock_sha,
            "dirty": bool(src.dirty_sha)}
    result = target.agent("build", "--id", rid, "--extras", opts.extras,
                          "--pip-wheel", wh.pip_wheel, "--wheels", b64(json.dumps(wheels)),
                          "--meta", b64(meta))
    if result["ok"]:
        say(f"venv built in releases/{rid}/.venv from the wheelhouse by uv "
            f"(--no-index --no-deps) in {result['seconds']:.0f} s")
        return True
    if "libraries" in result:
        say("FAILED: the release's native code needs libraries the target lacks (install "
            "them and deploy again; the venv is kept):\n" + "\n".join(
                f"  {name}, for {', '.join(users[:3])}"
                + (f" (Debian: apt-get install {DEBIAN[name]})" if name in DEBIAN else "")
                for name, users in sorted(result["libraries"].items())))
    elif result.get("check"):
        say("FAILED: the dependency check in the target's venv (an environment marker asks "
            "for more on the target's Python than the lock covers: `make lock` re-resolves "
            f"it for every CPython 3.11 on Linux):\n{result['error']}")
    else:
        say(f"FAILED: building the venv on the target:\n{result['error']}")
    return False


def activate(target: Target, rid: str, previous: str | None, opts: Options, say: Clock,
             action: str) -> int:
    """Stop what runs, migrate, switch ``current`` to ``rid``, start, check; on failure go
    back to ``previous`` (when there is one) and start it again."""
    stopped = target.agent("stop")["stopped"]
    say("stopped " + (", ".join(stopped) if stopped else "nothing (no stack was running)")
        + "; the bot's position and open orders stay in shared/var for the next start to "
        "reconcile")
    migrated = target.agent("migrate", "--id", rid)
    if not migrated["ok"]:
        say(f"FAILED: state migration with releases/{rid}: {migrated['error']}")
        target.agent("mark", "--id", rid, "--state", "failed")
        if previous:
            start_and_check(target, opts, say)
        record(target, action, rid, previous, "failed", "state migration")
        return 1
    switched = target.agent("switch", "--id", rid)
    say(f"current → releases/{rid} (was {switched['previous'] or 'nothing'})")
    health = start_and_check(target, opts, say)
    if health["ok"]:
        pruned = target.agent("prune", "--keep", str(opts.keep))
        if pruned["removed"]:
            say(f"removed old releases: {', '.join(pruned['removed'])}")
        record(target, action, rid, previous, "ok", "")
        say(f"{action} of {rid}: OK")
        return 0
    target.agent("mark", "--id", rid, "--state", "failed")
    if not previous:
        target.agent("stop", "--disable")
        record(target, action, rid, previous, "failed", health["why"])
        say(f"FAILED: {rid} is not healthy and there is no earlier release to return to: "
            "the stack is stopped")
        return 1
    say(f"rolling back to {previous}")
    target.agent("stop")
    target.agent("switch", "--id", previous)
    back = start_and_check(target, opts, say)
    outcome = "rolled back" if back["ok"] else "rolled back, previous release unhealthy too"
    record(target, action, rid, previous, outcome, health["why"])
    say(f"FAILED: {action} of {rid}: {health['why']}; "
        + (f"{previous} runs again" if back["ok"] else f"{previous} is not healthy either"))
    return 1 if back["ok"] else 3


def start_and_check(target: Target, opts: Options, say: Clock) -> dict:
    started = target.agent("start")
    if started.get("note"):
        say(f"NOTE: {started['note']}")
    say(f"started ({started['init']}"
        f"{', unit file updated' if started.get('unit_changed') else ''}); health check "
        f"(≤ {opts.health_timeout:.0f} s): every program RUNNING, bars arriving, bdt status")
    health = target.agent("health", "--timeout", str(opts.health_timeout),
                          "--init", started["init"],
                          "--restarts-before", str(started.get("restarts_before", 0)),
                          timeout=opts.health_timeout + 300)
    if health["ok"]:
        say(f"healthy: {', '.join(f'{n} {s}' for n, s in health['programs'].items())}; bot "
            f"bars {health['bars'][0]} → {health['bars'][1]}\n{health['status'].rstrip()}")
    else:
        say(f"health check FAILED: {health['why']}"
            + (f"\n{health['details']}" if health["details"] else ""))
    return health


def record(target: Target, action: str, rid: str, previous: str | None, outcome: str,
           why: str) -> None:
    target.agent("record", "--entry", b64({"action": action, "id": rid, "from": previous,
                                           "outcome": outcome, "why": why}))


def rollback(target: Target, opts: Options) -> int:
    """Back to the newest healthy release built before the current one."""
    say = Clock()
    if not local_preflight("rollback", say):
        return 2
    facts = target.agent("facts")
    current = facts["current"]
    if current is None:
        say(f"nothing deployed on {target.host}:{target.base}")
        return 1
    built = {r["id"]: r for r in facts["releases"]}
    since = built.get(current, {}).get("created", float("inf"))
    earlier = [r for r in facts["releases"]
               if r["id"] != current and r.get("state") == "ready" and r["created"] < since]
    if not earlier:
        say(f"no earlier healthy release than {current} to roll back to "
            f"(releases: {', '.join(built) or 'none'})")
        return 1
    to = earlier[-1]["id"]
    say(f"rollback on {target.host}: {current} → {to}")
    return activate(target, to, current, opts, say, action="rollback")


def run_checked(fn, *args) -> int:
    try:
        return fn(*args)
    except (RemoteError, SourceError, wheelhouse.WheelhouseError) as exc:
        note(f"FAILED: {exc}")
        return 1
