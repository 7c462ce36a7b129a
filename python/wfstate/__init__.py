"""wfstate: durable, verifiable state for long-running workflows.

One JSON document per workflow, versioned by a generation counter and
sealed with a SHA-256 checksum; checkpoints with lineage; locks the kernel
releases when their holder dies; a hash-chained audit log. This package
calls the Rust library in-process: the same files, the same guarantees and
the same errors as the ``wfstate`` command.

>>> import wfstate
>>> store = wfstate.init(".wfstate")                     # doctest: +SKIP
>>> store.update("release", lambda d: d.update(builds=d.get("builds", 0) + 1))  # doctest: +SKIP
State(workflow='release', generation=1, ...)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from . import _native
from ._errors import (
    ConflictError,
    Error,
    IntegrityError,
    InvalidInputError,
    LockMisuseError,
    LockTimeoutError,
    NotFoundError,
    StorageError,
    StoreWarning,
    TooLargeError,
)

__version__ = "0.1.0"

#: A verified version of a workflow's state: ``workflow``, ``data``,
#: ``generation``, ``checksum``, ``updated_at``, and ``origin`` (where the
#: data came from when it was not saved directly, such as a restore).
State = _native.State

__all__ = [
    "__version__",
    "open",
    "init",
    "Store",
    "State",
    "Checkpoint",
    "CheckpointInfo",
    "FileRecord",
    "HealthReport",
    "AuditReport",
    "Lock",
    "Error",
    "NotFoundError",
    "InvalidInputError",
    "TooLargeError",
    "IntegrityError",
    "ConflictError",
    "LockTimeoutError",
    "LockMisuseError",
    "StorageError",
    "StoreWarning",
]

PathLike = str | os.PathLike


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A file as it was when a checkpoint was taken."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified checkpoint: a snapshot of a workflow with what a successor
    needs to resume it, linked to its parent."""

    id: str
    workflow: str
    parent: str | None
    created_at: str
    phase: str | None
    item: str | None
    message: str | None
    context_summary: str | None
    key_decisions: list[str]
    files: list[FileRecord]
    #: The state's generation when the checkpoint was taken (``None``: the
    #: workflow had no state).
    state_generation: int | None
    #: The state's data when the checkpoint was taken.
    state: Any
    checksum: str
    origin: Any = None

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> "Checkpoint":
        snapshot = d.get("state")
        return cls(
            id=d["id"],
            workflow=d["workflow"],
            parent=d["parent"],
            created_at=d["created_at"],
            phase=d["phase"],
            item=d["item"],
            message=d["message"],
            context_summary=d["context_summary"],
            key_decisions=list(d["key_decisions"]),
            files=[FileRecord(**f) for f in d["files"]],
            state_generation=None if snapshot is None else snapshot["generation"],
            state=None if snapshot is None else snapshot["data"],
            checksum=d["checksum"],
            origin=d.get("origin"),
        )

    def __repr__(self) -> str:
        return (
            f"Checkpoint(id={self.id!r}, workflow={self.workflow!r}, parent={self.parent!r}, "
            f"created_at={self.created_at!r}, phase={self.phase!r}, message={self.message!r})"
        )


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One row of a checkpoint listing. ``error`` says why a checkpoint
    that is listed could not be read (it is then the only other field)."""

    id: str
    workflow: str
    created_at: str
    parent: str | None
    phase: str | None = None
    item: str | None = None
    message: str | None = None
    error: str | None = None

    def __repr__(self) -> str:
        tail = f"error={self.error!r}" if self.error else f"phase={self.phase!r}, message={self.message!r}"
        return f"CheckpointInfo(id={self.id!r}, workflow={self.workflow!r}, created_at={self.created_at!r}, {tail})"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What ``health`` found: ``status`` is ``"ok"``, ``"warning"`` or
    ``"error"``; ``components`` has one dict per part of the store;
    ``repairs`` lists what a repair did."""

    status: str
    components: list[dict[str, Any]]
    repairs: list[str]
    #: The ``wfstate health`` exit code for this report: 0, 1 or 3.
    exit_code: int

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "components": self.components, "repairs": self.repairs}

    def __repr__(self) -> str:
        problems = [c["name"] for c in self.components if c["status"] != "ok"]
        return f"HealthReport(status={self.status!r}, problems={problems!r}, repairs={len(self.repairs)})"


