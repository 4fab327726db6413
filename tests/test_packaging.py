"""The package as a Rasa team installs and runs it: metadata, the wheel and the sdist, the
ready mappings inside the package, the schemas, the container's entry point and health check,
and (end-to-end) a built wheel in a fresh virtualenv beside Rasa answering through rasa run."""

import ast
import functools
import http.server
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import jsonschema
import pytest
import yaml

import generic_connector
from generic_connector.cli import main
from generic_connector.config import SCHEMA, SCHEMA_PATH, check_channel, ready_mappings
from tests.rasa_process import ENV, ROOT, free_port, request

try:
    import tomllib  # type: ignore[import-not-found]
except ImportError:  # Python < 3.11: tomli, or the copy setuptools vendors
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        from setuptools._vendor import tomli as tomllib  # type: ignore[no-redef]

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
BIN = Path(sys.executable).parent
UV = shutil.which("uv")
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
# The console script generic-connector-healthcheck (pyproject.toml), run from this checkout.
HEALTHCHECK = [sys.executable, "-m", "generic_connector.healthcheck"]


def run(capsys: pytest.CaptureFixture, *args: str) -> Tuple[int, List[str]]:
    code = main(list(args))
    return code, capsys.readouterr().out.splitlines()


# --- Metadata -----------------------------------------------------------------------------


# The console script and `python -m generic_connector`, each a process of its own that
# imports every command (~1.5 s): the e2e tier, with the other tests of real processes.
@pytest.mark.e2e
def test_version_everywhere() -> None:
    version = generic_connector.__version__
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "generic_connector.__version__"
    }
    for command in ([str(BIN / "generic-connector")], [sys.executable, "-m", "generic_connector"]):
        result = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, check=True, cwd=ROOT
        )
        assert result.stdout.startswith(f"generic-connector {version} (Rasa 3.6."), result.stdout


