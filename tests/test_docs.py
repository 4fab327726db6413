"""The documentation: README.md stays short, the site in docs/ builds with ``mkdocs --strict``,
and every example in README.md, docs/*.md and bench/README.md works, so that none goes stale.

Each page is checked in a scratch project of its own (``project``): a copy of ``mappings/``
and ``credentials.yml``, plus the files the pages' commands name (``my_mapping.yml``, a
payload as ``captured/0001-post-webhooks-myplatform-webhook.json``), ``.venv/bin`` pointing at
this interpreter's bin directory. In a page, in order:

```yaml blocks (``check_yaml``) must parse as YAML. A block whose first line is a path comment
(``# mappings/shop.yml``) is also written to that path of the project, for the blocks and
commands after it. Then, by the HTML comment on the line before the block, or else by content:

- ``<!-- docs-test: not-a-channel -->``: parsed only (``endpoints.yml``, Helm ``values.yaml``);
- ``<!-- docs-test: over mappings/myio.yml -->``: a fragment whose top-level keys replace
  those of that mapping file, validated as the credentials entry ``{mapping: <file>, ...}``;
- a ``generic_connector.*`` key: a credentials file; ``name`` and ``request``: a mapping file;
- anything else is a fragment of a mapping (``auth:``, ``response:``, ``request:`` alone...):
  its top-level keys over the minimal channel ``WRAPPER``, validated as a mapping file.

Validation is the project's own (``generic_connector.cli.validate.validate_file``), test cases
included, without requiring environment variables.

```json blocks must parse as JSON. ```bash blocks (``check_bash``): each command (lines joined
at a trailing backslash) is run when its program is in ``OFFLINE`` (``generic-connector`` in
process, through its entry point ``main``; ``echo`` with bash), and must exit 0, or N when its
comment says ``# exit status N``. Programs in ``SKIPPED`` need a server, a platform, Docker or
a network and are not run; any other program fails the test, so that a new kind of command is
a decision. A ``...`` argument is a placeholder: that command is not run. ``/tmp/`` in a
command is the project's own ``tmp/``. No other language of code block is allowed, so that a
```yml block cannot slip past.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml

from generic_connector.cli import main
from generic_connector.cli.validate import is_generic_key, validate_file

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")])
PAGES += sorted((ROOT / "docs" / "platforms").glob("*.md"))  # one page per ready mapping
README_MAX_LINES = 200

LANGUAGES = {"", "yaml", "bash", "json"}
MARKER = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
PATH_COMMENT = re.compile(r"#\s*([\w./-]+\.ya?ml)\s*$")
EXIT_STATUS = re.compile(r"#.*\bexit status (\d+)")
# The channel a fragment of a mapping is completed with.
WRAPPER: Dict[str, Any] = {"name": "docs", "request": {"sender": "sender", "text": "text"}}

# generic-connector subcommands that work offline, and those that need a platform or Redis.
OFFLINE_SUBCOMMANDS = {"validate", "dry-run", "mappings", "schema", "new", "explain", "--version"}
OFFLINE_SUBCOMMANDS.add("setup")  # with --dry-run; without it, it calls a platform
ONLINE_SUBCOMMANDS = {
    "capture": "serves HTTP and waits for a platform's requests",
    "playground": "serves the playground page until stopped",
    "deliveries": "reads the dead-letter stream in Redis",
    "conversations": "pauses and resumes conversations in Redis",
}
SHELL_PROGRAMS = {"echo"}
SKIPPED = {
    "make": "sets up, trains, serves or benchmarks (make test runs this suite)",
    "rasa": "serves an assistant",
    "curl": "needs a running server",
    "docker": "needs a Docker engine",
    "pip": "installs into an environment",
    "git": "changes checkouts",
}


@dataclass
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    marker: Optional[str]  # the docs-test comment on the line before the fence


def blocks(text: str) -> List[Block]:
    """The fenced code blocks of a Markdown text, indented ones (in list items) dedented."""
    found = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^(\s*)```(\S*)\s*$", lines[index])
        if not opening:
            index += 1
            continue
        indent, language = opening.groups()
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"line {index + 1}: a code block that is never closed"
        code = "\n".join(line[len(indent) :] for line in lines[index + 1 : end]) + "\n"
        before = [line for line in lines[:index] if line.strip()]
        marker = MARKER.search(before[-1]) if before else None
        found.append(Block(language, code, index + 1, marker.group(1) if marker else None))
        index = end + 1
    return found


def make_project(where: Path) -> Path:
    """A scratch project holding what the pages' commands and examples name."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "mappings", where / "mappings")
    shutil.copy(ROOT / "credentials.yml", where / "credentials.yml")
    shutil.copy(ROOT / "mappings" / "myio.yml", where / "my_mapping.yml")
    (where / "captured").mkdir()
    payload = ROOT / "tests" / "payloads" / "telegram" / "message.json"
    shutil.copy(payload, where / "captured" / "0001-post-webhooks-myplatform-webhook.json")
    (where / ".venv").mkdir()
    (where / ".venv" / "bin").symlink_to(BIN)
    (where / "tmp").mkdir()
    return where


def validate_text(project: Path, document: Dict[str, Any]) -> List[str]:
    path = project / "docs-example.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    report = validate_file(path, check_env=False)
    return [str(finding) for finding in report.findings]


