"""Every topic of a rollout, its message type and QoS kind, and the JSON payloads' schema.

Pure Python (no ROS import): the nodes, the recorder, the launch file, the task tool and the
tests all read topic names from here, so a rosbag of a run holds exactly the topics below.
docs/ros_interface.md documents each one.

Structured payloads are std_msgs/String holding one JSON object with a "v" (schema version)
field; encode() and decode() are the only ways the package writes and reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

# QoS kinds (the nodes map these to rclpy profiles):
#   "sensor": best effort, keep last 5 (qos_profile_sensor_data)
#   "events": reliable, volatile, keep last 50
#   "latched": reliable, transient local, keep last 20 (late joiners get the recent values)
SENSOR, EVENTS, LATCHED = "sensor", "events", "latched"


@dataclass(frozen=True)
class Topic:
    name: str
    msgtype: str  # rosbag2 / rosidl name, e.g. "std_msgs/msg/String"
    qos: str  # SENSOR, EVENTS or LATCHED
    meaning: str


IMAGE = Topic("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR, "RGB frames (rgb8) the policy and verifier see")
TASK = Topic("/task", "std_msgs/msg/String", EVENTS, "an instruction (plain text, or JSON {task, id})")
POLICY_STATUS = Topic("/policy/status", "std_msgs/msg/String", LATCHED, "task state (JSON)")
POLICY_HEARTBEAT = Topic("/policy/heartbeat", "std_msgs/msg/Header", EVENTS, "policy liveness, frame_id = task id")
POLICY_PLAN = Topic("/policy/plan", "std_msgs/msg/String", EVENTS, "motion plan of a cycle (JSON)")
POLICY_RAW = Topic("/policy/raw_text", "std_msgs/msg/String", EVENTS, "raw model text per stage (JSON)")
POLICY_CHUNK = Topic("/policy/action_chunk", "std_msgs/msg/String", EVENTS, "parsed action chunk (JSON)")
EXECUTOR_EVENT = Topic("/executor/event", "std_msgs/msg/String", EVENTS, "chunk execution events (JSON)")
EXECUTOR_STATUS = Topic("/executor/status", "std_msgs/msg/String", LATCHED, "executor state and fault (JSON)")
ESTOP = Topic("/executor/estop", "std_msgs/msg/Bool", LATCHED, "true: stop now and refuse chunks; false: release")
VERDICT = Topic("/verifier/verdict", "std_msgs/msg/String", EVENTS, "advance or retry after a chunk (JSON)")
OPERATOR_REQUEST = Topic("/verifier/operator_request", "std_msgs/msg/String", EVENTS, "question to a person (JSON)")
OPERATOR_ANSWER = Topic("/verifier/operator_answer", "std_msgs/msg/String", EVENTS, "a person's answer: advance | retry")

ALL_TOPICS: tuple[Topic, ...] = (
    IMAGE,
    TASK,
    POLICY_STATUS,
    POLICY_HEARTBEAT,
    POLICY_PLAN,
    POLICY_RAW,
    POLICY_CHUNK,
    EXECUTOR_EVENT,
    EXECUTOR_STATUS,
    ESTOP,
    VERDICT,
    OPERATOR_REQUEST,
    OPERATOR_ANSWER,
)
# What a bag of a rollout records: everything.
ROLLOUT_TOPICS: tuple[Topic, ...] = ALL_TOPICS
BY_NAME: dict[str, Topic] = {t.name: t for t in ALL_TOPICS}

# Policy task states (the "state" field of /policy/status).
IDLE, PLANNING, RUNNING, SUCCEEDED, FAILED, REJECTED, PREEMPTED = (
    "idle", "planning", "running", "succeeded", "failed", "rejected", "preempted",
)
TERMINAL_STATES = (SUCCEEDED, FAILED, REJECTED, PREEMPTED)


class PayloadError(ValueError):
    """A JSON payload that is not an object of the expected schema."""


def encode(**fields: Any) -> str:
    """One JSON object with the schema version first; keys are written in the given order."""
    return json.dumps({"v": SCHEMA_VERSION, **fields}, separators=(",", ":"), allow_nan=False)


def decode(text: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse a payload written by encode(); raises PayloadError saying what is wrong."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"payload is not JSON: {exc}") from None
    except RecursionError:  # deeply nested brackets: refused like any bad payload, not raised into the spin loop
        raise PayloadError("payload is JSON nested too deeply to parse") from None
    if not isinstance(data, dict):
        raise PayloadError(f"payload is a JSON {type(data).__name__}, not an object")
    if data.get("v") != SCHEMA_VERSION:
        raise PayloadError(f"payload schema version is {data.get('v')!r}, expected {SCHEMA_VERSION}")
    missing = [k for k in required if k not in data]
    if missing:
        raise PayloadError(f"payload is missing {missing}")
    return data


def encode_task(instruction: str, task_id: str) -> str:
    """A /task payload that names its own id, so the sender can follow its status."""
    return json.dumps({"task": instruction, "id": task_id})
