"""Every test that takes `store` runs on the embedded file store, and on
PostgreSQL when WFSTATE_TEST_PG names a database (CI sets it)."""

import itertools
import os
import pathlib

import pytest

import wfstate

PG_URL = os.environ.get("WFSTATE_TEST_PG")
_schemas = itertools.count()


@pytest.fixture(params=["file", "postgres"])
def store(request, tmp_path: pathlib.Path) -> wfstate.Store:
    """A new store: a folder, or a fresh schema of the test database."""
    if request.param == "file":
        return wfstate.init(tmp_path / ".wfstate")
    if not PG_URL:
        if os.environ.get("WFSTATE_TEST_PG_REQUIRED") == "1":
            pytest.fail("WFSTATE_TEST_PG_REQUIRED=1 but WFSTATE_TEST_PG is not set")
        pytest.skip("no PostgreSQL: set WFSTATE_TEST_PG to a database URL")
    schema = f"py_{os.getpid()}_{next(_schemas)}"
    separator = "&" if "?" in PG_URL else "?"
    return wfstate.init(f"{PG_URL}{separator}options=-csearch_path%3D{schema}")


@pytest.fixture
def store_location(store: wfstate.Store) -> str:
    """What `--store` or `wfstate.open` take to reach `store`."""
    return store._native.path


@pytest.fixture
def store_path(store: wfstate.Store) -> pathlib.Path:
    """The folder of a file store; tests that need one skip on PostgreSQL."""
    location = store._native.path
    if location.startswith(("postgres://", "postgresql://")):
        pytest.skip("looks at the files of a file store")
    return pathlib.Path(location)


def tell(line: str) -> None:
    """Prints a count, and appends it to the file WFSTATE_TEST_COUNTS names
    (`.ci/run` shows that file: pytest keeps a passing test's output)."""
    print(line)
    path = os.environ.get("WFSTATE_TEST_COUNTS")
    if path:
        with open(path, "a", encoding="utf-8") as counts:
            counts.write(line + "\n")
