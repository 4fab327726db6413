"""Editor support for a project: the schemas where the project's own files point, so that
completion and checks work wherever the package is installed.

``generic-connector schema --project [DIR]`` writes ``.vscode/generic-connector.schema.json``
(mapping files) and ``.vscode/credentials.schema.json`` (``credentials.yml``) into DIR and
adds them to ``yaml.schemas`` in ``.vscode/settings.json`` (the YAML extension's setting),
leaving every other setting as it was. ``generic-connector mappings NAME --copy [FILE]``
copies a ready mapping into the project with its ``$schema`` line pointing at that schema.
"""

import json
import os
from pathlib import Path
from typing import Any, Dict, List

from generic_connector.config import SCHEMA
from generic_connector.errors import GenericConnectorError

FOLDER = ".vscode"
MAPPING_SCHEMA = "generic-connector.schema.json"
CREDENTIALS_SCHEMA = "credentials.schema.json"
MODELINE = "# yaml-language-server: $schema="


class EditorError(GenericConnectorError, ValueError):
    """A project file that cannot be read or written; the message says which and why."""


def write_project_schemas(project: Path, credentials: Dict[str, Any]) -> List[Path]:
    """Write both schemas into ``project/.vscode`` and register them; the files written."""
    folder = project / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in ((MAPPING_SCHEMA, SCHEMA), (CREDENTIALS_SCHEMA, credentials)):
        path = folder / name
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")
        written.append(path)
    settings_path = folder / "settings.json"
    settings: Dict[str, Any] = {}
    if settings_path.exists():
        try:
            settings = json.loads(settings_path.read_text("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise EditorError(
                f"{settings_path} is not plain JSON (comments?): add the schemas to "
                f'"yaml.schemas" by hand: "{FOLDER}/{MAPPING_SCHEMA}": ["mappings/*.yml"]'
            ) from None
        if not isinstance(settings, dict):
            raise EditorError(f"{settings_path} does not hold a JSON object")
    schemas = settings.setdefault("yaml.schemas", {})
    if not isinstance(schemas, dict):
        raise EditorError(f'{settings_path}: "yaml.schemas" is not an object')
    schemas[f"{FOLDER}/{MAPPING_SCHEMA}"] = ["mappings/*.yml", "mappings/*.yaml"]
    schemas[f"{FOLDER}/{CREDENTIALS_SCHEMA}"] = ["credentials.yml"]
    settings_path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", "utf-8")
    written.append(settings_path)
    return written


def copy_mapping(source: Path, target: Path, project: Path) -> Path:
    """Copy a ready mapping to ``target`` with its ``$schema`` line pointing at the project's
    schema (written there when missing)."""
    if target.exists():
        raise EditorError(f"{target} exists; give another file, or remove it first")
    schema = project / FOLDER / MAPPING_SCHEMA
    if not schema.exists():
        schema.parent.mkdir(parents=True, exist_ok=True)
        schema.write_text(json.dumps(SCHEMA, indent=2, ensure_ascii=False) + "\n", "utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    reference = os.path.relpath(schema.resolve(), target.resolve().parent)
    lines = source.read_text("utf-8").splitlines(keepends=True)
    modeline = f"{MODELINE}{Path(reference).as_posix()}\n"
    if lines and lines[0].startswith(MODELINE):
        lines[0] = modeline
    else:
        lines.insert(0, modeline)
    target.write_text("".join(lines), "utf-8")
    return target
