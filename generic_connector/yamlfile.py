"""YAML files read with the position of every key, so findings can say file:line:column."""

from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

import yaml

from generic_connector.errors import ConfigError, Finding

# (file, line, column); None where not known (an entry given as a dict, not read from a file).
Position = Tuple[Optional[str], Optional[int], Optional[int]]


class LocatedDict(dict):
    """A YAML mapping that remembers where each of its keys was written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positions: Dict[Any, Position] = {}


class _LocatingLoader(yaml.SafeLoader):
    file: Optional[str] = None


def _construct_mapping(loader: _LocatingLoader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        mark = key_node.start_mark
        result.positions[key] = (loader.file, mark.line + 1, mark.column + 1)
    return result


_LocatingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> Any:
    """Load a YAML file keeping key positions; raise ConfigError with a finding if unreadable."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        message = f"cannot read file: {error.strerror}"
        raise ConfigError([Finding("unreadable-file", "", message, file=file)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        message = "not a text file (not UTF-8)"
        raise ConfigError([Finding("unreadable-file", "", message, file=file)]) from None
    loader = _LocatingLoader(text)
    loader.file = file
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            [
                Finding(
                    "invalid-yaml",
                    "",
                    f"not valid YAML: {problem}",
                    file=file,
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                )
            ]
        ) from None
    finally:
        loader.dispose()


def locate(document: Any, path: Iterable[Any]) -> Optional[Position]:
    """The position of the deepest key along ``path`` that the document knows."""
    found = None
    node = document
    for key in path:
        if not isinstance(node, (dict, list)):
            break
        if isinstance(node, dict):
            if key not in node:
                break
            found = getattr(node, "positions", {}).get(key, found)
        elif not (isinstance(key, int) and key < len(node)):
            break
        node = node[key]
    return found
