"""The streams' payloads are declared once (shared/protocol/streams.py) and the code that builds
and parses them agrees: the bot's bars (Bar.to_dict) are what history and the predictor read
(Bar.from_dict); the predictor's predictions (the model set's outputs and the symbol) are
what the bot reads (Prediction.from_dict); the skipped form is what the predictor says and
the bot looks for; every event kind is a form of the events stream. Each check lists the
disagreements and is shown to catch an edit made in one place alone."""

from __future__ import annotations

import ast
import dataclasses
from typing import Any

from shared.bus.endpoints import STREAMS
from shared.market.bars import Bar
from shared.protocol.events import KINDS, event
from shared.protocol.streams import (
    BAR,
    NUMBER,
    PAYLOADS,
    PREDICTION,
    SKIPPED,
    SKIPPED_PREDICTION,
    Payload,
)
from shared.trading.types import Prediction
from tests.helpers import REPO

SAMPLE: dict[Any, Any] = {str: "BTC/USDT", int: 1_700_000_000_000, NUMBER: 0.5, dict: {}}


def example(payload: Payload) -> dict[str, Any]:
    """A message of the form with every field, each a plausible value of its type."""
    return {name: SAMPLE.get(kinds, 0.5) for name, kinds in payload.fields.items()}


def source(path: str) -> ast.Module:
    return ast.parse((REPO / path).read_text())


def dict_keys(node: ast.Dict) -> set[str]:
    return {k.value for k in node.keys if isinstance(k, ast.Constant)}


def bar_problems(bar: Payload) -> list[str]:
    """The declared bar against Bar.to_dict (the bot) and Bar.from_dict (history, predictor)."""
    problems = []
    published = Bar("BTC/USDT", 1, 1.0, 2.0, 0.5, 1.5, 10.0, 3).to_dict()
    if set(published) != set(bar.fields):
        problems.append(f"Bar.to_dict() fields {sorted(published)} ≠ declared "
                        f"{sorted(bar.fields)}")
    problems += bar.problems(published)
    msg = example(bar)
    try:
        if Bar.from_dict(msg).to_dict() != {k: msg[k] for k in published if k in msg}:
            problems.append("Bar.from_dict does not read back a declared bar as it is")
        Bar.from_dict({k: v for k, v in msg.items() if k not in bar.optional})
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(f"Bar.from_dict refuses a declared bar: {exc!r}")
    for name in set(bar.fields) - set(bar.optional):
        try:
            Bar.from_dict({k: v for k, v in msg.items() if k != name})
            problems.append(f"Bar.from_dict accepts a bar without {name!r}, declared required")
        except (KeyError, TypeError, ValueError):
            pass
    return problems


def prediction_problems(prediction: Payload, skipped: Payload, model_set: ast.Module,
                        predictor: ast.Module, bot: ast.Module) -> list[str]:
    """The declared prediction and its skipped form against the predictor (ModelSet.predict's
    outputs plus the symbol; the skipped dict it publishes), and the bot (Prediction.from_dict;
    the skipped field it looks for)."""
    problems = []
    fields = {f.name for f in dataclasses.fields(Prediction)}
    if fields != set(prediction.fields):
        problems.append(f"Prediction fields {sorted(fields)} ≠ declared "
                        f"{sorted(prediction.fields)}")
    try:
        Prediction.from_dict(example(prediction))
    except ValueError as exc:
        problems.append(f"Prediction.from_dict refuses a declared prediction: {exc}")
    for name in prediction.fields:
        try:
            Prediction.from_dict({k: v for k, v in example(prediction).items() if k != name})
            problems.append(f"Prediction.from_dict accepts one without {name!r}")
        except ValueError:
            pass
    predict = next(n for n in ast.walk(model_set)
                   if isinstance(n, ast.FunctionDef) and n.name == "predict"
                   and any(a.arg == "model_version" for a in n.args.kwonlyargs))
    made = set().union(*(dict_keys(n.value) for n in ast.walk(predict)
                         if isinstance(n, ast.Return) and isinstance(n.value, ast.Dict)))
    added = {n.slice.value for n in ast.walk(predictor) if isinstance(n, ast.Subscript)
             and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name)
             and n.value.id == "prediction" and isinstance(n.slice, ast.Constant)}
    if made | added != set(prediction.fields):
        problems.append(f"the predictor publishes {sorted(made | added)} (ModelSet.predict "
                        f"{sorted(made)} + {sorted(added)}) ≠ declared "
                        f"{sorted(prediction.fields)}")
    said = [dict_keys(n.args[1]) for n in ast.walk(predictor)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "publish" and len(n.args) == 2
            and isinstance(n.args[0], ast.Constant) and n.args[0].value == "predictions"
            and isinstance(n.args[1], ast.Dict)]
    if not said or any(keys != set(skipped.fields) for keys in said):
        problems.append(f"the predictor's skipped form {said} ≠ declared "
                        f"{sorted(skipped.fields)}")
    looks_for = {n.left.value for n in ast.walk(bot) if isinstance(n, ast.Compare)
                 and isinstance(n.left, ast.Constant) and isinstance(n.ops[0], ast.In)}
    if SKIPPED not in skipped.fields or SKIPPED not in looks_for:
        problems.append(f"the bot does not tell the skipped form by {SKIPPED!r} (it looks for "
                        f"{sorted(looks_for)} in a message)")
    try:
        Prediction.from_dict(example(skipped))
        problems.append("Prediction.from_dict takes the skipped form for a prediction")
    except ValueError:
        pass
    return problems


