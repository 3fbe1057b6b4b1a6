"""Story planner: answer validation, retry, fallback, local tiny model, endpoint errors against a real local server."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest

from aas_core.cli import main
from aas_core.errors import InputError
from aas_core.story import load_story, prompts
from aas_core.story.planner import (
    API_KEY_ENV,
    MAX_NEW_TOKENS,
    EndpointBackend,
    LocalBackend,
    PlannerError,
    answer_schema,
    parse_answer,
    plan_from_text,
    plan_path,
    save_plan,
)
from tests.helpers import ensure_tiny

TEXT = "<mia> runs up the hill with her kite. The wind lifts the kite into the sky."
CANNED = json.dumps(prompts.EXAMPLE_ANSWER)


def _answer(**changes) -> dict:
    data = copy.deepcopy(prompts.EXAMPLE_ANSWER)
    for key, value in changes.items():
        shot, name = key.split("__")
        data["shots"][int(shot[1:])][name] = value
    return data


# --- parsing a canned answer -------------------------------------------------------------------------


def test_valid_canned_answer_maps_onto_the_story_schema():
    story = parse_answer(CANNED, ["mia"], shots=2)
    assert story.title == "Mia and the Kite"
    assert [c.name for c in story.characters] == ["mia"]
    assert [s.id for s in story.shots] == ["shot-01", "shot-02"]
    first, second = story.shots
    assert first.query.startswith("a child running") and "<mia>" in first.prompt
    assert first.caption == "Mia runs to the hill with her new kite."
    assert (first.transition, second.transition) == ("crossfade", "fade_black")
    # 2.0 s at the default 8 fps of the default backend.
    assert first.generate.frames == 16 and story.defaults.generate.fps == 8.0


def test_answer_in_a_code_fence_with_chatter_is_read():
    story = parse_answer(f"Here is the plan:\n```json\n{CANNED}\n```\nEnjoy!", ["mia"], shots=2)
    assert len(story.shots) == 2


def test_character_tokens_are_taken_out_of_queries():
    story = parse_answer(json.dumps(_answer(s0__query="<mia> running across a field")), ["mia"])
    assert story.shots[0].query == "mia running across a field"


@pytest.mark.parametrize(
    "data, expected",
    [
        (_answer(s0__transition="wipe"), "shots[0].transition"),
        (_answer(s1__duration=60), "shots[1].duration"),
        (_answer(s0__prompt="<mia> meets <bob> by the sea"), "<bob> is not a character"),
        (_answer(s0__prompt="a girl runs through a meadow"), "<mia> appears in no shot's prompt"),
        (_answer(s0__camera="dolly"), "shots[0].camera: Extra inputs are not permitted"),
        ({"title": "x"}, "shots: Field required"),
    ],
)
def test_invalid_answers_name_each_problem(data, expected):
    with pytest.raises(InputError) as err:
        parse_answer(json.dumps(data), ["mia"])
    assert expected in str(err.value)


def test_wrong_shot_count_and_non_json_are_refused():
    with pytest.raises(InputError, match="2 shots given, exactly 3 were asked for"):
        parse_answer(CANNED, ["mia"], shots=3)
    with pytest.raises(InputError, match="not valid JSON"):
        parse_answer("I think the story should open on a hill", ["mia"])


def test_schema_is_the_pydantic_answer():
    schema = answer_schema()
    shot = schema["$defs"]["PlannedShot"]
    assert set(shot["required"]) == {"query", "prompt", "caption", "duration", "transition"}
    assert shot["properties"]["transition"]["enum"] == ["cut", "crossfade", "fade_black"]


# --- a real local HTTP server playing an OpenAI-compatible endpoint -----------------------------------


@contextmanager
def chat_server(reply: Callable[[dict, dict], tuple[int, str]]) -> Iterator[tuple[str, list[dict]]]:
    """A threaded HTTP server on 127.0.0.1 answering POST /v1/chat/completions with reply(body, headers)."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            status, text = reply(body, dict(self.headers))
            data = text.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()


def _chat(content: str) -> str:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})


