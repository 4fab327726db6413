"""The deployment files work as written: the Helm values with Rasa's chart, and every
docker-compose file that runs several replicas with a store they share.

Helm is not run here (no binary, no network): ``deploy/helm/vendor/rasa/`` holds the chart's
``values.yaml``, ``values.schema.json``, ``templates/deployment.yaml`` and
``templates/helpers/_helpers.tpl`` (``SOURCE`` names the repository, commit and paths), and the
tests do what ``helm install -f deploy/helm/values.yaml`` does with them:

- ``helm_merge``: Helm's coalescing of user values over the chart's: maps are merged key by
  key, anything else (lists, strings) replaces, and a null removes the chart's key;
- the merged values are validated against ``values.schema.json`` (Helm validates the same);
- ``render_probes`` mirrors these lines of ``templates/deployment.yaml`` (the rasa-oss
  container; ``PROBE_LINES`` must still be in the vendored copy)::

      livenessProbe:
        {{- toYaml .Values.livenessProbe | nindent 12 }}
      readinessProbe:
        {{- toYaml .Values.readinessProbe | nindent 12 }}

  i.e. each probe is the merged map as it is, which Kubernetes refuses with more than one
  handler (exec, httpGet, tcpSocket, grpc);
- ``initial_model_download`` mirrors the ``rasa.initialModel.download`` helper of
  ``_helpers.tpl``: when it is true, an init container downloads a model into an empty volume
  mounted over ``/app/models``, hiding the model built into the image.
"""

import copy
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import jsonschema
import pytest
import yaml

from generic_connector.cli.validate import is_generic_key
from generic_connector.config import check_channel

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / "deploy" / "helm"
CHART = HELM / "vendor" / "rasa"
VALUES = HELM / "values.yaml"
HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
HEALTHCHECK = "generic-connector-healthcheck"
PROBE_LINES = (
    "          livenessProbe:\n"
    "            {{- toYaml .Values.livenessProbe | nindent 12 }}\n"
    "          readinessProbe:\n"
    "            {{- toYaml .Values.readinessProbe | nindent 12 }}\n"
)
DOWNLOAD_HELPER = (
    '{{- define "rasa.initialModel.download" -}}\n'
    "{{- if and (not .Values.applicationSettings.rasaX.useConfigEndpoint) "
    "(not .Values.applicationSettings.endpoints.models.enabled) "
    "(not (empty .Values.applicationSettings.initialModel)) "
    "(not .Values.applicationSettings.trainInitialModel) -}}\n"
)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- Helm ---------------------------------------------------------------------------------


def helm_merge(chart: Dict[str, Any], user: Dict[str, Any]) -> Dict[str, Any]:
    """The values Helm renders with: ``user`` coalesced over ``chart`` (Helm 3's
    ``coalesceValues``/``coalesceTablesFullKey``). A null in ``user`` deletes the chart's key."""
    merged = copy.deepcopy(chart)
    for key, value in user.items():
        if value is None and key in merged:
            del merged[key]
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render_probes(values: Dict[str, Any]) -> Dict[str, Any]:
    """The rasa-oss container's probes as the chart's template renders them (``PROBE_LINES``:
    ``toYaml`` of each value, indented under its key), read back as YAML."""
    text = ""
    for probe in ("livenessProbe", "readinessProbe"):
        body = yaml.safe_dump(values[probe], default_flow_style=False)
        text += f"{probe}:\n" + "".join(f"  {line}\n" for line in body.splitlines())
    rendered: Dict[str, Any] = yaml.safe_load(text)
    return rendered


def handlers(probe: Dict[str, Any]) -> List[str]:
    return [key for key in HANDLERS if key in probe]


def initial_model_download(values: Dict[str, Any]) -> bool:
    """The chart's ``rasa.initialModel.download`` helper (``DOWNLOAD_HELPER``)."""
    settings = values["applicationSettings"]
    return bool(
        not settings["rasaX"]["useConfigEndpoint"]
        and not settings["endpoints"]["models"]["enabled"]
        and settings.get("initialModel")  # Go templates' `empty`: nil, "" and false are empty
        and not settings["trainInitialModel"]
    )


