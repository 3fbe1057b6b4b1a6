"""Plan a story from a paragraph: a language model (local or an OpenAI-compatible endpoint) or one shot per sentence.

The `llm` planner asks for a JSON shot list (prompts in `aas_core.story.prompts`), validates it with
pydantic and the story schema, asks once more with the exact problems when it fails, and falls back
to the sentence planner with a warning: planning never crashes on what a model or a server does.
Every attempt (exact messages and raw answer) is kept so a plan can be saved beside its story.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Protocol, Sequence, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aas_core.errors import AASError, Cancelled, InputError
from aas_core.limits import MAX_CAPTION_CHARS, MAX_PROMPT_CHARS, MAX_QUERY_CHARS, MAX_TITLE_CHARS, check_text
from aas_core.progress import CancelToken, ProgressFn, report
from aas_core.stitch import Transition
from aas_core.story import prompts
from aas_core.story.schema import MAX_SHOTS, TOKEN, Character, GenerateSettings, Shot, Story, dump_story, parse_story, with_ids

if TYPE_CHECKING:
    from aas_core.device import Runtime

PlannerName = Literal["llm", "sentences"]
PLANNERS: tuple[str, ...] = get_args(PlannerName)
DEFAULT_PLANNER: PlannerName = "sentences"
"""Needs no model; `llm` is opt-in because it downloads ~3 GB (or needs a server)."""
DEFAULT_PLANNER_MODEL = "qwen2.5-1.5b-instruct"
API_KEY_ENV = "AAS_PLANNER_API_KEY"
"""Environment variable holding the endpoint's API key (never a command-line flag: it would land in shell history)."""
MAX_TEXT_CHARS = 20_000
"""Story text handed to a planner: ~4k words, far more than 100 shots need, and within a 1.5B model's context."""
DURATION_RANGE = (0.5, 10.0)
"""Seconds a planned shot may last; generation beyond ~10 s at story frame rates is out of reach of the backends."""
MAX_NEW_TOKENS = 1536
"""A 12-shot plan is ~900 tokens of JSON; the cap stops a model that never closes its JSON."""
DEFAULT_TIMEOUT = 120.0
PLAN_SUFFIX = ".plan.json"


class PlannerError(AASError):
    """A planner backend could not answer (server down, refused key, timeout, model missing); the message says what to do."""


class PlannedShot(BaseModel):
    """One shot as the language model writes it."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=3, max_length=MAX_QUERY_CHARS, description="motion and camera, for footage search")
    prompt: str = Field(min_length=3, max_length=MAX_PROMPT_CHARS, description="appearance, with <character> tokens")
    caption: str = Field(max_length=MAX_CAPTION_CHARS)
    duration: float = Field(ge=DURATION_RANGE[0], le=DURATION_RANGE[1])
    transition: Transition


class PlannerAnswer(BaseModel):
    """The whole answer: a title and the shots; `answer_schema()` is what constrained decoding enforces."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(max_length=MAX_TITLE_CHARS)
    shots: list[PlannedShot] = Field(min_length=1, max_length=MAX_SHOTS)


def answer_schema() -> dict[str, Any]:
    """The JSON schema of a planner answer (for `response_format` and the local logits processor)."""
    return PlannerAnswer.model_json_schema()


@dataclass
class Attempt:
    """One request to a planner backend: the exact messages, the raw answer, and why it was refused (if it was)."""

    messages: list[dict[str, str]]
    raw: str = ""
    error: str = ""
    seconds: float = 0.0


@dataclass
class PlanResult:
    """A planned story and how it came about (which planner answered, warnings, every attempt)."""

    story: Story
    planner: str
    """The planner asked for."""
    used: str
    """The planner whose shots the story holds (`sentences` after a fallback)."""
    backend: str = ""
    warnings: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    characters: list[str] = field(default_factory=list)
    prompt_version: int = prompts.PROMPT_VERSION

    def record(self, text: str) -> dict[str, Any]:
        """JSON-ready record of the planning (saved beside the story as `<story>.plan.json`)."""
        return {
            "prompt_version": self.prompt_version,
            "planner": self.planner,
            "used": self.used,
            "backend": self.backend,
            "characters": self.characters,
            "text": text,
            "warnings": self.warnings,
            "attempts": [dataclasses.asdict(a) for a in self.attempts],
        }


