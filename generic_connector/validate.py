"""Validation of whole files: credentials files and mapping files, with their test cases.

The channel-level checks are ``config.check_channel``, the same ones ``rasa run`` applies at
start-up; this module finds the channels in a file and runs the mapping test cases.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from generic_connector.config import ChannelConfig, Position, check_channel, load_yaml, locate
from generic_connector.dryrun import CaseError, run_case
from generic_connector.errors import ConfigError, Finding

GENERIC_KEYS = ("generic_connector.GenericChannel",)
GENERIC_PREFIX = "generic_connector.channels."
# Rasa 3.6's own channels (rasa.core.channels.BUILTIN_CHANNELS): a file with such keys is a
# credentials file; their entries are not ours to check.
RASA_CHANNELS = {
    "botframework", "callback", "cmdline", "facebook", "hangouts", "mattermost", "rasa", "rest",
    "rocketchat", "slack", "socketio", "telegram", "twilio", "twilio_voice", "webexteams",
}  # fmt: skip
YAML_SUFFIXES = (".yml", ".yaml")


@dataclass
class FileReport:
    """What validating one file found."""

    file: str
    kind: str = "mapping"
    channels: List[str] = field(default_factory=list)
    env_names: List[str] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)
    tests_passed: int = 0
    tests_failed: int = 0

    @property
    def valid(self) -> bool:
        return not self.findings

    def as_dict(self) -> Dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "valid": self.valid,
            "channels": self.channels,
            "env": self.env_names,
            "tests": {"passed": self.tests_passed, "failed": self.tests_failed},
            "findings": [f.as_dict() for f in self.findings],
        }


def is_generic_key(key: Any) -> bool:
    """Whether a credentials key names a generic channel."""
    return isinstance(key, str) and (key in GENERIC_KEYS or key.startswith(GENERIC_PREFIX))


def expand(paths: List[Path]) -> List[Path]:
    """Files to validate: a folder stands for every YAML file directly in it."""
    files: List[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
        else:
            files.append(path)
    return files


def validate_file(path: Path) -> FileReport:
    """Check a credentials file or a mapping file, and run the test cases it holds."""
    report = FileReport(str(path))
    try:
        document = load_yaml(path)
    except ConfigError as error:
        report.findings = error.findings
        return report
    start: Position = (str(path), 1, 1)
    if document is None:
        report.findings.append(Finding("", "the file is empty", "", *start))
    elif not isinstance(document, dict):
        report.findings.append(
            Finding("", "must be a mapping of keys, not a list or a value", "", *start)
        )
    elif _is_credentials(document):
        report.kind = "credentials"
        for key, entry in document.items():
            if is_generic_key(key):
                origin = document.positions.get(key, start)
                _check(report, entry, key, origin, path.parent)
    else:
        _check(report, document, path.stem, start, path.parent)
    return report


def _is_credentials(document: Dict[str, Any]) -> bool:
    return any(
        is_generic_key(key) or key in RASA_CHANNELS or (isinstance(key, str) and "." in key)
        for key in document
    )


def _check(report: FileReport, entry: Any, label: str, origin: Position, base: Path) -> None:
    config, findings, document = check_channel(entry, label, origin=origin)
    report.findings += findings
    if config is None:
        return
    report.channels.append(config.name)
    report.env_names += config.env_names()
    for finding in _run_cases(config, document, base):
        if finding is None:
            report.tests_passed += 1
        else:
            report.tests_failed += 1
            report.findings.append(finding)


def _run_cases(
    config: ChannelConfig, document: Dict[str, Any], base: Path
) -> Iterator[Optional[Finding]]:
    """None for each passing case, a located finding for each failing one."""
    for index, case in enumerate(document.get("tests", [])):
        path: List[Any] = ["tests", index, "name"]
        where = locate(document, path) or (None, None, None)
        try:
            failures = run_case(config, case, base)
        except CaseError as error:
            failures = [str(error)]
        if not failures:
            yield None
        else:
            key = f"{config.name}.tests[{index}]"
            message = f"test {case['name']!r} failed: " + "; ".join(failures)
            yield Finding(key, message, "", *where)


def summary(reports: List[FileReport]) -> Tuple[int, int, int]:
    """(valid files, invalid files, findings)."""
    invalid = [r for r in reports if not r.valid]
    return len(reports) - len(invalid), len(invalid), sum(len(r.findings) for r in invalid)
