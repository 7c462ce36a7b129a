"""A LangGraph checkpointer on wfstate: ``WfstateSaver``.

>>> from wfstate.langgraph import WfstateSaver
>>> with WfstateSaver.from_conn_string(".wfstate") as saver:   # doctest: +SKIP
...     graph = builder.compile(checkpointer=saver)
...     graph.invoke({"messages": []}, {"configurable": {"thread_id": "t1"}})

Install with ``pip install 'wfstate[langgraph]'``.

How LangGraph's data maps onto wfstate (docs/LANGGRAPH.md has the whole
picture):

- a thread's namespace is a wfstate workflow: ``lg.<thread_id>`` for the
  root namespace when the thread id is made of letters, digits, ``-`` and
  ``_`` (``lg._<hash>`` otherwise), and ``<that>.<hash of ns>`` for a child
  namespace; ``workflow_for`` computes it. The exact ids are stored in each
  checkpoint, so every string round-trips;
- a LangGraph checkpoint is a wfstate checkpoint with LangGraph's own id and
  parent: its payload holds the checkpoint, with each channel value as the
  serializer's type tag and bytes (base64), sealed by the checkpoint's
  SHA-256 like every wfstate document, and its metadata is the checkpoint's
  metadata, which ``list(filter=...)`` queries;
- pending writes are wfstate pending writes of that checkpoint, keyed by
  ``(task_id, idx)``: a task's regular writes are kept once, special writes
  (errors, interrupts) replace.

``put`` and ``put_writes`` return once the data is durable (an fsync on
the file store, a commit on PostgreSQL). A damaged checkpoint or write
raises ``wfstate.IntegrityError`` instead of returning other data.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

import wfstate

__all__ = ["WfstateSaver", "workflow_for"]

_READABLE_THREAD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}\Z")
#: Every workflow this saver writes starts with this.
WORKFLOW_PREFIX = "lg."


def _digest(text: str, chars: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:chars]


def _thread_base(thread_id: str) -> str:
    if _READABLE_THREAD.match(thread_id):
        return WORKFLOW_PREFIX + thread_id
    return f"{WORKFLOW_PREFIX}_{_digest(thread_id, 32)}"


def workflow_for(thread_id: str | int, checkpoint_ns: str = "") -> str:
    """The wfstate workflow that holds a thread's checkpoints in namespace
    ``checkpoint_ns``: what to pass to ``wfstate checkpoint list``."""
    base = _thread_base(str(thread_id))
    return base if checkpoint_ns == "" else f"{base}.{_digest(checkpoint_ns, 16)}"


def _encode(typed: tuple[str, bytes]) -> list[str]:
    kind, data = typed
    return [kind, base64.b64encode(data).decode("ascii")]


def _decode(stored: Sequence[str]) -> tuple[str, bytes]:
    # The document's checksum was verified on read: the text is what was
    # written, so a strict base64 check would only cost time.
    return stored[0], binascii.a2b_base64(stored[1])


class WfstateSaver(BaseCheckpointSaver[int]):
    """LangGraph checkpoints in a wfstate store (a folder or PostgreSQL).

    Safe to share between threads and to use from several processes on one
    store at once. Every method has its async twin (``aput``, ...), which
    runs the same call in a worker thread (the store releases the GIL).
    """

    store: wfstate.Store

    def __init__(self, store: wfstate.Store, *, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        self.store = store

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, *, serde: SerializerProtocol | None = None) -> Iterator[WfstateSaver]:
        """A saver on the store at ``conn_string`` (a store folder, created
        if missing, or a ``postgres://`` URL, whose schema is created or
        migrated), for a ``with`` block."""
        yield cls(wfstate.init(conn_string), serde=serde)

    def setup(self) -> None:
        """Nothing to do: the store is ready once opened (kept for code
        written for the SQL savers)."""

    # Mapping helpers

    def _thread_workflows(self, thread_id: str | int) -> list[str]:
        base = _thread_base(str(thread_id))
        return [w for w in self.store.checkpoint_workflows(base) if w == base or w.startswith(base + ".")]

    def _find(self, workflow: str, **query: Any) -> list[dict[str, Any]]:
        """Checkpoints this saver stored in `workflow`, with their writes.
        The workflow of a thread may also hold checkpoints made with
        wfstate's own tools (snapshots of a state): the store leaves those
        out before `limit` counts."""
        return self.store.find_checkpoints(workflow, with_writes=True, recorded_only=True, **query)

    def _tuple(self, row: dict[str, Any]) -> CheckpointTuple:
        payload = row["payload"]
        thread_id, ns = payload["thread_id"], payload["checkpoint_ns"]
        checkpoint = dict(payload["checkpoint"])
        checkpoint["channel_values"] = {
            name: self.serde.loads_typed(_decode(value)) for name, value in payload["channel_values"].items()
        }
        parent = row["parent"]
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": row["id"]}},
            checkpoint=checkpoint,  # type: ignore[arg-type]
            metadata=row.get("metadata") or {},  # type: ignore[arg-type]
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent}}
                if parent
                else None
            ),
            pending_writes=[
                (w["task_id"], w["channel"], self.serde.loads_typed(_decode(w["value"]))) for w in row.get("writes", [])
            ],
        )

    # The saver interface

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        workflow = workflow_for(configurable["thread_id"], configurable.get("checkpoint_ns", ""))
        rows = self._find(workflow, id=get_checkpoint_id(config), limit=1)
        return self._tuple(rows[0]) if rows else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        configurable = (config or {}).get("configurable", {})
        if "thread_id" not in configurable:
            workflows = self.store.checkpoint_workflows(WORKFLOW_PREFIX)
        elif "checkpoint_ns" in configurable:
            workflows = [workflow_for(configurable["thread_id"], configurable["checkpoint_ns"])]
        else:
            workflows = self._thread_workflows(configurable["thread_id"])
        rows: list[dict[str, Any]] = []
        for workflow in workflows:
            rows.extend(
                self._find(
                    workflow,
                    before=get_checkpoint_id(before) if before else None,
                    id=configurable.get("checkpoint_id"),
                    metadata=filter,
                    limit=limit,
                )
            )
        if len(workflows) > 1:
            rows.sort(key=lambda r: r["id"], reverse=True)
        for row in rows[:limit] if limit is not None else rows:
            yield self._tuple(row)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        ns = configurable.get("checkpoint_ns", "")
        rest = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        payload = {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint": rest,
            "channel_values": {
                name: _encode(self.serde.dumps_typed(value)) for name, value in checkpoint["channel_values"].items()
            },
        }
        stored_metadata = get_serializable_checkpoint_metadata(config, metadata)
        self.store.record_checkpoint(
            workflow_for(thread_id, ns),
            payload,
            stored_metadata,
            id=checkpoint["id"],
            parent=configurable.get("checkpoint_id"),
            phase=stored_metadata.get("source"),
            message=f"LangGraph step {stored_metadata.get('step')}",
            summary=f"LangGraph thread {thread_id!r}" + (f", namespace {ns!r}" if ns else ""),
        )
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        workflow = workflow_for(configurable["thread_id"], configurable.get("checkpoint_ns", ""))
        rows = [
            {
                "task_id": task_id,
                "idx": WRITES_IDX_MAP.get(channel, idx),
                "channel": channel,
                "value": _encode(self.serde.dumps_typed(value)),
                "task_path": task_path,
            }
            for idx, (channel, value) in enumerate(writes)
        ]
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        self.store.put_writes(workflow, configurable["checkpoint_id"], rows, replace=replace)

    def delete_thread(self, thread_id: str) -> None:
        for workflow in self._thread_workflows(thread_id):
            self.store.remove_checkpoints(workflow, "all")

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        for workflow in self.store.checkpoint_workflows(WORKFLOW_PREFIX):
            self.store.remove_checkpoints(workflow, "metadata_in", key="run_id", values=list(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        for workflow in self._thread_workflows(source_thread_id):
            for row in reversed(self._find(workflow)):
                payload = dict(row["payload"], thread_id=target_thread_id)
                target = workflow_for(target_thread_id, payload["checkpoint_ns"])
                self.store.record_checkpoint(
                    target,
                    payload,
                    row.get("metadata") or {},
                    id=row["id"],
                    parent=row["parent"],
                    phase=row["phase"],
                    message=row["message"],
                    summary=row["context_summary"],
                )
                if row["writes"]:
                    self.store.put_writes(target, row["id"], row["writes"])

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        which = {"keep_latest": "all_but_latest", "delete": "all"}.get(strategy)
        if which is None:
            raise ValueError(f'strategy must be "keep_latest" or "delete", got {strategy!r}')
        for thread_id in thread_ids:
            for workflow in self._thread_workflows(thread_id):
                self.store.remove_checkpoints(workflow, which)

    def get_next_version(self, current: int | str | None, channel: None = None) -> int:
        if current is None:
            return 1
        if isinstance(current, int):
            return current + 1
        # Versions written by savers that use strings ("<n>.<random>").
        return int(str(current).split(".")[0]) + 1

    # The async twins: the same calls in a worker thread.

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)
