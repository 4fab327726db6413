"""What a channel is built with at ``rasa run`` start-up: ``load_startup_channel`` applies
the checks ``generic-connector validate`` applies (``config.check_channel``), in the same
words, as far as one credentials entry and the command line show them.

It and the channel import nothing of the tooling (``generic_connector.cli``: the dry run, the
test cases, the commands); ``cli.validate`` uses these names.
"""

import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import yaml

from generic_connector.config import ChannelConfig, Position, check_channel, environment_problems
from generic_connector.errors import ConfigError, Finding
from generic_connector.explain import explain_findings

# Rasa 3.6's own channels (rasa.core.channels.BUILTIN_CHANNELS, held to it by a test): a file
# with such keys is a credentials file; their entries are not ours to check, but a generic
# channel must not take the name (the URL /webhooks/<name>/) of one in the same file.
RASA_CHANNELS = {
    "botframework", "callback", "cmdline", "facebook", "hangouts", "mattermost", "rasa", "rest",
    "rocketchat", "slack", "socketio", "telegram", "twilio", "twilio_voice", "webexteams",
}  # fmt: skip
# Where `rasa run` reads credentials when --credentials names no file
# (rasa.shared.constants.DEFAULT_CREDENTIALS_PATH).
DEFAULT_CREDENTIALS = "credentials.yml"


def env_findings(config: ChannelConfig, origin: Position = (None, None, None)) -> List[Finding]:
    """One finding per environment variable the channel reads that is not set, then empty
    secrets and secrets the auth scheme cannot use: what stops ``rasa run`` at start-up."""
    hint = "the mapping reads it; set it before rasa run starts"
    findings = []
    for name in config.env_names():
        if name not in os.environ:
            message = f"environment variable {name} is not set"
            findings.append(Finding("missing-env", config.name, message, hint, *origin))
    for code, message, problem_hint in environment_problems(config):
        if code != "missing-env":  # said above, one by one
            findings.append(Finding(code, config.name, message, problem_hint, *origin))
    return findings


# --- Names: what tells generic channels apart ---------------------------------------------


def route_key(name: str) -> str:
    """What tells generic channels apart in Rasa's web server: GenericChannel names its
    blueprint after the channel name with every non-word character read as '_'."""
    return re.sub(r"\W", "_", name)


def duplicate_name(name: str, other: str) -> Tuple[str, str]:
    """(message, hint) for a generic channel whose name another one already has."""
    if name == other:
        message = f"two generic channels are named '{name}'"
    else:
        message = f"generic channels '{other}' and '{name}' cannot run side by side"
    hint = "each generic channel needs a name of its own: it is its URL /webhooks/<name>/"
    if name != other:
        hint = "Rasa's web server tells them apart by the name with '-' read as '_': rename one"
    return message, hint


def rasa_channel_clash(name: str) -> Tuple[str, str]:
    """(message, hint) for a generic channel named like Rasa's own channel in the same file."""
    message = f"generic channel '{name}' takes the name of Rasa's own {name}: channel in this file"
    hint = (
        f"both would serve /webhooks/{name}/: rename the generic channel (name: my-{name}) "
        f"or remove the {name}: entry"
    )
    return message, hint


# --- At rasa run start-up -----------------------------------------------------------------

# Generic channels built in this process, by route_key: Rasa builds each from its own entry and
# registers them all afterwards, where a second one of a name would fail with a traceback.
_STARTED: Dict[str, str] = {}


def load_startup_channel(
    credentials: Any, label: str = "generic channel", argv: Optional[Sequence[str]] = None
) -> ChannelConfig:
    """Validate and compile a channel at ``rasa run`` start-up (``from_credentials``).

    Raises ConfigError with the findings ``generic-connector validate`` words the same way:
    the entry's own problems, unset environment variables, a name another generic channel of
    this process already has, and a name Rasa's own channel in the credentials file on the
    command line (``argv``, default ``sys.argv[1:]``) also has.
    """
    config, findings, document = check_channel(credentials, label)
    findings = explain_findings(findings, document, label)
    if config is not None:
        findings += env_findings(config) + startup_clashes(config.name, argv)
    if config is None or findings:
        raise ConfigError(findings)
    _STARTED[route_key(config.name)] = config.name
    return config


def startup_clashes(name: str, argv: Optional[Sequence[str]] = None) -> List[Finding]:
    """A generic channel's name taken by another of this process, or by Rasa's own channel in
    the credentials file ``rasa run`` was started with."""
    findings = []
    other = _STARTED.get(route_key(name))
    if other is not None:
        findings.append(Finding("duplicate-name", name, *duplicate_name(name, other)))
    if name in RASA_CHANNELS:
        file = credentials_on_command_line(argv)
        if file is not None and name in _keys_of(file):
            clash = rasa_channel_clash(name)
            findings.append(Finding("rasa-channel-clash", name, *clash, file=str(file)))
    return findings


def forget_started_channels() -> None:
    """Forget the generic channels built in this process (for tests that build several)."""
    _STARTED.clear()


def credentials_on_command_line(argv: Optional[Sequence[str]] = None) -> Optional[Path]:
    """The credentials file of ``rasa run [--credentials FILE]``, as Rasa picks it: the file
    given when it exists, else credentials.yml when it exists. None for other commands."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "run" or args[1:2] == ["actions"]:
        return None
    given = None
    for index, arg in enumerate(args):
        option, equals, value = arg.partition("=")
        if len(option) > 4 and "--credentials".startswith(option):  # argparse takes prefixes
            given = value if equals else (args[index + 1] if index + 1 < len(args) else None)
    for candidate in (given, DEFAULT_CREDENTIALS):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _keys_of(file: Path) -> Set[str]:
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return set()
    return {k for k in document if isinstance(k, str)} if isinstance(document, dict) else set()
