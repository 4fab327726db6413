"""Outbound steps (an upload, then the message with the upload's id): what ``validate`` says
about them, and what the dry run and the mapping test cases show."""

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml

from generic_connector.config import check_channel
from tests.test_dryrun_fixes import dry_run, write

UPLOADER = """
name: uploader
request: {sender: user, text: text}
outbound:
  allow_hosts: [api.example.com]
  defaults:
    headers: {Authorization: "join(' ', ['Bearer', env('API_TOKEN')])"}
  text:
    url: "'https://api.example.com/send'"
    body: "{to: recipient, text: message.text}"
  image:
    steps:
      - name: upload
        url: "'https://api.example.com/media'"
        body: "{url: message.image}"
    url: "'https://api.example.com/send'"
    body: "{to: recipient, media_id: steps.upload.id}"
"""


def findings(document: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    _, found, _ = check_channel(document)
    return [(f.code, f.path, f.message) for f in found]


def uploader(**image: Any) -> Dict[str, Any]:
    document = yaml.safe_load(UPLOADER)
    document["outbound"]["image"].update(image)
    return document


def test_a_mapping_with_steps_is_valid() -> None:
    assert findings(uploader()) == []


@pytest.mark.parametrize(
    "steps, expected",
    [
        (
            [{"name": "a", "url": "'https://api.example.com/1'"}] * 2,
            ("duplicate-step", "uploader.outbound.image.steps[1].name",
             "step 'a' is declared twice"),
        ),
        (
            [{"name": "a", "url": "'https://api.example.com/1'", "body": "{t: token('api')}"}],
            ("unknown-token", "uploader.outbound.image.steps[0].body", "no token 'api' in tokens"),
        ),
        (
            [{"url": "'https://api.example.com/1'"}],
            ("missing-key", "uploader.outbound.image.steps[0].name", "missing required key 'name'"),
        ),
        (
            [{"name": "up load", "url": "'https://api.example.com/1'"}],
            ("invalid-value", "uploader.outbound.image.steps[0].name",
             "'up load' does not match ^[A-Za-z_][A-Za-z0-9_]*$"),
        ),
        (
            [{"name": "a", "url": "'https://api.example.com/1'", "steps": []}],
            ("unknown-key", "uploader.outbound.image.steps[0].steps", "unknown key 'steps'"),
        ),
    ],
)  # fmt: skip
def test_what_validate_says_about_steps(steps: List[Any], expected: Tuple[str, ...]) -> None:
    assert findings(uploader(steps=steps)) == [expected]


def test_a_step_url_from_request_data_needs_allow_hosts() -> None:
    document = uploader(steps=[{"name": "a", "url": "event.callback"}])
    del document["outbound"]["allow_hosts"]
    assert findings(document) == [
        (
            "url-from-request",
            "uploader.outbound.image.steps[0].url",
            "the URL is built from request data",
        )
    ]


def test_the_dry_run_shows_each_step_with_the_sample_answers(tmp_path: Path) -> None:
    mapping = write(tmp_path, "uploader.yml", UPLOADER)
    body = write(tmp_path, "body.json", '{"user": "u-1", "text": "a picture please"}')
    replies = write(tmp_path, "replies.json", '[{"image": "https://example.com/cat.png"}]')
    answers = write(tmp_path, "answers.json", '{"upload": {"id": "media-42"}}')
    result, printed = dry_run(
        mapping, "--body", body, "--replies", replies, "--fetched", answers,
        "--env", "API_TOKEN=s3cret",
    )  # fmt: skip
    shown = [(r["kind"], r["url"], r["headers"]["Authorization"], r["body"]) for r in
             result["outbound"]]  # fmt: skip
    assert shown == [
        ("image", "https://api.example.com/media", "Bearer ${API_TOKEN}",
         {"url": "https://example.com/cat.png"}),
        ("image", "https://api.example.com/send", "Bearer ${API_TOKEN}",
         {"to": "u-1", "media_id": "media-42"}),
    ]  # fmt: skip
    assert "s3cret" not in printed


def test_a_test_case_checks_the_request_after_a_step(tmp_path: Path) -> None:
    cases = """
tests:
  - name: an image is uploaded, then sent with its id
    body: {user: u-1, text: picture}
    replies: [{image: "https://example.com/cat.png"}]
    fetched: {upload: {id: media-7}}
    env: {API_TOKEN: t0ken}
    expect:
      outbound:
        - {url: "https://api.example.com/media", body: {url: "https://example.com/cat.png"}}
        - {url: "https://api.example.com/send", body: {to: u-1, media_id: media-7}}
"""
    from generic_connector.cli import main

    mapping = write(tmp_path, "uploader.yml", UPLOADER + cases)
    assert main(["validate", mapping]) == 0
    wrong = UPLOADER + cases.replace("media_id: media-7}", "media_id: media-8}")
    assert main(["validate", write(tmp_path, "wrong.yml", wrong)]) == 1
