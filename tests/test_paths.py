"""The visitor path guard: own uploads and samples resolve; everything else is refused naming only the base name."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aas_core.errors import InputError
from aas_core.paths import base_name, redact_paths, resolve_visitor_path, visitor_name


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    """Two visitors' session folders, a sample folder and a private server file."""
    root = tmp_path / "sessions"
    mine, theirs, samples, server = root / "mine", root / "theirs", tmp_path / "samples", tmp_path / "server"
    for folder in (mine / "uploads" / "clips-1", theirs / "uploads" / "clips-9", samples / "clips", server):
        folder.mkdir(parents=True)
    (mine / "uploads" / "clips-1" / "bikes.mp4").write_bytes(b"mine")
    (theirs / "uploads" / "clips-9" / "secret.mp4").write_bytes(b"theirs")
    (samples / "clips" / "bunny-1.mp4").write_bytes(b"sample")
    (server / "weights.safetensors").write_bytes(b"server")
    return {"mine": mine, "theirs": theirs, "samples": samples, "server": server}


def test_own_uploads_and_samples_resolve_by_name_or_path(tree: dict[str, Path]) -> None:
    """A bare upload name, a session-relative path, a sample name and an absolute own path all resolve."""
    mine, samples = tree["mine"], tree["samples"]
    own = (mine / "uploads" / "clips-1" / "bikes.mp4").resolve()
    assert resolve_visitor_path("bikes.mp4", mine, samples) == own
    assert resolve_visitor_path("uploads/clips-1/bikes.mp4", mine, samples) == own
    assert resolve_visitor_path(str(own), mine, samples) == own
    assert resolve_visitor_path("bunny-1.mp4", mine, samples) == (samples / "clips" / "bunny-1.mp4").resolve()
    assert resolve_visitor_path("clips/bunny-1.mp4", mine, samples) == (samples / "clips" / "bunny-1.mp4").resolve()
    # Symlinks that stay inside the session are fine.
    (mine / "link.mp4").symlink_to(own)
    assert resolve_visitor_path("link.mp4", mine, samples) == own


def test_newest_upload_of_a_name_wins(tree: dict[str, Path]) -> None:
    """Two uploads with one name: the bare name means the newer one."""
    mine = tree["mine"]
    newer = mine / "uploads" / "clips-2" / "bikes.mp4"
    newer.parent.mkdir()
    newer.write_bytes(b"newer")
    past = time.time() - 100
    os.utime(mine / "uploads" / "clips-1" / "bikes.mp4", (past, past))
    assert resolve_visitor_path("bikes.mp4", mine, tree["samples"]) == newer.resolve()


@pytest.mark.parametrize("case", ["other visitor", "other visitor by name", "server file", "symlink", "dotdot", "dir link", "missing", "blank"])
def test_everything_else_is_refused_naming_only_the_base_name(tree: dict[str, Path], case: str) -> None:
    """Another visitor's upload, a server file, a link to one, a `..` path, a missing file: one refusal, no server path."""
    mine, samples, theirs, server = tree["mine"], tree["samples"], tree["theirs"], tree["server"]
    secret = theirs / "uploads" / "clips-9" / "secret.mp4"
    (mine / "uploads" / "clips-1" / "evil.mp4").symlink_to(server / "weights.safetensors")
    (mine / "uploads" / "linked").symlink_to(theirs / "uploads", target_is_directory=True)
    name = {
        "other visitor": str(secret),
        "other visitor by name": "secret.mp4",
        "server file": str(server / "weights.safetensors"),
        "symlink": "evil.mp4",
        "dotdot": "../theirs/uploads/clips-9/secret.mp4",
        "dir link": "uploads/linked/clips-9/secret.mp4",
        "missing": "nothing.mp4",
        "blank": "  ",
    }[case]
    with pytest.raises(InputError) as info:
        resolve_visitor_path(name, mine, samples)
    message = str(info.value)
    assert "/" not in message and str(tree["mine"].parent) not in message
    if name.strip():
        assert base_name(name) in message


def test_visitor_name_is_short_and_resolves_back(tree: dict[str, Path]) -> None:
    """What the app shows for a file is the short name that the guard maps back to the same file."""
    mine, samples = tree["mine"], tree["samples"]
    own = mine / "uploads" / "clips-1" / "bikes.mp4"
    assert visitor_name(own, mine, samples) == "bikes.mp4"
    assert visitor_name(samples / "clips" / "bunny-1.mp4", mine, samples) == "bunny-1.mp4"
    shadow = mine / "uploads" / "clips-2" / "bunny-1.mp4"
    shadow.parent.mkdir()
    shadow.write_bytes(b"own file with a sample's name")
    assert visitor_name(samples / "clips" / "bunny-1.mp4", mine, samples) == "clips/bunny-1.mp4"
    assert resolve_visitor_path("clips/bunny-1.mp4", mine, samples) == (samples / "clips" / "bunny-1.mp4").resolve()


def test_redact_paths_keeps_base_names_only() -> None:
    """Absolute paths in a message become base names; URLs, ratios and relative names stay."""
    text = "clip /tmp/aas/run-1/abc/uploads/b.mp4 is missing (step 15/25, see http://x.org/a, shots/ID ok); '/etc/passwd'"
    assert redact_paths(text) == "clip b.mp4 is missing (step 15/25, see http://x.org/a, shots/ID ok); 'passwd'"
