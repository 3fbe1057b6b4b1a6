"""Vector search: exact over stored float16 vectors for small libraries, faiss IVF (Flat, SQ8 or PQ) past them.

The index kind is chosen under a memory budget and a latency estimate, in order exact -> ivf-flat ->
ivf-sq8 -> ivf-pq: the first kind whose index fits INDEX_SHARE of the budget (bytes per vector x shots)
and whose estimated scan per query (codes probed x SCAN_NS_PER_CODE, measured on 2 cores) stays under
SCAN_MS_MAX; ivf-pq is the last resort. IVF uses ~4*sqrt(N) lists (at most 16384) and probes 64 of the
lists it really has, so a query scans ~16*sqrt(N) codes (16k at 1M, 39k at 10M). From HNSW_FROM
lists on, centroids come from a two-level k-means on 39 points per list and the coarse quantizer is an
HNSW graph over them (a flat one would cost N x nlist dot products to fill the index). The lossy kinds
re-rank their top candidates exactly against the stored vectors. An IVF index is trained once
("compact") and later additions go into small delta indexes that share its centroids, so adding N shots
costs O(N): the base is never rebuilt until the library has grown past a factor.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional, Sequence, cast

import numpy as np

from aas_core.errors import InputError
from aas_core.fsutil import atomic_path

IndexType = Literal["exact", "ivf-flat", "ivf-sq8", "ivf-pq"]
INDEX_TYPES: tuple[IndexType, ...] = ("exact", "ivf-flat", "ivf-sq8", "ivf-pq")
EXACT_MAX = 20_000
"""Up to this many shots an exact search over float16 vectors stays under ~5 ms on 2 cores; beyond it, IVF."""
TRAIN_SAMPLE = 200_000
"""IVF centroids trained on at most this many vectors (enough at 1M, measured); 39 per list past that."""
MAX_NLIST = 16_384
NPROBE = 64
"""Lists probed per query (all of them below 64 lists). At 10M shots (16384 lists, HNSW beam 512) 64 probes
gave recall@10 0.914 at p50 ~5 ms; 128 gave 0.97 but p50 10.6 ms on a fresh mapping (bench/library.py)."""
HNSW_FROM = 8192
"""From this many lists on, two-level k-means centroids and an HNSW coarse quantizer (M=32)."""
SCAN_NS_PER_CODE = {"ivf-flat": 260.0, "ivf-sq8": 95.0, "ivf-pq": 45.0}
"""Single-thread scan cost per 512-d code, measured with faiss 1.15 on this project's 2-core machine (load ~4)."""
SCAN_MS_MAX = 8.0
"""A kind whose estimated scan exceeds this is passed over for the next one (p50 goal 10 ms: the rest is for
the quantizer, re-ranking and metadata)."""
INDEX_SHARE = 0.75
"""Share of the memory budget the vector index may fill; the rest is for the embedder, metadata and pages."""
REFINE_FACTOR = {"ivf-sq8": 8, "ivf-pq": 32}
"""Lossy indexes fetch this many times k candidates (at least REFINE_MIN) and re-rank them exactly;
PQ codes are coarse, so it looks further (re-ranking 320 float16 rows costs well under a millisecond)."""
REFINE_MIN = 64
GROWTH_FACTOR = 2.0
"""Retrain (compact) once the library holds this many times the vectors the centroids were trained on."""
MAX_DELTAS = 8
"""Delta indexes kept beside the base before they are merged into one."""


def bytes_per_vector(kind: IndexType, dim: int) -> int:
    """Resident bytes one vector costs in an index of this kind (codes + id)."""
    return {"exact": 0, "ivf-flat": 4 * dim + 8, "ivf-sq8": dim + 8, "ivf-pq": pq_bytes(dim) + 8}[kind]


