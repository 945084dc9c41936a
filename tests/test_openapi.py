"""The HTTP API's OpenAPI document tells the truth: each route's fields, bounds and answers; 405
for a method a route does not have. And inputs a review found answered with a 500 (and pages of
log) are one-line 400s."""

import httpx
import pytest

from tests.support.app import App

pytestmark = pytest.mark.flow

KEY = "sk-openapi-test-key-0123456789"


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
    """"²".isdigit() is true and int("²") fails: it was a 500."""
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
    """It was put into a regex unchecked: "(" was a 500, and "whisper|diffusion" reached both."""
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
                                       "negative_prompt", "scheduler"}  # what the route reads, no more
    assert form["additionalProperties"] is False and form["required"] == ["file"]
    assert (form["properties"]["n"]["minimum"], form["properties"]["n"]["maximum"]) == (1, 8)
    assert form["properties"]["size"]["pattern"] == "^(auto|[0-9]{1,5}x[0-9]{1,5})$"
    assert form["properties"]["response_format"]["enum"] == ["b64_json", "url"]
    assert "anyOf" not in form["properties"]["language"]  # a form has no null: a field left out is unset
    assert set(schemas["TranslationForm"]["properties"]) == {"file", "model", "prompt", "response_format",
                                                             "temperature", "timestamp_granularities[]"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"] and "413" in operation["responses"], (method, path)
            if path not in ("/", "/dry_run", "/v1/images/{name}"):
                assert "401" in operation["responses"] and operation["security"] == [{"bearer": []}], path
    busy = document["paths"]["/v1/images/generations"]["post"]["responses"]["429"]
    assert busy["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    assert set(document["paths"]["/v1/audio/transcriptions"]["post"]["responses"]) == {
        "200", "400", "401", "404", "413", "429", "503", "504"}
