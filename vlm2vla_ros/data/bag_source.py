"""Episodes from rosbag2 bags recorded by this node suite (one episode per task in the bag).

Read with the pure-Python rosbags library (no ROS install). Topics used (docs/ros_interface.md):
/camera/image_raw (frames, by header stamp), /policy/action_chunk (the chunk, its subtask,
plan and the stamp of the frame it was generated from), /executor/event (how many steps of
each chunk ran, and the frame after), /policy/status (the instruction and how the task ended).
Each executed step becomes one step of the episode with the commanded move (cm); the first
step of every chunk carries the chunk's frame. Chunks that never ran (rejected, dry run) are
left out, and an aborted chunk contributes only the steps that ran.
"""

from __future__ import annotations

import bisect
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlm2vla_ros import topics
from vlm2vla_ros.frames import image_array

from .episode import EpisodeError, write_episode
from .sim_source import ExportReport

FRAME_TOLERANCE_NS = 1_000_000_000
"""A chunk's frame may be at most this much older than the stamp it names."""
ENDED = ("done", "aborted", "failed")


class BagError(ValueError):
    """A bag that cannot be read; the message says why."""


@dataclass
class _Task:
    task_id: str
    run: int = 1
    """The id's n-th task in the bag: an id may be sent again once its task has ended."""
    instruction: str = ""
    state: str = ""
    chunks: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: dict[int, dict[str, Any]] = field(default_factory=dict)