class PlannerBackend(Protocol):
    """Something that answers chat messages, ideally as JSON of the given schema."""

    label: str

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        """The assistant's answer text."""
        ...


# --- validating an answer ---------------------------------------------------------------------------


def _json_text(raw: str) -> str:
    """The JSON object inside an answer: models like to wrap it in ``` fences or a sentence."""
    text = raw.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if start >= 0 and end > start else text


def _pydantic_problems(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors()[:12]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(err["loc"]))
        lines.append(f"- {loc or 'answer'}: {err['msg']}")
    return "\n".join(lines)


def _frames_for(seconds: float, fps: float, backend: str) -> int:
    """Frames for a duration hint at the story's frame rate, in the counts the backend accepts."""
    from aas_core.generate.spec import MAX_FRAMES, VACE_TEMPORAL

    frames = max(1, round(seconds * fps))
    if backend == "vace":
        frames = (max(0, round((frames - 1) / VACE_TEMPORAL))) * VACE_TEMPORAL + 1
    return min(frames, MAX_FRAMES.get(backend, frames))


def parse_answer(raw: str, characters: Sequence[str], shots: Optional[int] = None, title: str = "") -> Story:
    """A planner's raw answer as a validated Story, or InputError listing every problem (the retry message quotes it)."""
    from aas_core.story.draft import engine_defaults

    try:
        data = json.loads(_json_text(raw))
    except ValueError as exc:
        raise InputError(f"- the answer is not valid JSON ({exc}); answer with one JSON object") from None
    try:
        answer = PlannerAnswer.model_validate(data)
    except ValidationError as exc:
        raise InputError(_pydantic_problems(exc)) from None
    problems = []
    if shots and len(answer.shots) != shots:
        problems.append(f"- shots: {len(answer.shots)} shots given, exactly {shots} were asked for")
    used: set[str] = set()
    for i, shot in enumerate(answer.shots):
        tokens = TOKEN.findall(shot.prompt)
        used.update(tokens)
        unknown = [t for t in tokens if t not in characters]
        if unknown:
            known = ", ".join(f"<{c}>" for c in characters) or "none"
            problems.append(f"- shots[{i}].prompt: {', '.join(f'<{t}>' for t in unknown)} is not a character (known: {known})")
    for name in characters:
        if name not in used:
            problems.append(f"- the character <{name}> appears in no shot's prompt; write <{name}> where it appears")
    if problems:
        raise InputError("\n".join(problems))
    defaults = engine_defaults()
    fps, backend = float(defaults.generate.fps or 8.0), defaults.generate.backend or "animatediff"
    story = Story(
        title=title or answer.title.strip(),
        characters=[Character(name=n) for n in characters],
        defaults=defaults,
        shots=[
            Shot(
                # The query feeds a CLIP text search: character tokens mean nothing there.
                query=TOKEN.sub(lambda m: m.group(1), s.query).strip(),
                prompt=s.prompt.strip(),
                caption=s.caption.strip(),
                transition=s.transition,
                generate=GenerateSettings(frames=_frames_for(s.duration, fps, backend)),
            )
            for s in answer.shots
        ],
    )
    try:
        # Through the story file's own validator, so a planned story is exactly as valid as a hand-written one.
        # Ids filled first: the schema check reads two id-less shots as a repeated id.
        return with_ids(parse_story(dump_story(with_ids(story)), source="planner answer"))
    except InputError as exc:
        raise InputError("- " + str(exc).replace("\n  ", "\n- ")) from None


# --- backends ----------------------------------------------------------------------------------------


