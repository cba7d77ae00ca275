"""ChunkGate: which chunks may move the robot, without ROS (the executor node's gating)."""

from vlm2vla_ros import topics
from vlm2vla_ros.robot.gate import ChunkGate

S = 1_000_000_000  # ns a second


def test_a_new_task_resets_the_latch_and_its_next_chunks_do_not():
    gate = ChunkGate(30.0)
    assert gate.admit("a") is True
    assert gate.admit("a") is False
    assert gate.admit("b") is True and gate.task_id == "b"


def test_an_engaged_estop_refuses_every_chunk_until_released():
    gate = ChunkGate(30.0)
    gate.estopped = True
    assert "e-stop is engaged" in gate.refusal("a", 0, None)
    gate.estopped = False
    assert gate.refusal("a", 0, None) == ""


def test_a_chunk_of_an_ended_task_is_refused_and_of_a_running_one_is_not():
    gate = ChunkGate(30.0)
    gate.policy_status("a", topics.RUNNING, None)
    assert gate.refusal("a", 0, None) == ""
    for state in topics.TERMINAL_STATES:
        gate.policy_status("a", state, None)
        assert gate.refusal("a", 0, None) == f"task a has ended ({state}) on {topics.POLICY_STATUS.name}"


def test_a_chunk_planned_from_a_stale_frame_is_refused():
    gate = ChunkGate(30.0)
    newest = 1_000_000 * S
    assert "captured 3600.0 s before the newest camera frame" in gate.refusal("a", newest - 3600 * S, newest)
    assert gate.refusal("a", newest - 29 * S, newest) == ""
    assert ChunkGate(0.0).refusal("a", newest - 3600 * S, newest) == ""  # the check off


def test_another_task_planning_or_running_pre_empts_the_running_chunk():
    gate = ChunkGate(30.0)
    assert gate.policy_status("b", topics.PLANNING, "a") == "task a was pre-empted by task b"
    assert gate.policy_status("b", topics.RUNNING, "a") == "task a was pre-empted by task b"
    # another task's end, or the running task's own progress, stops nothing
    assert gate.policy_status("c", topics.FAILED, "a") == ""
    assert gate.policy_status("a", topics.RUNNING, "a") == ""
    assert gate.policy_status("b", topics.PLANNING, None) == ""  # nothing running


def test_the_running_task_ending_stops_its_chunk():
    gate = ChunkGate(30.0)
    for state in topics.TERMINAL_STATES:
        assert gate.policy_status("a", state, "a") == f"task a ended ({state})"


def test_a_task_id_sent_again_after_its_end_is_a_new_task():
    gate = ChunkGate(30.0)
    gate.policy_status("a", topics.PLANNING, None)
    assert gate.admit("a") is True
    gate.policy_status("a", topics.SUCCEEDED, None)
    gate.policy_status("a", topics.PLANNING, None)  # the same id, a new task
    assert gate.refusal("a", 0, None) == ""
    assert gate.admit("a") is True  # its first chunk resets the latch
    # planning again while still running is the same task: no reset
    gate.policy_status("a", topics.PLANNING, None)
    assert gate.admit("a") is False


def test_the_gate_forgets_the_oldest_tasks_beyond_its_memory():
    gate = ChunkGate(30.0, kept=3)
    ended = topics.FAILED
    for task in ("a", "b", "c", "d"):
        gate.policy_status(task, ended, None)
    assert gate.state_of("a") == "" and gate.refusal("a", 0, None) == ""
    assert all(gate.state_of(t) == ended for t in ("b", "c", "d"))
    gate.policy_status("b", ended, None)  # heard again: the newest, so "c" is now the oldest
    gate.policy_status("e", ended, None)
    assert gate.state_of("c") == "" and gate.state_of("b") == ended
