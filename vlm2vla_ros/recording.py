"""Write rosbag2 bags without ROS tooling, with the pure-Python `rosbags` library.

Used where `ros2 bag record` is missing (pip-installed ROS 2, the one-process bringup, the
offline demo). Messages arrive already serialized (CDR bytes from an rclpy raw subscription)
and are stored as they are, so the bag is exactly what went over the wire.

Storage is sqlite3, the rosbag2 default on Humble. rosbags keeps one open transaction and
writes metadata.yaml on close(), so close() must run on every exit path (the bringup calls
it on SIGINT/SIGTERM); flush() commits what has been written so far, so even a process that
is killed outright leaves a database that `vlm2vla-dataset recover` (recover_bag) or
`ros2 bag reindex` turns back into a whole bag.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .topics import Topic

# Humble's message definitions: the robot's distro; the types used here are the same in all.
TYPESTORE_NAME = "ros2_humble"


def humble_typestore() -> Any:
    """rosbags' message definitions of ROS 2 Humble (TYPESTORE_NAME), for every bag read or written."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, TYPESTORE_NAME.upper()))


class RecordingError(RuntimeError):
    """The bag cannot be created or written; the message says why."""


def _database_of(writer: Any) -> Any:
    """The open bag's sqlite3 connection, which flush() commits: without it a killed recorder
    would leave one uncommitted transaction, an empty database. Refused at the start, not found
    out after a crash (rosbags before 0.11 keeps the connection elsewhere)."""
    conn = getattr(getattr(writer, "storage", None), "conn", None)
    if conn is None:
        from importlib.metadata import version

        raise RecordingError(
            f"rosbags {version('rosbags')} keeps no sqlite3 connection at Writer.storage.conn, so "
            "the bag could not be committed while it is recorded; install rosbags>=0.11 (constraints.txt)"
        )
    return conn


