"""``bdt train``, ``bdt predict``, ``bdt models reload``: the model set."""

from __future__ import annotations

import argparse
import sys

from shared.cli.render import parse_when, print_json, table
from shared.cli.verbs import JSON, op_verb, opt, send, verb
from shared.config import Config
from shared.formatting import figure
from shared.protocol import predictor


@verb("train", "train a model set from one symbol's stored bars and promote it",
      opt("--symbol", help="market symbol (default: the first of market.symbols)"),
      opt("--from", dest="start", type=parse_when, help="epoch ms or ISO date (UTC)"),
      opt("--to", dest="end", type=parse_when, help="epoch ms or ISO date (UTC), exclusive"),
      opt("--if-missing", action="store_true", help="only when none is promoted yet"),
      JSON)
def cmd_train(cfg: Config, args: argparse.Namespace) -> int:
    """Train and promote; a one-line error and exit 1 when the data cannot be trained on."""
    from shared.market.files import FeedError
    from shared.models.training import TrainingError, train  # heavy imports only here

    try:
        result = train(cfg, args.start, args.end, if_missing=args.if_missing,
                       symbol=args.symbol)
    except FeedError as exc:        # market.replay_path unreadable: no run can use it either
        print(f"bdt train: market.replay_path: {exc}", file=sys.stderr)
        return 1
    except TrainingError as exc:
        print(f"bdt train: {exc}", file=sys.stderr)
        if args.if_missing:      # `make run` on too little data: start anyway, without a model
            print("bdt train: starting without a model: the predictor says so and the bot "
                  "trades nothing new until `bdt train` succeeds", file=sys.stderr)
            return 0
        return 1
    if args.json:
        print_json(result)
    elif not result["trained"]:
        print(f"model {result['version']} already promoted; nothing to do")
    else:
        if result["stored_now"]:
            what = "synthetic bars of the sample market's past" if result["synthetic"] \
                else "bars of the replay file's head"
            print(f"stored {result['stored_now']} {what} as {result['symbol']} first")
        if result["synthetic"]:
            print("SYNTHETIC data: the embedded sample market; this model says nothing about "
                  "a real market")
        print(f"trained and promoted {result['version']} on {result['source']}")
        for key, value in result["metrics"].items():
            print(f"  {key}: {figure(key, value)}")
    return 0


@op_verb(predictor.OPS, "reload")
def cmd_reload(cfg: Config, args: argparse.Namespace) -> int:
    reply = send(cfg, args)
    if reply["ok"]:
        print(f"predictor runs model {reply['model_version']}")
        return 0
    print(f"predictor kept model {reply['model_version']}: {reply['error']}", file=sys.stderr)
    return 1


@verb("models list", "every model version: created, window, the gate's decision, which is live",
      JSON)
def cmd_models_list(cfg: Config, args: argparse.Namespace) -> int:
    from shared.models.registry import ModelRegistry

    rows = []
    for entry in ModelRegistry(cfg.model_dir).catalogue():
        meta = entry["metadata"]
        gate = meta.get("gate") or {}
        rows.append({"version": entry["version"], "live": entry["current"],
                     "created_at": meta.get("created_at"), "source": meta.get("source"),
                     "gate": None if not gate else ("promote" if gate.get("promote")
                                                    else "reject"),
                     "gate_reasons": gate.get("reasons")})
    if args.json:
        print_json(rows)
        return 0
    table([["*" if r["live"] else "", r["version"], r["created_at"] or "-",
            r["source"] or "-", r["gate"] or "-"] for r in rows],
          ["live", "version", "created", "source", "gate"])
    return 0


@verb("models show", "one version's metadata: window, metrics, the gate's figures",
      opt("version"))
def cmd_models_show(cfg: Config, args: argparse.Namespace) -> int:
    from shared.models.artifacts import ModelError
    from shared.models.registry import ModelRegistry

    try:
        print_json(ModelRegistry(cfg.model_dir).metadata(args.version))
    except ModelError as exc:
        print(f"bdt models show: {exc}", file=sys.stderr)
        return 1
    return 0


@verb("models promote", "make a version live (the predictor loads it between two bars)",
      opt("version"), opt("--reason", default="promoted by the operator"))
def cmd_models_promote(cfg: Config, args: argparse.Namespace) -> int:
    from shared.models.artifacts import ModelError
    from shared.models.registry import ModelRegistry

    try:
        ModelRegistry(cfg.model_dir).promote(args.version, reason=args.reason)
    except ModelError as exc:
        print(f"bdt models promote: {exc}", file=sys.stderr)
        return 1
    print(f"{args.version} is live")
    return 0


@verb("models rollback", "back to the version that was live before the current one")
def cmd_models_rollback(cfg: Config, args: argparse.Namespace) -> int:
    from shared.models.artifacts import ModelError
    from shared.models.registry import ModelRegistry

    try:
        version = ModelRegistry(cfg.model_dir).rollback()
    except ModelError as exc:
        print(f"bdt models rollback: {exc}", file=sys.stderr)
        return 1
    print(f"rolled back: {version} is live")
    return 0