def test_pep_621_metadata() -> None:
    assert PROJECT["license"] == "Apache-2.0"  # an SPDX expression, not the deprecated table
    assert PROJECT["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "version" in PROJECT["dynamic"]
    classifiers = PROJECT["classifiers"]
    # Claimed: the Python the tests run on, and only it.
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    claimed = [
        c.rsplit(" ", 1)[-1]
        for c in classifiers
        if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert claimed == [running]
    assert PROJECT["requires-python"] == f">={running},<3.{sys.version_info[1] + 1}"
    assert "Typing :: Typed" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the expression says it
    # No URL that leads nowhere: only pages that exist.
    assert set(PROJECT["urls"]) == {"Rasa custom connectors"}
    assert (ROOT / "generic_connector" / "py.typed").is_file()
    assert generic_connector.__version__ in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_every_package_is_listed() -> None:
    """The package list is explicit (for the mappings' own package): nothing may be left out."""
    found = {"generic_connector.mappings"}
    for init in (ROOT / "generic_connector").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == found


def test_every_core_module_is_kept_from_the_tooling() -> None:
    """The import contract "Nothing outside cli imports cli" names its sources one by one:
    every module and sub-package beside cli/ must be among them."""
    (contract,) = [
        c
        for c in PYPROJECT["tool"]["importlinter"]["contracts"]
        if c["name"] == "Nothing outside cli imports cli"
    ]
    package = ROOT / "generic_connector"
    entries = {p.stem for p in package.glob("*.py")} | {
        p.parent.name for p in package.glob("*/__init__.py")
    }
    core = {f"generic_connector.{name}" for name in entries - {"__init__", "__main__", "cli"}}
    sources = set(contract["source_modules"])
    assert core <= sources
    assert not [s for s in sources if s.startswith("generic_connector.cli")]
    assert contract["forbidden_modules"] == ["generic_connector.cli"]


def _imports() -> Set[str]:
    names: Set[str] = set()
    for path in (ROOT / "generic_connector").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - {"generic_connector", "__future__"}


def _is_stdlib(name: str) -> bool:
    if name in sys.builtin_module_names:
        return True
    spec = importlib.util.find_spec(name)
    origin = spec and (spec.origin or next(iter(spec.submodule_search_locations or []), None))
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    return bool(origin) and "site-packages" not in origin and stdlib in Path(origin).parents


def _distributions() -> Dict[str, str]:
    """Top-level module -> distribution name (lower case), from the installed metadata."""
    from importlib import metadata

    owners: Dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower()
        top = (dist.read_text("top_level.txt") or "").split()
        top += [f.parts[0].split(".")[0] for f in dist.files or [] if f.parts and len(f.parts) > 1]
        for module in top:
            owners.setdefault(module, name)
    return owners


def test_dependencies_match_every_import() -> None:
    third_party = {name for name in _imports() if not _is_stdlib(name)}
    owners = _distributions()
    needed = {owners[name] for name in third_party}
    declared = {
        dependency.split(">")[0].split("<")[0].split("[")[0].split("=")[0].strip().lower()
        for dependency in PROJECT["dependencies"]
    }
    assert needed <= declared, f"imported but not declared: {needed - declared}"
    assert declared - needed <= {"cryptography"}, f"declared, not imported: {declared - needed}"


# --- Ready mappings -----------------------------------------------------------------------


def test_ready_mappings_are_the_files_of_mappings() -> None:
    assert set(ready_mappings()) == {p.stem for p in (ROOT / "mappings").glob("*.yml")}


def test_mappings_command(capsys: pytest.CaptureFixture) -> None:
    code, out = run(capsys, "mappings")
    assert code == 0
    names = [line.split()[0] for line in out if line and not line.startswith(" ")]
    assert names[:-1] == sorted(ready_mappings())
    telegram = out.index(next(line for line in out if line.startswith("telegram ")))
    assert out[telegram + 1].split() == [
        "env:", "TELEGRAM_BOT_TOKEN,", "TELEGRAM_SECRET_TOKEN;", "optional:", "TELEGRAM_API_URL"
    ]  # fmt: skip
    assert run(capsys, "mappings", "telegram") == (0, [str(ready_mappings()["telegram"])])
    code, out = run(capsys, "mappings", "--format", "json")
    rows = {row["name"]: row for row in json.loads("\n".join(out))}
    assert rows["myio"]["env"] == [] and rows["twilio"]["env"] == [
        "TWILIO_AUTH_TOKEN",
        "TWILIO_WEBHOOK_URL",
    ]
    with pytest.raises(SystemExit) as raised:
        main(["mappings", "telgram"])
    assert raised.value.code == 2
    assert "did you mean 'telegram'?" in capsys.readouterr().err


def test_a_ready_mapping_named_without_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no mappings/ here, as in a project that installed the package
    for reference in ("telegram", "telegram.yml"):
        config, findings, _ = check_channel({"mapping": reference})
        assert findings == [] and config is not None and config.name == "telegram"
    # Keys beside it replace the mapping's.
    config, _, _ = check_channel({"mapping": "myio", "name": "shop"})
    assert config is not None and config.name == "shop"


def test_a_file_of_that_name_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("telegram").write_text("name: mine\nrequest: {sender: a, text: b}\n")
    config, _, _ = check_channel({"mapping": "telegram"})
    assert config is not None and config.name == "mine"


def test_unknown_ready_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _, [finding], _ = check_channel({"mapping": "telgram"})
    assert (finding.message, finding.hint) == (
        "no mapping file 'telgram' here and no ready mapping 'telgram'",
        "did you mean 'telegram'? `generic-connector mappings` lists the ready ones",
    )
    _, [finding], _ = check_channel({"mapping": "mappings/telegram.yml"})
    assert finding.hint == (
        "relative paths start from the directory rasa run is started in; the ready mapping "
        "ships inside the package: mapping: telegram"
    )


# --- Schemas ------------------------------------------------------------------------------


def test_schema_commands(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert run(capsys, "schema") == (0, [str(SCHEMA_PATH)])
    code, out = run(capsys, "schema", "--print")
    assert json.loads("\n".join(out)) == SCHEMA
    target = tmp_path / ".vscode" / "generic-connector.schema.json"
    assert run(capsys, "schema", "--write", str(target)) == (0, [str(target)])
    assert json.loads(target.read_text(encoding="utf-8")) == SCHEMA
    with pytest.raises(SystemExit):
        main(["schema", "--credentials", "--write"])


def credentials_validator(capsys: pytest.CaptureFixture, tmp_path: Path) -> Any:
    target = tmp_path / "credentials.schema.json"
    assert run(capsys, "schema", "--credentials", "--write", str(target))[0] == 0
    schema = json.loads(target.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_credentials_schema(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    validator = credentials_validator(capsys, tmp_path)
    repository = yaml.safe_load((ROOT / "credentials.yml").read_text(encoding="utf-8"))
    assert list(validator.iter_errors(repository)) == []
    fine = {
        "rest": None,
        "slack": {"slack_token": "xoxb"},
        "generic_connector.channels.tg": {"mapping": "telegram"},
    }
    assert list(validator.iter_errors(fine)) == []
    for wrong in (
        {"generic_connector.channel.shop": {"mapping": "telegram"}},  # misspelt key
        {"generic_connector.channels.a.b": {"mapping": "telegram"}},  # a label with a dot
        {"generic_connector.channels.tg": {"name": "tg"}},  # neither a mapping nor a request
        {"generic_connector.channels.tg": {"mapping": "telegram", "respones": {}}},
        {"generic_connector.channels.tg": {"name": "t", "request": {"sender": "a"}}},
    ):
        assert list(validator.iter_errors(wrong)), wrong


# --- The wheel and the sdist --------------------------------------------------------------


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """``uv build``: the sdist, and the wheel built from it."""
    if UV is None:
        pytest.skip("uv is not installed")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [UV, "build", "--out-dir", str(out), str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deprecat" not in result.stderr.lower(), result.stderr[-3000:]
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


# The package is built by `uv build` in a process of its own (~4 s): the e2e tier.
@pytest.mark.e2e
def test_wheel_contents(built: Dict[str, Path]) -> None:
    version = generic_connector.__version__
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"generic_connector-{version}.dist-info/METADATA").decode()
    assert f"generic_connector-{version}.dist-info/licenses/LICENSE" in names
    assert {"generic_connector/py.typed", "generic_connector/schema.json"} <= names
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("generic_connector/mappings/")}
    assert shipped == {p.name for p in (ROOT / "mappings").glob("*.yml")}
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Python: <3.10,>=3.9" in metadata  # the Python the tests run on
    assert not [n for n in names if n.startswith("tests/")]
    # The image's HEALTHCHECK and Kubernetes exec probes run the installed command.
    with zipfile.ZipFile(built["wheel"]) as wheel:
        scripts = wheel.read(f"generic_connector-{version}.dist-info/entry_points.txt").decode()
    assert "generic-connector-healthcheck = generic_connector.healthcheck:main" in scripts
    assert "generic_connector/healthcheck.py" in names


@pytest.mark.e2e
def test_sdist_carries_what_its_tests_need(built: Dict[str, Path]) -> None:
    with tarfile.open(built["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    needed = {
        "LICENSE", "CHANGELOG.md", "README.md", "Makefile", "credentials.yml", "Dockerfile",
        "docker-compose.yml", "docker/entrypoint.sh", "docker/credentials.yml",
        "tests/conftest.py", "tests/__init__.py", "tests/rasa_process.py", "tests/signing.py",
        "tests/platform_api.py", "demo/domain.yml", "demo/config.yml", "scripts/setup.sh",
    }  # fmt: skip
    assert needed <= names, needed - names
    for folder in ("tests/payloads", "tests/jmespath_compliance", "mappings"):
        in_repo = {str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*") if p.is_file()}
        assert in_repo - names == set(), folder
    assert not [n for n in names if "__pycache__" in n or n.startswith("demo/models")]


@pytest.mark.e2e  # and a whole pytest run in a process of its own
def test_sdist_tests_run(built: Dict[str, Path], tmp_path: Path) -> None:
    """Unpacked, the sdist's own tests pass against its own code."""
    with tarfile.open(built["sdist"]) as sdist:
        sdist.extractall(tmp_path)
    [unpacked] = tmp_path.glob("generic_connector-*")
    env = {**ENV, "PYTHONPATH": str(unpacked), "CI": ""}
    where = subprocess.run(
        [sys.executable, "-c", "import generic_connector; print(generic_connector.__file__)"],
        cwd=unpacked, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).parent.parent == unpacked
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not e2e",
         "tests/test_config.py", "tests/test_mapping.py", "tests/test_validate_mistakes.py"],
        cwd=unpacked, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout


# --- The container's entry point and health check, outside a container -------------------

FAKE_RASA = """#!/bin/sh
echo "rasa $*"
"""


@pytest.fixture
def fake_rasa(tmp_path: Path) -> Dict[str, str]:
    """PATH with a stand-in `rasa` that prints its arguments, and the real generic-connector."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rasa").write_text(FAKE_RASA)
    (bin_dir / "rasa").chmod(0o755)
    (bin_dir / "generic-connector").symlink_to(BIN / "generic-connector")
    env = {k: v for k, v in ENV.items() if k not in ("RASA_AUTH_TOKEN", "RASA_TOKEN")}
    return {**env, "PATH": f"{bin_dir}:/usr/bin:/bin", "CI": ""}


def entrypoint(cwd: Path, env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.e2e  # the real generic-connector validate, in a process of its own
def test_entrypoint_checks_credentials_then_runs_rasa(
    tmp_path: Path, fake_rasa: Dict[str, str]
) -> None:
    (tmp_path / "credentials.yml").write_text(
        "rest:\ngeneric_connector.GenericChannel:\n  mapping: myio\n"
    )
    result = entrypoint(tmp_path, fake_rasa, "run", "--enable-api", "--port", "5005")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "credentials.yml: ok (myio)",
        "1 file: 1 valid, 0 invalid, 0 findings",
        "rasa run --enable-api --port 5005",
    ]


@pytest.mark.e2e  # the real generic-connector validate, in a process of its own
def test_entrypoint_stops_on_a_broken_file(tmp_path: Path, fake_rasa: Dict[str, str]) -> None:
    creds = tmp_path / "prod.yml"
    creds.write_text(
        "generic_connector.channels.a:\n  mapping: myio\n"
        "generic_connector.channels.b:\n  mapping: myio\n"
        "generic_connector.channels.tg:\n  mapping: telegram\n"
    )
    env = {k: v for k, v in fake_rasa.items() if not k.startswith("TELEGRAM_")}
    result = entrypoint(tmp_path, env, "run", "--credentials", str(creds))
    assert result.returncode == 1
    assert f"rasa run --credentials {creds}" not in result.stdout  # rasa was not started
    assert result.stdout.splitlines()[:3] == [
        f"{creds}:5:1: telegram: environment variable TELEGRAM_BOT_TOKEN is not set "
        "(the mapping reads it; set it before rasa run starts)",
        f"{creds}:5:1: telegram: environment variable TELEGRAM_SECRET_TOKEN is not set "
        "(the mapping reads it; set it before rasa run starts)",
        f"{creds}:3:1: myio: two generic channels are named 'myio' (each generic channel "
        "needs a name of its own: it is its URL /webhooks/<name>/)",
    ]
    assert result.stderr == f"entrypoint: {creds} is not valid, so rasa run is not started\n"
    skipped = entrypoint(
        tmp_path, {**env, "GENERIC_CONNECTOR_VALIDATE": "0"}, "run", f"--credentials={creds}"
    )
    assert skipped.stdout == f"rasa run --credentials={creds}\n"


def test_entrypoint_passes_other_commands_to_rasa(
    tmp_path: Path, fake_rasa: Dict[str, str]
) -> None:
    (tmp_path / "credentials.yml").write_text("generic_connector.channel.broken:\n  mapping: x\n")
    for args in (["train", "--fixed-model-name", "m"], ["run", "actions"], ["--version"]):
        result = entrypoint(tmp_path, fake_rasa, *args)
        assert (result.returncode, result.stdout) == (0, f"rasa {' '.join(args)}\n")


def dockerfile_cmd() -> List[str]:
    """The image's default arguments: the Dockerfile's CMD (exec form, a JSON list)."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    (line,) = [line for line in dockerfile.splitlines() if line.startswith("CMD ")]
    return json.loads(line[len("CMD ") :])


def test_the_image_serves_rasa_api_only_with_a_token(
    tmp_path: Path, fake_rasa: Dict[str, str]
) -> None:
    cmd = dockerfile_cmd()
    assert cmd == ["run", "--port", "5005"]
    # No token: the webhooks, and no API (before: --enable-api, open to whoever reached 5005).
    for env in ({}, {"RASA_AUTH_TOKEN": ""}):
        result = entrypoint(tmp_path, {**fake_rasa, **env}, *cmd)
        assert (result.returncode, result.stdout, result.stderr) == (
            0, "rasa run --port 5005\n", ""
        )  # fmt: skip
    # A token: the API, with it.
    for env in ({"RASA_AUTH_TOKEN": "s3 cret"}, {"RASA_TOKEN": "s3 cret"}):
        result = entrypoint(tmp_path, {**fake_rasa, **env}, *cmd)
        assert (result.returncode, result.stdout) == (
            0, "rasa run --port 5005 --enable-api --auth-token s3 cret\n"
        )  # fmt: skip
    both = {**fake_rasa, "RASA_AUTH_TOKEN": "auth", "RASA_TOKEN": "other"}
    assert entrypoint(tmp_path, both, *cmd).stdout.endswith(" --auth-token auth\n")


@pytest.mark.parametrize(
    "args, env, expected",
    [
        # Options given (docker-compose.yml, the Helm chart) are not repeated.
        (["run", "--enable-api", "--auth-token", "given"], {"RASA_AUTH_TOKEN": "t"},
         "rasa run --enable-api --auth-token given"),
        (["run", "--auth-token=given"], {"RASA_AUTH_TOKEN": "t"},
         "rasa run --auth-token=given --enable-api"),
        (["run", "--enable-api"], {"RASA_AUTH_TOKEN": "t"},
         "rasa run --enable-api --auth-token t"),
        # Not rasa run: nothing added.
        (["run", "actions"], {"RASA_AUTH_TOKEN": "t"}, "rasa run actions"),
        (["train"], {"RASA_AUTH_TOKEN": "t"}, "rasa train"),
    ],
)  # fmt: skip
def test_the_entrypoint_adds_only_what_is_missing(
    tmp_path: Path, fake_rasa: Dict[str, str], args: List[str], env: Dict[str, str], expected: str
) -> None:
    result = entrypoint(tmp_path, {**fake_rasa, **env}, *args)
    assert (result.returncode, result.stdout, result.stderr) == (0, expected + "\n", "")


def test_an_explicit_api_without_a_token_is_warned_about(
    tmp_path: Path, fake_rasa: Dict[str, str]
) -> None:
    result = entrypoint(tmp_path, fake_rasa, "run", "--enable-api", "--port", "5005")
    assert (result.returncode, result.stdout) == (0, "rasa run --enable-api --port 5005\n")
    assert result.stderr == (
        "entrypoint: rasa run --enable-api without --auth-token: Rasa's HTTP API is open to "
        "anyone who reaches the port (set RASA_AUTH_TOKEN)\n"
    )


class _Stub(http.server.BaseHTTPRequestHandler):
    status_answer = 200

    def do_GET(self) -> None:  # noqa: N802
        code = self.status_answer if self.path.startswith("/status") else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Stub)
    serve = functools.partial(server.serve_forever, poll_interval=0.05)  # a quick shutdown
    threading.Thread(target=serve, daemon=True).start()
    yield server
    server.shutdown()


def healthcheck(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run([*HEALTHCHECK, *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_healthcheck(stub_server: http.server.HTTPServer) -> None:
    url = f"http://127.0.0.1:{stub_server.server_address[1]}"
    assert healthcheck("--url", url).returncode == 0
    _Stub.status_answer = 409
    loading = healthcheck("--url", url, "--ready")
    assert (loading.returncode, loading.stderr) == (
        1,
        f"not ready: {url}/status gave 409: the model is not loaded yet\n",
    )
    _Stub.status_answer = 404  # rasa run without --enable-api
    assert healthcheck("--url", url, "--ready").returncode == 0
    _Stub.status_answer = 200
    assert healthcheck("--ready", env={**ENV, "HEALTHCHECK_URL": url}).returncode == 0
    down = healthcheck("--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and down.stderr.startswith("not alive: GET ")


def test_dockerfile_and_compose() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "\nFROM rasa/rasa:3.6.21\n" in dockerfile
    assert "pip install --no-cache-dir /tmp/wheels/*.whl" in dockerfile
    assert 'ENTRYPOINT ["generic-connector-entrypoint"]' in dockerfile
    assert "docker/entrypoint.sh /usr/local/bin/generic-connector-entrypoint" in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "healthcheck.py" not in dockerfile  # the wheel's console script, not a copied file
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"redis", "assistant", "proxy"}
    assistant = services["assistant"]
    assert assistant["deploy"]["replicas"] == 2
    assert assistant["healthcheck"]["test"] == ["CMD", "generic-connector-healthcheck", "--ready"]
    assert assistant["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["proxy"]["depends_on"]["assistant"]["condition"] == "service_healthy"
    assert all("healthcheck" in service for service in services.values())
    for volume in assistant["volumes"] + services["proxy"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./docker/") or source == "./credentials.yml":
            assert (ROOT / source).is_file(), source
    endpoints = yaml.safe_load((ROOT / "docker" / "endpoints.yml").read_text(encoding="utf-8"))
    assert endpoints["tracker_store"]["type"] == endpoints["lock_store"]["type"] == "redis"
    assert "http://assistant:5005" in (ROOT / "docker" / "nginx.conf").read_text(encoding="utf-8")
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)]).returncode == 0


# --- End to end: the wheel in a fresh virtualenv beside Rasa ------------------------------


@pytest.fixture(scope="module")
def installed(built: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with Rasa 3.6.21 and the built wheel, nothing of this repository."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [UV, "pip", "install", "-q", "-p", str(venv / "bin" / "python"), "rasa==3.6.21",
         str(built["wheel"])],
        check=True, timeout=600,
    )  # fmt: skip
    return venv


INSTALL_PAGE = ROOT / "docs" / "install.md"


@pytest.mark.e2e
def test_the_install_page_works_in_a_rasa_init_project(
    installed: Path, built: Dict[str, Path], tmp_path: Path, model: Path
) -> None:
    """docs/install.md, followed in a new virtualenv holding Rasa 3.6.21 and the built wheel:
    its YAML blocks with a path comment are written, its bash commands run in order in the
    project with the virtualenv's bin first on PATH, each exiting 0 (or N by its comment).

    Three commands are played, not run as written: ``pip install rasa==3.6.21 <wheel>`` (the
    page must name the built wheel's file) installs the built wheel with ``uv pip`` into the
    virtualenv (which has no pip); ``rasa init --no-prompt`` writes the project's files with
    Rasa's own scaffold and puts the session's trained demo model into ``models/`` instead of
    training one (``rasa init`` trains for about 100 s); ``rasa run`` is started in the
    background with the page's arguments plus a free port, and ``curl`` is the same request
    through urllib, answered with the bot's reply to its sender."""
    from tests.test_docs import EXIT_STATUS, PATH_COMMENT, blocks, commands

    bin_dir = installed / "bin"
    project = tmp_path / "my-assistant"
    project.mkdir()
    env = {**ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RASA_TELEMETRY_ENABLED": "false"}
    env.pop("PYTHONPATH", None)
    port = free_port()
    log_path = tmp_path / "rasa.log"
    server: Optional[subprocess.Popen] = None
    ran: List[str] = []

    def output() -> str:
        return log_path.read_text()[-3000:] if log_path.exists() else ""

    def play(command: str) -> None:
        status = EXIT_STATUS.search(command)
        expected = int(status.group(1)) if status else 0
        words = shlex.split(command, comments=True)
        nonlocal server
        if words[0] == "pip":
            assert words[1:] == ["install", "rasa==3.6.21", built["wheel"].name], command
            subprocess.run(
                [UV, "pip", "install", "-q", "-p", str(bin_dir / "python"), "rasa==3.6.21",
                 str(built["wheel"])],
                check=True, timeout=600,
            )  # fmt: skip
        elif words[:2] == ["rasa", "init"]:
            assert words[2:] == ["--no-prompt"], command
            scaffold = "from rasa.cli.scaffold import create_initial_project as c; c('.')"
            subprocess.run(
                [str(bin_dir / "python"), "-c", scaffold], cwd=project, env=env, check=True
            )
            assert (project / "domain.yml").is_file() and (project / "data").is_dir()
            (project / "models").mkdir(exist_ok=True)
            shutil.copy(model, project / "models" / model.name)
        elif words[:2] == ["rasa", "run"]:
            server = subprocess.Popen(
                [str(bin_dir / "rasa"), *words[1:], "--port", str(port),
                 "--interface", "127.0.0.1", "--enable-api"],
                cwd=project, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            probe = [str(bin_dir / "generic-connector-healthcheck"), "--url", url, "--ready"]
            deadline = time.monotonic() + 240
            while subprocess.run(probe, capture_output=True, cwd=tmp_path, env=env).returncode:
                assert server.poll() is None, output()
                assert time.monotonic() < deadline, output()
                time.sleep(0.5)
        elif words[0] == "curl":
            assert server is not None, "the page curls before rasa run"
            headers: Dict[str, str] = {}
            method, data, url = "GET", None, ""
            options = iter(words[1:])
            for word in options:
                if word == "-X":
                    method = next(options)
                elif word == "-H":
                    name, value = next(options).split(":", 1)
                    headers[name.strip()] = value.strip()
                elif word == "-d":
                    data = next(options).encode()
                elif not word.startswith("-"):
                    url = word.replace("localhost:5005", f"127.0.0.1:{port}")
            status_code, _, answer = request(url, data, headers, method)
            assert status_code == 200, (command, answer, output())
            sender = json.loads(data or b"{}")["sender"]
            [reply] = json.loads(answer)
            assert reply["recipient_id"] == sender and reply["text"], answer
        else:
            result = subprocess.run(
                ["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True
            )
            assert result.returncode == expected, (command, result.stdout, result.stderr)
        ran.append(words[0] if words[0] != "rasa" else " ".join(words[:2]))

    try:
        for block in blocks(INSTALL_PAGE.read_text(encoding="utf-8")):
            written = PATH_COMMENT.fullmatch(block.code.splitlines()[0].strip())
            if block.language == "yaml" and written:
                (project / written.group(1)).write_text(block.code)
            elif block.language == "bash":
                for command in commands(block.code):
                    play(command)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    # The installed package answered, not this checkout.
    version = subprocess.run(
        [str(bin_dir / "generic-connector"), "--version"], capture_output=True, text=True
    )
    assert version.stdout.startswith(f"generic-connector {generic_connector.__version__} ")
    location = subprocess.run(
        [str(bin_dir / "python"), "-c", "import generic_connector as g; print(g.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert str(installed) in location.stdout
    # The page's path, all of it: install, project, check, editor set-up, serve, a request.
    assert ran[:2] == ["pip", "generic-connector"] and "rasa init" in ran, ran
    assert ran[-2:] == ["rasa run", "curl"], ran
    assert (project / ".vscode" / "settings.json").is_file()
    assert (project / "mappings" / "my-telegram.yml").is_file()
