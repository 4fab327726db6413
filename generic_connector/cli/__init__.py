"""The command line: ``generic-connector validate | dry-run | schema | mappings | ...``.

The tooling lives in this sub-package, one module per command or group of commands:
``validate`` (whole files and their test cases), ``dryrun`` (the pipeline with sample
replies), ``deliveries`` (the Redis dead letters), ``onboarding`` with ``capture`` and
``starter`` (``capture`` and ``new``), ``conversations`` (handover: pauses on Redis). The
channel's runtime imports none of it (an import contract in pyproject.toml); what the
commands share with it, such as the start-up checks (``startup``) and the plain words of
findings (``explain``), is in the core modules.
"""

import argparse
import difflib
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from generic_connector import __version__
from generic_connector.cli import editor, onboarding
from generic_connector.cli.dryrun import simulate
from generic_connector.cli.validate import (
    credentials_schema,
    expand,
    is_generic_key,
    summary,
    validate_file,
)
from generic_connector.config import (
    SCHEMA,
    SCHEMA_PATH,
    ChannelConfig,
    check_channel,
    load_yaml,
    ready_mappings,
    resolve_mapping,
    write_schema,
)
from generic_connector.errors import ConfigError, GenericConnectorError
from generic_connector.logtext import printable, printable_json
from generic_connector.request import IncomingRequest

SAMPLE_REPLY = "This is a sample bot reply."

# Exit statuses, the same for every command (docs/operations.md): 0 done; 1 done, and the
# answer is no (a file is invalid, the dry run's request is refused, no such entry...); 2 the
# arguments or the input files cannot be used; 3 the store (Redis) cannot be reached; 141 the
# reader of standard output went away (`| head`), as for a command killed by SIGPIPE.
OK, NO, USAGE, UNREACHABLE, CLOSED_PIPE = 0, 1, 2, 3, 141


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``generic-connector`` console script."""
    try:
        status = _main(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
    except BrokenPipeError:
        _drop_stdout()
        return CLOSED_PIPE
    return status


def _main(argv: List[str]) -> int:
    # What the channel would log, the commands print as findings or in the dry run's result.
    logging.getLogger("generic_connector").addHandler(logging.NullHandler())
    _Parser.json_errors = _asks_json(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    args.command_parser = _chosen(parser, args)
    _Parser.json_errors = getattr(args, "format", None) == "json"
    try:
        return args.run(args)
    except UsageError as error:
        args.command_parser.error(str(error))  # exits 2, with the subcommand's usage
    return USAGE


class UsageError(GenericConnectorError):
    """Arguments that do not make sense together."""


class _Parser(argparse.ArgumentParser):
    """Errors as ``{"error": ...}`` on standard output when the command line asks for
    ``--format json``; else argparse's usage and message on standard error. Exit status 2."""

    json_errors = False  # set by main for the command line it runs

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            print(printable_json({"error": message}))
            self.exit(USAGE)
        super().error(printable(message))


def fail(args: argparse.Namespace, message: str, status: int) -> int:
    """A command's error; returns ``status``. With ``--format json``: ``{"error": message}``
    on standard output; else ``generic-connector <command>: error: message`` on standard
    error, after the command's usage for a usage error (2)."""
    if getattr(args, "format", None) == "json":
        print(printable_json({"error": message}))
        return status
    chosen = getattr(args, "command_parser", None)
    prog = chosen.prog if chosen is not None else "generic-connector"
    if status == USAGE and chosen is not None:
        chosen.print_usage(sys.stderr)
    print(f"{prog}: error: {printable(message)}", file=sys.stderr)
    return status


def _asks_json(argv: List[str]) -> bool:
    """Whether a command line asks for ``--format json`` (before argparse has read it)."""
    pairs = zip(argv, argv[1:])
    return "--format=json" in argv or any(a == "--format" and b == "json" for a, b in pairs)


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that read the command line: ``deliveries list``'s, say."""
    while True:
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, commands[0].dest, None) if commands else None
        if not commands or name not in commands[0].choices:
            return parser
        parser = commands[0].choices[name]