class LocalBackend:
    """A registry instruct model through transformers, decoding under a JSON-schema constraint (lm-format-enforcer)."""

    def __init__(
        self,
        model: str = DEFAULT_PLANNER_MODEL,
        weights_root: Optional[str | os.PathLike[str]] = None,
        runtime: Optional["Runtime"] = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        constrained: bool = True,
        cancel: Optional[CancelToken] = None,
    ) -> None:
        self.model, self.weights_root, self.runtime = model, weights_root, runtime
        self.max_new_tokens, self.constrained, self.cancel = max_new_tokens, constrained, cancel
        self.label = f"local:{model}"

    def _load(self) -> tuple[Any, Any, Any]:
        """(tokenizer, model, enforcer tokenizer data), cached by the model owner."""
        from aas_core import models
        from aas_core.device import pick_runtime
        from aas_core.registry import get_spec
        from aas_core.weights import model_dir

        spec = get_spec(self.model)
        if spec.kind != "llm":
            raise InputError(f"{self.model} is a {spec.kind} model, not a language model; use {DEFAULT_PLANNER_MODEL}")
        folder = model_dir(self.model, self.weights_root)
        runtime = self.runtime or pick_runtime()
        key = models.ModelKey(self.model, str(folder), runtime.device, runtime.dtype_name, variant="planner")

        def load() -> tuple[Any, Any, Any]:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=runtime.dtype)
            lm = lm.to(runtime.torch_device).eval()  # type: ignore[arg-type]  # transformers types `.to` as its own wrapper
            return tokenizer, lm, _enforcer_data(tokenizer)

        return models.get(key, load)

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        """Greedy decoding of the chat; with `constrained`, only tokens that keep the text valid against `schema`."""
        import torch
        from transformers import StoppingCriteriaList

        _CancelCriteria = _cancel_criteria_class()

        tokenizer, lm, data = self._load()
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt")["input_ids"].to(lm.device)
        extra: dict[str, Any] = {}
        if self.cancel is not None:
            extra["stopping_criteria"] = StoppingCriteriaList([_CancelCriteria(self.cancel)])
        if self.constrained:
            from lmformatenforcer import JsonSchemaParser, TokenEnforcer

            enforcer = TokenEnforcer(data, JsonSchemaParser(schema))
            extra["prefix_allowed_tokens_fn"] = lambda _batch, sent: enforcer.get_allowed_tokens(sent.tolist()).allowed_tokens
        with torch.inference_mode():
            out = lm.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id, **extra,
            )
        if self.cancel is not None:
            self.cancel.check()
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def _cancel_criteria_class() -> type:
    """A transformers StoppingCriteria that ends generation once a CancelToken is set (built lazily: no import at load)."""
    from transformers import StoppingCriteria

    class CancelCriteria(StoppingCriteria):
        def __init__(self, cancel: CancelToken) -> None:
            self.cancel = cancel

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), self.cancel.cancelled, dtype=torch.bool, device=input_ids.device)

    return CancelCriteria