def test_endpoint_retries_once_with_the_validation_error_then_succeeds(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "sk-test")
    answers = [json.dumps(_answer(s0__prompt="a girl runs through a meadow")), CANNED]
    with chat_server(lambda body, headers: (200, _chat(answers.pop(0)))) as (url, requests):
        result = plan_from_text(TEXT, planner="llm", shots=2, url=url, model="planner-test", timeout=10)
    assert result.used == "llm" and result.warnings == []
    assert len(requests) == 2 and requests[0]["path"] == "/v1/chat/completions"
    assert requests[0]["auth"] == "Bearer sk-test"
    first, second = (r["body"] for r in requests)
    assert first["model"] == "planner-test" and first["max_tokens"] == MAX_NEW_TOKENS
    assert first["response_format"]["json_schema"]["schema"] == answer_schema()
    assert first["messages"][0]["content"] == prompts.SYSTEM and "<mia>" in first["messages"][1]["content"]
    # The retry quotes the exact problem after the model's own answer.
    assert second["messages"][-2]["role"] == "assistant"
    assert "<mia> appears in no shot's prompt" in second["messages"][-1]["content"]
    assert len(result.attempts) == 2 and result.attempts[0].error and not result.attempts[1].error
    assert "<mia>" in result.story.shots[0].prompt


def test_endpoint_without_structured_output_is_asked_again_plainly():
    def reply(body: dict, headers: dict) -> tuple[int, str]:
        if "response_format" in body:
            return 400, json.dumps({"error": "response_format is not supported"})
        return 200, _chat(CANNED)

    with chat_server(reply) as (url, requests):
        result = plan_from_text(TEXT, planner="llm", url=url, model="m", timeout=10)
    assert result.used == "llm" and len(requests) == 2 and "response_format" not in requests[1]["body"]


def test_endpoint_timeout_is_a_clear_message():
    def slow(body: dict, headers: dict) -> tuple[int, str]:
        time.sleep(1.5)
        return 200, _chat(CANNED)

    with chat_server(slow) as (url, _):
        began = time.perf_counter()
        with pytest.raises(PlannerError, match=r"did not answer within 0\.3 s"):
            EndpointBackend(url, "m", timeout=0.3).complete(prompts.messages(TEXT, ["mia"], 2), answer_schema())
        assert time.perf_counter() - began < 1.4