def real_sources() -> tuple[ast.Module, ast.Module, ast.Module]:
    return (source("shared/models/model_set.py"), source("services/predictor/service.py"),
            source("services/bot/service.py"))


def test_every_stream_has_its_payloads_declared():
    assert set(PAYLOADS) == set(STREAMS)
    assert {p.form for p in PAYLOADS["events"]} == set(KINDS)
    for kind in PAYLOADS["events"]:
        fields = {k: v for k, v in example(kind).items() if k != "kind"}
        fields |= {n: c[0] for n, c in (KINDS[kind.form].choices or {}).items()}
        assert kind.problems(event(kind.form, **fields)) == []


def test_bars_as_the_bot_publishes_and_history_and_the_predictor_read_them():
    assert bar_problems(BAR) == []


def test_predictions_as_the_predictor_publishes_and_the_bot_reads_them():
    assert prediction_problems(PREDICTION, SKIPPED_PREDICTION, *real_sources()) == []


def test_a_payload_edited_in_one_place_alone_is_caught():
    # the declaration gains a field no builder makes
    vwap = dataclasses.replace(BAR, fields={**BAR.fields, "vwap": NUMBER})
    assert any("Bar.to_dict() fields" in p for p in bar_problems(vwap))
    # a declared-optional field the reader in fact requires, and the other way round
    assert any("refuses a declared bar" in p for p in bar_problems(
        dataclasses.replace(BAR, optional=("volume",))))
    assert any("accepts a bar without 'trades'" in p for p in bar_problems(
        dataclasses.replace(BAR, optional=())))
    model_set, predictor, bot = real_sources()
    # the predictor stops adding the symbol; its skipped form renamed; the bot's test renamed
    text = (REPO / "services/predictor/service.py").read_text()
    no_symbol = ast.parse(text.replace('prediction["symbol"] = bar.symbol', "pass"))
    assert any("the predictor publishes" in p for p in prediction_problems(
        PREDICTION, SKIPPED_PREDICTION, model_set, no_symbol, bot))
    renamed = ast.parse(text.replace('"skipped": why_not', '"reason": why_not'))
    assert any("skipped form" in p for p in prediction_problems(
        PREDICTION, SKIPPED_PREDICTION, model_set, renamed, bot))
    bot_text = (REPO / "services/bot/service.py").read_text()
    other = ast.parse(bot_text.replace('if "skipped" in msg.fields', 'if "why" in msg.fields'))
    assert any("does not tell the skipped form" in p for p in prediction_problems(
        PREDICTION, SKIPPED_PREDICTION, model_set, predictor, other))
    # the declaration edited alone
    extra = dataclasses.replace(PREDICTION, fields={**PREDICTION.fields, "p_down": NUMBER})
    assert any("Prediction fields" in p for p in prediction_problems(
        extra, SKIPPED_PREDICTION, model_set, predictor, bot))
    # a message that does not match its form
    assert BAR.problems({"symbol": "X", "ts": True})[:2] == [
        "bars (bar): field 'ts' must be int, got True", "bars (bar): no field 'open'"]
