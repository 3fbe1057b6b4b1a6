"""Index rule at scale without building big indexes: lists and probes, the kind under budget and latency, the HNSW quantizer."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from aas_core.library import vector_index as vi
from aas_core.library.store import LibraryStore, ModelStamp
from aas_core.library.vector_index import exact_search

GB = 1 << 30


def unit(n: int, dim: int, seed: int, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).normal(size=(clusters, dim))
    data = centres[rng.integers(0, clusters, n)] + 0.4 * rng.normal(size=(n, dim))
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


def test_lists_and_probes_follow_the_library_size():
    assert vi.ivf_params(1_000_000) == (4096, 64)  # the measured 1M setting is unchanged
    assert vi.ivf_params(10_000_000) == (16384, 64)  # 39k codes scanned per query, not 1/64 of 10M
    assert vi.train_size(1_000_000) == vi.TRAIN_SAMPLE
    assert vi.train_size(10_000_000) == 39 * 16384  # enough points for every list it plans
    assert vi.nprobe_for(40) == 40


def test_kind_under_budget_and_scan_estimate():
    assert vi.choose_index_type(10**6, 512, 8 * GB) == "ivf-flat"
    assert vi.choose_index_type(10**7, 512, 8 * GB) == "ivf-sq8"
    assert vi.scan_ms("ivf-sq8", 10**7) <= vi.SCAN_MS_MAX < vi.scan_ms("ivf-flat", 10**7)
    assert vi.choose_index_type(10**7, 512, 2 * GB) == "ivf-pq"  # SQ8's 5.2 GB does not fit
    # 30M fits SQ8 in 64 GB, but scanning ~117k SQ8 codes per query is too slow: PQ instead.
    assert vi.choose_index_type(3 * 10**7, 512, 64 * GB) == "ivf-pq"


def test_probes_follow_the_real_list_count_when_training_makes_fewer():
    sample = unit(2000, 32, 0)
    index = vi.train_index("ivf-flat", sample, 1_000_000)  # plans 4096 lists; 2000 points train 51
    assert index.nlist == 2000 // 39
    assert index.nprobe == index.nlist
    assert isinstance(faiss.downcast_index(index.quantizer), faiss.IndexFlatIP)


@pytest.mark.parametrize("kind", ["ivf-sq8", "ivf-pq"])
def test_hnsw_quantizer_past_the_threshold_finds_the_neighbours(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(vi, "HNSW_FROM", 64)  # the 10M path (two-level k-means + HNSW) on a small library
    db = LibraryStore(tmp_path / "lib").create_first(ModelStamp("m", "synthetic", 32, True))
    vectors = unit(6000, 32, 1)
    files = [(f"/clips/{i}.mp4", [{"start": float(j), "end": j + 1.0} for j in range(10)]) for i in range(600)]
    db.bulk_add(files, vectors)
    db.compact(index_type=kind)
    db.refresh()
    quantizer = faiss.downcast_index(db._base.quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat)
    assert db._base.nlist == quantizer.ntotal == 6000 // 39  # 39 training points per list
    assert db._base.nprobe == 64 and quantizer.hnsw.efSearch == 8 * db._base.nprobe and db._base.parallel_mode == 1
    sizes = [db._base.invlists.list_size(i) for i in range(db._base.nlist)]
    assert sum(sizes) == 6000
    queries = unit(50, 32, 2)
    truth = exact_search(db._segments, queries, 10)[1]
    got = [db.search_vectors(q, 10)[1][:10] for q in queries]
    assert np.mean([len(set(g.tolist()) & set(t.tolist())) / 10 for g, t in zip(got, truth)]) >= 0.9


def test_segment_reads_match_the_stored_rows(tmp_path):
    path = tmp_path / "seg.npy"
    vectors = unit(1000, 32, 3)
    vi.write_segment(path, np.arange(1000, 0, -1), vectors)
    seg = vi.VectorSegment.open(path)
    assert np.array_equal(seg.read(10, 20), np.asarray(seg.vectors[10:20]))
    assert len(seg.read(990, 2000)) == 10
    chunks = list(vi.iter_chunks([seg], chunk=300))
    assert [len(ids) for ids, _ in chunks] == [300, 300, 300, 100]
    assert np.allclose(np.concatenate([v for _, v in chunks]), vectors[::-1], atol=1e-3)


def test_one_pass_reads_match_cached_reads_and_a_short_file_is_named_damaged(tmp_path):
    path = tmp_path / "seg.npy"
    vi.write_segment(path, np.arange(500), unit(500, 16, 4))
    seg = vi.VectorSegment.open(path)
    for start, stop in ((0, 500), (17, 33), (480, 900)):
        assert np.array_equal(seg.read(start, stop, once=True), seg.read(start, stop))
    truth = exact_search([seg], unit(3, 16, 5), 5)
    once = exact_search([seg], unit(3, 16, 5), 5, once=True)
    assert np.array_equal(truth[1], once[1])
    with open(path, "r+b") as fh:  # a segment cut short (disk full, a copy stopped half-way)
        fh.truncate(path.stat().st_size - 16 * 2 * 10)
    with pytest.raises(ValueError, match="damaged.*--reindex"):
        seg.read(400, 500)


def test_a_mapped_index_searches_while_read_ahead_and_prefetch_ignores_a_gone_file(tmp_path):
    import threading

    failures = []
    hook, threading.excepthook = threading.excepthook, failures.append
    try:
        index = faiss.IndexFlatIP(8)
        index.add(unit(100, 8, 6))
        vi.save_index(index, tmp_path / "base.faiss")
        loaded = vi.load_index(tmp_path / "base.faiss")  # mapped, and read ahead in the background
        assert loaded.ntotal == 100
        vi.prefetch(tmp_path / "gone.faiss")
        for thread in threading.enumerate():
            if thread.name == "aas-index-prefetch":
                thread.join(5)
    finally:
        threading.excepthook = hook
    assert failures == []
    assert loaded.search(unit(1, 8, 6), 1)[1][0, 0] >= 0
