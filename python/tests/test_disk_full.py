"""A full disk, for real (a small tmpfs; skipped where mounting is not
allowed): a change that was made is reported as made, with a StoreWarning
for the housekeeping step that failed after it."""

import subprocess
import warnings

import pytest

import wfstate


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"this test mounts a small tmpfs and cannot here: {out.stderr.strip()}")
    try:
        yield mount
    finally:
        # Lazily: a store the test still holds open keeps the mount busy.
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill_leaving(mount, free):
    path = mount / "filler"
    with open(path, "wb", buffering=0) as f:
        try:
            while f.write(b"\xa5" * 4096):
                pass
        except OSError:
            pass
        f.truncate(max(0, f.tell() - free))
    return path


def test_an_update_whose_compaction_fails_is_made_and_warned_about(small_disk):
    store = wfstate.init(small_disk / ".wfstate")
    store.set("wf", {"n": 0, "pad": "x" * 900})
    store.update("wf", lambda d: d.update(n=d["n"] + 1))  # creates the preallocated log
    filler = fill_leaving(small_disk, 200 * 1024)
    made, warned = 1, 0
    for _ in range(1000):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                state = store.update("wf", lambda d: d.update(n=d["n"] + 1))
            except wfstate.StorageError as e:
                assert "No space left" in str(e)
                break
        made += 1
        assert state.data["n"] == made
        for w in caught:
            assert issubclass(w.category, wfstate.StoreWarning)
            assert "was saved" in str(w.message)
            warned += "compacting its log failed" in str(w.message)
    assert warned > 0
    filler.unlink()
    assert wfstate.open(small_disk / ".wfstate").get("wf").data["n"] == made
    del store