def pq_bytes(dim: int) -> int:
    """PQ code size: one byte per 8 dimensions (64 bytes for 512-d CLIP; at least 16), a count that divides dim."""
    m = min(dim, max(16, dim // 8))
    while dim % m:
        m -= 1
    return m


def scan_ms(kind: IndexType, count: int, dim: int = 512) -> float:
    """Estimated milliseconds one query spends scanning codes in an IVF index of `kind` over `count` vectors."""
    nlist, nprobe = ivf_params(count)
    return count * nprobe / nlist * SCAN_NS_PER_CODE[kind] * dim / 512 / 1e6


def choose_index_type(count: int, dim: int = 512, budget_bytes: Optional[int] = None) -> IndexType:
    """The most exact kind whose index fits INDEX_SHARE of the memory budget and whose scan fits SCAN_MS_MAX."""
    if count <= EXACT_MAX:
        return "exact"
    budget = default_memory_budget() if budget_bytes is None else budget_bytes
    for kind in ("ivf-flat", "ivf-sq8"):
        if count * bytes_per_vector(kind, dim) <= INDEX_SHARE * budget and scan_ms(kind, count, dim) <= SCAN_MS_MAX:
            return kind
    return "ivf-pq"


def default_memory_budget() -> int:
    """A third of the machine's RAM: search shares it with the embedder, the app and other jobs."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 3
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return 8 << 30


def parse_memory(text: str | int | float) -> int:
    """'8GB', '512MB', '8' (GB) or a number of bytes -> bytes; InputError when unreadable."""
    if isinstance(text, (int, float)):
        return int(text * (1 << 30)) if text < 4096 else int(text)
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if s and s[-1] in units:
            value = float(s[:-1]) * units[s[-1]]
        else:
            value = float(s) * (1 << 30)
    except ValueError:
        raise InputError(f"--memory-budget {text!r} is not a size; write e.g. 8GB or 512MB") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"--memory-budget must be a positive size, got {text!r}")
    return int(value)


def ivf_params(count: int) -> tuple[int, int]:
    """(nlist, nprobe) for an IVF index over `count` vectors: ~4*sqrt(N) lists (64..MAX_NLIST), NPROBE probed."""
    nlist = int(2 ** round(math.log2(max(64, 4 * math.sqrt(count)))))
    nlist = min(nlist, MAX_NLIST)
    return nlist, nprobe_for(nlist)


def nprobe_for(nlist: int) -> int:
    """Lists to probe in an index that really has `nlist` lists (training may have made fewer than planned)."""
    return min(NPROBE, nlist)


def train_size(count: int) -> int:
    """Vectors to train the centroids of an index over `count` vectors on: TRAIN_SAMPLE, or 39 per list if more."""
    return max(TRAIN_SAMPLE, 39 * ivf_params(count)[0])


def two_level_centroids(sample: np.ndarray, nlist: int, seed: int = 0, niter: int = 10) -> np.ndarray:
    """`nlist` unit centroids by spherical k-means in two levels: sqrt(nlist) groups, each split in proportion to its size."""
    import faiss

    dim = sample.shape[1]
    top = int(math.sqrt(nlist))
    coarse = faiss.Kmeans(dim, top, niter=niter, seed=seed, spherical=True, max_points_per_centroid=2000)
    coarse.train(sample)
    assign = coarse.assign(sample)[1]
    sizes = np.bincount(assign, minlength=top)
    share = np.cumsum(sizes) * nlist // len(sample)
    share[1:] -= share[:-1].copy()
    out = []
    for group in range(top):
        members = sample[assign == group]
        k = int(min(share[group], len(members)))
        if k == 0:
            continue
        if k == len(members):
            out.append(members)
            continue
        km = faiss.Kmeans(dim, k, niter=niter, seed=seed + group + 1, spherical=True, min_points_per_centroid=1)
        km.train(members)
        out.append(km.centroids)
    centroids = np.ascontiguousarray(np.concatenate(out), np.float32)
    return centroids / np.linalg.norm(centroids, axis=1, keepdims=True)


def configure_search(index) -> None:
    """Set an IVF index's probes from its real list count (big indexes: HNSW beam to match, lists of one query in parallel)."""
    import faiss

    index.nprobe = nprobe_for(index.nlist)
    quantizer: Any = faiss.downcast_index(index.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = 8 * index.nprobe  # beam 256 for 64 probes lost recall 0.914 -> 0.847 at 10M
        # One query scans ~39k codes at 10M: split its lists over the threads (measured 6.2 -> 4.0 ms on 2 cores).
        index.parallel_mode = 1


def train_index(kind: IndexType, sample: np.ndarray, count: int, seed: int = 0):
    """An empty, trained faiss IVF index of `kind` for about `count` unit vectors (inner product)."""
    import faiss

    sample = np.ascontiguousarray(sample, dtype=np.float32)
    dim = sample.shape[1]
    nlist = min(ivf_params(count)[0], max(1, len(sample) // 39))  # faiss wants ~39 training points per list
    if nlist >= HNSW_FROM:
        quantizer = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        quantizer.hnsw.efConstruction = 80
        quantizer.add(two_level_centroids(sample, nlist, seed))
        nlist = quantizer.ntotal  # IndexIVF.train skips k-means: its quantizer already holds nlist centroids
    else:
        quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf-flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf-sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf-pq":
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_bytes(dim), 8, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"{kind} is not an IVF kind")
    index.cp.seed = seed
    index.train(sample)
    configure_search(index)
    return index


def add_vectors(index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add float vectors with their shot ids (int64)."""
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def assign_lists(index, vectors: np.ndarray) -> np.ndarray:
    """The IVF list each vector goes to (int64), as `add` would pick it."""
    import faiss

    quantizer: Any = faiss.downcast_index(index.quantizer)
    beam = quantizer.hnsw.efSearch if isinstance(quantizer, faiss.IndexHNSW) else None
    if beam is not None:
        quantizer.hnsw.efSearch = 64
    try:
        return np.ascontiguousarray(quantizer.search(np.ascontiguousarray(vectors, np.float32), 1)[1][:, 0], np.int64)
    finally:
        if beam is not None:
            quantizer.hnsw.efSearch = beam


def reserve_lists(index, lists: np.ndarray) -> None:
    """Reserve each inverted list's final size up front: growing them by doubling would hold up to 2x the codes."""
    invlists = index.invlists
    for list_no, size in enumerate(np.bincount(lists, minlength=index.nlist).tolist()):
        if size:
            old = invlists.list_size(list_no)
            invlists.resize(list_no, old + size)
            invlists.resize(list_no, old)


def add_preassigned(index, vectors: np.ndarray, ids: np.ndarray, lists: np.ndarray) -> None:
    """Add vectors to the lists `assign_lists` gave them (no second quantizer search)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    index.add_core(len(vectors), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(lists))


def merge_into(target, sources: Iterable) -> None:
    """Move every vector of `sources` (indexes sharing the target's centroids) into `target`."""
    for source in sources:
        target.merge_from(source, 0)


def save_index(index, path: str | os.PathLike[str]) -> None:
    """Write a faiss index atomically (faiss's own binary format, no pickle)."""
    import faiss

    with atomic_path(path, suffix=".faiss") as tmp:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())


def load_index(path: str | os.PathLike[str], mmap: bool = True):
    """Read a faiss index written by `save_index`, memory-mapped by default: opening costs no read."""
    import faiss

    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(path), flags)
    if mmap:
        prefetch(path)
    return index


def prefetch(path: str | os.PathLike[str]) -> None:
    """Ask the kernel to read a file into the page cache in the background (no RSS; reclaimable).

    A mapped index's lists are read on first touch: at 10M shots a query probes ~20 MB of them, and
    each page still on disk is a wait. Reading ahead once after opening keeps searches off the disk.
    """
    def advise() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return  # replaced by a newer generation meanwhile: nothing to warm
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)

    if hasattr(os, "posix_fadvise"):
        threading.Thread(target=advise, name="aas-index-prefetch", daemon=True).start()


@dataclass
class VectorSegment:
    """One append-only block of stored vectors: float16 rows and their shot ids (sorted), memory-mapped."""

    path: Path
    ids: np.ndarray
    vectors: np.ndarray

    @classmethod
    def open(cls, path: Path) -> "VectorSegment":
        """Map a segment written by `write_segment`."""
        return cls(path, np.load(path.with_suffix(".ids.npy"), mmap_mode="r"), np.load(path, mmap_mode="r"))

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows by number as float16, one plain read each: re-ranking maps no pages of a 10 GB store into RSS."""
        width = self.vectors.strides[0]
        offset = cast(np.memmap, self.vectors).offset
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = b"".join(os.pread(fd, width, offset + int(row) * width) for row in rows)
        finally:
            os.close(fd)
        return np.frombuffer(data, np.float16).reshape(len(rows), self.vectors.shape[1])

    def read(self, start: int, stop: int, once: bool = False) -> np.ndarray:
        """Rows start..stop as float16 by a plain file read: streaming the whole segment maps no pages (RSS stays flat).

        `once`: a one-pass scan (compaction, a ground truth): its pages leave the page cache after the read,
        so 10 GB of vectors streamed past do not push the searched index out of it.
        """
        offset = cast(np.memmap, self.vectors).offset + start * self.vectors.strides[0]
        out = np.empty((max(min(stop, len(self.ids)) - start, 0), self.vectors.shape[1]), np.float16)
        view = out.data.cast("B")
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            if fh.readinto(view) != len(view):  # a buffered reader fills the view unless the file ends first
                raise InputError(f"{self.path} is shorter than its header says: the library is damaged; "
                                 "rebuild it with: python -m aas_core library index FOLDER --reindex")
            if once and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fh.fileno(), offset, len(view), os.POSIX_FADV_DONTNEED)
        return out

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of `ids` are here as a mask, their row numbers)."""
        pos = np.searchsorted(self.ids, ids)
        pos = np.clip(pos, 0, max(len(self.ids) - 1, 0))
        mask = (self.ids[pos] == ids) if len(self.ids) else np.zeros(len(ids), bool)
        return mask, pos[mask]


def write_segment(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Write a segment (vectors as float16, ids sorted ascending) durably; the caller records it afterwards."""
    order = np.argsort(ids, kind="stable")
    for target, array in ((path.with_suffix(".ids.npy"), np.asarray(ids, np.int64)[order]), (path, np.asarray(vectors, np.float16)[order])):
        with atomic_path(target, suffix=".npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array)
                fh.flush()
                os.fsync(fh.fileno())


def gather(segments: Sequence[VectorSegment], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, float32 vectors of the found ids in the order of `ids`) from the stored segments."""
    dim = segments[0].vectors.shape[1] if segments else 0
    out = np.zeros((len(ids), dim), np.float32)
    found = np.zeros(len(ids), bool)
    for seg in segments:
        mask, rows = seg.rows(ids)
        if rows.size:
            order = np.argsort(rows)  # sequential reads from the mapped file
            out[np.flatnonzero(mask)[order]] = seg.read_rows(rows[order])
            found |= mask
    return found, out


def iter_chunks(
    segments: Sequence[VectorSegment], chunk: int = 65_536, dtype=np.float32, once: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors as `dtype`) of every stored vector, a chunk at a time by plain reads (never all in RAM; `once`: see `read`)."""
    for seg in segments:
        for start in range(0, len(seg.ids), chunk):
            yield np.array(seg.ids[start : start + chunk]), seg.read(start, start + chunk, once).astype(dtype, copy=False)


def exact_search(segments: Sequence[VectorSegment], queries: np.ndarray, k: int, once: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the exact top-k inner products over every stored vector, streamed; ids -1 where fewer.

    `once`: a one-off scan (a ground truth), not the search of an exact-kind library, whose vectors should stay cached."""
    queries = np.asarray(queries, np.float32)
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for ids, vectors in iter_chunks(segments, once=once):
        scores = queries @ vectors.T
        best_s = np.concatenate([best_s, scores], axis=1)
        best_i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
        if best_s.shape[1] > k:
            top = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, top, 1), np.take_along_axis(best_i, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    if best_s.shape[1] < k:
        pad = k - best_s.shape[1]
        best_s = np.pad(best_s, ((0, 0), (0, pad)), constant_values=-np.inf)
        best_i = np.pad(best_i, ((0, 0), (0, pad)), constant_values=-1)
    return best_s, best_i


def ivf_search(base, deltas: Sequence, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the top-k over a base IVF index and its deltas, assigning queries to lists once."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    coarse_d, coarse_i = base.quantizer.search(queries, base.nprobe)
    parts_s, parts_i = [], []
    for index in [base, *deltas]:
        if index.ntotal == 0:
            continue
        index.nprobe = base.nprobe  # deltas take the base's assignment as it is
        d, i = index.search_preassigned(queries, k, coarse_i, coarse_d)
        parts_s.append(d)
        parts_i.append(i)
    if not parts_s:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    scores, ids = np.concatenate(parts_s, axis=1), np.concatenate(parts_i, axis=1)
    scores = np.where(ids < 0, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def rerank(segments: Sequence[VectorSegment], query: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores for candidate ids of one query from the stored vectors, best first (missing ids dropped)."""
    ids = ids[ids >= 0]
    found, vectors = gather(segments, ids)
    ids, vectors = ids[found], vectors[found]
    scores = vectors @ np.asarray(query, np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    return scores[order], ids[order]
