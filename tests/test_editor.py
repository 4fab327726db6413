"""Editor support for an installed user's project: the schemas inside the project, registered
for the YAML extension, and ready mappings copied out with a `$schema` line that works."""

import json
from pathlib import Path

import pytest

from generic_connector.cli import main
from generic_connector.config import SCHEMA_PATH


def test_schema_project_writes_both_schemas_and_keeps_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = tmp_path / ".vscode" / "settings.json"
    settings.parent.mkdir()
    settings.write_text('{"editor.tabSize": 2, "yaml.schemas": {"other.json": ["x.yml"]}}')
    assert main(["schema", "--project"]) == 0
    assert capsys.readouterr().out.split() == [
        ".vscode/generic-connector.schema.json",
        ".vscode/credentials.schema.json",
        ".vscode/settings.json",
    ]
    assert json.loads(settings.read_text()) == {
        "editor.tabSize": 2,
        "yaml.schemas": {
            "other.json": ["x.yml"],
            ".vscode/generic-connector.schema.json": ["mappings/*.yml", "mappings/*.yaml"],
            ".vscode/credentials.schema.json": ["credentials.yml"],
        },
    }
    written = json.loads((tmp_path / ".vscode/generic-connector.schema.json").read_text())
    assert written == json.loads(SCHEMA_PATH.read_text())
    credentials = json.loads((tmp_path / ".vscode/credentials.schema.json").read_text())
    assert "generic_connector.GenericChannel" in json.dumps(credentials)


def test_settings_with_comments_are_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = tmp_path / ".vscode" / "settings.json"
    settings.parent.mkdir()
    settings.write_text('{\n  // mine\n  "editor.tabSize": 2\n}\n')
    with pytest.raises(SystemExit) as refused:
        main(["schema", "--project"])
    assert refused.value.code == 2
    assert "is not plain JSON (comments?)" in capsys.readouterr().err
    assert "// mine" in settings.read_text()


def test_a_ready_mapping_copied_points_at_the_projects_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["mappings", "telegram", "--copy"]) == 0
    copied = tmp_path / "mappings" / "telegram.yml"
    assert capsys.readouterr().out.strip() == "mappings/telegram.yml"
    lines = copied.read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=../.vscode/generic-connector.schema.json"
    assert (copied.parent / "../.vscode/generic-connector.schema.json").resolve().is_file()
    assert main(["validate", str(copied)]) == 0  # the copy is the ready mapping, cases and all
    with pytest.raises(SystemExit) as refused:  # never overwritten
        main(["mappings", "telegram", "--copy"])
    assert refused.value.code == 2
