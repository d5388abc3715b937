"""The spool: durable, bounded, and safe when several processes add to it and drain it."""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from server.storage.base import BlobMissing, SpoolFull, StagedFile, stage_bytes
from server.storage.local import LocalStore
from server.storage.spool import Drainer, Spool

SHM = Path("/dev/shm")


def photo(size: int = 100_000, seed: int | str = 0) -> bytes:
    return hashlib.shake_256(f"photo-{seed}".encode()).digest(size)


def staged(directory: Path, data: bytes) -> StagedFile:
    return stage_bytes(data, directory / "staging")


# ---- run in other processes (spawned: they import this module) -------------------------------


def _add_files(spool_dir: str, staging: str, worker: int, count: int, max_bytes: int) -> int:
    spool = Spool(spool_dir, max_bytes)
    added = 0
    for n in range(count):
        file = stage_bytes(photo(seed=f"{worker}-{n}"), Path(staging))
        try:
            added += spool.add(file)
        except SpoolFull:
            pass
        finally:
            file.discard()
    return added


def _drain(spool_dir: str, store_dir: str) -> int:
    return Spool(spool_dir, 10**9).drain_to(LocalStore(store_dir)).moved


def _add_and_drain(spool_dir: str, staging: str, store_dir: str, worker: int) -> tuple[int, int]:
    spool, store = Spool(spool_dir, 10**9), LocalStore(store_dir)
    added = moved = 0
    for n in range(20):
        # Every worker also adds files the others add: the same photo sent by two tablets.
        for seed in (f"{worker}-{n}", f"shared-{n}"):
            file = stage_bytes(photo(10_000, seed=seed), Path(staging))
            added += spool.add(file)
            file.discard()
        moved += spool.drain_to(store).moved
    return added, moved


def _pool(processes: int):
    return multiprocessing.get_context("spawn").Pool(processes)


# ---- tests -----------------------------------------------------------------------------------


def test_a_spooled_file_is_durable_and_readable_after_its_staged_copy_is_gone(tmp_path):
    spool = Spool(tmp_path / "spool", 10**6)
    data = photo()
    file = staged(tmp_path, data)
    assert spool.add(file) is True
    file.discard()
    assert spool.contains(file.sha256)
    assert b"".join(spool.open(file.sha256)) == data
    assert b"".join(spool.open(file.sha256, 5, 9)) == data[5:10]
    assert spool.size(file.sha256) == len(data)


def test_adding_the_same_file_twice_keeps_one_copy(tmp_path):
    spool = Spool(tmp_path / "spool", 10**6)
    data = photo()
    assert spool.add(staged(tmp_path, data)) is True
    assert spool.add(staged(tmp_path, data)) is False
    report = spool.report()
    assert (report.files, report.bytes) == (1, len(data))


def test_the_spool_refuses_what_would_pass_its_bound(tmp_path):
    spool = Spool(tmp_path / "spool", 250_000)
    spool.add(staged(tmp_path, photo(seed=1)))
    spool.add(staged(tmp_path, photo(seed=2)))
    with pytest.raises(SpoolFull):
        spool.add(staged(tmp_path, photo(seed=3)))
    assert spool.report().files == 2


def test_copies_left_by_a_crash_are_cleaned_and_do_not_count(tmp_path):
    spool = Spool(tmp_path / "spool", 150_000)
    spool.check()
    (spool.tmp_dir / "leftover").write_bytes(b"x" * 140_000)
    spool.add(staged(tmp_path, photo()))
    assert list(spool.tmp_dir.iterdir()) == []


@pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm, a second file system")
def test_a_spool_on_another_disk_gets_a_verified_copy(tmp_path):
    directory = Path(tempfile.mkdtemp(dir=SHM))
    try:
        spool = Spool(directory / "spool", 10**6)
        data = photo()
        file = staged(tmp_path, data)
        spool.add(file)
        file.discard()
        assert b"".join(spool.open(file.sha256)) == data
        assert list(spool.tmp_dir.iterdir()) == []
        store = LocalStore(tmp_path / "blobs")  # back across the disks: copied, verified
        assert spool.drain_to(store).moved == 1
        assert b"".join(store.open(file.sha256)) == data
    finally:
        shutil.rmtree(directory)


def test_draining_moves_every_file_to_the_store_and_empties_the_spool(tmp_path):
    spool, store = Spool(tmp_path / "spool", 10**7), LocalStore(tmp_path / "blobs")
    files = {}
    for n in range(5):
        data = photo(seed=n)
        file = staged(tmp_path, data)
        spool.add(file)
        file.discard()
        files[file.sha256] = data
    report = spool.drain_to(store)
    assert (report.moved, report.bytes, report.error) == (5, 500_000, None)
    assert spool.is_empty()
    for sha256, data in files.items():
        assert b"".join(store.open(sha256)) == data
    with pytest.raises(BlobMissing):
        spool.open(next(iter(files)))


