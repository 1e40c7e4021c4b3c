"""supervisord.conf's ``[group]`` and ``[program:x]`` sections and docs/operations.md's process
table, written from the program table (shared/programs.py) — the two copies of it that are
files: ``python -m shared.resources.process_table`` prints them, ``--write`` rewrites both,
``--check`` exits 1 naming a stale one; tests/test_declarations.py fails when either differs."""

from __future__ import annotations

import sys
from pathlib import Path

from shared.programs import JOB, KINDS, PROGRAMS, Program
from shared.resources.allocation import load_allocation
from shared.resources.supervisor import GROUP

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "supervisord.conf"
OPERATIONS_MD = REPO / "docs" / "operations.md"
CONF_MARK = ("; ---- generated from shared/programs.py (python -m shared.resources.process_table "
             "--write): edit the table there, not below ----")
DOC_BEGIN = ("<!-- programs:begin (generated from shared/programs.py by python -m "
             "shared.resources.process_table --write) -->")
DOC_END = "<!-- programs:end -->"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def conf_block(table: dict[str, Program] = PROGRAMS) -> str:
    """supervisord.conf from the marker to its end: the group and one section per program."""
    out = [CONF_MARK, "", f"[group:{GROUP}]", f"programs={','.join(table)}"]
    for p in table.values():
        k = p.kind
        out += ["", f"[program:{p.name}]",
                f"command=bdt cgexec --program %(program_name)s -- {' '.join(p.argv)}",
                "directory=%(here)s", f"priority={p.priority}",
                f"autostart={_bool(k.autostart)}", f"autorestart={k.autorestart}",
                f"startsecs={k.startsecs}", f"startretries={k.startretries}",
                "stopsignal=TERM", "stopwaitsecs=10", "stopasgroup=true", "killasgroup=true",
                "redirect_stderr=true", f"stdout_logfile=%(here)s/var/log/{p.name}.log",
                "stdout_logfile_maxbytes=10MB", "stdout_logfile_backups=5"]
    return "\n".join(out) + "\n"


def docs_block(table: dict[str, Program] = PROGRAMS, slices: dict[str, str] | None = None
               ) -> str:
    """docs/operations.md's process table (markers included); ``slices``: program → slice,
    default from cgroups/allocation.toml."""
    if slices is None:
        slices = {p: s.name for s in load_allocation().slices.values() for p in s.programs}
    restart = {"true": "yes", "false": "no", "unexpected": "on unexpected exit"}
    rows = [DOC_BEGIN, "",
            "| program | kind | slice | runs | priority | autostart | autorestart | bus (port "
            "offset) | job: schedule, time limit |", "|---|---|---|---|---|---|---|---|---|"]
    for p in table.values():
        k = p.kind
        keys = f"`{p.schedule_key}`, `{p.limit_key}`" if k is JOB else ""
        rows.append(f"| {p.name} | {k.name} | {slices.get(p.name, '?')} | "
                    f"`{' '.join(p.argv)}` | {p.priority} | {'yes' if k.autostart else 'no'} | "
                    f"{restart[k.autorestart]} | {'serves' if k.serves else 'reserved'} "
                    f"(+{p.port}) | {keys} |")
    rows += ["", *(f"- **{k.name}**: {k.help}." for k in KINDS.values()), "", DOC_END]
    return "\n".join(rows)


def conf_current(text: str) -> str | None:
    """The generated part of supervisord.conf's ``text`` (marker to end), or None."""
    return text[text.index(CONF_MARK):] if CONF_MARK in text else None


def docs_current(text: str) -> str | None:
    """The generated block of docs/operations.md's ``text`` (markers included), or None."""
    if DOC_BEGIN not in text or DOC_END not in text:
        return None
    return text[text.index(DOC_BEGIN):text.index(DOC_END) + len(DOC_END)]


def stale() -> list[str]:
    """The generated copies that differ from the table (empty: all current)."""
    out = []
    if conf_current(CONF.read_text()) != conf_block():
        out.append(f"{CONF}: its [group] and [program:x] sections")
    if docs_current(OPERATIONS_MD.read_text()) != docs_block():
        out.append(f"{OPERATIONS_MD}: its process table")
    return out


def write() -> None:
    """Rewrite the generated parts of supervisord.conf and docs/operations.md."""
    conf = CONF.read_text()
    head = conf[:conf.index(CONF_MARK)] if CONF_MARK in conf else conf.rstrip() + "\n\n"
    CONF.write_text(head + conf_block())
    doc = OPERATIONS_MD.read_text()
    old = docs_current(doc)
    OPERATIONS_MD.write_text(doc.replace(old, docs_block()) if old else
                             doc.rstrip() + "\n\n" + docs_block() + "\n")


def main(argv: list[str]) -> int:
    """``--write``: rewrite both copies; ``--check``: exit 1 naming a stale one; else print."""
    if "--write" in argv:
        write()
        print(f"wrote {CONF} and {OPERATIONS_MD}'s process table")
        return 0
    if "--check" in argv:
        found = stale()
        for what in found:
            print(f"stale: {what} (python -m shared.resources.process_table --write)")
        return 1 if found else 0
    print(conf_block() + "\n" + docs_block())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