def _drop_stdout() -> None:
    """Standard output went away: what is left in its buffer goes nowhere, without the
    traceback Python prints when it cannot flush at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a file (a test's capture)
        pass


def version() -> str:
    """``generic-connector 0.1.0 (Rasa 3.6.21, Python 3.9.2)``."""
    from importlib import metadata

    try:
        rasa = f"Rasa {metadata.version('rasa')}"
    except metadata.PackageNotFoundError:
        rasa = "Rasa not installed"
    return f"generic-connector {__version__} ({rasa}, Python {platform.python_version()})"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="generic-connector",
        description="Check, try out and look up generic channel mappings for Rasa.",
        epilog="Exit status: 0 done, 1 the answer is no (an invalid file, a refused dry run, "
        "no such entry), 2 usage error, 3 the store cannot be reached, 141 the output closed "
        "early.",
    )
    parser.add_argument("--version", action="version", version=version())
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser(
        "validate",
        help="check credentials and mapping files and run their test cases",
        description="Exit status: 0 all valid, 1 any invalid, 2 usage error.",
    )
    validate.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="files, or folders meaning every YAML file in them "
        "(default: credentials.yml and mappings/ where they exist)",
    )
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.add_argument(
        "--strict", action="store_true", help="warnings make a file invalid too (exit status 1)"
    )
    check_env = validate.add_mutually_exclusive_group()
    check_env.add_argument(
        "--check-env",
        dest="check_env",
        action="store_true",
        default=None,
        help="the environment variables the channels read must be set, as rasa run requires "
        "(default in CI, i.e. when CI is set: on for credentials files)",
    )
    check_env.add_argument(
        "--no-check-env", dest="check_env", action="store_false", help="do not check them"
    )
    validate.set_defaults(run=_validate)

    dry = commands.add_parser(
        "dry-run",
        help="show what a channel would make of a captured request, without Rasa",
        description="Exit status: 0 the channel would answer 1xx-3xx, 1 it would refuse the "
        "request or fail (4xx, 5xx: the result says why), 2 usage error.",
    )
    dry.add_argument("file", type=Path, help="a mapping file or a credentials file")
    dry.add_argument("--channel", help="in a credentials file: the channel's name or key")
    dry.add_argument("--body", type=Path, required=True, help="file with the raw request body")
    dry.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'")
    dry.add_argument("--query", action="append", default=[], metavar="NAME=VALUE")
    dry.add_argument("--method", default="POST", help="the request's method (default POST)")
    dry.add_argument("--path", default="/webhook", help="the path under /webhooks/<name>")
    dry.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="set a variable"
    )
    dry.add_argument(
        "--reply",
        action="append",
        metavar="TEXT",
        help=f"a bot reply to render the response with (default: {SAMPLE_REPLY!r})",
    )
    dry.add_argument(
        "--replies",
        type=Path,
        metavar="FILE",
        help="a JSON or YAML list of bot messages as Rasa gives them (buttons, image, custom...)",
    )
    dry.add_argument(
        "--fetched",
        type=Path,
        metavar="FILE",
        help="a JSON or YAML object: sample answers of request.fetch by name, as a test "
        "case's fetched: gives them",
    )
    dry.set_defaults(run=_dry_run)

    schema = commands.add_parser(
        "schema",
        help="the JSON Schema of mapping files (or of credentials.yml), for editors",
        description="Without options: the path of the mapping schema inside the installed "
        "package. --print writes the schema to standard output, --write FILE to a file (for "
        "an editor set-up that does not depend on where the package is installed).",
    )
    schema.add_argument(
        "--credentials",
        action="store_true",
        help="the schema of credentials.yml, with generic channel entries checked",
    )
    schema.add_argument("--print", action="store_true", help="print the schema itself")
    schema.add_argument(
        "--write",
        nargs="?",
        const=SCHEMA_PATH,
        type=Path,
        metavar="FILE",
        help="write the schema to FILE; without FILE, write the package's own schema.json "
        "anew from the registries (auth schemes, formats, stores, kinds)",
    )
    schema.add_argument(
        "--project",
        nargs="?",
        const=Path("."),
        type=Path,
        metavar="DIR",
        help="write both schemas into DIR/.vscode (default: here) and register them in "
        ".vscode/settings.json, for an editor that works wherever the package is installed",
    )
    schema.set_defaults(run=_schema)

    mappings = commands.add_parser(
        "mappings",
        help="list the ready mappings shipped inside the package",
        description="A credentials entry names one without a path: `mapping: telegram`. "
        "With NAME: the path of that mapping's file, to read or copy.",
    )
    mappings.add_argument("name", nargs="?", help="print the path of this ready mapping")
    mappings.add_argument(
        "--copy",
        nargs="?",
        const=True,
        metavar="FILE",
        help="copy the ready mapping NAME into this project (default mappings/NAME.yml), its "
        "$schema line pointing at .vscode/generic-connector.schema.json (written when missing)",
    )
    mappings.add_argument("--format", choices=("text", "json"), default="text")
    mappings.set_defaults(run=_mappings)

    # Imported here: its Redis client is not needed to import the other commands' modules.
    from generic_connector.cli import conversations, deliveries

    deliveries.add_commands(commands)
    conversations.add_commands(commands)
    onboarding.add_commands(commands)
    # Imported here: it imports this module's helpers (UsageError, _channel_from).
    from generic_connector.cli import playground, setup

    setup.add_command(commands)
    playground.add_command(commands)

    completion = commands.add_parser(
        "completion",
        help='print a shell completion script: eval "$(generic-connector completion bash)"',
        description="Completes the commands, their options and the choices of options, from "
        "this version's own parser; in ~/.bashrc: eval \"$(generic-connector completion "
        'bash)", in ~/.zshrc: eval "$(generic-connector completion zsh)".',
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(run=lambda args: _completion(parser, args.shell))
    return parser


def _completion(parser: argparse.ArgumentParser, shell: str) -> int:
    sys.stdout.write(completion_script(parser, shell))
    return OK


def completion_script(parser: argparse.ArgumentParser, shell: str = "bash") -> str:
    """A bash completion function for the parser's commands, options and option choices;
    for zsh, the same through zsh's bashcompinit."""
    paths: Dict[str, Tuple[List[str], List[str]]] = {}
    choices: Dict[str, List[str]] = {}
    _walk(parser, "", paths, choices)
    known = " | ".join(f'"{path}"' for path in paths if path)
    lines = [
        '# generic-connector completion (bash): eval "$(generic-connector completion bash)"',
        "_generic_connector() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local path="" i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "$path/${COMP_WORDS[i]}" in',
        f'            {known}) path="$path/${{COMP_WORDS[i]}}" ;;',
        "        esac",
        "    done",
        '    local words=""',
        '    case "$path $prev" in',
    ]
    lines += [f'        "{key}") words="{" ".join(values)}" ;;' for key, values in choices.items()]
    lines += [
        "    esac",
        '    if [[ -n "$words" ]]; then',
        '        COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "        return",
        "    fi",
        '    local commands="" options=""',
        '    case "$path" in',
    ]
    for path, (commands, options) in paths.items():
        listed = f'commands="{" ".join(commands)}" options="{" ".join(options)}"'
        lines.append(f'        "{path}") {listed} ;;')
    lines += [
        "    esac",
        '    if [[ "$cur" == -* ]]; then',
        '        COMPREPLY=($(compgen -W "$options" -- "$cur"))',
        '    elif [[ -n "$commands" ]]; then',
        '        COMPREPLY=($(compgen -W "$commands" -- "$cur"))',
        "    fi",
        "}",
        "complete -o default -F _generic_connector generic-connector",
    ]
    script = "\n".join(lines) + "\n"
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def _walk(
    parser: argparse.ArgumentParser,
    path: str,
    paths: Dict[str, Tuple[List[str], List[str]]],
    choices: Dict[str, List[str]],
) -> None:
    """Each command path's subcommands and options, and the choices of its options."""
    commands: List[str] = []
    options: List[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                commands.append(name)
                _walk(subparser, f"{path}/{name}", paths, choices)
            continue
        options += action.option_strings
        if not action.option_strings and action.choices:  # a positional: `completion bash`
            commands += [str(choice) for choice in action.choices]
        elif action.choices and action.nargs != 0:
            for option in action.option_strings:
                choices[f"{path} {option}"] = [str(choice) for choice in action.choices]
    paths[path] = (commands, options)


def _schema(args: argparse.Namespace) -> int:
    if args.project is not None:
        try:
            written = editor.write_project_schemas(args.project, credentials_schema())
        except (editor.EditorError, OSError) as error:
            raise UsageError(str(error)) from None
        for path in written:
            print(path)
        return 0
    document = credentials_schema() if args.credentials else SCHEMA
    if args.write is not None:
        target: Path = args.write
        if target == SCHEMA_PATH:
            if args.credentials:
                raise UsageError("--credentials --write needs a FILE to write to")
            write_schema()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
            target.write_text(text, encoding="utf-8")
        print(target)
        return 0
    if args.print or args.credentials:
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    print(SCHEMA_PATH)
    return 0


def _mappings(args: argparse.Namespace) -> int:
    ready = ready_mappings()
    if args.name is not None:
        name = args.name[:-4] if args.name.endswith(".yml") else args.name
        if name not in ready:
            close = difflib.get_close_matches(name, list(ready), n=1)
            known = f"the ready ones: {', '.join(ready)}"
            known = f"did you mean {close[0]!r}?" if close else known
            raise UsageError(f"no ready mapping {args.name!r}; {known}")
        if args.copy:
            target = Path(f"mappings/{name}.yml") if args.copy is True else Path(args.copy)
            try:
                print(editor.copy_mapping(ready[name], target, Path(".")))
            except (editor.EditorError, OSError) as error:
                raise UsageError(str(error)) from None
            return 0
        print(ready[name])
        return 0
    rows = [_describe_mapping(name, path) for name, path in ready.items()]
    if args.format == "json":
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    width = max((len(row["name"]) for row in rows), default=0)
    for row in rows:
        print(f"{row['name']:<{width}}  {row['description']}")
        env = [", ".join(row["env"])] if row["env"] else []
        env += [f"optional: {', '.join(row['optional_env'])}"] if row["optional_env"] else []
        if env:
            print(f"{'':<{width}}  env: {'; '.join(env)}")
    print(f"{len(rows)} ready mappings; use one with `mapping: <name>` in credentials.yml")
    return 0


def _describe_mapping(name: str, path: Path) -> Dict[str, Any]:
    """A ready mapping's name, description and environment variables."""
    row: Dict[str, Any] = {"name": name, "file": str(path), "description": ""}
    row.update(env=[], optional_env=[])
    try:
        document = load_yaml(path)
    except ConfigError:
        row["description"] = "(not readable)"
        return row
    if isinstance(document, dict):
        row["description"] = str(document.get("description", "")).strip()
    config, _, _ = check_channel(document, name)
    if config is not None:
        row["env"] = config.env_names()
        optional = {n for e in config.expressions() for n in e.optional_env_names}
        row["optional_env"] = sorted(optional - set(row["env"]))
    return row


def _validate(args: argparse.Namespace) -> int:
    paths = args.paths or [p for p in (Path("credentials.yml"), Path("mappings")) if p.exists()]
    if not paths:
        raise UsageError("no paths given, and no credentials.yml or mappings/ here")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    reports = [
        validate_file(path, check_env=args.check_env, strict=args.strict) for path in expand(paths)
    ]
    valid, invalid, findings = summary(reports)
    if args.format == "json":
        print(json.dumps({"valid": not invalid, "files": [r.as_dict() for r in reports]}, indent=2))
    else:
        for report in reports:
            for finding in report.findings:
                print(finding)
            if report.valid:
                passed = report.tests_passed
                cases = "test case passed" if passed == 1 else "test cases passed"
                tests = f", {passed} {cases}" if passed else ""
                channels = ", ".join(report.channels) or "no generic channels"
                env = f"; reads {', '.join(report.env_names)}" if report.env_names else ""
                print(f"{report.file}: ok ({channels}{tests}{env})")
        files = f"{len(reports)} file" + ("" if len(reports) == 1 else "s")
        print(f"{files}: {valid} valid, {invalid} invalid, {findings} findings")
    return 1 if invalid else 0


def _dry_run(args: argparse.Namespace) -> int:
    os.environ.update(_pairs(args.env, "="))
    config = _channel_from(args.file, args.channel)
    try:
        raw = args.body.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {args.body}: {error.strerror}") from None
    request = IncomingRequest.from_parts(
        raw, _pairs(args.header, ":"), _pairs(args.query, "="), args.method, args.path
    )
    replies, fetched = _replies(args), _fetched(args.fetched)
    result = simulate(config, request, replies, fetched=fetched)
    print(printable_json(result, indent=2))
    return NO if result["status"] >= 400 else OK  # the channel refused the request, or failed


def _replies(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """--replies FILE (a list of Rasa bot messages), else --reply texts, else a sample."""
    if args.replies is None:
        return [{"text": text} for text in (args.reply or [SAMPLE_REPLY])]
    try:
        replies = load_yaml(args.replies)  # JSON is YAML too
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if not isinstance(replies, list) or not all(isinstance(r, dict) for r in replies):
        raise UsageError(f"{args.replies} must hold a list of bot messages (objects)")
    return [dict(reply) for reply in replies]


def _fetched(path: Optional[Path]) -> Optional[Dict[str, Any]]:
    """--fetched FILE: the sample answers of ``request.fetch`` by fetch name."""
    if path is None:
        return None
    try:
        answers = load_yaml(path)  # JSON is YAML too
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if not isinstance(answers, dict):
        raise UsageError(f"{path} must hold an object: the sample answers by fetch name")
    return dict(answers)


def _channel_from(path: Path, wanted: Optional[str]) -> ChannelConfig:
    """The one channel of a mapping file, or the chosen generic channel of a credentials file;
    a ready mapping's name (``myio``) names its file, as ``mapping: myio`` does."""
    if not path.exists():
        path = resolve_mapping(str(path), Path.cwd()) or path
    try:
        document = load_yaml(path)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    candidates: List[Tuple[str, object]] = [(path.stem, document)]
    if isinstance(document, dict) and any(is_generic_key(k) for k in document):
        candidates = [(k, v) for k, v in document.items() if is_generic_key(k)]
    for label, entry in candidates:
        config, findings, _ = check_channel(entry, label)
        if wanted in (None, label) or (config and config.name == wanted):
            if config is None:
                raise UsageError(f"{path} is not valid:\n" + "\n".join(map(str, findings)))
            return config
    raise UsageError(f"no generic channel {wanted!r} in {path}")


def _pairs(items: List[str], separator: str) -> dict:
    pairs = {}
    for item in items:
        name, found, value = item.partition(separator)
        if not found:
            raise UsageError(f"expected NAME{separator}VALUE, got {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs
