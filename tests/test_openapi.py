"""The HTTP API's OpenAPI document tells the truth: schemathesis, a property-based API tester,
generates requests from `/openapi.json` (with a key) against app.py, and checks every answer
against the document — no server error, only documented status codes, content types, headers and
bodies, data outside the schema refused with 4xx, data inside it accepted, 405 for a method a
route does not have. And inputs that could make a 500 (and pages of log) are one-line
400s."""

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.support.app import App
from tests.support.speech import ROOT

pytestmark = pytest.mark.flow

KEY = "sk-openapi-test-key-0123456789"
# schemathesis's checks of answers against the document; the stateful ones have no links to follow
# here, and a response-time limit would test the machine's speed
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
          "response_schema_conformance", "negative_data_rejection", "positive_data_acceptance",
          "missing_required_header", "unsupported_method", "allow_header_conformance", "ignored_auth")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"{KEY}\n")
    # Whisper base: multilingual, so every language and /v1/audio/translations are served as documented
    with App("--whisper-model", "embedded-base", "--api-keys", str(keys), "--no-monitoring") as app:
        yield app


@pytest.fixture(scope="module")
def http(app):
    with httpx.Client(base_url=f"http://localhost:{app.port + 1}", headers={"Authorization": f"Bearer {KEY}"},
                      timeout=120) as client:
        yield client


def refusal(answer: httpx.Response) -> str:
    """The one-line message of an error answer, OpenAI's shape or Jina's."""
    body = answer.json()
    message = body["error"]["message"] if "error" in body else body["header"]["status"]["exception"]["args"][0]
    assert "\n" not in message and "Traceback" not in answer.text
    return message


def test_a_size_of_unicode_digits_is_a_one_line_400(http):
    """"²".isdigit() is true and int("²") fails: a one-line 400, never a 500."""
    answer = http.post("/v1/images/generations", json={"prompt": "a cat", "size": "²x²"})
    assert answer.status_code == 400, answer.text[:500]
    assert refusal(answer).startswith("invalid size='²x²'")


def test_deeply_nested_parameters_are_a_one_line_400_and_a_short_log(app, http):
    """300 levels of parameters made a RecursionError: a 2 KB request wrote hundreds of KB of log."""
    nested: dict = {}
    for _ in range(300):
        nested = {"a": nested}
    logged = len(app.stderr())
    answer = http.post("/generate", json={"data": [{"prompt": "a cat"}], "parameters": nested})
    assert answer.status_code == 400, answer.text[:500]
    assert refusal(answer).startswith("invalid parameters")
    assert len(app.stderr()) - logged < 2000


@pytest.mark.parametrize("target", ["(", "whisper|diffusion", ".*"])
def test_target_executor_must_name_an_executor(http, target):
    """Never a regex: "(" would be a 500, and "whisper|diffusion" would reach both."""
    answer = http.post("/generate", json={"data": [{"prompt": "a cat"}], "target_executor": target})
    assert answer.status_code == 400, answer.text[:500]
    message = refusal(answer)
    assert message.startswith("invalid target_executor") and "whisper" in message and "diffusion" in message


def test_a_method_a_route_does_not_have_is_a_one_line_405(http):
    answer = http.request("TRACE", "/v1/models")
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET", answer.text
    assert refusal(answer) == "method TRACE not allowed on /v1/models: use GET"


def test_the_document_states_each_routes_fields_bounds_and_answers(http):
    document = http.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    form = schemas["SpeechToImageForm"]
    assert set(form["properties"]) == {"file", "model", "image_model", "language", "prompt", "temperature", "n",
                                       "size", "response_format", "user", "seed", "steps", "guidance_scale",
                                       "negative_prompt", "scheduler", "partial_images", "stream",
                                       "progress", "image", "strength"}  # what the route reads, no more
    assert form["additionalProperties"] is False and form["required"] == ["file"]
    assert (form["properties"]["n"]["minimum"], form["properties"]["n"]["maximum"]) == (1, 8)
    assert form["properties"]["size"]["pattern"] == "^(auto|[0-9]{1,5}x[0-9]{1,5})$"
    assert form["properties"]["response_format"]["enum"] == ["b64_json", "url"]
    assert "anyOf" not in form["properties"]["language"]  # a form has no null: a field left out is unset
    assert set(schemas["TranslationForm"]["properties"]) == {"file", "model", "prompt", "response_format",
                                                             "temperature", "timestamp_granularities[]", "stream"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"] and "413" in operation["responses"], (method, path)
            if path not in ("/", "/dry_run", "/v1/images/{name}"):
                assert "401" in operation["responses"] and operation["security"] == [{"bearer": []}], path
    busy = document["paths"]["/v1/images/generations"]["post"]["responses"]["429"]
    assert busy["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    assert set(document["paths"]["/v1/audio/transcriptions"]["post"]["responses"]) == {
        "200", "400", "401", "403", "404", "408", "413", "421", "429", "503", "504"}


def test_schemathesis_finds_every_answer_as_documented(app, tmp_path):
    """Requests generated from the document: in it (positive) and outside it (negative), with a
    key and without, and methods the routes do not have. Seeded: the same requests each run."""
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"http://127.0.0.1:{app.port + 1}/openapi.json",
         "--header", f"Authorization: Bearer {KEY}", "--checks", ",".join(CHECKS), "--max-examples", "8",
         "--seed", "1", "--workers", "1", "--request-timeout", "120", "--generation-database", "none",
         "--continue-on-failure", "--no-color", "--report", "ndjson", "--report-dir", str(report)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": "tests.support.openapi_hooks"},
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    sent = interactions(next(report.glob("*.ndjson")))
    assert len(sent) > 500 and max(status for _, _, status in sent) < 500, sorted({status for _, _, status in sent})
    refused = {status for operation, mode, status in sent if mode == "negative" and operation.startswith("POST")}
    assert refused and all(400 <= status < 500 for status in refused), refused
    worked = {operation for operation, mode, status in sent if mode == "positive" and status == 200}
    assert {"POST /v1/audio/transcriptions", "POST /v1/audio/translations", "POST /v1/images/generations",
            "POST /v1/speech-to-image", "POST /generate", "GET /v1/models"} <= worked  # each route did its work


def interactions(ndjson) -> list[tuple[str, str, int]]:
    """(operation, positive or negative, status) of each request in schemathesis's NDJSON report."""
    found = []
    for line in ndjson.read_text().splitlines():
        recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder") or {}
        for case_id, interaction in recorder.get("interactions", {}).items():
            case = recorder["cases"][case_id]["value"]
            if interaction.get("response"):
                found.append((recorder["label"], case["meta"]["generation"]["mode"],
                              interaction["response"]["status_code"]))
    return found