def image_to_array(msg: Any) -> np.ndarray:
    """A bag's sensor_msgs/Image -> HxWx3 uint8 RGB (frames.image_array, as the nodes read them)."""
    try:
        return image_array(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    except ValueError as exc:
        raise BagError(str(exc)) from None


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def read_rollouts(bag: Path) -> tuple[list[tuple[int, Any]], list[_Task], int, int]:
    """(frames sorted by stamp, the tasks in the order they began, unreadable payloads, the
    recording's first message time in ns) of one bag; raises BagError. A task id sent again after its task ended begins a new task (its
    cycles count from 1 again), and a request refused under an ended task's id changes nothing."""
    from rosbags.rosbag2 import Reader

    from vlm2vla_ros.recording import humble_typestore

    typestore = humble_typestore()
    frames: list[tuple[int, Any]] = []
    tasks: list[_Task] = []
    latest: dict[str, _Task] = {}
    bad = 0

    def task_of(task_id: str, state: Any = None) -> _Task:
        task = latest.get(task_id)
        ended = task is not None and (task.chunks or task.state in (topics.SUCCEEDED, topics.FAILED, topics.PREEMPTED))
        if task is None or (state == topics.PLANNING and ended):
            task = _Task(task_id, run=task.run + 1 if task else 1)
            tasks.append(task)
            latest[task_id] = task
        return task

    wanted = {topics.POLICY_CHUNK.name, topics.EXECUTOR_EVENT.name, topics.POLICY_STATUS.name}
    if not (bag / "metadata.yaml").is_file() and any(bag.glob("*.db3")):
        raise BagError(f"bag {bag} has no metadata.yaml: its recorder was killed before closing it; "
                       f"`vlm2vla-dataset recover {bag} --out NEW_BAG` makes a whole bag of what it holds")
    try:
        with Reader(bag) as reader:
            started_ns = reader.start_time
            if not isinstance(started_ns, int) or not 0 <= started_ns < 2**63:
                raise BagError(f"bag {bag}'s metadata gives no usable start time ({started_ns!r})")
            connections = [c for c in reader.connections if c.topic in wanted]
            for conn, _timestamp, raw in reader.messages(connections=connections):
                try:
                    msg = typestore.deserialize_cdr(raw, conn.msgtype)
                except Exception:  # rosbags raises several types for truncated CDR
                    bad += 1
                    continue
                try:
                    data = topics.decode(msg.data, ("task_id",))
                except topics.PayloadError:
                    bad += 1
                    continue
                if not data["task_id"]:
                    continue  # executor events about no task (a malformed chunk payload)
                status = conn.topic == topics.POLICY_STATUS.name
                task = task_of(str(data["task_id"]), data.get("state") if status else None)
                if status:
                    if data.get("state") == topics.REJECTED and (task.chunks or task.state in topics.TERMINAL_STATES):
                        continue  # a new request refused under this id: not this task's end
                    task.instruction = str(data.get("task") or task.instruction)
                    task.state = str(data.get("state", task.state))
                elif conn.topic == topics.POLICY_CHUNK.name and isinstance(data.get("cycle"), int):
                    task.chunks[data["cycle"]] = data
                elif conn.topic == topics.EXECUTOR_EVENT.name and data.get("event") in ENDED:
                    task.events[int(data.get("cycle", -1))] = data
            # Then the frames, keeping only those an episode can use (_frame_at looks at most
            # FRAME_TOLERANCE_NS back from a stamp a chunk or report names): an hour's recording
            # no longer has to fit in memory whole.
            needed = sorted(_named_stamps(tasks))
            images = [c for c in reader.connections if c.topic == topics.IMAGE.name]
            for conn, _timestamp, raw in reader.messages(connections=images):
                try:
                    msg = typestore.deserialize_cdr(raw, conn.msgtype)
                except Exception:
                    bad += 1
                    continue
                stamp = _stamp(msg.header)
                after = bisect.bisect_left(needed, stamp)  # the first named stamp at or after this frame
                if after < len(needed) and needed[after] - stamp <= FRAME_TOLERANCE_NS:
                    frames.append((stamp, msg))
    except BagError:
        raise
    except Exception as exc:  # rosbags' reader errors, sqlite3 errors on a truncated database
        raise BagError(f"bag {bag} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    frames.sort(key=lambda item: item[0])
    return frames, tasks, bad, started_ns


def _named_stamps(tasks: list[_Task]) -> set[int]:
    """Every frame stamp the tasks' chunks and reports name (what _write_task looks frames up by)."""
    stamps = set()
    for task in tasks:
        for chunk in task.chunks.values():
            stamps.add(chunk.get("image_stamp_ns"))
        for event in task.events.values():
            stamps.update((event.get("chunk_image_stamp_ns"), event.get("after_stamp_ns")))
    return {int(s) for s in stamps if isinstance(s, int) and not isinstance(s, bool) and s > 0}


def _frame_at(frames: list[tuple[int, Any]], stamp: int, not_before: int = 0) -> Any | None:
    """The last frame at or before `stamp` (within FRAME_TOLERANCE_NS), and not before
    `not_before`: when the frame a chunk names is missing (a best-effort topic drops frames), an
    earlier one stands in only if the robot has not moved since, i.e. after the previous chunk ended."""
    best = None
    for frame_stamp, msg in frames:
        if frame_stamp > stamp:
            break
        best = (frame_stamp, msg)
    if best is None or stamp - best[0] > FRAME_TOLERANCE_NS or best[0] < not_before:
        return None
    return best[1]


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"


def bag_split_group(bag_name: str, started_ns: int) -> str:
    """The split group of every task in one bag, and the start of their episode ids: the bag's
    folder name and when its recording began (UTC), the same on every machine and apart for two
    folders of one name (every demo run's is `bag`). Its tasks are consecutive rollouts in one
    scene (the same objects, often an instruction sent again), so validating one while training
    on the next would score near-twins."""
    started = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started_ns // 10**9))
    return f"bag-{_safe_id(bag_name)}-{started}"


def export_bag_episodes(bags: list[Path], out_root: Path, progress: bool = False) -> ExportReport:
    """Write one episode per task found in each bag; bad bags and tasks are skipped with a reason."""
    from tqdm import tqdm

    report = ExportReport()
    for bag in tqdm(bags, desc="bags", disable=not progress):
        try:
            frames, tasks, bad, started_ns = read_rollouts(bag)
        except BagError as exc:
            report.skipped.append((str(bag), str(exc)))
            continue
        if bad:
            report.skipped.append((str(bag), f"{bad} message(s) could not be decoded and were ignored"))
        if not tasks:
            report.skipped.append((str(bag), "the bag holds no task (no /policy/status, chunk or event payloads)"))
        group = bag_split_group(bag.name, started_ns)
        for task in tasks:
            episode_id = f"{group}-{_safe_id(task.task_id)}" + (f"-run{task.run}" if task.run > 1 else "")
            if (out_root / episode_id).exists():
                report.existing.append(episode_id)
                continue
            try:
                _write_task(task, frames, out_root, episode_id, bag, group)
            except (EpisodeError, BagError) as exc:
                report.skipped.append((episode_id, str(exc)))
                continue
            report.written.append(episode_id)
    return report


def _write_task(task: _Task, frames: list[tuple[int, Any]], out_root: Path, episode_id: str, bag: Path, group: str) -> None:
    if not task.instruction:
        raise EpisodeError("the task's instruction was not recorded (no /policy/status)")
    images: list[np.ndarray | None] = []
    deltas: list[list[float]] = []
    grippers: list[int] = []
    subtasks: list[str] = []
    indices: list[int] = []
    plans: list[str | None] = []
    after_stamp = 0
    abandoned = 0
    for cycle in sorted(task.chunks):
        chunk, event = task.chunks[cycle], task.events.get(cycle)
        if event is None:
            continue  # never executed (rejected, dry run, or the bag ends first)
        steps = chunk.get("steps")
        executed = int(event.get("steps_executed", 0))
        if not isinstance(steps, list) or executed <= 0:
            continue
        frame = _frame_at(frames, int(chunk.get("image_stamp_ns") or event.get("chunk_image_stamp_ns") or 0), after_stamp)
        if frame is None:
            raise EpisodeError(f"cycle {cycle}'s frame (stamp {chunk.get('image_stamp_ns')}) is not in the bag, nor one "
                               "taken after the previous chunk ended")
        index = int(chunk.get("subtask_index", 0))
        if indices and index < indices[-1]:
            # the task went back to an earlier subtask (a missed grasp sends it back to its move:
            # TaskRun.move_again_after). Back to the first: the attempt it left is dropped, so each
            # subtask is one sub-trajectory that ends where the next one starts, as the builder's
            # labels need. Back to a later one, the frame after the subtasks done before it would
            # be one taken after the attempt it left, which a verify example would take for their end.
            keep = next(k for k, i in enumerate(indices) if i >= index)
            if keep:
                raise EpisodeError(
                    f"cycle {cycle} went back to subtask {index + 1} after subtask {index} was done: no frame in the "
                    f"bag shows subtask {index}'s end apart from the attempt it left, so the task is not exported")
            abandoned += len(indices) - keep
            for kept in (images, deltas, grippers, subtasks, indices, plans):
                del kept[keep:]
        complete = executed >= len(steps)
        for j, step in enumerate(steps[:executed]):
            images.append(image_to_array(frame) if j == 0 else None)
            deltas.append([float(v) for v in step[:3]])
            grippers.append(int(step[3]))
            subtasks.append(str(chunk.get("subtask") or task.instruction))
            indices.append(index)
            plans.append(str(chunk.get("plan")) if complete and chunk.get("plan") else None)
        after_stamp = int(event.get("after_stamp_ns") or 0)
    if not deltas:
        raise EpisodeError("no chunk of this task was executed, so it has no actions")
    final = _frame_at(frames, after_stamp) if after_stamp else None
    success = task.state == topics.SUCCEEDED  # pre-empted, or still running when the bag ends: not a demonstration
    write_episode(
        out_root,
        episode_id,
        instruction=task.instruction,
        source="bag",
        frames=images,
        deltas_cm=deltas,
        gripper=grippers,
        subtasks=subtasks,
        subtask_indices=indices,
        plans=plans,
        final_frame=image_to_array(final) if final is not None else None,
        success=success,
        meta={"bag": str(bag), "task_id": task.task_id, "final_state": task.state, "split_group": group,
              "abandoned_steps": abandoned},
    )
