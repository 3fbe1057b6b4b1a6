"""The story planner's prompts, in one place and versioned: a plan records PROMPT_VERSION with its exact messages.

Bump PROMPT_VERSION whenever a text here changes, so saved plans say which wording produced them.
The split follows Animate-A-Story: the retrieval query describes motion and camera (what footage to
find), the generation prompt describes appearance (what to paint over that motion).
"""

from __future__ import annotations

from typing import Optional, Sequence

PROMPT_VERSION = 1

SYSTEM = """You are a film director planning a short animated video, shot by shot.
Each shot is made in two steps: first a stock video clip is RETRIEVED by a text query, only for its motion and camera movement; then the clip's structure (depth) is REPAINTED by a text-to-video model with a generation prompt.
For every shot write:
- "query": what moves and how the camera moves, in plain words for a stock-footage search (e.g. "a person walking towards the camera, slow tracking shot"). No names, no styles, no colours.
- "prompt": what the shot looks like: subject, appearance, setting, lighting, style. Write each story character as its token in angle brackets, exactly as given (e.g. "<mia>"), in every shot where that character appears.
- "caption": one short sentence of the story shown under the shot (at most 15 words).
- "duration": seconds the shot lasts, between 1 and 8.
- "transition": how this shot joins the next one: "cut", "crossfade" or "fade_black".
Also give the story a short "title".
Answer with one JSON object only, no text around it, in this form:
{"title": "...", "shots": [{"query": "...", "prompt": "...", "caption": "...", "duration": 2.0, "transition": "cut"}]}"""

EXAMPLE_ANSWER = {
    "title": "Mia and the Kite",
    "shots": [
        {
            "query": "a child running across a field, camera tracking sideways",
            "prompt": "<mia>, a small girl in a yellow raincoat, running through a green meadow, soft morning light, watercolor style",
            "caption": "Mia runs to the hill with her new kite.",
            "duration": 2.0,
            "transition": "crossfade",
        },
        {
            "query": "a kite rising into the sky, camera tilting up",
            "prompt": "a red paper kite climbing into a wide blue sky with small clouds, watercolor style",
            "caption": "The wind takes the kite high above her.",
            "duration": 2.0,
            "transition": "fade_black",
        },
    ],
}
"""A well-formed answer: shown in the README and used to give the tiny tokenizer realistic merges."""


def user_message(text: str, characters: Sequence[str], shots: Optional[int]) -> str:
    """The user turn: the story text, its characters' tokens and how many shots to write."""
    cast = ", ".join(f"<{name}>" for name in characters) if characters else "none (write no <token>)"
    count = f"exactly {shots} shots" if shots else "one shot per story beat (at most 12 shots)"
    return f"Characters (tokens): {cast}\nWrite {count}.\nStory:\n{text.strip()}"


def retry_message(error: str) -> str:
    """The follow-up turn after an answer failed validation: the exact problems, and a request for the whole JSON again."""
    return (
        "Your answer could not be used:\n"
        f"{error}\n"
        "Answer again with the complete corrected JSON object only."
    )


def messages(text: str, characters: Sequence[str], shots: Optional[int]) -> list[dict[str, str]]:
    """The chat messages of a first planning attempt."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_message(text, characters, shots)}]
