"""``bdt cache …``: the cache service (values are msgpack blobs; shown as JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shared.bus.cache_client import decode_value, encode_value
from shared.cli.render import print_json
from shared.cli.verbs import JSON, op_verb, send
from shared.config import Config
from shared.protocol import cache


def parse_value(text: str) -> Any:
    """CLI values: JSON when they parse as JSON (numbers, lists, maps), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@op_verb(cache.OPS, "get")
def cmd_get(cfg: Config, args: argparse.Namespace) -> int:
    blob = send(cfg, args)
    if blob is None:
        print(f"(no key {args.key!r})", file=sys.stderr)
        return 1
    value = decode_value(blob)
    if isinstance(value, bytes):
        print(f"(raw bytes, not msgpack) {value!r}")
    else:
        print(value if isinstance(value, str) else json.dumps(value, default=repr))
    return 0


@op_verb(cache.OPS, "set")
def cmd_set(cfg: Config, args: argparse.Namespace) -> int:
    send(cfg, args, value=encode_value("set", parse_value(args.value)))
    print("OK")
    return 0


@op_verb(cache.OPS, "stats", JSON)
def cmd_stats(cfg: Config, args: argparse.Namespace) -> int:
    stats = send(cfg, args)
    if args.json:
        print_json(stats)
    else:
        for key, value in stats.items():
            print(f"{key:12} {value}")
    return 0


@op_verb(cache.OPS, "delete")
def cmd_delete(cfg: Config, args: argparse.Namespace) -> int:
    print(send(cfg, args))
    return 0