@pytest.fixture(scope="module")
def chart_values() -> Dict[str, Any]:
    values: Dict[str, Any] = load(CHART / "values.yaml")
    return values


@pytest.fixture(scope="module")
def merged(chart_values: Dict[str, Any]) -> Dict[str, Any]:
    return helm_merge(chart_values, load(VALUES))


def test_the_vendored_chart_still_has_the_lines_the_tests_mirror() -> None:
    source = (CHART / "SOURCE").read_text(encoding="utf-8")
    assert "https://github.com/RasaHQ/helm-charts" in source
    assert re.search(r"Commit:\s+[0-9a-f]{40}", source)
    assert load(CHART / "Chart.yaml")["name"] == "rasa"
    for name in ("values.yaml", "values.schema.json", "templates/deployment.yaml"):
        assert (CHART / name).is_file() and f"charts/rasa/{name}" in source
    assert PROBE_LINES in (CHART / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    helpers = (CHART / "templates" / "helpers" / "_helpers.tpl").read_text(encoding="utf-8")
    assert DOWNLOAD_HELPER in helpers


def test_helm_merge_is_helms() -> None:
    chart = {"probe": {"httpGet": {"path": "/"}, "periodSeconds": 15}, "list": [1, 2], "s": "a"}
    user = {"probe": {"httpGet": None, "exec": {"command": ["x"]}}, "list": [3], "new": None}
    assert helm_merge(chart, user) == {
        "probe": {"exec": {"command": ["x"]}, "periodSeconds": 15},
        "list": [3],
        "s": "a",
        "new": None,
    }


def test_the_values_are_valid_for_the_chart(merged: Dict[str, Any]) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(merged)
    ]
    assert errors == []


def test_each_probe_has_one_handler_and_readiness_is_the_health_check(
    merged: Dict[str, Any],
) -> None:
    probes = render_probes(merged)
    assert {name: handlers(probe) for name, probe in probes.items()} == {
        "livenessProbe": ["httpGet"],  # the chart's GET / on port http: rasa run answers
        "readinessProbe": ["exec"],
    }
    assert probes["readinessProbe"]["exec"]["command"] == [HEALTHCHECK, "--ready"]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'\n{HEALTHCHECK} = "generic_connector.healthcheck:main"\n' in pyproject


def test_an_exec_probe_without_a_null_http_get_renders_two_handlers(
    chart_values: Dict[str, Any],
) -> None:
    """What the README showed before: Helm keeps the chart's httpGet beside the exec."""
    merged = helm_merge(
        chart_values, {"readinessProbe": {"exec": {"command": [HEALTHCHECK, "--ready"]}}}
    )
    assert handlers(render_probes(merged)["readinessProbe"]) == ["exec", "httpGet"]


