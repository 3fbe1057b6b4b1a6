"""faiss vector index: exact inner product for small libraries, IVF past a size threshold."""

from __future__ import annotations

import math
import os
from typing import Literal

import numpy as np

from aas_core.fsutil import atomic_path

IndexType = Literal["flat", "ivf"]
EXACT_MAX = 20_000
"""Up to this many shots an exact search stays under ~5 ms on 2 cores; beyond it, IVF."""
TRAIN_SAMPLE = 200_000
"""IVF centroids trained on at most this many vectors (enough at 1M, measured)."""


def choose_index_type(count: int) -> IndexType:
    """Exact for small libraries, approximate (IVF) for large ones."""
    return "flat" if count <= EXACT_MAX else "ivf"


def ivf_params(count: int) -> tuple[int, int]:
    """(nlist, nprobe) for an IVF index over `count` vectors: ~4*sqrt(N) lists, probing ~1/64 of them (at least 64)."""
    nlist = int(2 ** round(math.log2(max(64, 4 * math.sqrt(count)))))
    nprobe = max(64, nlist // 64)
    return nlist, nprobe


def build_index(vectors: np.ndarray, index_type: IndexType, seed: int = 0):
    """A faiss index over unit vectors (inner product = cosine similarity)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        nlist, nprobe = ivf_params(len(vectors))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors if len(vectors) <= TRAIN_SAMPLE else vectors[rng.choice(len(vectors), TRAIN_SAMPLE, replace=False)]
        index.train(sample)
        index.nprobe = nprobe
    index.add(vectors)
    return index


def save_index(index, path: str | os.PathLike[str]) -> None:
    """Write a faiss index atomically (faiss's own binary format, no pickle)."""
    import faiss

    with atomic_path(path, suffix=".faiss") as tmp:
        faiss.write_index(index, str(tmp))


def load_index(path: str | os.PathLike[str]):
    """Read a faiss index written by `save_index`; IVF keeps its saved nprobe."""
    import faiss

    return faiss.read_index(str(path))


def search_index(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k nearest vectors for each query; ids are -1 where fewer exist."""
    k = max(1, min(k, index.ntotal))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
