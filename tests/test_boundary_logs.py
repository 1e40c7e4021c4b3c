"""Issue 24 case 6 (logs): untrusted strings reach log lines escaped, one line per event.

On the running system a request whose op name held ESC/BEL/NUL was logged as it was, and
``supervisorctl tail bitdaytrader:cache`` then failed with ``ExpatError: not well-formed``
(supervisord's XML-RPC cannot carry those characters). Every process logs through
``shared.logs.SafeFormatter``; these tests hold it to that, in process and under the real
supervisord.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import warnings
import xmlrpc.client
from pathlib import Path

import pytest

from shared.bus.client import BadRequest, BusClient, wait_for
from shared.logs import SafeFormatter, escape, setup_logging
from tests.helpers import REPO, VENV_BIN, child_env, descendants, stop_process, wait_until

EVIL_OP = "evil\x1b[31m\x07\x00op"
# What a log line must never hold: C0 but the newline ending it, DEL, C1, and the characters
# XML 1.0 cannot carry (checked separately through xmlrpc below).
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def xml_round_trip(text: str) -> str:
    """What supervisorctl tail does with a log: XML-RPC out and back (ExpatError if not XML)."""
    return xmlrpc.client.loads(xmlrpc.client.dumps((text,), methodresponse=True))[0][0]


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad \x1b[2J value\n2030-01-01 00:00:00,000 ERROR forged line")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("bdt.bus", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_escape_writes_every_unsafe_character_as_its_escape():
    assert escape("a\x1bb\x07c\x00d\x7fe\x85f\ud800g\ufffeh\u202ei\u2028j") == \
        "a\\x1bb\\x07c\\x00d\\x7fe\\x85f\\ud800g\\ufffeh\\u202ei\\u2028j"
    assert escape("line\nnext\r\ttab") == "line\\nnext\\r\\ttab"
    assert escape("prix 42 000 € — 東京 ok \\x1b") == "prix 42 000 € — 東京 ok \\x1b"


def test_formatter_escapes_message_arguments_and_exception_text():
    fmt = SafeFormatter("%(levelname)s %(component)s %(name)s: %(message)s",
                        defaults={"component": "cache"})
    out = fmt.format(record("cache: refused %s request: %s", EVIL_OP, "unknown_op\nsecond"))
    assert out == "WARNING cache bdt.bus: cache: refused evil\\x1b[31m\\x07\\x00op request: " \
                  "unknown_op\\nsecond"
    lines = fmt.format(record("op %s failed", "incr\x1b", exc=True)).split("\n")
    assert lines[0] == "WARNING cache bdt.bus: op incr\\x1b failed"
    # the traceback stays readable, one line of it a line, each under the event's "| "
    assert lines[1] == "| Traceback (most recent call last):"
    assert all(line.startswith("| ") for line in lines[1:])
    assert lines[-2:] == ["| ValueError: bad \\x1b[2J value",
                          "| 2030-01-01 00:00:00,000 ERROR forged line"]
    assert not RAW.search("".join(lines))


def test_setup_logging_covers_warnings_and_uncaught_exceptions(capfd):
    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.excepthook
    try:
        log = setup_logging("job%s")                   # a name from argv is never a format
        log.info("symbol %r and %s", "BTC\x1b]0;owned\x07", "X\u202eY")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            logging.captureWarnings(True)
            warnings.warn("column \x1b[1mname\x1b[0m", UserWarning, stacklevel=1)
        try:
            raise RuntimeError("boom\x00")
        except RuntimeError:
            sys.excepthook(*sys.exc_info())
    finally:
        logging.captureWarnings(False)
        root.handlers[:], sys.excepthook = saved[0], saved[2]
        root.setLevel(saved[1])
    err = capfd.readouterr().err
    assert "INFO job%s bdt.job%s: symbol 'BTC\\x1b]0;owned\\x07' and X\\u202eY" in err
    assert "column \\x1b[1mname\\x1b[0m" in err
    assert "CRITICAL job%s bdt.job%s: uncaught exception\n| Traceback" in err
    assert "| RuntimeError: boom\\x00" in err
    assert not RAW.search(err)
    assert all(re.match(r"\d{4}-\d\d-\d\d |\| ", line) for line in err.splitlines())


def minimal_supervisord(tmp: Path) -> Path:
    """supervisord with the cache alone, as group bitdaytrader like supervisord.conf."""
    conf = tmp / "supervisord.conf"
    conf.write_text(f"""\
