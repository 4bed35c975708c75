"""MLflow's search grammar (tracking/search.py), parsed without a database: the forms it accepts and the
errors it gives."""

from __future__ import annotations

import pytest

from bridgehead.errors import BadRequest
from bridgehead.tracking.search import Clause, OrderBy, parse_filter, parse_order_by


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("   ", []),
        (None, []),
        ("metrics.auc > 0.8", [Clause("metrics", "auc", ">", 0.8)]),
        ("metric.loss <= -1.5e-3", [Clause("metrics", "loss", "<=", -1.5e-3)]),
        ("metrics.acc >= .5", [Clause("metrics", "acc", ">=", 0.5)]),
        ("params.model = 'gbm'", [Clause("params", "model", "=", "gbm")]),
        ('param.model != "lr"', [Clause("params", "model", "!=", "lr")]),
        ("parameters.`learning rate` = '0.1'", [Clause("params", "learning rate", "=", "0.1")]),
        ("tags.\"mlflow.runName\" LIKE '%gbm%'", [Clause("tags", "mlflow.runName", "LIKE", "%gbm%")]),
        ("tag.team ilike 'RETAIL'", [Clause("tags", "team", "ILIKE", "RETAIL")]),
        ("attributes.status = 'FINISHED'", [Clause("attributes", "status", "=", "FINISHED")]),
        ("attr.run_name = 'a'", [Clause("attributes", "run_name", "=", "a")]),
        ("run.start_time > 1700000000000", [Clause("attributes", "start_time", ">", 1.7e12)]),
        ("status = 'RUNNING'", [Clause("attributes", "status", "=", "RUNNING")]),
        (
            "attributes.run_id IN ('a', 'b')",
            [Clause("attributes", "run_id", "IN", ("a", "b"))],
        ),
        ("tags.x NOT IN ('a')", [Clause("tags", "x", "NOT IN", ("a",))]),
        ("datasets.digest = 'abc'", [Clause("datasets", "digest", "=", "abc")]),
        ("params.path = 'a\\'b'", [Clause("params", "path", "=", "a'b")]),
        ("metrics.train/loss < 1", [Clause("metrics", "train/loss", "<", 1.0)]),
        (
            "metrics.auc > 0.8 AND params.model = 'gbm' and tags.t != 'x'",
            [
                Clause("metrics", "auc", ">", 0.8),
                Clause("params", "model", "=", "gbm"),
                Clause("tags", "t", "!=", "x"),
            ],
        ),
    ],
)
def test_valid_filters(text: str | None, expected: list[Clause]) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics.auc", "Missing operator"),
        ("metrics.auc >", "Missing value"),
        ("metrics.auc > 'high'", "need a number"),
        ("metrics.auc LIKE '1%'", "need a number"),
        ("params.model = 3", "quoted strings"),
        ("tags.t = 1", "quoted strings"),
        ("bogus.key = 'x'", "Invalid entity type 'bogus'"),
        ("attributes.color = 'red'", "Invalid attribute key 'color'"),
        ("color = 'red'", "Expected '<entity>.<key>'"),
        ("metrics.a > 1 OR metrics.b > 1", "OR is not supported"),
        ("metrics.a > 1 AND", "Dangling AND"),
        ("metrics.a > 1 metrics.b > 1", "Expected AND"),
        ("params.a IN 'x'", "parenthesised list"),
        ("params.a IN ('x', 3)", "quoted values"),
        ("params.a IN ('x'", "Unclosed"),
        ("params.a ~ 'x'", "Could not parse"),
        ("params.a == 'x'", "Expected a quoted string or a number"),
        ("params.a = 'unterminated", "Could not parse"),
    ],
)
def test_invalid_filters_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_filter(text)


def test_order_by() -> None:
    assert parse_order_by(None) == []
    assert parse_order_by(
        ["metrics.auc DESC", "params.`model name` asc", "start_time", "attribute.run_name"]
    ) == [
        OrderBy("metrics", "auc", False),
        OrderBy("params", "model name", True),
        OrderBy("attributes", "start_time", True),
        OrderBy("attributes", "run_name", True),
    ]
    for bad in ("bogus", "colour DESC", "attributes.colour"):
        with pytest.raises(BadRequest):
            parse_order_by([bad])


def test_other_objects_bring_their_own_attributes() -> None:
    columns = {"name", "creation_time"}
    assert parse_filter("name = 'x'", columns) == [Clause("attributes", "name", "=", "x")]
    with pytest.raises(BadRequest, match="Invalid attribute key 'status'"):
        parse_filter("attributes.status = 'x'", columns)
