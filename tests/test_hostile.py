"""Hostile inputs and faults: nothing a visitor sends can exhaust the server, every failure is a clear message.

Memory-bounded cases run in a fresh interpreter and assert its peak RSS (resource.getrusage), since the
pytest process's own peak says nothing about one call.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from aas_core.errors import InputError
from aas_core.limits import MAX_CAPTION_CHARS, MAX_PROMPT_CHARS, MAX_STORY_BYTES, MAX_STORY_DEPTH, check_text
from aas_core.story import load_story, parse_story


def peak_rss_mb(code: str, timeout: float = 120) -> dict:
    """Run `code` in a fresh Python; it prints one JSON object; `base_mb`/`peak_mb` are RSS around its `# measure` part."""
    setup, measured = code.split("# measure\n")
    script = (
        "import json, resource\n" + textwrap.dedent(setup)
        + "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\nresult = {}\n"
        + textwrap.dedent(measured)
        + "result.update(base_mb=base, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
        + "print(json.dumps(result))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- length limits -------------------------------------------------------------------------------------


def test_check_text_names_field_length_and_limit():
    assert check_text("ok", "prompt", 5) == "ok"
    assert check_text(None, "caption", 5) == ""
    with pytest.raises(InputError, match=r"prompt is 6 characters long; the limit is 5"):
        check_text("abcdef", "prompt", 5)
    with pytest.raises(InputError, match="must be text"):
        check_text(3, "title", 5)


def test_shot_spec_refuses_a_megabyte_prompt_before_any_model():
    from aas_core.generate import ShotSpec

    with pytest.raises(InputError, match=f"prompt is 1,000,000 characters long; the limit is {MAX_PROMPT_CHARS:,}"):
        ShotSpec(prompt="a" * 1_000_000)
    with pytest.raises(InputError, match="negative_prompt is"):
        ShotSpec(prompt="a cat", negative_prompt="b" * (MAX_PROMPT_CHARS + 1))
    assert ShotSpec(prompt="a" * MAX_PROMPT_CHARS).prompt


def test_story_text_limits_name_line_and_field():
    text = f"title: {'t' * 400}\nshots:\n  - prompt: ok\n  - prompt: ok\n    caption: {'c' * (MAX_CAPTION_CHARS + 1)}\n"
    with pytest.raises(InputError) as err:
        parse_story(text)
    message = str(err.value)
    assert "line 1: title: 400 characters long; the limit is 300" in message
    assert f"line 5: shots[1].caption: {MAX_CAPTION_CHARS + 1} characters long; the limit is {MAX_CAPTION_CHARS}" in message
    from aas_core.story import Shot, draft_story

    with pytest.raises(ValueError, match="at most 2000 characters"):
        Shot(prompt="a" * (MAX_PROMPT_CHARS + 1))  # stories built in Python (drafts, the app) are held to it too
    with pytest.raises(ValueError, match="at most 2000 characters"):
        draft_story("word " * 1000)


def test_cli_generate_long_prompt_is_a_json_error(tmp_path, capsys):
    from aas_core.cli import main

    code = main(["generate", "--prompt", "x" * 50_000, "--depth", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 2 and out["ok"] is False and "prompt is 50,000 characters long" in out["error"]


# --- story files: bombs, nesting, size, numbers, unicode -----------------------------------------------

ALIAS_BOMB = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
    + ["shots: [{prompt: boom}]"]
)
"""419 bytes that expand to 9**9 (387 million) strings if aliases are followed (the issue's was 485)."""


def test_alias_bomb_is_refused_in_bounded_memory():
    assert len(ALIAS_BOMB) < 600
    result = peak_rss_mb(
        f"""
        from aas_core.story import parse_story
        from aas_core.errors import InputError
        # measure
        try:
            parse_story({ALIAS_BOMB!r})
        except InputError as exc:
            result["error"] = str(exc)
        """
    )
    assert "anchors (&a) are not allowed" in result["error"]
    assert result["peak_mb"] - result["base_mb"] < 50, result


def test_a_lone_alias_is_refused_with_its_line():
    with pytest.raises(InputError, match=r"line 3: aliases \(\*x\) are not allowed"):
        parse_story("shots:\n  - prompt: a\n  - *x\n")


@pytest.mark.parametrize("opener, closer", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_a_clear_error_not_recursion(opener, closer):
    with pytest.raises(InputError, match=f"nested more than {MAX_STORY_DEPTH} levels deep"):
        parse_story("shots: [{prompt: a}]\nx: " + opener * 5000 + "1" + closer * 5000)


def test_huge_story_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "w") as fh:
        fh.write("shots:\n  - prompt: a\n# " + "x" * (MAX_STORY_BYTES + 10) + "\n")
    with pytest.raises(InputError, match=r"huge.yaml is [\d,]+ bytes; a story file may be at most"):
        load_story(path)


def test_many_values_are_refused_quickly():
    import time

    began = time.perf_counter()
    with pytest.raises(InputError, match="more than 20,000 values"):
        parse_story("shots: [{prompt: a}]\nx: [" + ",".join(["1"] * 400_000) + "]\n")
    assert time.perf_counter() - began < 10


@pytest.mark.parametrize(
    "value, where",
    [("NaN", "shots[0].generate.guidance"), ("Infinity", "shots[0].generate.guidance"), ("-Infinity", "shots[0].generate.guidance")],
)
def test_json_non_finite_numbers_are_refused_with_line(value, where):
    text = '{\n  "shots": [\n    {"prompt": "a", "generate": {"guidance": ' + value + "}}\n  ]\n}\n"
    with pytest.raises(InputError, match=rf"line 3: {re.escape(where)}: {value} is not a finite number"):
        parse_story(text)


def test_depth_options_non_finite_and_out_of_range_are_refused_with_line():
    with pytest.raises(InputError, match=r"line 5: shots\[0\]\.depth\.options\.smoothing: \.nan is not a finite number"):
        parse_story("shots:\n  - prompt: a\n    depth:\n      options:\n        smoothing: .nan\n")
    with pytest.raises(InputError) as err:
        parse_story("defaults:\n  depth:\n    options: {smoothing: 99, fit: sideways, bogus: 1}\nshots: [{prompt: a}]\n")
    message = str(err.value)
    assert "line 3: defaults.depth.options.smoothing: Input should be less than or equal to 8" in message
    assert "defaults.depth.options.fit: Input should be 'crop' or 'pad'" in message
    assert "defaults.depth.options.bogus: unknown field" in message
    story = parse_story("shots:\n  - prompt: a\n    depth: {options: {smoothing: 1, speed: 2, fit: pad}}\n")
    assert story.shots[0].depth is not None and story.shots[0].depth.options == {"smoothing": 1.0, "speed": 2.0, "fit": "pad"}


def test_quoted_non_finite_text_is_refused_where_a_number_is_needed():
    with pytest.raises(InputError, match=r"output\.music_fade_out: Input should be a finite number"):
        parse_story('output: {music_fade_out: "Infinity"}\nshots: [{prompt: a}]\n')


def test_json_story_with_escaped_astral_characters_loads(tmp_path):
    path = tmp_path / "emoji.json"
    path.write_text(json.dumps({"title": "Fox \U0001F98A", "shots": [{"prompt": "a fox \U0001F600", "caption": "\U0001F600!"}]}))
    assert "\\ud83e" in path.read_text()  # Python's json.dumps escapes astral characters as surrogate pairs
    story = load_story(path)
    assert story.title == "Fox \U0001F98A" and story.shots[0].prompt == "a fox \U0001F600"
    from aas_core.story import dump_story

    assert parse_story(dump_story(story)) == story
    with pytest.raises(InputError, match=r"line 1: shots\[0\]\.prompt: holds a broken \\u escape"):
        parse_story('{"shots": [{"prompt": "half \\ud83d"}]}')


# --- captions ------------------------------------------------------------------------------------------


def test_render_text_of_a_100kb_caption_stays_caption_sized():
    result = peak_rss_mb(
        """
        from aas_core.stitch import render_text
        render_text("warm up", 460, 36)
        # measure
        image = render_text("a long caption " * 7000, 460, 36)
        result["shape"] = list(image.shape)
        """
    )
    assert result["shape"][1] == 460 and result["shape"][0] < 200
    assert result["peak_mb"] - result["base_mb"] < 30, result


def test_render_text_cuts_with_an_ellipsis():
    from aas_core.stitch import render_text

    one = render_text("short", 300, 20)
    cut = render_text("word " * 500, 300, 20, max_lines=2)
    assert cut.shape[0] < 3 * one.shape[0]


def test_stitch_refuses_an_over_long_caption(tmp_path):
    from aas_core.stitch import StitchShot, stitch
    from tests.helpers import moving_square_frames, write_clip

    clip = write_clip(tmp_path / "a.mp4", moving_square_frames(frames=4, size=(32, 32)))
    with pytest.raises(InputError, match=f"caption of shot 1 is {MAX_CAPTION_CHARS + 1} characters long"):
        stitch([StitchShot(str(clip), caption="c" * (MAX_CAPTION_CHARS + 1))], tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


# --- encoding ------------------------------------------------------------------------------------------


def test_same_frames_encode_bit_identically_on_any_cpu_count_and_under_load(tmp_path):
    """x264's automatic thread count follows the CPUs the process may use; frame threads change the bitstream."""
    import os

    from aas_core.fsutil import file_digest
    from aas_core.video_io import write_video

    frames = (np.random.default_rng(0).random((16, 256, 256, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    write_video(tmp_path / "all-cpus.mp4", frames, 8)
    one_cpu = (
        "import os, numpy as np\nfrom aas_core.video_io import write_video\n"
        f"os.sched_setaffinity(0, {{0}})\nwrite_video({str(tmp_path / 'one-cpu.mp4')!r}, np.load({str(tmp_path / 'frames.npy')!r}), 8)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", one_cpu], check=True, env=env, timeout=120)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        write_video(tmp_path / "loaded.mp4", frames, 8)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    digests = {name: file_digest(tmp_path / name) for name in ("all-cpus.mp4", "one-cpu.mp4", "loaded.mp4")}
    assert len(set(digests.values())) == 1, digests
    assert b"threads=1 " in (tmp_path / "all-cpus.mp4").read_bytes()  # x264 records its settings in the stream


# --- concept imports: huge or damaged TI, NaN or mismatched LoRA ----------------------------------------


@pytest.fixture(scope="module")
def sd_root(tiny_root, tmp_path_factory):
    from tests.test_concepts import concept_root

    return concept_root(tiny_root, tmp_path_factory.mktemp("hostile_weights"), "sd15")


def _tiny_lora(root, *, kohya: bool = False) -> dict:
    """A rank-2 LoRA on the tiny SD1.5's cross-attention keys and first text-encoder query, sized from its files."""
    import torch
    from safetensors import safe_open

    gen = torch.Generator().manual_seed(3)
    tensors = {}
    with safe_open(str(root / "sd15" / "unet" / "diffusion_pytorch_model.safetensors"), framework="pt") as fh:
        names = [k[: -len(".weight")] for k in fh.keys() if k.endswith("attn2.to_k.weight")]
        shapes = {n: fh.get_slice(f"{n}.weight").get_shape() for n in names}
    for name, (out, width) in shapes.items():
        if kohya:
            key = "lora_unet_" + name.replace(".", "_")
            tensors[f"{key}.lora_down.weight"] = torch.randn(2, width, generator=gen)
            tensors[f"{key}.lora_up.weight"] = torch.randn(out, 2, generator=gen)
            tensors[f"{key}.alpha"] = torch.tensor(2.0)
        else:
            tensors[f"unet.{name}.lora_A.weight"] = torch.randn(2, width, generator=gen)
            tensors[f"unet.{name}.lora_B.weight"] = torch.randn(out, 2, generator=gen)
    if not kohya:
        te = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
        tensors[f"{te}.lora_A.weight"] = torch.randn(2, 32, generator=gen)
        tensors[f"{te}.lora_B.weight"] = torch.randn(32, 2, generator=gen)
    return tensors


def test_lora_import_checks_finite_values_ranks_and_layer_sizes(sd_root, tmp_path):
    import torch
    from safetensors.torch import save_file

    from aas_core.concepts import import_lora, list_concepts

    good = _tiny_lora(sd_root)
    save_file(good, str(tmp_path / "good.safetensors"))
    assert import_lora(tmp_path / "good.safetensors", "good-lora", trigger="hat", root=sd_root).lora
    save_file(_tiny_lora(sd_root, kohya=True), str(tmp_path / "kohya.safetensors"))
    assert import_lora(tmp_path / "kohya.safetensors", "kohya-lora", trigger="hat", root=sd_root).lora

    a_key = next(k for k in good if k.startswith("unet.") and "lora_A" in k)
    b_key = a_key.replace("lora_A", "lora_B")
    te_b = next(k for k in good if k.startswith("text_encoder.") and "lora_B" in k)
    bad = {
        "nan": ({**good, a_key: good[a_key] * float("nan")}, "holds NaN or infinite values"),
        "inf": ({**good, te_b: good[te_b] + float("inf")}, "holds NaN or infinite values"),
        "rank": ({**good, b_key: torch.randn(good[b_key].shape[0], 3)}, "rank 2 in lora_A but 3 in lora_B"),
        "out": ({**good, b_key: torch.randn(good[b_key].shape[0] * 2, 2)}, r"is 16x32 in sd15 but the LoRA gives 32x32"),
        "te": ({**good, te_b: torch.randn(64, 2)}, r"text_encoder\.encoder\.layers\.0\.self_attn\.q_proj is 32x32"),
        "layer": (
            {**good, "unet.down_blocks.9.attentions.0.proj_in.lora_A.weight": torch.randn(2, 16),
             "unet.down_blocks.9.attentions.0.proj_in.lora_B.weight": torch.randn(16, 2)},
            r"targets layer unet\.down_blocks\.9\.attentions\.0\.proj_in, which sd15 does not have",
        ),
    }
    for name, (tensors, message) in bad.items():
        save_file(tensors, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(InputError, match=message):
            import_lora(tmp_path / f"{name}.safetensors", f"bad-{name}", trigger="hat", root=sd_root)
    assert not [c.name for c in list_concepts(sd_root) if c.name.startswith("bad-")]


def test_textual_inversion_import_refuses_huge_and_non_finite_embeddings(sd_root, tmp_path):
    import time

    import torch
    from safetensors.torch import save_file

    from aas_core.concepts import import_textual_inversion, list_concepts
    from aas_core.limits import MAX_TI_VECTORS

    save_file({"<big>": torch.randn(20_000, 32)}, str(tmp_path / "big.safetensors"))
    began = time.perf_counter()
    with pytest.raises(InputError, match=f"20,000 vectors per token; at most {MAX_TI_VECTORS}"):
        import_textual_inversion(tmp_path / "big.safetensors", "big", root=sd_root)
    assert time.perf_counter() - began < 5
    torch.save({"string_to_param": {"*": torch.full((2, 32), float("nan"))}}, tmp_path / "nan.pt")
    with pytest.raises(InputError, match="holds NaN or infinite values"):
        import_textual_inversion(tmp_path / "nan.pt", "nan-ti", root=sd_root)
    save_file({"<x>": torch.randn(MAX_TI_VECTORS, 32)}, str(tmp_path / "edge.safetensors"))
    assert import_textual_inversion(tmp_path / "edge.safetensors", "edge", root=sd_root).vectors == MAX_TI_VECTORS
    (tmp_path / "model.safetensors").write_bytes(b"\0" * (11 * 2**20))
    with pytest.raises(InputError, match="is 11 MB; a textual-inversion file is a few KB"):
        import_textual_inversion(tmp_path / "model.safetensors", "model", root=sd_root)
    assert {"big", "nan-ti", "model"}.isdisjoint(c.name for c in list_concepts(sd_root))


def test_names_with_a_trailing_newline_are_refused():
    from aas_core.concepts import check_name

    with pytest.raises(InputError, match="is not allowed"):
        check_name("alice\n")
    assert check_name("alice") == "alice"
    with pytest.raises(InputError, match=r"shot id 'a\\n' must be"):
        parse_story('shots: [{id: "a\\n", prompt: x}]')
    with pytest.raises(InputError, match="character name"):
        parse_story('characters: [{name: "bob\\n"}]\nshots: [{prompt: x}]')


def test_one_prompt_cannot_hold_more_concept_vectors_than_the_cap():
    from aas_core.concepts import Concept
    from aas_core.concepts.inject import check_compatible
    from aas_core.limits import MAX_PROMPT_TI_VECTORS

    many = [Concept(name=f"c{i}", class_word="cat", buckets=1, vectors=16, dim=32, base_model="sd15") for i in range(5)]
    assert 5 * 16 > MAX_PROMPT_TI_VECTORS
    with pytest.raises(InputError, match=f"take 80 token vectors; at most {MAX_PROMPT_TI_VECTORS}"):
        check_compatible(None, many)  # refused before the pipeline is looked at


# --- full disk, read-only folders ----------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path, size: str = "256k", readonly: bool = False):
    """A real tmpfs of `size` at `path` (read-only on request: root cannot write there either)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here ({done.stderr.decode().strip()}); the OS-call tests below still run")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    from aas_core.errors import StorageError
    from aas_core.fsutil import atomic_write_bytes, atomic_write_json
    from aas_core.video_io import write_video

    with small_disk(tmp_path / "disk") as disk:
        atomic_write_json(disk / "run.json", {"kept": True})
        with pytest.raises(StorageError, match=rf"cannot write to {re.escape(str(disk))}: the disk is full \(.* free, about 1\.0 MB needed\)"):
            atomic_write_bytes(disk / "run.json", b"x" * 1_000_000)
        assert json.loads((disk / "run.json").read_text()) == {"kept": True}
        frames = (np.random.default_rng(0).random((16, 256, 256, 3)) * 255).astype(np.uint8)
        with pytest.raises(StorageError, match="the disk is full .* before it filled up needed"):
            write_video(disk / "shot.mp4", frames, 8)
        assert sorted(p.name for p in disk.iterdir()) == ["run.json"]  # no temp file left behind


def test_read_only_folder_is_a_clear_error(tmp_path):
    from aas_core.errors import StorageError
    from aas_core.fsutil import atomic_dir, atomic_write_json, check_writable

    with small_disk(tmp_path / "ro", readonly=True) as ro:
        for attempt in (lambda: atomic_write_json(ro / "a.json", {}), lambda: check_writable(ro / "sub"), lambda: atomic_dir(ro / "c").__enter__()):
            with pytest.raises(StorageError, match=rf"cannot write to {re.escape(str(ro))}.*read-only file system"):
                attempt()


def test_disk_errors_at_the_os_call_are_mapped_without_a_mount(tmp_path, monkeypatch):
    """Where mounting is not allowed: the OS calls themselves fail as a full or read-only disk would."""
    import errno
    import os

    from aas_core.errors import StorageError
    from aas_core.fsutil import atomic_write_bytes, check_writable

    real_replace = os.replace

    def full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match="the disk is full .*about 10 bytes needed"):
        atomic_write_bytes(tmp_path / "a.bin", b"0123456789")
    monkeypatch.setattr(os, "replace", real_replace)
    assert list(tmp_path.iterdir()) == []
    check_writable(tmp_path, need_bytes=1)
    with pytest.raises(StorageError, match=r"the disk is full \(.* free, about 1000000\.0 GB needed\)"):
        check_writable(tmp_path, need_bytes=10**15)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "open", read_only)  # tempfile.mkstemp opens through os.open
    with pytest.raises(StorageError, match="read-only file system"):
        check_writable(tmp_path / "x")


def test_cli_json_reports_a_read_only_output_as_an_error_object(tmp_path, capsys):
    from aas_core.cli import main

    with small_disk(tmp_path / "ro", readonly=True) as ro:
        code = main(["story", "new", "A cat sleeps. A dog runs.", "--out", str(ro / "story.yaml"), "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 2 and out["ok"] is False and out["error_type"] == "StorageError" and out["errno"] == "EROFS"
    assert f"cannot write to {ro}" in out["error"] and "read-only" in out["error"]


def test_generate_checks_its_output_folder_before_loading_anything(tmp_path):
    import time

    from aas_core.depth import DepthVideo
    from aas_core.errors import StorageError
    from aas_core.generate import ShotSpec, generate

    depth = DepthVideo(frames=np.zeros((4, 64, 64), np.float32), fps=8.0)
    began = time.perf_counter()
    with small_disk(tmp_path / "ro", readonly=True) as ro:
        # No weights exist under weights_root: reaching the models would be a different error.
        with pytest.raises(StorageError, match="read-only"):
            generate(ShotSpec(prompt="a cat", width=64, height=64, frames=4, steps=1), depth, out_dir=ro / "shots",
                     weights_root=tmp_path / "no-weights")
    with small_disk(tmp_path / "full", size="64k") as full:
        with pytest.raises(StorageError, match=r"the disk is full \(.* free, about 3\.1 MB needed\)"):
            generate(ShotSpec(prompt="a cat", width=256, height=256, frames=16, steps=1), depth, out_dir=full,
                     weights_root=tmp_path / "no-weights")
    assert time.perf_counter() - began < 10


def test_sweep_removes_only_temp_leftovers(tmp_path):
    from aas_core.fsutil import sweep_temps

    shot = tmp_path / "shots" / "a" / "k"
    shot.mkdir(parents=True)
    keep = [shot / "comparison.mp4", shot / ".gitignore", tmp_path / ".lock", tmp_path / "run.json"]
    junk = [shot / ".comparison.mp4.a1b2c3d4.mp4", tmp_path / ".run.json.zz_9y8x7.tmp"]
    for path in keep + junk:
        path.write_text("x")
    (tmp_path / ".stitch-abcdefgh").mkdir()
    removed = sweep_temps(tmp_path)
    assert sorted(removed) == sorted(junk + [tmp_path / ".stitch-abcdefgh"])
    assert all(p.exists() for p in keep) and not any(p.exists() for p in junk)


# --- concepts: delete while training, overwrite while listing -------------------------------------------


def test_concept_delete_is_refused_while_it_trains_and_it_never_comes_back(sd_root, tmp_path):
    import threading

    from aas_core.concepts import TrainSettings, delete_concept, list_concepts, train_concept
    from aas_core.concepts.store import concept_folder
    from aas_core.device import Runtime
    from aas_core.errors import BusyError, Cancelled
    from aas_core.progress import CancelToken
    from tests.test_concepts import FAST, make_photo

    photos = [make_photo(tmp_path / f"p{i}.png", seed=i) for i in range(2)]
    settings = TrainSettings(**{**FAST, "steps": 400, "validate_every": 0, "checkpoint_every": 0})
    started, cancel, outcome = threading.Event(), CancelToken(), {}

    def progress(fraction, message=""):
        started.set()

    def run():
        try:
            outcome["result"] = train_concept("busy", "cat", photos, settings, root=sd_root, runtime=Runtime("cpu", "float32"),
                                              on_progress=progress, cancel=cancel)
        except Cancelled as exc:
            outcome["cancelled"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert started.wait(120)
        with pytest.raises(BusyError, match="concept 'busy' is being trained or written right now"):
            delete_concept("busy", sd_root)
    finally:
        cancel.cancel()
        worker.join(300)
    assert "cancelled" in outcome and not concept_folder("busy", sd_root).exists()
    delete_concept("busy", sd_root)  # now free: removes the unfinished training's checkpoint
    assert "busy" not in [c.name for c in list_concepts(sd_root)]
    with pytest.raises(InputError, match="vectors must be at most 16"):
        TrainSettings(vectors=17).check()


def test_overwriting_a_concept_never_hides_it_from_listings(sd_root):
    import threading

    import torch

    from aas_core.concepts import Concept, list_concepts
    from aas_core.concepts.store import write_concept

    def make(seed: int) -> None:
        meta = Concept(name="steady", class_word="cat", buckets=1, vectors=1, dim=32, base_model="sd15", tiny=True)
        write_concept(meta, torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(seed)), sd_root, overwrite=True)

    make(0)
    stop, misses, looks = threading.Event(), [], [0]

    def watch():
        while not stop.is_set():
            looks[0] += 1
            if "steady" not in [c.name for c in list_concepts(sd_root)]:
                misses.append(looks[0])

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for seed in range(1, 40):
            make(seed)
    finally:
        stop.set()
        watcher.join()
    assert looks[0] > 20 and misses == []
    assert not [p.name for p in (sd_root / "concepts").iterdir() if p.name.startswith(".steady.") and not p.name.endswith(".lock")]


def test_a_read_only_or_full_concepts_folder_is_a_clear_error(tiny_root, tmp_path):
    import torch
    from safetensors.torch import save_file

    from aas_core.concepts import import_textual_inversion
    from aas_core.errors import StorageError
    from tests.test_concepts import concept_root

    (tmp_path / "weights").mkdir()
    root = concept_root(tiny_root, tmp_path / "weights", "sd15")
    save_file({"<x>": torch.randn(2, 32)}, str(tmp_path / "x.safetensors"))
    with small_disk(root / "concepts", readonly=True):
        with pytest.raises(StorageError, match=rf"cannot write to {re.escape(str(root / 'concepts'))}: it is on a read-only file system"):
            import_textual_inversion(tmp_path / "x.safetensors", "ro-ti", root=root)
    with small_disk(root / "concepts", size="8k") as full:
        (full / "filler").write_bytes(b"\0" * 4096)
        with pytest.raises(StorageError, match="the disk is full"):
            import_textual_inversion(tmp_path / "x.safetensors", "full-ti", root=root)
        assert sorted(p.name for p in full.iterdir() if not p.name.endswith(".lock")) == ["filler"]


def test_cli_depth_refuses_a_read_only_out_before_estimating(tmp_path, capsys):
    from aas_core.cli import main
    from tests.helpers import moving_square_frames, write_clip

    clip = write_clip(tmp_path / "clip.mp4", moving_square_frames(frames=8))
    with small_disk(tmp_path / "ro", readonly=True) as ro:
        # No depth weights exist under --weights: reaching the estimator would be another error.
        code = main(["depth", str(clip), "--out", str(ro / "d"), "--weights", str(tmp_path / "none"), "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 2 and out["error_type"] == "StorageError" and "read-only" in out["error"]


# --- story runs: one writer per run folder, error.log faults, stale files -------------------------------

STORY_MODELS = ("depth-anything-v2-small", "sd15", "animatediff-motion-adapter-v1-5-3", "controlnet-depth-sd15")


@pytest.fixture(scope="module")
def story_env(tiny_root, tmp_path_factory):
    """Tiny weights and two clips; returns (weights root, folder with clips)."""
    from tests.helpers import ensure_tiny, moving_square_frames, write_clip

    ensure_tiny(tiny_root, *STORY_MODELS)
    folder = tmp_path_factory.mktemp("hostile_story")
    for colour, direction in (("red", "right"), ("green", "down")):
        write_clip(folder / f"{colour}.mp4", moving_square_frames(colour, direction, frames=16), fps=8)
    return tiny_root, folder


def _two_shots(folder, green: str = "green.mp4"):
    return parse_story(
        "defaults:\n  generate: {width: 64, height: 64, frames: 4, fps: 8, steps: 1, guidance: 0}\n"
        "output: {title_card: false}\n"
        f"shots:\n  - {{id: red, prompt: a red square, clip: {folder / 'red.mp4'}}}\n"
        f"  - {{id: green, prompt: a green square, clip: {folder / green}}}\n"
    )


def test_a_second_run_on_the_same_folder_is_refused(story_env, tmp_path):
    import threading

    from aas_core.device import Runtime
    from aas_core.errors import BusyError
    from aas_core.story import run_story

    root, folder = story_env
    inside, release, outcome = threading.Event(), threading.Event(), {}

    def progress(fraction, message=""):
        if "green" in message:
            inside.set()
            assert release.wait(120)

    def first():
        outcome["run"] = run_story(_two_shots(folder), tmp_path / "out", weights_root=root, metrics=False,
                                   runtime=Runtime("cpu", "float32"), on_progress=progress)

    worker = threading.Thread(target=first)
    worker.start()
    try:
        assert inside.wait(180), "the first run never reached its second shot"
        with pytest.raises(BusyError, match=rf"another story run is writing {re.escape(str(tmp_path / 'out'))}"):
            run_story(_two_shots(folder), tmp_path / "out", weights_root=root, metrics=False, runtime=Runtime("cpu", "float32"))
    finally:
        release.set()
        worker.join(300)
    assert [s.status for s in outcome["run"].shots] == ["generated", "generated"]


def test_unwritable_error_log_still_finishes_the_story_and_stale_files_go(story_env, tmp_path):
    import shutil

    from aas_core.device import Runtime
    from aas_core.story import execute_plan, plan_story

    root, folder = story_env
    runtime = Runtime("cpu", "float32")
    shutil.copy(folder / "green.mp4", tmp_path / "doomed.mp4")
    out = tmp_path / "out"
    story = _two_shots(folder, green=str(tmp_path / "doomed.mp4"))
    plan = plan_story(story, out, folder, root, None, runtime)
    (tmp_path / "doomed.mp4").unlink()  # the clip vanishes after the checks: shot 'green' fails
    with small_disk(out / "shots" / "green", readonly=True):
        run = execute_plan(plan, metrics=False, runtime=runtime)
    assert [s.status for s in run.shots] == ["generated", "failed"]
    assert "doomed.mp4" in run.shots[1].error and "error.log could not be written" in run.shots[1].error
    assert run.video and Path(run.video).is_file()

    run = execute_plan(plan, metrics=False, runtime=runtime)  # writable now: the failure is logged
    log = out / "shots" / "green" / "error.log"
    assert [s.status for s in run.shots] == ["cached", "failed"] and log.is_file()
    shutil.copy(folder / "green.mp4", tmp_path / "doomed.mp4")  # fixed: the rerun succeeds
    stray = next((out / "shots" / "red").glob("*/")) / ".comparison.mp4.abcd1234.mp4"
    stray.write_bytes(b"half a video")
    run = execute_plan(plan, metrics=False, runtime=runtime)
    assert [s.status for s in run.shots] == ["cached", "generated"]
    assert not log.exists() and not stray.exists()


def test_atomic_dir_overwrites_where_the_system_cannot_exchange(tmp_path, monkeypatch):
    import aas_core.fsutil as fsutil

    target = tmp_path / "concept"
    with fsutil.atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    monkeypatch.setattr(fsutil, "exchange_paths", lambda a, b: False)  # e.g. macOS: two renames instead
    with fsutil.atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("new")
    assert [p.name for p in target.iterdir()] == ["b"] and [p.name for p in tmp_path.iterdir()] == ["concept"]


def test_cli_story_run_into_a_read_only_folder_is_one_json_error(story_env, tmp_path, capsys):
    from aas_core.cli import main
    from aas_core.story import save_story

    root, folder = story_env
    story = save_story(_two_shots(folder), tmp_path / "story.yaml")
    with small_disk(tmp_path / "ro", readonly=True) as ro:
        code = main(["story", "run", str(story), "--out", str(ro / "run"), "--weights", str(root), "--device", "cpu",
                     "--no-metrics", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 2 and out["error_type"] == "StorageError" and out["errno"] == "EROFS"
    assert f"cannot write to {ro}" in out["error"]


def test_cli_story_new_from_an_over_long_text_names_the_fields(tmp_path, capsys, monkeypatch):
    import io

    from aas_core.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("word " * 1000))
    code = main(["story", "new", "-", "--out", str(tmp_path / "s.yaml"), "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 2 and out["ok"] is False and "prompt: String should have at most 2000 characters" in out["error"]
    assert "pydantic.dev" not in out["error"] and not (tmp_path / "s.yaml").exists()
