"""Session-wide fixtures: one tiny-weights folder shared by all tests, offline Hub."""

from __future__ import annotations

import os

import pytest

# Tests never reach the Hub: a hub id must fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory):
    """A weights folder for tiny models; tests add what they need with `ensure_tiny`."""
    return tmp_path_factory.mktemp("tiny_weights")