class BagWriter:
    """A thread-safe rosbag2 writer for a fixed set of topics. Use as a context manager.

    sqlite3 connections belong to the thread that made them, so one writer thread owns the
    bag: write() only queues (callbacks never wait for the disk), flush() and close() wait
    until the queue before them is on disk.
    """

    def __init__(self, path: str | Path, topics: Iterable[Topic]) -> None:
        try:
            from rosbags.rosbag2 import Writer
        except ImportError as exc:  # pragma: no cover - rosbags is a declared extra
            raise RecordingError("recording needs the 'rosbags' package (pip install rosbags)") from exc
        self.path = Path(path)
        if self.path.exists():
            raise RecordingError(f"bag directory {self.path} exists already; choose a new one")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._topics = tuple(topics)
        self.counts: dict[str, int] = {t.name: 0 for t in self._topics}
        self._lock = threading.Lock()
        self._closed = False
        self._error: BaseException | None = None
        self._queue: queue.Queue[tuple] = queue.Queue()
        ready = threading.Event()

        def open_bag() -> None:
            try:
                typestore = humble_typestore()
                self._writer = Writer(self.path, version=8)
                self._writer.open()
                self._connections = {
                    t.name: self._writer.add_connection(t.name, t.msgtype, typestore=typestore) for t in self._topics
                }
                self._database = _database_of(self._writer)
            except BaseException as exc:
                self._error = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=self._loop, args=(open_bag,), name="bag-writer", daemon=True)
        self._thread.start()
        ready.wait()
        if self._error is not None:
            raise RecordingError(f"cannot create bag {self.path}: {self._error}") from self._error

    def _loop(self, open_bag: Any) -> None:
        open_bag()
        if self._error is not None:
            return
        while True:
            item = self._queue.get()
            kind = item[0]
            try:
                if kind == "write":
                    _, topic, data, stamp = item
                    self._writer.write(self._connections[topic], stamp, data)
                elif kind == "flush":
                    self._database.commit()
                elif kind == "close":
                    self._writer.close()
            except BaseException as exc:  # kept and raised by close()
                if self._error is None:
                    self._error = exc
            if len(item) == 2 and isinstance(item[1], threading.Event):
                item[1].set()
            if kind == "close":
                return

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def error(self) -> BaseException | None:
        """The first failure to write, commit or close (a full disk), once there is one; close()
        raises it. Messages queued after it may be lost."""
        return self._error

    def write(self, topic: str, data: bytes, timestamp_ns: int) -> bool:
        """Queue one serialized message; returns False once the bag is closed."""
        if topic not in self.counts:
            raise RecordingError(f"topic {topic} was not declared when the bag was opened")
        with self._lock:
            if self._closed:
                return False
            self.counts[topic] += 1
            self._queue.put(("write", topic, bytes(data), int(timestamp_ns)))
        return True

    def flush(self, timeout_s: float = 10.0) -> None:
        """Commit everything queued so far to the database (metadata.yaml comes on close)."""
        done = threading.Event()
        with self._lock:
            if self._closed:
                return
            self._queue.put(("flush", done))
        done.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> Path:
        """Write what is queued, finish the bag (idempotent); returns its path."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(("close", threading.Event()))
        self._thread.join(timeout_s)
        if self._error is not None:
            raise RecordingError(f"bag {self.path} could not be written: {self._error}") from self._error
        if self._thread.is_alive():
            raise RecordingError(f"bag {self.path} was still being written after {timeout_s} s, so it has no "
                                 f"metadata.yaml yet; close it again to wait longer")
        return self.path

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recover_bag(damaged: str | Path, out: str | Path) -> dict[str, int]:
    """Every message a bag's database holds, copied into a whole new bag at `out`, for a bag whose
    recorder was killed before close() wrote its metadata.yaml (what readers need): the
    recorder commits every second, so all but the last second is there. What `ros2 bag
    reindex` does, for machines without ROS 2; the damaged bag is read, not changed, except
    that sqlite rolls back the transaction the killed writer left open. Returns the count of
    messages per topic; raises RecordingError naming the problem."""
    import sqlite3

    from rosbags.rosbag2 import Writer

    damaged, out = Path(damaged), Path(out)
    if (damaged / "metadata.yaml").is_file():
        raise RecordingError(f"{damaged} has its metadata.yaml: the bag is whole, read it as it is")
    databases = sorted(damaged.glob("*.db3"))
    if len(databases) != 1:
        raise RecordingError(f"{damaged} holds {len(databases)} .db3 databases; a bag of this node suite's "
                             "recorder has one (ros2 bag reindex handles split bags)")
    if out.exists():
        raise RecordingError(f"{out} exists already; choose a new folder for the recovered bag")
    typestore = humble_typestore()
    counts: dict[str, int] = {}
    try:
        database = sqlite3.connect(databases[0])
        try:
            topics = database.execute("SELECT id, name, type FROM topics ORDER BY id").fetchall()
            writer = Writer(out, version=8)
            writer.open()
            try:
                connections = {}
                for topic_id, name, msgtype in topics:
                    connections[topic_id] = writer.add_connection(name, msgtype, typestore=typestore)
                    counts[name] = 0
                rows = database.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY timestamp, id")
                for topic_id, timestamp, data in rows:
                    writer.write(connections[topic_id], timestamp, data)
                    counts[connections[topic_id].topic] += 1
            finally:
                writer.close()
        finally:
            database.close()
    except (sqlite3.Error, KeyError) as exc:
        raise RecordingError(f"the database of {damaged} cannot be read ({type(exc).__name__}: {exc})") from None
    return counts


def read_bag(path: str | Path) -> dict[str, list]:
    """Every message of a bag, deserialized, as {topic: [(timestamp_ns, msg), ...]} (for tests/tools)."""
    from rosbags.rosbag2 import Reader

    typestore = humble_typestore()
    out: dict[str, list] = {}
    with Reader(Path(path)) as reader:
        for conn in reader.connections:
            out.setdefault(conn.topic, [])
        for conn, timestamp, raw in reader.messages():
            out[conn.topic].append((timestamp, typestore.deserialize_cdr(raw, conn.msgtype)))
    return out