def test_endpoint_401_names_the_key_variable(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with chat_server(lambda body, headers: (401, json.dumps({"error": "invalid api key"}))) as (url, _), \
            pytest.raises(PlannerError, match=rf"HTTP 401.*{API_KEY_ENV} \(it is not set\)"):
        EndpointBackend(url, "m").complete(prompts.messages(TEXT, ["mia"], 2), answer_schema())


def test_endpoint_bad_json_is_a_clear_message_and_planning_falls_back():
    with chat_server(lambda body, headers: (200, "<html>gateway</html>")) as (url, _):
        with pytest.raises(PlannerError, match="did not answer with JSON"):
            EndpointBackend(url, "m", timeout=10).complete(prompts.messages(TEXT, ["mia"], 2), answer_schema())
        result = plan_from_text(TEXT, planner="llm", shots=2, url=url, model="m", timeout=10)
    # A server that cannot answer is not retried: one attempt, then the sentence planner, with the reason.
    assert result.used == "sentences" and len(result.attempts) == 1
    assert "did not answer with JSON" in result.warnings[0] and "one shot per sentence" in result.warnings[0]
    assert len(result.story.shots) == 2 and "<mia>" in result.story.shots[0].prompt


def test_unreachable_endpoint_falls_back():
    with chat_server(lambda body, headers: (200, "")) as (url, _):
        pass  # closed: nothing listens on that port any more
    result = plan_from_text(TEXT, planner="llm", url=url, model="m", timeout=5)
    assert result.used == "sentences" and "cannot reach" in result.warnings[0]


# --- the tiny local model ------------------------------------------------------------------------------


def test_tiny_local_model_random_output_falls_back_with_a_warning(tiny_root, tmp_path):
    ensure_tiny(tiny_root, "qwen2.5-1.5b-instruct")
    backend = LocalBackend(weights_root=tiny_root, max_new_tokens=80)
    result = plan_from_text(TEXT, planner="llm", shots=2, backend=backend)
    assert result.used == "sentences" and result.planner == "llm"
    assert "gave no usable plan after 2 attempt(s)" in result.warnings[0]
    assert len(result.attempts) == 2
    for attempt in result.attempts:
        # Constrained decoding: even random weights write the start of the schema's JSON, not free text.
        assert re.match(r'\s*\{\s*"(title|shots)"\s*:', attempt.raw) and attempt.error
    retry = result.attempts[1].messages
    assert retry[-2] == {"role": "assistant", "content": result.attempts[0].raw}
    assert result.attempts[0].error in retry[-1]["content"]
    assert [s.prompt for s in result.story.shots] == ["<mia> runs up the hill with her kite.", "The wind lifts the kite into the sky."]
    story_file, record = save_plan(result, tmp_path / "story.yaml", TEXT)
    saved = json.loads(record.read_text())
    assert record == plan_path(story_file) and saved["used"] == "sentences" and saved["prompt_version"] == prompts.PROMPT_VERSION
    assert saved["attempts"][1]["messages"] == retry and saved["attempts"][0]["raw"] == result.attempts[0].raw
    assert [s.prompt for s in load_story(story_file).shots] == [s.prompt for s in result.story.shots]


def test_cancel_stops_the_local_model_instead_of_falling_back(tiny_root):
    from aas_core.errors import Cancelled
    from aas_core.progress import CancelToken

    ensure_tiny(tiny_root, "qwen2.5-1.5b-instruct")
    cancel, seen = CancelToken(), []
    LocalBackend(weights_root=tiny_root, max_new_tokens=1)._load()  # loaded, so the timer measures decoding only
    timer = threading.Timer(0.5, cancel.cancel)
    timer.start()
    began = time.perf_counter()
    with pytest.raises(Cancelled):
        plan_from_text(TEXT, planner="llm", weights_root=tiny_root, cancel=cancel, on_progress=lambda f, m: seen.append(m))
    # Its 1536 new tokens would take about a minute; the stopping criterion ends generation at the next token.
    assert time.perf_counter() - began < 10
    assert seen[0].startswith("planning with local:qwen2.5-1.5b-instruct (attempt 1 of 2)")


def test_missing_local_model_falls_back_naming_the_download(tmp_path):
    result = plan_from_text(TEXT, planner="llm", weights_root=tmp_path)
    assert result.used == "sentences" and "weights download qwen2.5-1.5b-instruct" in result.warnings[0]


# --- sentence planner and CLI --------------------------------------------------------------------------


def test_sentence_planner_merges_into_the_asked_number_of_shots():
    text = "A fox wakes. It stretches. It runs into the snow. It stops at the river."
    result = plan_from_text(text, shots=2)
    assert result.used == "sentences"
    assert [s.prompt for s in result.story.shots] == ["A fox wakes. It stretches.", "It runs into the snow. It stops at the river."]
    more = plan_from_text(text, shots=6)
    assert len(more.story.shots) == 4 and "made 4 shot(s), not 6" in more.warnings[0]


def test_bad_planner_inputs_raise():
    with pytest.raises(InputError, match="unknown planner"):
        plan_from_text(TEXT, planner="gpt")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="shots must be between"):
        plan_from_text(TEXT, shots=0)
    with pytest.raises(InputError, match="character name"):
        plan_from_text(TEXT, characters=["Mia Smith"])


def test_cli_story_new_with_an_endpoint_writes_story_and_plan(tmp_path, capsys):
    out = tmp_path / "kite.yaml"
    with chat_server(lambda body, headers: (200, _chat(CANNED))) as (url, _):
        code = main(["story", "new", TEXT, "--planner-url", url, "--planner-model", "m",
                     "--shots", "2", "--out", str(out), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["used"] == "llm" and data["plan"] == str(tmp_path / "kite.plan.json")
    assert data["shots"][1]["transition"] == "fade_black" and data["shots"][0]["frames"] == 16
    story = load_story(out)
    assert story.title == "Mia and the Kite" and story.shots[0].query.startswith("a child running")
