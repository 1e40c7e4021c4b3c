"""Where every service listens: ``ipc://`` sockets in the 0700 run directory by default,
``tcp://`` only when configured, and then always CURVE-encrypted with keys read from files.
Also the socket options every bus socket shares (heartbeats, CURVE)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.auth

from shared.config import Config, ConfigError
from shared.programs import PROGRAMS

log = logging.getLogger("bdt.bus")

# Every program has an endpoint, at its tcp port offset; both from the program table.
SERVICES = tuple(PROGRAMS)
# Programs with an endpoint reserved that do not answer the bus: the batch jobs (they run for
# a while and exit) and the dashboard (a Streamlit server). `bdt status` does not ask them.
NOT_SERVING = tuple(name for name, p in PROGRAMS.items() if not p.kind.serves)
# Streams and the services that publish them; topics are the stream names.
STREAMS: dict[str, tuple[str, ...]] = {
    "bars": ("bot",),
    "predictions": ("predictor",),
    "events": SERVICES,
}


def ensure_run_dir(cfg: Config) -> Path:
    """The private run directory: sockets there are reachable only by this user."""
    run = cfg.run_dir
    run.mkdir(parents=True, exist_ok=True)
    os.chmod(run, 0o700)
    return run


def _tcp_port(cfg: Config, name: str, pub: bool) -> int:
    return cfg.get("bus.tcp_base_port") + 2 * PROGRAMS[name].port + (1 if pub else 0)


def endpoint(cfg: Config, name: str, *, pub: bool = False) -> str:
    """Where service ``name`` listens for requests (or, with pub=True, publishes).
    Raises ConfigError for a name that is not in SERVICES."""
    if name not in SERVICES:
        raise ConfigError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    if cfg.get("bus.transport") == "tcp":
        return f"tcp://{cfg.get('bus.tcp_host')}:{_tcp_port(cfg, name, pub)}"
    return f"ipc://{cfg.run_dir / (name + ('.pub' if pub else '') + '.sock')}"


def ipc_path(ep: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint, None for tcp."""
    return Path(ep[len("ipc://"):]) if ep.startswith("ipc://") else None


def _curve_keys(cfg: Config, role: str) -> tuple[bytes, bytes]:
    keys_dir = cfg.get("bus.curve_keys_dir")
    if not keys_dir:
        raise ConfigError("bus.curve_keys_dir: required when bus.transport = 'tcp'")
    path = Path(keys_dir) / f"{role}.key_secret"
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"bus.curve_keys_dir: cannot read {path}: {exc}") from None
    if secret is None:
        raise ConfigError(f"bus.curve_keys_dir: {path} holds no secret key")
    return public, secret


def generate_curve_keys(keys_dir: Path) -> list[Path]:
    """Write server and client keypairs (``bdt keys DIR``); secret files are mode 0600.
    Returns the files written."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    written = []
    for role in ("server", "client"):
        public, secret = zmq.auth.create_certificates(str(keys_dir), role)
        os.chmod(secret, 0o600)
        written += [Path(public), Path(secret)]
    return written


def secure(sock: zmq.Socket, cfg: Config, *, server: bool) -> None:
    """CURVE on tcp (server or client side); nothing on ipc (the run directory is 0700)."""
    if cfg.get("bus.transport") != "tcp":
        return
    server_public, server_secret = _curve_keys(cfg, "server")
    if server:
        sock.curve_secretkey = server_secret
        sock.curve_publickey = server_public
        sock.curve_server = True
    else:
        sock.curve_publickey, sock.curve_secretkey = _curve_keys(cfg, "client")
        sock.curve_serverkey = server_public


def heartbeat(sock: zmq.Socket, cfg: Config) -> None:
    """ZMTP heartbeats notice a peer that vanished without closing (kill -9, cable) on an
    idle connection, so reconnects happen before the next message is lost into it."""
    ivl = cfg.get("bus.heartbeat_ivl_ms")
    sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ivl * 3)


def bind(sock: zmq.Socket, ep: str) -> int | None:
    """Bind ``sock``; a stale ipc file left by a process killed -9 is replaced (the service's
    instance lock, held before any bind, proves no live process owns it). Returns the ipc
    file's inode, which ``close`` checks: a process unlinks only the file it bound."""
    path = ipc_path(ep)
    if path is not None and path.exists():
        path.unlink()  # left by a process that was killed -9; the name is ours
    _bind_retrying(sock, ep)
    return None if path is None else path.stat().st_ino


BIND_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)   # then every BIND_BACKOFF_S[-1] s, for ever


def _bind_retrying(sock: zmq.Socket, ep: str, sleep: Callable[[float], None] = time.sleep
                   ) -> int:
    """``sock.bind(ep)``; while the address is taken (a tcp port another process holds, or a
    previous instance not yet gone) it is tried again with backoff instead of the service
    exiting — under supervisord that became FATAL after its retries and never came back.
    Logged when it begins, once a minute while it lasts, and when it binds. Returns the
    attempts it took."""
    attempt, waited, said = 0, 0.0, -60.0
    while True:
        attempt += 1
        try:
            sock.bind(ep)
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            if waited - said >= 60.0:
                said = waited
                log.warning("%s is in use (%s): binding again with backoff (attempt %d, "
                            "%.0f s so far)", ep, exc, attempt, waited)
            pause = BIND_BACKOFF_S[min(attempt - 1, len(BIND_BACKOFF_S) - 1)]
            sleep(pause)
            waited += pause
            continue
        if attempt > 1:
            log.warning("%s: listening after %d attempts (%.0f s while it was in use)", ep,
                        attempt, waited)
        return attempt


def close(sock: zmq.Socket, ep: str | None = None, inode: int | None = None) -> None:
    """Close ``sock`` at once and remove its ipc file — only if it is still the file this
    socket bound (``inode``): another process may have bound the same name since, and its
    socket must not vanish under it."""
    sock.close(linger=0)
    path = ipc_path(ep) if ep else None
    if path is None:
        return
    try:
        if inode is None or path.stat().st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


def hold_instance_lock(cfg: Config, name: str) -> int:
    """Take ``<run>/<name>.lock`` (flock, exclusive) for this process's life and write our pid
    into it; returns the descriptor (keep it open). The kernel drops the lock when the process
    dies, even by kill -9. A second ``name`` on the same var directory — a second stack, or a
    leftover of one whose supervisor died — gets InstanceLocked naming the holder's pid."""
    run = ensure_run_dir(cfg)
    path = run / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise InstanceLocked(f"another {name} (pid {holder}) is running on {cfg.var_dir}: it "
                             f"holds {path}; stop it first (never run two stacks on one var "
                             "directory)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_instance_lock(cfg: Config, name: str, fd: int) -> None:
    """At a clean exit: remove the lock file while still holding it, then let it go (a
    process starting at this instant fails its lock once and is retried by supervisord)."""
    (cfg.run_dir / f"{name}.lock").unlink(missing_ok=True)
    os.close(fd)


class InstanceLocked(RuntimeError):
    """Another process of the same service already runs on this var directory."""