@dataclass(frozen=True, slots=True)
class AuditReport:
    """A verified audit chain: how many entries, and whether it is keyed."""

    entries: int
    keyed: bool
    valid: bool = True
    torn_tail: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "keyed": self.keyed, "valid": self.valid, "torn_tail": self.torn_tail}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Lock:
    """A held named lock; a context manager that releases it on exit.

    The kernel (or, on PostgreSQL, the server) releases it if the process
    dies. Use it from the thread that took it. After ``os.fork`` the child's
    copy never releases: the lock stays the parent's, and the parent's
    release frees it for both.
    """

    __slots__ = ("_native",)

    def __init__(self, native: _native.Lock) -> None:
        self._native = native

    @property
    def name(self) -> str:
        return self._native.name

    @property
    def shared(self) -> bool:
        return self._native.shared

    @property
    def held(self) -> bool:
        return self._native.held

    def release(self) -> None:
        """Releases the lock; a second call does nothing."""
        self._native.release()

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: object) -> None:
        self._native.release()

    def __repr__(self) -> str:
        mode = "shared" if self.shared else "exclusive"
        return f"<wfstate.Lock {self.name!r} {mode} {'held' if self.held else 'released'}>"


class Store:
    """An opened store: a store folder or a PostgreSQL database.

    Safe to share between threads; every call releases the GIL while it
    reads, writes, syncs or waits for a lock.
    """

    __slots__ = ("_native",)

    def __init__(self, native: _native.Store) -> None:
        self._native = native

    @property
    def location(self) -> str:
        """Where the data lives (a database URL without its password)."""
        return self._native.location

    def __repr__(self) -> str:
        return f"<wfstate.Store {self.location!r}>"

    # State

    def get(self, workflow: str) -> State:
        """The verified current state; ``NotFoundError`` if there is none."""
        return self._native.get(workflow)

    def set(
        self,
        workflow: str,
        data: Any,
        expect_generation: int | None = None,
        *,
        timeout: float | None = 60.0,
    ) -> State:
        """Saves ``data`` as the next generation. With ``expect_generation``
        (0: no state yet), raises ``ConflictError`` unless the current
        generation is exactly that."""
        return self._native.set(workflow, data, expect_generation, timeout)

    def update(
        self,
        workflow: str,
        fn: Callable[[dict[str, Any]], Any],
        timeout: float | None = 60.0,
    ) -> State:
        """One locked read-modify-write. ``fn`` gets the data (a dict it may
        change in place; ``{}`` if the workflow has no state yet) and may
        return a replacement. If ``fn`` raises, nothing is written and the
        exception propagates unchanged. ``timeout=None`` waits as long as
        the lock's holder lives."""
        return self._native.update(workflow, fn, timeout)

    def workflows(self) -> list[str]:
        """Names of the workflows that have state, sorted."""
        return self._native.workflows()

    def verify(self, workflow: str) -> State:
        """Verifies the stored state (format, checksum, name) and returns it."""
        return self._native.verify(workflow)

    # Checkpoints

    def create_checkpoint(
        self,
        workflow: str,
        message: str | None = None,
        phase: str | None = None,
        item: str | None = None,
        summary: str | None = None,
        decisions: Iterable[str] = (),
        files: Iterable[PathLike] = (),
        parent: str | None = None,
        root: bool = False,
    ) -> Checkpoint:
        """Snapshots the workflow's current state. Without ``phase`` or
        ``summary`` both are derived from the state; ``files`` are recorded
        with their size and SHA-256; the new checkpoint continues from
        ``parent``, or the latest checkpoint, or none with ``root=True``."""
        d = self._native.create_checkpoint(
            workflow,
            message,
            phase,
            item,
            summary,
            list(decisions),
            [os.fspath(f) for f in files],
            parent,
            root,
        )
        return Checkpoint._from_dict(d)

    def checkpoints(
        self,
        workflow: str | None = None,
        phase: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> list[CheckpointInfo]:
        """Checkpoints, newest first; ``before`` pages to older ones."""
        return [CheckpointInfo(**row) for row in self._native.checkpoints(workflow, phase, limit, before)]

    # `workflow` below names the workflow that holds the checkpoint: needed
    # only for an id that several workflows hold (a copied LangGraph
    # thread keeps its ids), which is otherwise an InvalidInputError.

    def checkpoint(self, checkpoint_id: str, *, workflow: str | None = None) -> Checkpoint:
        """One checkpoint, verified."""
        return Checkpoint._from_dict(self._native.checkpoint(checkpoint_id, workflow))

    def chain(self, checkpoint_id: str, max_depth: int | None = None, *, workflow: str | None = None) -> list[Checkpoint]:
        """The lineage of a checkpoint, newest first."""
        return [Checkpoint._from_dict(d) for d in self._native.chain(checkpoint_id, max_depth, workflow)]

    def diff(self, a_id: str, b_id: str, *, workflow: str | None = None) -> list[dict[str, Any]]:
        """The RFC 6902 operations that turn checkpoint a's state into b's."""
        return self._native.diff(a_id, b_id, workflow)

    def restore(self, checkpoint_id: str, *, timeout: float | None = 60.0, workflow: str | None = None) -> State:
        """Makes the checkpoint's state the workflow's current state (a new
        generation that records where it came from)."""
        return self._native.restore(checkpoint_id, timeout, workflow)

    def prune(
        self,
        workflow: str | None = None,
        older_than_days: float | None = None,
        keep_last: int | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Removes old checkpoints (never a workflow's latest); at least one
        of ``older_than_days`` and ``keep_last`` is required. Returns what
        was (or, with ``dry_run``, would be) removed."""
        return self._native.prune(workflow, older_than_days, keep_last, dry_run)

    def resume_prompt(self, workflow: str | None = None, from_id: str | None = None) -> str:
        """A prompt for a person or a model taking the workflow over from its
        latest checkpoint (or ``from_id``)."""
        return self._native.resume_prompt(workflow, from_id)

    # Checkpoints with caller-given content (what wfstate.langgraph uses)

    def record_checkpoint(
        self,
        workflow: str,
        payload: Any,
        metadata: Mapping[str, Any],
        *,
        id: str | None = None,  # noqa: A002
        parent: str | None = None,
        phase: str | None = None,
        message: str | None = None,
        summary: str | None = None,
    ) -> dict[str, Any]:
        """Records a checkpoint holding ``payload`` (any JSON value) and
        ``metadata`` (a dict listings can filter on) instead of a snapshot
        of the workflow's state, durably and with its audit entry. ``id``
        (a lowercase UUID) is the caller's; checkpoints list greatest id
        first. The same checkpoint given again is accepted as it is; other
        content under a taken id raises ``InvalidInputError``. Returns the
        ``id``, ``parent`` and ``created_at``."""
        return self._native.record_checkpoint(workflow, id, parent, payload, dict(metadata), phase, message, summary)

    def find_checkpoints(
        self,
        workflow: str,
        *,
        before: str | None = None,
        id: str | None = None,  # noqa: A002
        metadata: Mapping[str, Any] | None = None,
        limit: int | None = None,
        with_writes: bool = False,
        recorded_only: bool = False,
    ) -> list[dict[str, Any]]:
        """One workflow's checkpoints, each verified (``IntegrityError`` if
        one does not), greatest id first: those before ``before``, only
        ``id``, only those whose metadata has every key of ``metadata``
        with an equal value, only those ``record_checkpoint`` made (not
        snapshots of the state) with ``recorded_only``, at most ``limit``.
        With ``with_writes`` each dict has its pending writes under
        ``"writes"``."""
        return self._native.find_checkpoints(
            workflow, before, id, None if metadata is None else dict(metadata), limit, with_writes, recorded_only
        )

    def put_writes(
        self, workflow: str, checkpoint_id: str, writes: Iterable[Mapping[str, Any]], *, replace: bool = False
    ) -> int:
        """Stores pending writes against a checkpoint, durably before it
        returns. Each write is a dict with ``task_id``, ``idx``,
        ``channel``, ``value`` (JSON) and ``task_path``; it is keyed by
        ``(task_id, idx)``. A key already stored keeps its write unless
        ``replace``. Returns how many writes changed something;
        ``NotFoundError`` if the checkpoint does not exist."""
        return self._native.put_writes(workflow, checkpoint_id, [dict(w) for w in writes], replace)

    def remove_checkpoints(
        self,
        workflow: str,
        which: str,
        *,
        key: str | None = None,
        values: Iterable[Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Removes checkpoints of ``workflow`` with their pending writes, in
        one audited step: ``which="all"``, ``"all_but_latest"``, or
        ``"metadata_in"`` (those whose metadata ``key`` is one of
        ``values``). Returns what was removed."""
        return self._native.remove_checkpoints(workflow, which, key, None if values is None else list(values))

    def checkpoint_workflows(self, prefix: str | None = None) -> list[str]:
        """Workflows that have checkpoints (whose names start with
        ``prefix``), sorted."""
        return self._native.checkpoint_workflows(prefix)

    # Locks

    def lock(
        self,
        name: str,
        shared: bool = False,
        timeout: float | None = 60.0,
        purpose: str | None = None,
    ) -> Lock:
        """Acquires the named lock, waiting up to ``timeout`` seconds
        (``None``: as long as the holder lives); use it in a ``with`` block.
        Raises ``LockTimeoutError``."""
        return Lock(self._native.lock(name, shared, timeout, purpose))

    def lock_status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every lock (or ``name``): free or held, how, and by whom."""
        return self._native.lock_status(name)

    # Audit and health

    def audit_log(self, limit: int | None = None, event: str | None = None) -> list[dict[str, Any]]:
        """Audit entries, oldest first; the newest ``limit``, of ``event``."""
        return self._native.audit_log(limit, event)

    def audit_verify(self) -> AuditReport:
        """Checks the whole chain; raises ``IntegrityError`` naming the first
        bad line if it does not verify."""
        r = self._native.audit_verify()
        return AuditReport(entries=r["entries"], keyed=r["keyed"], valid=r["valid"], torn_tail=r["torn_tail"])

    def health(self, repair: bool = False) -> HealthReport:
        """Checks the whole store; with ``repair``, makes the safe,
        reversible repairs and checks again."""
        r = self._native.health(repair)
        return HealthReport(
            status=r["status"], components=r["components"], repairs=r["repairs"], exit_code=r["exit_code"]
        )


def open(path: PathLike | None = None, *, timeout: float | None = 60.0) -> Store:  # noqa: A001
    """Opens a store: ``path`` (a store folder or a ``postgres://`` URL),
    else ``WFSTATE_STORE``, else the nearest ``.wfstate/`` from the current
    directory upwards. ``timeout`` is the default wait for a workflow's
    lock."""
    return Store(_native.Store.open(None if path is None else os.fspath(path), timeout))


def init(path: PathLike | None = None, *, timeout: float | None = 60.0) -> Store:
    """Creates a store at ``path`` (default ``./.wfstate``), or opens the
    one already there."""
    native, _created = _native.Store.init(None if path is None else os.fspath(path), timeout)
    return Store(native)
