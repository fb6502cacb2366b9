"""Worker slots (recstream/worker_slots.py): two workers from one clone never share a folder.

flock locks belong to an open file description, so two descriptors of one process compete like
two processes do; the subprocess tests check the real case, including a SIGKILLed holder (the
kernel releases its lock: no stale lock file ever blocks a restart).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recstream.config import Settings
from recstream.worker_slots import (
    SlotTaken,
    claim_slot,
    claim_worker_files,
    lock_exclusive,
    parse_slot,
    slots_root,
)

ROOT = Path(__file__).resolve().parents[2]


def test_first_free_slot_and_its_folder(tmp_path: Path) -> None:
    a, b, c = (claim_slot(tmp_path) for _ in range(3))
    assert [a.number, b.number, c.number] == [0, 1, 2]
    assert b.folder == tmp_path / "slot-1"
    assert (tmp_path / "slot-1.lock").read_text().strip() == str(os.getpid())
    b.release()
    assert not b.lock.held
    d = claim_slot(tmp_path)  # the gap is filled first
    assert d.number == 1
    for slot in (a, c, d):
        slot.release()


def test_an_explicit_slot_is_that_slot_or_an_error(tmp_path: Path) -> None:
    three = claim_slot(tmp_path, "3")
    assert three.number == 3
    assert claim_slot(tmp_path).number == 0  # explicit 3 does not move the first free one
    taken = rf"slot 3 is taken by another worker \(pid {os.getpid()}\)"
    with pytest.raises(SlotTaken, match=taken):
        claim_slot(tmp_path, "3")
    three.release()
    assert claim_slot(tmp_path, " 3 ").number == 3


@pytest.mark.parametrize("value", ["x", "-1", "1.5", "99999"])
def test_bad_slot_values(value: str) -> None:
    with pytest.raises(ValueError, match="RECSTREAM_WORKER_SLOT"):
        parse_slot(value)


def test_empty_means_first_free() -> None:
    assert parse_slot("") is None
    assert parse_slot("  ") is None
    assert parse_slot("0") == 0


HOLDER = textwrap.dedent(
    """
    import sys, time
    from recstream.worker_slots import claim_slot
    slot = claim_slot(sys.argv[1], sys.argv[2])
    print(slot.number, flush=True)
    time.sleep(120)
    """
)


def _holder(root: Path, wanted: str = "") -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), wanted],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_two_processes_get_two_slots_and_a_killed_holder_frees_its_own(tmp_path: Path) -> None:
    proc, number = _holder(tmp_path)
    try:
        assert number == 0
        mine = claim_slot(tmp_path)
        assert mine.number == 1
        with pytest.raises(SlotTaken, match=rf"\(pid {proc.pid}\)"):
            claim_slot(tmp_path, "0")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # SIGKILL: nobody unlocked anything, the kernel closed the descriptor.
        again = claim_slot(tmp_path, "0")
        assert again.number == 0
        again.release()
        mine.release()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_process_holding_an_explicit_slot_blocks_only_that_slot(tmp_path: Path) -> None:
    proc, number = _holder(tmp_path, "0")
    try:
        assert number == 0
        with pytest.raises(SlotTaken):
            claim_slot(tmp_path, "0")
        free = claim_slot(tmp_path)
        assert free.number == 1
        free.release()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _settings(tmp_path: Path, **changes: str) -> Settings:
    return Settings(models_dir=str(tmp_path / "models"), app_id="shop", **changes)


def test_local_store_keeps_one_checkpoint_folder_and_refuses_a_second_writer(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    local = tmp_path / "models" / "checkpoints" / "shop"
    first = claim_worker_files(settings, local)
    assert first.checkpoints == local  # today's folder: a single worker is unchanged
    assert first.slot.number == 0
    assert first.datadir == slots_root(settings) / "slot-0" / "faust"
    with pytest.raises(SlotTaken, match=r"checkpoint folder .* two workers writing one folder"):
        claim_worker_files(settings, local)
    # The refused worker holds nothing: its slot (1) is free again.
    probe = claim_slot(slots_root(settings))
    assert probe.number == 1
    probe.release()
    first.release()
    second = claim_worker_files(settings, local)  # the first one stopped: fine
    assert second.slot.number == 0
    second.release()


def test_kafka_store_checkpoints_per_slot(tmp_path: Path) -> None:
    settings = _settings(tmp_path, state_store="kafka")
    local = tmp_path / "models" / "checkpoints" / "shop"
    a = claim_worker_files(settings, local)
    b = claim_worker_files(settings, local)
    assert (a.slot.number, b.slot.number) == (0, 1)
    assert a.checkpoints == local / "slot-0"
    assert b.checkpoints == local / "slot-1"
    assert a.datadir != b.datadir
    assert a.checkpoint_lock is None
    a.release()
    b.release()


def test_an_explicit_taken_slot_is_refused_before_the_checkpoint_lock(tmp_path: Path) -> None:
    settings = _settings(tmp_path, state_store="kafka", worker_slot="2")
    local = tmp_path / "models" / "checkpoints" / "shop"
    held = claim_worker_files(settings, local)
    with pytest.raises(SlotTaken, match="RECSTREAM_WORKER_SLOT=2"):
        claim_worker_files(settings, local)
    held.release()


def test_lock_exclusive_names_the_holder(tmp_path: Path) -> None:
    lock = lock_exclusive(tmp_path / "x.lock", "the thing")
    held = rf"the thing is in use by another worker \(pid {os.getpid()}\)"
    with pytest.raises(SlotTaken, match=held):
        lock_exclusive(tmp_path / "x.lock", "the thing")
    lock.release()
    lock_exclusive(tmp_path / "x.lock", "the thing").release()