def _enforcer_data(tokenizer: Any) -> Any:
    """lm-format-enforcer's view of a tokenizer (its transformers helper predates transformers 5, so built here)."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    special = set(tokenizer.all_special_ids)
    # A token's text after "0" shows its leading space, which decoding a lone token may drop.
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    regular = []
    for idx in range(len(tokenizer)):
        if idx in special:
            continue
        after_zero = tokenizer.decode([zero, idx])[1:]
        regular.append((idx, after_zero, len(after_zero) > len(tokenizer.decode([idx]))))
    eos = tokenizer.eos_token_id

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    return TokenEnforcerTokenizerData(regular, decode, eos, False, len(tokenizer))


class EndpointBackend:
    """Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, hosted APIs) over plain HTTP."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key_env: str = API_KEY_ENV,
        timeout: float = DEFAULT_TIMEOUT,
        json_schema: bool = True,
    ) -> None:
        if not re.match(r"^https?://", url):
            raise InputError(f"planner URL {url!r} must start with http:// or https:// (e.g. http://localhost:8000/v1)")
        if not model:
            raise InputError("give the endpoint's model name with --planner-model (e.g. qwen2.5:1.5b for Ollama)")
        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model, self.api_key_env, self.timeout, self.json_schema = model, api_key_env, timeout, json_schema
        self.label = f"endpoint:{self.url} model {model}"

    def _post(self, body: dict[str, Any]) -> tuple[int, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except TimeoutError:
            raise PlannerError(f"{self.url} did not answer within {self.timeout:g} s; is the server busy or the model still loading? "
                               "Try again, or raise the timeout") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise PlannerError(f"{self.url} did not answer within {self.timeout:g} s; is the server busy or the model still loading?") from None
            raise PlannerError(f"cannot reach {self.url} ({exc.reason}); start the server or check --planner-url") from None

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        """POST the chat; asks for `response_format` json_schema and drops it once if the server refuses that field."""
        # max_tokens: some servers default to 128 new tokens, far too few for a shot list.
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0.2, "max_tokens": MAX_NEW_TOKENS}
        if self.json_schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "story_plan", "schema": schema}}
        status, text = self._post(body)
        if status == 400 and "response_format" in body and "response_format" in text:
            # Older servers reject structured output: parse and validate the plain answer instead.
            self.json_schema = False
            body.pop("response_format")
            status, text = self._post(body)
        if status in (401, 403):
            raise PlannerError(f"{self.url} refused the request (HTTP {status}): put a valid API key in the environment "
                               f"variable {self.api_key_env}" + ("" if os.environ.get(self.api_key_env) else " (it is not set)"))
        if status == 404:
            raise PlannerError(f"{self.url} answered HTTP 404: check --planner-url (an OpenAI-compatible base such as "
                               f"http://localhost:8000/v1) and --planner-model {self.model!r}")
        if status >= 400:
            raise PlannerError(f"{self.url} answered HTTP {status}: {text[:300]}")
        try:
            return str(json.loads(text)["choices"][0]["message"]["content"] or "")
        except ValueError:
            raise PlannerError(f"{self.url} did not answer with JSON (it began {text[:80]!r}); "
                               "--planner-url must point at an OpenAI-compatible API, e.g. http://localhost:8000/v1") from None
        except (KeyError, IndexError, TypeError):
            raise PlannerError(f"{self.url} answered JSON without choices[0].message.content; is it an OpenAI-compatible "
                               "chat completions endpoint?") from None


# --- planning ----------------------------------------------------------------------------------------


def story_characters(text: str, extra: Sequence[str] = ()) -> list[str]:
    """Character names: the given ones, then every `<name>` token in the text, each once."""
    from aas_core.concepts.timeinv import NAME_PATTERN

    names: list[str] = []
    for name in [*extra, *TOKEN.findall(text)]:
        if name not in names:
            names.append(name)
    bad = [n for n in names if not NAME_PATTERN.match(n)]
    if bad:
        raise InputError(f"character name(s) {', '.join(bad)} must be 1-40 lowercase letters, digits, - or _")
    return names