def test_the_model_in_the_image_is_not_hidden(
    chart_values: Dict[str, Any], merged: Dict[str, Any]
) -> None:
    assert initial_model_download(chart_values)  # the chart's default downloads a demo model
    assert not initial_model_download(merged)
    assert not merged["applicationSettings"]["trainInitialModel"]
    mounts = [mount["mountPath"] for mount in merged["volumeMounts"]]
    assert not [path for path in mounts if path.rstrip("/") in ("/app", "/app/models")]
    image = (HELM / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^COPY .*/app/models/$", image, re.MULTILINE)


def test_the_container_gets_the_token_from_a_secret_and_no_default_jwt_secret(
    merged: Dict[str, Any],
) -> None:
    """The chart's own arguments add ``--jwt-secret $(JWT_SECRET)``, "UNSET" by default: the
    values give the image's arguments, and the entry point adds the API with the token."""
    assert merged["args"][:1] == ["run"]
    assert not [arg for arg in merged["args"] if arg.startswith(("--jwt", "--auth-token"))]
    env = {item["name"]: item for item in merged["extraEnv"]}
    assert "secretKeyRef" in env["RASA_AUTH_TOKEN"]["valueFrom"]
    assert not [item for item in merged["extraEnv"] if "value" in item]  # secrets only


def test_the_channels_of_the_values_are_valid(merged: Dict[str, Any]) -> None:
    channels = merged["applicationSettings"]["credentials"]["additionalChannelCredentials"]
    assert [key for key in channels if is_generic_key(key)]
    for key, entry in channels.items():
        if is_generic_key(key):
            assert check_channel(entry, key).findings == [], key
    env = {item["name"] for item in merged["extraEnv"]}
    problems = unshared_channels(channels, merged["replicaCount"], env, "values.yaml")
    assert problems == []


def test_the_documentation_shows_the_files_as_they_are() -> None:
    """A block of docs/operations.md opening with ``# <file>`` is that file; with
    ``# <file> (part)``, lines of it in a row."""
    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    shown = re.findall(r"```yaml\n# ((?:deploy|docker)/\S+)( \(part\))?\n(.*?)```", page, re.S)
    assert {path for path, _, _ in shown} >= {"deploy/helm/values.yaml", "docker/credentials.yml"}
    for path, part, rest in shown:
        text = (ROOT / path).read_text(encoding="utf-8")
        if part:
            assert rest in text, path
        else:
            assert f"# {path}\n{rest}" == text, path


# --- docker-compose -----------------------------------------------------------------------

VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def compose_files() -> List[Path]:
    found = {*ROOT.glob("docker-compose*.y*ml"), *ROOT.glob("compose*.y*ml")}
    for pattern in ("compose*.y*ml", "docker-compose*.y*ml"):
        found |= set((ROOT / "deploy").rglob(pattern))
    return sorted(found)


def interpolate(text: str) -> str:
    """``${NAME:-default}`` as docker compose reads it with NAME unset (the default)."""
    return VARIABLE.sub(lambda match: match.group(2) or "", text)


def replicas(service: Dict[str, Any]) -> int:
    count = service.get("deploy", {}).get("replicas", service.get("scale", 1))
    return int(interpolate(str(count)))


def replicated(services: Dict[str, Any]) -> Iterator[Tuple[str, int]]:
    """Services run by more than one container: ``deploy.replicas`` (or ``scale``) above 1,
    or several services of the same image and command."""
    same: Dict[str, List[str]] = {}
    for name, service in services.items():
        what = {key: service.get(key) for key in ("image", "build", "command", "entrypoint")}
        same.setdefault(json.dumps(what, sort_keys=True, default=str), []).append(name)
    for names in same.values():
        total = sum(replicas(services[name]) for name in names)
        if total > 1:
            yield from ((name, total) for name in names)


def environment(service: Dict[str, Any]) -> Dict[str, str]:
    """The variables the compose file itself sets (an env_file's cannot be checked here)."""
    given = service.get("environment") or {}
    if isinstance(given, list):
        given = dict(item.split("=", 1) if "=" in item else (item, "") for item in given)
    return {str(key): str(value) for key, value in given.items()}


def credentials_mount(service: Dict[str, Any], compose: Path) -> Optional[Path]:
    """The file on the host mounted where ``rasa run`` reads its credentials (the command's
    ``--credentials``, else credentials.yml, in the image's working directory /app)."""
    command = [str(word) for word in service.get("command") or []]
    wanted = "credentials.yml"
    for index, word in enumerate(command):
        if word == "--credentials" and index + 1 < len(command):
            wanted = command[index + 1]
        elif word.startswith("--credentials="):
            wanted = word.split("=", 1)[1]
    workdir = service.get("working_dir", "/app")
    target = wanted if wanted.startswith("/") else f"{workdir.rstrip('/')}/{wanted}"
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, inside = volume.get("source", ""), volume.get("target", "")
        else:
            parts = interpolate(volume).split(":")
            if parts[-1] in ("ro", "rw", "z", "Z", "cached", "delegated", "consistent"):
                parts = parts[:-1]
            source, inside = ":".join(parts[:-1]), parts[-1]
        if inside == target and source.startswith((".", "/")):
            return (compose.parent / source).resolve()
    return None


def unshared_channels(credentials: Dict[str, Any], count: int, env: Any, where: str) -> List[str]:
    """The generic channels of a credentials document run by ``count`` processes whose
    de-duplication store and outbox are not in a Redis every one of them reaches."""
    if count < 2:
        return []
    problems = []
    for key, entry in (credentials or {}).items():
        if not is_generic_key(key):
            continue
        config = check_channel(entry, key).config
        assert config is not None, f"{where}: {key} is not valid"
        store = config.store
        if store.type != "redis":
            problems.append(f"{where}: {key}: {count} replicas, store.type {store.type!r}")
        elif store.url_env not in env:
            problems.append(f"{where}: {key}: store.url_env {store.url_env} is not set")
    return problems


def compose_problems(compose: Path, root: Path = ROOT) -> List[str]:
    """What is wrong with a compose file's replicas (paths in messages relative to root)."""
    document = yaml.safe_load(compose.read_text(encoding="utf-8"))
    services = document.get("services") or {}
    problems = []
    for name, count in replicated(services):
        service = services[name]
        where = f"{compose.relative_to(root)}: {name}"
        mounted = credentials_mount(service, compose)
        if mounted is None or not mounted.is_file():
            problems.append(f"{where}: {count} replicas, no credentials file mounted ({mounted})")
            continue
        problems += unshared_channels(
            load(mounted), count, environment(service), f"{where} ({mounted.relative_to(root)})"
        )
    return problems


def test_there_is_a_replicated_compose_file() -> None:
    files = compose_files()
    assert ROOT / "docker-compose.yml" in files
    services = load(ROOT / "docker-compose.yml")["services"]
    assert dict(replicated(services)) == {"assistant": 2}


@pytest.mark.parametrize("compose", compose_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_replicas_share_the_channels_store(compose: Path) -> None:
    assert compose_problems(compose) == []


def test_the_check_finds_replicas_without_a_shared_store(tmp_path: Path) -> None:
    (tmp_path / "credentials.yml").write_text(
        "rest:\ngeneric_connector.GenericChannel:\n  mapping: myio\n"
        "generic_connector.channels.shop:\n  mapping: myio\n  name: shop\n"
        "  store: {type: redis, url_env: SHOP_REDIS_URL}\n"
    )
    assistant = {
        "image": "assistant",
        "command": ["run", "--credentials", "credentials.yml"],
        "environment": {"REDIS_URL": "redis://redis:6379/2"},
        "volumes": ["${CREDENTIALS:-./credentials.yml}:/app/credentials.yml:ro"],
    }
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        yaml.safe_dump({"services": {"a": assistant, "b": assistant, "proxy": {"image": "x"}}})
    )
    memory = "generic_connector.GenericChannel: 2 replicas, store.type 'memory'"
    unset = "generic_connector.channels.shop: store.url_env SHOP_REDIS_URL is not set"
    assert compose_problems(compose, tmp_path) == [
        f"docker-compose.yml: {service} (credentials.yml): {problem}"
        for service in ("a", "b")
        for problem in (memory, unset)
    ]
    compose.write_text(yaml.safe_dump({"services": {"a": {**assistant, "volumes": []}}}))
    assert compose_problems(compose, tmp_path) == []  # one replica: its memory is enough
    one = {**assistant, "volumes": [], "deploy": {"replicas": 3}}
    compose.write_text(yaml.safe_dump({"services": {"a": one}}))
    [problem] = compose_problems(compose, tmp_path)
    assert "3 replicas, no credentials file mounted" in problem
