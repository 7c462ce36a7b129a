"""State: open, init, set, get, update, verify, and what JSON cannot hold."""

import json
import math
import os
import pathlib
import shutil
import subprocess

import pytest

import wfstate


def cli() -> str | None:
    """The `wfstate` binary the Rust tests built, to compare messages with."""
    root = pathlib.Path(__file__).resolve().parents[2]
    for candidate in (os.environ.get("WFSTATE_BIN"), root / "target/debug/wfstate", shutil.which("wfstate")):
        if candidate and pathlib.Path(candidate).is_file():
            return str(candidate)
    return None


def cli_error(store_location: str, *args: str, stdin: str = "") -> tuple[int, str]:
    binary = cli()
    if binary is None:
        pytest.skip("no wfstate binary (run cargo build first)")
    out = subprocess.run([binary, "--store", store_location, *args], capture_output=True, text=True, input=stdin)
    prefix = "wfstate: error: "
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(prefix), out.stderr
    return out.returncode, line[len(prefix) :]


def test_init_creates_a_store_and_accepts_an_existing_one(tmp_path):
    path = tmp_path / "s"
    first = wfstate.init(path)
    assert (path / "format").is_file()
    first.set("wf", {"n": 1})
    again = wfstate.init(path)
    assert again.get("wf").data == {"n": 1}


def test_init_accepts_a_bare_relative_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = wfstate.init("s")
    store.set("wf", 1)
    assert wfstate.open("s").get("wf").data == 1
    # The store stays the same one when the process changes directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert store.update("wf", lambda d: d + 1).data == 2
    assert not (elsewhere / "s").exists()


def test_open_finds_the_store_like_the_cli(tmp_path, monkeypatch):
    wfstate.init(tmp_path / ".wfstate").set("wf", {"found": True})
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    monkeypatch.delenv("WFSTATE_STORE", raising=False)
    assert wfstate.open().get("wf").data == {"found": True}
    other = tmp_path / "other"
    wfstate.init(other).set("wf", {"env": True})
    monkeypatch.setenv("WFSTATE_STORE", str(other))
    assert wfstate.open().get("wf").data == {"env": True}


def test_opening_a_folder_that_is_no_store_raises_not_found(tmp_path):
    with pytest.raises(wfstate.NotFoundError) as caught:
        wfstate.open(tmp_path / "missing")
    assert caught.value.exit_code == 1


def test_set_get_verify_and_workflows(store):
    saved = store.set("release", {"phase": "plan"})
    assert (saved.workflow, saved.generation, saved.data) == ("release", 1, {"phase": "plan"})
    assert saved.checksum.startswith("sha256:")
    got = store.get("release")
    assert got == saved
    assert store.verify("release") == saved
    store.set("build", [1, 2])
    assert store.workflows() == ["build", "release"]
    assert store.set("release", {"phase": "test"}).generation == 2


def test_expect_generation_is_a_compare_and_swap(store, store_location):
    store.set("wf", {"n": 1}, expect_generation=0)
    with pytest.raises(wfstate.ConflictError) as caught:
        store.set("wf", {"n": 2}, expect_generation=0)
    assert store.get("wf").data == {"n": 1}
    store.set("wf", {"n": 2}, expect_generation=1)
    with pytest.raises(wfstate.ConflictError) as caught:
        store.set("wf", {"n": 3}, expect_generation=7)
    code, message = cli_error(store_location, "state", "set", "wf", "--expect-generation", "7", "-", stdin="{}")
    assert (caught.value.exit_code, str(caught.value)) == (code, message) == (
        4,
        'conflict on workflow "wf": expected generation 7, found 2',
    )


def test_exceptions_carry_the_cli_message_and_exit_code(store, store_location):
    with pytest.raises(wfstate.NotFoundError) as caught:
        store.get("nope")
    code, message = cli_error(store_location, "state", "get", "nope")
    assert (caught.value.exit_code, str(caught.value)) == (code, message)
    assert isinstance(caught.value, LookupError)

    with pytest.raises(wfstate.InvalidInputError) as caught:
        store.set("../escape", {})
    code, message = cli_error(store_location, "state", "update", "../escape", "--incr", "/n")
    assert (caught.value.exit_code, str(caught.value)) == (code, message)
    assert isinstance(caught.value, ValueError)
    assert caught.value.kind == "invalid_name"


def test_update_changes_in_place_or_takes_the_returned_value(store):
    store.update("wf", lambda d: d.update(n=1))
    assert store.get("wf").data == {"n": 1}  # a missing state starts as {}
    state = store.update("wf", lambda d: {"replaced": d["n"] + 1})
    assert state.data == {"replaced": 2}
    assert state.generation == 2
    assert store.update("wf", lambda d: [1, 2, 3]).data == [1, 2, 3]


def test_an_exception_in_update_writes_nothing_and_propagates_unchanged(store):
    store.set("wf", {"n": 1})
    mine = KeyError("mine")

    def failing(data):
        data["n"] = 99
        raise mine

    with pytest.raises(KeyError) as caught:
        store.update("wf", failing)
    assert caught.value is mine
    state = store.get("wf")
    assert (state.generation, state.data) == (1, {"n": 1})


def test_an_unstorable_return_value_writes_nothing(store):
    store.set("wf", {"n": 1})
    with pytest.raises(TypeError):
        store.update("wf", lambda d: {"s": {1, 2}})
    assert store.get("wf").generation == 1


