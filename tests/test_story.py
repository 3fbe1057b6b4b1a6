"""Story files: drafting from text, validation errors with line numbers, round trips."""

from __future__ import annotations

import json

import pytest

from aas_core.errors import InputError
from aas_core.story import MAX_SHOTS, ClipRef, draft_story, dump_story, load_story, parse_story, save_story


def test_draft_one_shot_per_sentence_with_characters():
    story = draft_story("Once upon a time <fox> lived in a wood. One day it ran! Then it slept?", title="Fox")
    assert [s.id for s in story.shots] == ["shot-01", "shot-02", "shot-03"]
    assert story.shots[0].prompt == "Once upon a time <fox> lived in a wood."
    assert story.shots[0].query == story.shots[0].caption == "Once upon a time fox lived in a wood."
    assert [c.name for c in story.characters] == ["fox"] and story.title == "Fox"


def test_draft_one_shot_per_line_and_query_prompt_syntax():
    text = "a dog runs on a beach | <rex> running on the moon\n\n# a comment\nwaves | the sea at night. Calm. | The end"
    story = draft_story(text)
    assert len(story.shots) == 2
    assert (story.shots[0].query, story.shots[0].prompt) == ("a dog runs on a beach", "<rex> running on the moon")
    assert (story.shots[1].query, story.shots[1].prompt, story.shots[1].caption) == ("waves", "the sea at night. Calm.", "The end")
    with pytest.raises(InputError, match="query \\| prompt"):
        draft_story("a | b | c | d")
    with pytest.raises(InputError, match="empty"):
        draft_story("  \n ")
    with pytest.raises(InputError, match="more than"):
        draft_story("\n".join(f"shot {i}" for i in range(MAX_SHOTS + 1)))


def test_round_trip_through_yaml_and_json(tmp_path):
    story = draft_story("A cat sleeps. <tom> wakes up.")
    assert parse_story(dump_story(story)) == story
    save_story(story, tmp_path / "s.yaml")
    assert load_story(tmp_path / "s.yaml") == story
    from aas_core.story.schema import story_to_dict

    (tmp_path / "s.json").write_text(json.dumps(story_to_dict(story)))
    assert load_story(tmp_path / "s.json") == story


def test_full_schema_parses():
    story = parse_story(
        """
version: 1
title: Full
characters: [{name: hero, concept: hero-v2}]
library: lib
defaults:
  generate: {backend: animatediff, width: 64, height: 64, frames: 8, fps: 8, steps: 2, guidance: 0, options: {scheduler: ddim}}
  depth: {estimator: depth-anything-v2-small, options: {smoothing: 0.5}}
  seed: 7
  transition: fade_black
  transition_duration: 1
output: {title_card: false, music: song.mp3, music_volume: 0.5}
shots:
  - {id: a, prompt: "<hero> walks", clip: {path: x.mp4, start: 1, end: 2.5}, seed: 3, transition: cut}
  - {prompt: "the sea", clip: y.mp4, generate: {steps: 4}, depth: {options: {fit: pad}}}
"""
    )
    assert story.characters[0].concept_name == "hero-v2"
    assert story.shots[0].clip == ClipRef(path="x.mp4", start=1.0, end=2.5)
    assert story.shots[1].clip == "y.mp4" and story.shots[1].generate.steps == 4
    assert story.defaults.generate.options == {"scheduler": "ddim"} and story.output.music_volume == 0.5


@pytest.mark.parametrize(
    "text, expected",
    [
        ("shots:\n  - prompt: a cat\n    tranistion: cut\n", r"line 3: shots\[0\]\.tranistion: unknown field"),
        ("title: x\nshots:\n  - prompt: a\n    transition: wipe\n", r"line 4: shots\[0\]\.transition: Input should be 'cut'"),
        ("shots:\n  - prompt: a\n    clip: {path: a.mp4, bad: 1}\n", r"line 3: shots\[0\]\.clip\.bad: unknown field"),
        ("shots:\n  - prompt: a\n    seed: many\n", r"line 3: shots\[0\]\.seed: Input should be a valid integer"),
        ("shots:\n  - caption: a\n", r"line 2: shots\[0\]\.prompt: required field is missing"),
        ("shots:\n - prompt: a\n  x: [\n", r"line 3, column 3: not valid YAML"),
        ("shots: []\n", r"line 1: the story has no shots"),
        ("title: only a title\n", r"no shots"),
        ("- a\n- b\n", r"must be a mapping"),
        ("title: a\ntitle: b\nshots: [{prompt: a}]\n", r"line 2: top level repeats the key 'title' \(first on line 1\)"),
        ("version: 9\nshots: [{prompt: a}]\n", r"newer than this program"),
        ("shots:\n  - {id: a, prompt: x}\n  - {id: a, prompt: y}\n", r"line 3: shots\[1\]\.id: shot id 'a' is used twice"),
        ("shots:\n  - {id: 'bad id', prompt: x}\n", r"shots\[0\]\.id: shot id 'bad id' must be"),
        ("shots:\n  - {prompt: 'a <ghost> walks'}\n", r"line 2: shots\[0\]\.prompt: <ghost> is not a character"),
        ("characters: [{name: Hero}]\nshots: [{prompt: x}]\n", r"characters\[0\]\.name: character name 'Hero'"),
        ("shots:\n  - prompt: x\n    clip: {path: a.mp4, start: 3, end: 2}\n", r"line 3: shots\[0\]\.clip\.end: clip end 2.0 must be after"),
        ("shots:\n  - {id: shot-02, prompt: x}\n  - {prompt: y}\n", r"collide with automatic ids"),
    ],
)
def test_validation_errors_name_line_and_field(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=expected):
        load_story(path)


def test_too_many_shots_is_refused_before_anything_else(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("shots:\n" + "".join(f"  - prompt: shot {i}\n" for i in range(500)))
    with pytest.raises(InputError, match=f"500 shots is more than the {MAX_SHOTS}"):
        load_story(path)


def test_every_problem_is_listed_at_once():
    with pytest.raises(InputError) as err:
        parse_story("shots:\n  - {prompt: a, seed: x}\n  - {prompt: b, fps: 3}\n  - {prompt: c, transition: zoom}\n")
    message = str(err.value)
    assert "shots[0].seed" in message and "shots[1].fps" in message and "shots[2].transition" in message


def test_missing_story_file_says_how_to_make_one(tmp_path):
    with pytest.raises(InputError, match="story new"):
        load_story(tmp_path / "none.yaml")


def test_shots_without_ids_are_not_duplicates_but_repeated_ids_are():
    story = parse_story("shots:\n  - prompt: a\n  - prompt: b\n")
    assert [shot.prompt for shot in story.shots] == ["a", "b"]
    with pytest.raises(InputError, match="used twice"):
        parse_story("shots:\n  - {id: x, prompt: a}\n  - {id: x, prompt: b}\n")