def sentence_plan(text: str, shots: Optional[int] = None, title: str = "", characters: Sequence[str] = ()) -> tuple[Story, list[str]]:
    """The sentence planner: one shot per line or sentence, merged evenly into `shots` when fewer are asked for."""
    from aas_core.story.draft import draft_story, split_units

    warnings = []
    units = split_units(text)
    if shots and units and len(units) > shots and not any("|" in u for u in units):
        groups = [units[len(units) * k // shots : len(units) * (k + 1) // shots] for k in range(shots)]
        text = "\n".join(" ".join(g) for g in groups)
    elif shots and len(units) < shots:
        warnings.append(f"the text has {len(units)} sentence(s), so the sentence planner made {len(units)} shot(s), not {shots}")
    story = draft_story(text, title=title)
    known = [c.name for c in story.characters]
    extra = [Character(name=n) for n in characters if n not in known]
    return dataclasses.replace(story, characters=[*story.characters, *extra]), warnings


def plan_from_text(
    text: str,
    planner: PlannerName = DEFAULT_PLANNER,
    shots: Optional[int] = None,
    title: str = "",
    characters: Sequence[str] = (),
    *,
    url: Optional[str] = None,
    model: Optional[str] = None,
    api_key_env: str = API_KEY_ENV,
    timeout: float = DEFAULT_TIMEOUT,
    weights_root: Optional[str | os.PathLike[str]] = None,
    runtime: Optional["Runtime"] = None,
    backend: Optional[PlannerBackend] = None,
    on_progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelToken] = None,
) -> PlanResult:
    """Plan a story from text; `llm` retries once with the validation errors, then falls back to sentences with a warning.

    Only the caller's own mistakes raise (InputError), and cancelling (Cancelled); whatever the model or server does
    ends in a plan.
    """
    # 1. Check the inputs (these are the caller's mistakes, so they raise).
    if planner not in PLANNERS:
        raise InputError(f"unknown planner {planner!r}; choose one of {', '.join(PLANNERS)}")
    check_text(text, "story text", MAX_TEXT_CHARS)
    if not text.strip():
        raise InputError("the text is empty; write the story in a few sentences, e.g. 'A fox runs through snow. It stops.'")
    if shots is not None and not 1 <= shots <= MAX_SHOTS:
        raise InputError(f"shots must be between 1 and {MAX_SHOTS}, got {shots}")
    check_text(title, "title", MAX_TITLE_CHARS)
    names = story_characters(text, characters)
    if planner == "sentences":
        story, warnings = sentence_plan(text, shots, title, names)
        return PlanResult(story=story, planner=planner, used="sentences", warnings=warnings, characters=names)

    # 2. Ask the model; a refused answer is retried once with its exact problems.
    if backend is None:
        backend = (EndpointBackend(url, model or "", api_key_env, timeout) if url
                   else LocalBackend(model or DEFAULT_PLANNER_MODEL, weights_root, runtime, cancel=cancel))
    schema = answer_schema()
    messages = prompts.messages(text, names, shots)
    attempts: list[Attempt] = []
    reason = ""
    for n in range(2):
        if cancel is not None:
            cancel.check()
        report(on_progress, n / 2, f"planning with {backend.label} (attempt {n + 1} of 2)")
        attempt = Attempt(messages=messages)
        attempts.append(attempt)
        began = time.perf_counter()
        try:
            attempt.raw = backend.complete(messages, schema)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a planner failure of any kind (server, OOM, missing model) falls back
            attempt.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, AASError) else str(exc)
            reason = attempt.error
            break
        finally:
            attempt.seconds = round(time.perf_counter() - began, 3)
        try:
            story = parse_answer(attempt.raw, names, shots, title)
        except InputError as exc:
            attempt.error = reason = str(exc)
            messages = [*messages, {"role": "assistant", "content": attempt.raw}, {"role": "user", "content": prompts.retry_message(str(exc))}]
            continue
        report(on_progress, 1.0, "planned")
        return PlanResult(story=story, planner=planner, used="llm", backend=backend.label, attempts=attempts, characters=names)

    # 3. Fall back to one shot per sentence, saying why.
    story, warnings = sentence_plan(text, shots, title, names)
    first_line = reason.strip().splitlines()[0] if reason.strip() else "no answer"
    warning = (f"the language-model planner ({backend.label}) gave no usable plan after {len(attempts)} attempt(s) "
               f"({first_line}); used one shot per sentence instead (details in the .plan.json file)")
    return PlanResult(story=story, planner=planner, used="sentences", backend=backend.label, warnings=[warning, *warnings],
                      attempts=attempts, characters=names)


def plan_path(story_path: str | os.PathLike[str]) -> Path:
    """Where a story's planning record lives: `<story>.plan.json` beside it."""
    path = Path(story_path)
    return path.with_name(path.stem + PLAN_SUFFIX)


def save_plan(result: PlanResult, story_path: str | os.PathLike[str], text: str) -> tuple[Path, Path]:
    """Write the planned story (YAML) and its record (exact prompts, raw answers, warnings) beside it, atomically."""
    from aas_core.fsutil import atomic_write_json
    from aas_core.story.schema import save_story

    story_file = save_story(result.story, story_path)
    record = plan_path(story_path)
    atomic_write_json(record, result.record(text))
    return story_file, record