[unix_http_server]
file={tmp}/supervisor.sock
[supervisord]
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{tmp}/supervisor.sock
[group:bitdaytrader]
programs=cache
[program:cache]
command={sys.executable} -m services.cache
directory={REPO}
redirect_stderr=true
stdout_logfile={tmp}/var/log/cache.log
stopsignal=TERM
""")
    return conf


def test_supervisorctl_tail_reads_a_log_with_control_characters_in_requests(tmp_path):
    """The fault as seen: a request with ESC/BEL/NUL in its op name, then
    ``supervisorctl tail bitdaytrader:cache``. It failed with ExpatError; now the refusal is
    one line, escaped, and tail shows it."""
    var = tmp_path / "var"
    (var / "run").mkdir(parents=True, mode=0o700)
    (var / "log").mkdir()
    conf = minimal_supervisord(tmp_path)
    env = child_env(var)
    proc = subprocess.Popen([str(VENV_BIN / "supervisord"), "-n", "-c", str(conf)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from shared.config import load_config

        cfg = load_config({"BDT_VAR": str(var)})
        wait_for("cache", cfg, timeout_s=20)
        with BusClient("cache", cfg) as client, pytest.raises(BadRequest, match="unknown_op"):
            client.call(EVIL_OP, key="k\x1b[2J")
        log = var / "log" / "cache.log"
        wait_until(lambda: b"refused" in log.read_bytes(), what="the refusal logged")
        text = log.read_text()
        assert not RAW.search(text)
        assert xml_round_trip(text) == text
        tail = subprocess.run([str(VENV_BIN / "supervisorctl"), "-c", str(conf), "tail",
                               "bitdaytrader:cache"], env=env, capture_output=True, text=True,
                              timeout=30)
        assert "ExpatError" not in tail.stdout + tail.stderr
        assert tail.returncode == 0, tail.stdout + tail.stderr
        assert "evil\\x1b[31m\\x07\\x00op" in tail.stdout
    finally:
        children = descendants(proc.pid)
        subprocess.run([str(VENV_BIN / "supervisorctl"), "-c", str(conf), "shutdown"], env=env,
                       capture_output=True, timeout=30)
        stop_process(proc, timeout=20)
        for child in children:                       # by pid, only if supervisord left them
            if child.is_running():
                child.kill()


def test_error_replies_never_echo_a_callers_control_characters_raw(cfg):
    """A refusal's message goes back to the caller (``bdt`` prints it) and into the log: the
    caller's text in it is repr'd (op name, argument names, values), never raw."""
    from services.cache.service import CacheService
    from services.cache.store import CacheStore
    from shared.protocol.errors import MessageError

    svc = CacheService(cfg, CacheStore(max_bytes=1 << 20, max_items=10, max_key_bytes=16))
    svc.store.set("s", b"\xa1\x1b")                         # msgpack "\x1b"
    bad = [(EVIL_OP, {}), ("get", {"key": "k", "x\x1b[2J\x07": 1}),
           ("get", {"key": ["\x1b"]}), ("incr", {"key": "s"}),
           ("set", {"key": "k\x1b" * 9, "value": b"v"})]
    for op, args in bad:
        with pytest.raises(MessageError) as caught:
            svc.handle(op, args)
        assert not RAW.search(str(caught.value)), (op, str(caught.value))
