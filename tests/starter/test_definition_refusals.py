"""`validate`, `publish` and `simulate` refuse hostile definitions alike (one loading path):
exit 2, one located line per problem, nothing stored, and the store still serves the workflows
it had. Publish validates what the store holds before it commits."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hostile_definitions import Hostile, documents
from hypothesis import HealthCheck, given, settings

from crmflow import services
from crmflow.cli import cli
from crmflow.definitions import DefinitionError, WorkflowDefinition
from crmflow.services import App
from crmflow.services import workflows as workflow_services
from crmflow.store import WorkflowRepository

Write = Callable[[dict[str, Any]], Path]
Cli = Any  # conftest.Cli

NAN_CRITERIA = """\
key: scores
name: Scores
enrollment:
  trigger: criteria
  criteria: {property: score, op: gt, value: .nan}
actions:
  - {id: a, type: set_property, property: x, value: 1}
"""


def good(key: str = "good") -> dict[str, Any]:
    return {
        "key": key,
        "name": "Good",
        "enrollment": {
            "trigger": "criteria",
            "criteria": {"property": "plan", "op": "eq", "value": "pro"},
        },
        "actions": [{"id": "tag", "type": "set_property", "property": "tagged", "value": "yes"}],
    }


def still_serves(offline_cli: Cli, keys: list[str]) -> None:
    assert [w["key"] for w in offline_cli.json("workflows")] == keys
    for key in keys:
        assert offline_cli.json("show", key)["key"] == key
        assert "review" not in offline_cli("review", key).stderr


def test_a_nan_condition_is_refused_and_nothing_is_stored(
    offline_cli: Cli, write_definition: Write, tmp_path: Path
) -> None:
    offline_cli("publish", str(write_definition(good())))
    path = tmp_path / "scores.yaml"
    path.write_text(NAN_CRITERIA)
    expected = f"{path}:5: enrollment.criteria.value: .nan is not a finite number\n"
    assert offline_cli("validate", str(path), code=2).stderr == expected
    assert offline_cli("publish", str(path), code=2).stderr == expected
    still_serves(offline_cli, ["good"])


def test_files_published_together_are_all_or_nothing(
    offline_cli: Cli, write_definition: Write, tmp_path: Path
) -> None:
    path = tmp_path / "scores.json"
    document = {**good("scores"), "enrollment": {"trigger": "manual"}}
    document["actions"][0]["value"] = "@"
    path.write_text(json.dumps(document).replace('"@"', "Infinity"))
    result = offline_cli("publish", str(write_definition(good())), str(path), code=2)
    assert result.stderr == f"{path}:1: actions[0].value: Infinity is not a finite number\n"
    assert offline_cli.json("workflows") == []


@pytest.mark.parametrize("levels", [260, 140])
def test_deep_nesting_is_exit_2_not_an_unexpected_error(
    offline_cli: Cli, tmp_path: Path, levels: int
) -> None:
    path = tmp_path / "deep.yaml"
    condition = "{any: [" * levels + "{property: a, op: known}" + "]}" * levels
    path.write_text(NAN_CRITERIA.replace("{property: score, op: gt, value: .nan}", condition))
    result = offline_cli("validate", str(path), code=2)
    assert result.stderr == f"{path}:5: mappings and lists nest deeper than 100 levels\n"


def laughs(levels: int, word: str = "lol") -> str:
    lines = ["key: lol", "name: LOL", "enrollment: {trigger: manual}", "actions:"]
    lines.append(
        f"  - {{id: a, type: custom, handler: h, params: {{p: &l0 [{', '.join([word] * 4)}]}}}}"
    )
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(
            f"  - {{id: a{level}, type: custom, handler: h, params: {{p: &l{level} [{aliases}]}}}}"
        )
    return "\n".join(lines) + "\n"


def test_a_few_hundred_bytes_cannot_hang_validate_nor_publish_megabytes(
    offline_cli: Cli, tmp_path: Path
) -> None:
    hang = tmp_path / "hang.yaml"
    hang.write_text(laughs(8))  # 9**8 * 4 strings: validating it never ended
    assert len(hang.read_bytes()) < 1000
    result = offline_cli("validate", str(hang), code=2)
    assert result.stderr == (
        f"{hang}:10: the document holds more than 100,000 values (YAML aliases expanded)\n"
    )
    big = tmp_path / "big.yaml"
    big.write_text(laughs(4, "lol" * 12))  # 700 bytes: 29,524 strings, over a megabyte
    result = offline_cli("publish", str(big), code=2)
    assert result.stderr.startswith(f"{big}:1: the definition is ")
    assert "bytes once encoded; at most 262,144" in result.stderr
    assert offline_cli.json("workflows") == []


def test_simulate_refuses_what_validate_refuses(offline_cli: Cli, write_definition: Write) -> None:
    document = good("sim")
    document["enrollment"] = {"trigger": "manual"}
    document["actions"][0]["value"] = "{{ record.firstname * 3 }}"
    path = write_definition(document)
    expected = f"{path}:9: actions[0].value: template: arithmetic ('*') is not allowed\n"
    assert offline_cli("validate", str(path), code=2).stderr == expected
    assert offline_cli("simulate", str(path), "--set", "firstname=Ann", code=2).stderr == expected


# ------------------------------------------------------------------- what publish stores


def test_publish_refuses_a_stored_form_that_would_not_load(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tmp_path / "first.yaml"
    first.write_text(NAN_CRITERIA.replace(".nan", "10").replace("scores", "first"))
    second = tmp_path / "second.yaml"
    second.write_text(NAN_CRITERIA.replace(".nan", "10"))
    stored_as = workflow_services.definition_json

    def lossy(definition: WorkflowDefinition) -> dict[str, Any]:
        # Stands for any defect between the validated model and the stored JSON.
        stored = stored_as(definition)
        if definition.key == "scores":
            stored["actions"][0]["next"] = "nowhere"
        return stored

    monkeypatch.setattr(workflow_services, "definition_json", lossy)
    with pytest.raises(DefinitionError) as caught:
        services.publish_files(app, [first, second])
    [problem] = caught.value.problems
    assert str(problem) == f"{second}: actions[0].next: unknown action 'nowhere' (as stored)"
    with app.sessions() as session:
        assert WorkflowRepository(session).all() == []


def test_the_stored_form_round_trips_through_each_database(app: App, tmp_path: Path) -> None:
    # JSONB normalizes numbers and reorders keys: what comes back must still load.
    document = {
        "key": "numbers",
        "name": "Nombres — ✓",
        "enrollment": {
            "trigger": "criteria",
            "criteria": {
                "all": [
                    {"property": "a", "op": "between", "value": [-1e308, 1.5e-300]},
                    {"property": "b", "op": "in", "value": [10**300, -0.0, 3.25, "é"]},
                ]
            },
        },
        "actions": [
            {"id": "up", "type": "increment_property", "property": "n", "by": 1e300},
            {
                "id": "go",
                "type": "value_branch",
                "property": "p",
                "cases": {"zz": "end", "a": "end"},
            },
            {
                "id": "hook",
                "type": "custom",
                "handler": "h",
                "params": {"b": {"y": [1e-5], "x": 2}},
            },
        ],
    }
    path = tmp_path / "numbers.json"
    path.write_text(json.dumps(document))
    [published] = services.publish_files(app, [path])
    loaded, version = services.load_version(app, "numbers")
    assert (published.version, version) == (1, 1)
    # PostgreSQL gives 1e300 back as the integer 10**300: the same double.
    assert float(loaded.actions[0].by) == 1e300


# ------------------------------------------------------------------------- property-based


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for every example (migrating a new one each time would dominate the test)."""
    return tmp_path_factory.mktemp("hostile")


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # long documents
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(hostile=documents)
def test_no_definition_makes_a_command_fail_other_than_cleanly(
    shared_store: Path, hostile: Hostile
) -> None:
    before = _published_versions(shared_store)
    with tempfile.TemporaryDirectory(dir=shared_store) as tmp:
        path = Path(tmp) / f"hostile{hostile.suffix}"
        path.write_text(hostile.text, encoding="utf-8")
        validated = _run(shared_store, "validate", str(path))
        published = _run(shared_store, "publish", str(path))
        assert published.exit_code == validated.exit_code
        if validated.exit_code == 2:
            lines = validated.stderr.splitlines()
            assert lines and all(line.startswith(f"{path}") for line in lines), lines
            assert published.stderr == validated.stderr
            assert _published_versions(shared_store) == before  # nothing written
            assert _run(shared_store, "simulate", str(path)).stderr == validated.stderr
        else:
            assert _published_versions(shared_store) == before + 1
            _run(shared_store, "show", "hostile", "--json")


def _run(store: Path, *args: str) -> Any:
    base = ["--db", f"sqlite:///{store / 'crmflow.db'}", "--temporal", "localhost:1"]
    result = CliRunner().invoke(cli, [*base, *args], env={"CRMFLOW_DEBUG": None})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "unexpected error" not in result.output, result.output
    assert result.exit_code in (0, 2), result.output
    return result


def _published_versions(store: Path) -> int:
    listed = json.loads(_run(store, "workflows", "--json").stdout)
    assert [w["key"] for w in listed] in ([], ["hostile"])
    return listed[0]["version"] if listed else 0