ROUND_TRIP = [
    {"unicode": "żółw 🐢 \u0000 \u2028 \"quotes\" \\ back"},
    {"nested": {"a": [{"b": [[], {}, [None, True, False]]}]}},
    {"ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 10**18]},
    {"floats": [0.1, 1.5, -2.75, 1e-300, 5e-324, 1.7976931348623157e308, 123456.789, 1e21, 2.0]},
    ["a", 1, 1.25, None],
    "just a string",
    42,
    None,
]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_data_round_trips_exactly(store, value):
    store.set("wf", value)
    got = store.get("wf").data
    assert got == value
    # Exactly: the same types and the same float bits.
    assert json.dumps(got, sort_keys=True) == json.dumps(value, sort_keys=True)


def test_tuples_become_lists(store):
    assert store.set("wf", {"t": (1, (2, 3))}).data == {"t": [1, [2, 3]]}


def test_the_data_of_the_cli_is_the_data_of_python(store, store_location):
    binary = cli()
    if binary is None:
        pytest.skip("no wfstate binary")
    value = {"floats": [0.1, 1e-7, 2.5e20], "big": 2**64 - 1, "text": "ünï"}
    store.set("wf", value)
    out = subprocess.run(
        [binary, "--store", store_location, "--json", "state", "get", "wf"], capture_output=True, text=True
    )
    assert json.loads(out.stdout)["data"] == value
    subprocess.run(
        [binary, "--store", store_location, "state", "update", "wf", "--incr", "/n=5"], check=True, capture_output=True
    )
    assert store.get("wf").data == {**value, "n": 5}


def deep(levels):
    value = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def circular_list():
    a = []
    a.append(a)
    return {"a": a}


def circular_dict():
    d = {}
    d["self"] = d
    return [d]


REFUSED = [
    ("nan", {"x": math.nan}, wfstate.InvalidInputError),
    ("infinity", [math.inf], wfstate.InvalidInputError),
    ("minus infinity", -math.inf, wfstate.InvalidInputError),
    ("an int key", {1: "one"}, TypeError),
    ("a tuple key", {(1, 2): "pair"}, TypeError),
    ("a set", {"s": {1, 2}}, TypeError),
    ("bytes", {"b": b"raw"}, TypeError),
    ("an object", {"o": object()}, TypeError),
    ("65 bits", {"n": 2**64}, wfstate.InvalidInputError),
    ("below -2**63", {"n": -(2**63) - 1}, wfstate.InvalidInputError),
    ("a cyclic list", circular_list(), wfstate.InvalidInputError),
    ("a cyclic dict", circular_dict(), wfstate.InvalidInputError),
    ("nesting too deep to read back", deep(wfstate._native.MAX_DEPTH + 1), wfstate.InvalidInputError),
]


@pytest.mark.parametrize("why,value,error", REFUSED, ids=[r[0] for r in REFUSED])
def test_what_json_cannot_hold_is_refused_before_anything_is_written(store, why, value, error):
    store.set("wf", {"kept": True})
    entries = len(store.audit_log())
    with pytest.raises(error) as caught:
        store.set("wf", value)
    if isinstance(caught.value, wfstate.Error):
        assert caught.value.exit_code == 2
    with pytest.raises(error):
        store.update("wf", lambda d: {"bad": value})
    with pytest.raises(error):
        store.set("other", value)
    state = store.get("wf")
    assert (state.generation, state.data) == (1, {"kept": True})
    assert store.workflows() == ["wf"]
    assert len(store.audit_log()) == entries


def test_the_deepest_accepted_nesting_reads_back(store):
    value = deep(wfstate._native.MAX_DEPTH - 1)
    store.set("wf", {"v": value})
    assert store.get("wf").data == {"v": value}


def test_a_damaged_state_raises_integrity_error_and_is_left_untouched(store, store_path):
    store.set("wf", {"n": 1})
    path = store_path / "state" / "wf.json"
    damaged = path.read_bytes().replace(b'"n": 1', b'"n": 2')
    path.write_bytes(damaged)
    with pytest.raises(wfstate.IntegrityError) as caught:
        wfstate.open(store_path).get("wf")
    assert caught.value.exit_code == 3
    assert path.read_bytes() == damaged


def test_timeouts_json_cannot_wait_are_refused(store):
    for bad in (-1.0, math.nan, math.inf, 2.0**70):
        with pytest.raises(wfstate.InvalidInputError):
            store.update("wf", lambda d: None, timeout=bad)


def test_reprs_are_readable(store):
    state = store.set("wf", {"phase": "plan", "items": list(range(100))})
    text = repr(state)
    assert text.startswith("State(workflow='wf', generation=1, ") and len(text) < 200
    assert repr(store).startswith("<wfstate.Store ")


def test_a_document_over_the_size_limit_raises_too_large_and_writes_nothing(store):
    store.set("wf", {"kept": True})
    with pytest.raises(wfstate.TooLargeError) as caught:
        store.set("wf", {"pad": "x" * (64 * 1024 * 1024)})
    assert isinstance(caught.value, ValueError)
    assert caught.value.exit_code == 1 and caught.value.kind == "too_large"
    assert "over the limit" in str(caught.value)
    assert store.get("wf").generation == 1


def test_an_unreachable_database_raises_storage_error():
    # Port 1 on loopback: nothing listens there.
    with pytest.raises(wfstate.StorageError) as caught:
        wfstate.open("postgres://nobody:secret@127.0.0.1:1/none")
    assert caught.value.exit_code == 1 and caught.value.kind == "database"
    assert "secret" not in str(caught.value)