def check_yaml(block: Block, project: Path) -> List[str]:
    try:
        document = yaml.safe_load(block.code)
    except yaml.YAMLError as error:
        return [f"not valid YAML: {error}"]
    first = block.code.splitlines()[0] if block.code.strip() else ""
    written = PATH_COMMENT.fullmatch(first.strip())
    if written:
        target = project / written.group(1)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code)
    if block.marker == "not-a-channel":
        return []
    if not isinstance(document, dict):
        return ["not a mapping of keys (if meant so, mark it <!-- docs-test: not-a-channel -->)"]
    if block.marker is not None:
        over = re.fullmatch(r"over (\S+)", block.marker)
        if not over:
            return [f"unknown marker <!-- docs-test: {block.marker} -->"]
        entry = {"mapping": over.group(1), **document}
        return validate_text(project, {"generic_connector.GenericChannel": entry})
    if any(is_generic_key(key) for key in document):
        return validate_text(project, document)
    if "name" in document and "request" in document:
        return validate_text(project, document)
    return validate_text(project, {**WRAPPER, **document})


def commands(code: str) -> List[str]:
    """The commands of a bash block: continuation lines joined, comment-only lines left out."""
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = [line.strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def check_command(command: str, project: Path, capsys: pytest.CaptureFixture) -> List[str]:
    command = command.replace("/tmp/", f"{project}/tmp/")
    status = EXIT_STATUS.search(command)
    expected = int(status.group(1)) if status else 0
    words = shlex.split(command, comments=True)
    if "..." in words:
        return []  # a placeholder, not a command
    program = os.path.basename(words[0])
    if words[:3] == ["python", "-m", "generic_connector"]:
        program, words = "generic-connector", words[2:]
    if program == "generic-connector":
        subcommand = words[1] if len(words) > 1 else ""
        if subcommand in ONLINE_SUBCOMMANDS:
            return []
        if subcommand == "setup" and "--dry-run" not in words:
            return []  # registers the webhook with the platform
        if subcommand not in OFFLINE_SUBCOMMANDS:
            return [f"{command}: unknown generic-connector subcommand (list it in the test)"]
        capsys.readouterr()
        try:
            code = main(words[1:])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out = capsys.readouterr()
        if code != expected:
            return [f"{command}: exit status {code}, expected {expected}\n{out.out}{out.err}"]
        return []
    if program in SHELL_PROGRAMS:
        result = subprocess.run(
            ["bash", "-c", command], cwd=project, capture_output=True, text=True
        )
        if result.returncode != expected:
            code = result.returncode
            return [f"{command}: exit status {code}, expected {expected}\n{result.stderr}"]
        return []
    if program in SKIPPED:
        return []
    return [f"{command}: {program} is neither run nor skipped by tests/test_docs.py (add it)"]


def check_page(text: str, project: Path, capsys: pytest.CaptureFixture) -> List[str]:
    """Every problem of a page's code blocks, each prefixed with the block's line."""
    problems = []
    for block in blocks(text):
        found: List[str] = []
        if block.language not in LANGUAGES:
            found = [f"```{block.language}: not a language these checks know"]
        elif block.language == "yaml":
            found = check_yaml(block, project)
        elif block.language == "json":
            try:
                json.loads(block.code)
            except ValueError as error:
                found = [f"not valid JSON: {error}"]
        elif block.language == "bash":
            found = [p for c in commands(block.code) for p in check_command(c, project, capsys)]
        problems += [f"line {block.line}: {problem}" for problem in found]
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_of_the_page_works(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    problems = check_page(page.read_text(encoding="utf-8"), project, capsys)
    assert not problems, "\n".join(problems)


def test_the_checks_find_broken_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Each kind of stale example is reported: the page tests can fail."""
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    page = """
```yaml
request: {sender: a..b, text: t}
```

```yaml
respones: {body: messages}
```

```yaml
generic_connector.channels.x:
  mapping: mappings/nowhere.yml
```

<!-- docs-test: over mappings/myio.yml -->
```yaml
tests:
  - name: wrong
    body: {"sender": "u", "message": "hi"}
    expect: {sender: someone-else}
```

```yaml
key: [unclosed
```

```yml
name: x
```

```json
{"a": 1,}
```

```bash
generic-connector validate nowhere.yml
generic-connector dry-run mappings/myio.yml --body /tmp/missing.json
generic-connector validate credentials.yml  # exit status 1
frobnicate --all
```
"""
    problems = check_page(page, project, capsys)
    expected = [
        "line 2: ",  # an expression that does not compile
        "line 6: ",  # an unknown key
        "line 10: ",  # a mapping file that does not exist
        "line 16: ",  # a failing test case
        "line 23: not valid YAML",
        "line 27: ",  # an unknown language
        "line 31: not valid JSON",
        "line 35: generic-connector validate nowhere.yml: exit status 2",
        "line 35: generic-connector dry-run",
        "line 35: generic-connector validate credentials.yml  # exit status 1: exit status 0",
        "line 35: frobnicate --all: frobnicate is neither run nor skipped",
    ]
    for start in expected:
        assert any(problem.startswith(start) for problem in problems), (start, problems)
    assert len(problems) >= len(expected), problems


@pytest.mark.e2e  # mkdocs in a process of its own; `make lint` builds the site too
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """Broken links and #anchors, and pages missing from the nav, fail the build."""
    mkdocs = BIN / "mkdocs"
    assert mkdocs.exists(), "mkdocs is not installed: scripts/setup.sh installs the docs extra"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "security" / "index.html").exists()


def test_the_readme_is_short_shows_the_test_command_and_links_to_what_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "make test" in readme  # CI (.ci/run) runs the README's test command
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links to the documentation pages"
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_every_docs_page_is_in_the_site() -> None:
    def pages(entries: List[Dict[str, Any]]) -> List[str]:  # a section holds a list of pages
        found: List[str] = []
        for value in (v for entry in entries for v in entry.values()):
            found += pages(value) if isinstance(value, list) else [value]
        return found

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    docs = ROOT / "docs"
    assert set(pages(nav)) == {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")}