def test_a_damaged_spool_file_is_set_aside_not_uploaded(tmp_path):
    spool, store = Spool(tmp_path / "spool", 10**7), LocalStore(tmp_path / "blobs")
    good, bad = staged(tmp_path, photo(seed=1)), staged(tmp_path, photo(seed=2))
    spool.add(good)
    spool.add(bad)
    bad.discard()
    spool.path(bad.sha256).write_bytes(b"bit rot")
    report = spool.drain_to(store)
    assert report.moved == 1
    assert report.corrupt == [bad.sha256]
    assert not store.exists(bad.sha256)
    assert store.exists(good.sha256)
    assert spool.is_empty()
    assert spool.report().corrupt == 1


def test_draining_stops_at_the_first_sign_of_an_outage_and_keeps_the_files(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    spool = Spool(tmp_path / "spool", 10**7)
    for n in range(3):
        spool.add(staged(tmp_path, photo(seed=n)))
    report = spool.drain_to(LocalStore(blocker / "blobs"))
    assert report.moved == 0
    assert report.error
    assert spool.report().files == 3


def test_the_bound_holds_when_several_processes_add_at_once(tmp_path):
    spool_dir = tmp_path / "spool"
    with _pool(4) as pool:
        added = pool.starmap(
            _add_files,
            [(str(spool_dir), str(tmp_path / f"staging-{w}"), w, 5, 1_000_000) for w in range(4)],
        )
    # 20 files of 100,000 bytes offered, room for exactly 10.
    assert sum(added) == 10
    report = Spool(spool_dir, 1_000_000).report()
    assert (report.files, report.bytes) == (10, 1_000_000)


def test_several_drainers_move_each_file_exactly_once(tmp_path):
    spool = Spool(tmp_path / "spool", 10**9)
    expected = {}
    for n in range(60):
        data = photo(20_000, seed=n)
        file = staged(tmp_path, data)
        spool.add(file)
        file.discard()
        expected[file.sha256] = data
    with _pool(4) as pool:
        moved = pool.starmap(_drain, [(str(spool.directory), str(tmp_path / "blobs"))] * 4)
    assert sum(moved) == 60, moved
    assert spool.is_empty()
    store = LocalStore(tmp_path / "blobs")
    assert sorted(store.keys()) == sorted(expected)
    for sha256, data in expected.items():
        assert b"".join(store.open(sha256)) == data


def test_processes_adding_and_draining_together_lose_nothing(tmp_path):
    spool_dir, store_dir = tmp_path / "spool", tmp_path / "blobs"
    with _pool(3) as pool:
        results = pool.starmap(
            _add_and_drain,
            [(str(spool_dir), str(tmp_path / f"staging-{w}"), str(store_dir), w) for w in range(3)],
        )
    spool, store = Spool(spool_dir, 10**9), LocalStore(store_dir)
    last = spool.drain_to(store).moved
    expected = {
        hashlib.sha256(photo(10_000, seed=seed)).hexdigest(): photo(10_000, seed=seed)
        for seed in [f"{w}-{n}" for w in range(3) for n in range(20)]
        + [f"shared-{n}" for n in range(20)]
    }
    assert spool.is_empty()
    assert sorted(store.keys()) == sorted(expected)
    for sha256, data in expected.items():
        assert b"".join(store.open(sha256)) == data
    added = sum(a for a, _ in results)
    moved = sum(m for _, m in results) + last
    # A shared photo may be spooled again after it was drained (never twice at once); each
    # time it was added it was moved exactly once, by one drainer.
    assert added >= len(expected)
    assert moved == added


def test_the_drainer_thread_empties_the_spool_then_stops_and_restarts_on_a_kick(tmp_path):
    spool, store = Spool(tmp_path / "spool", 10**7), LocalStore(tmp_path / "blobs")
    drainer = Drainer(spool, store, min_wait=0.01)
    first = staged(tmp_path, photo(seed=1))
    spool.add(first)
    drainer.kick()
    assert drainer.wait_idle(timeout=30)
    assert not drainer.running
    assert store.exists(first.sha256) and spool.is_empty()
    second = staged(tmp_path, photo(seed=2))
    spool.add(second)
    drainer.kick()
    assert drainer.wait_idle(timeout=30)
    assert store.exists(second.sha256) and spool.is_empty()


def test_the_drainer_keeps_trying_while_the_store_is_down(tmp_path):
    spool = Spool(tmp_path / "spool", 10**7)
    root = tmp_path / "store-root"
    root.write_bytes(b"")  # a file where the store's folder should be: writes fail
    store = LocalStore(root / "blobs")
    moved = []
    drainer = Drainer(spool, store, min_wait=0.01, max_wait=0.05, on_moved=lambda: moved.append(1))
    file = staged(tmp_path, photo())
    spool.add(file)
    drainer.kick()
    deadline = time.monotonic() + 30
    while drainer.last_report is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert drainer.last_report is not None and drainer.last_report.error
    assert drainer.running
    root.unlink()  # the store comes back
    drainer.kick()
    assert drainer.wait_idle(timeout=30)
    assert store.exists(file.sha256)
    assert moved
