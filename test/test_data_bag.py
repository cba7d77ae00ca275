"""Rollout bags of the node suite -> episodes (written here with rosbags in the same schema)."""

import numpy as np
import pytest

from vlm2vla_ros import topics
from vlm2vla_ros.data import load_episodes
from vlm2vla_ros.data.bag_source import export_bag_episodes
from vlm2vla_ros.data.builder import split_group
from vlm2vla_ros.recording import BagWriter, humble_typestore

rosbags = pytest.importorskip("rosbags")


ROLLOUT_CYCLES = ((1, 0, "reach", [[3.0, 0.0, -2.0, 1], [1.0, 0.0, -1.0, 0]]), (2, 0, "reach", [[0.0, 0.5, 0.0, 0]]),
                  (3, 1, "lift", [[0.0, 0.0, 4.0, 0], [0.0, 0.0, 2.0, 0]]))


def write_rollout(path, state="succeeded", aborted_steps=None, drop_frames=(), encoding="rgb8", cycles=ROLLOUT_CYCLES):
    """Two cycles on subtask 0 then one on subtask 1 (or `cycles`: (cycle, subtask index,
    subtask, steps)); a chunk every 300 ms from 1.1 s, frames every 100 ms from 1 s (but the k-th
    of drop_frames), 8x8, rgb8 or bgra8 (a pixel of value v is (v, v+1, v+2))."""
    ts = humble_typestore()
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    String = ts.types["std_msgs/msg/String"]

    def image(stamp, value):
        data = np.zeros((8, 8, 3), dtype=np.uint8) + np.array([value, value + 1, value + 2], dtype=np.uint8)
        if encoding == "bgra8":
            data = np.concatenate([data[:, :, ::-1], np.full((8, 8, 1), 255, np.uint8)], axis=2)
        header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
        return ts.serialize_cdr(Image(header=header, height=8, width=8, encoding=encoding, is_bigendian=0,
                                      step=8 * data.shape[2], data=data.reshape(-1)), "sensor_msgs/msg/Image")

    def text(**fields):
        return ts.serialize_cdr(String(data=topics.encode(**fields)), "std_msgs/msg/String")

    with BagWriter(path, topics.ROLLOUT_TOPICS) as bag:
        for k in (k for k in range(3 * len(cycles) + 3) if k not in drop_frames):
            bag.write(topics.IMAGE.name, image(10**9 + k * 10**8, 10 * k), 10**9 + k * 10**8)
        bag.write(topics.POLICY_STATUS.name, text(task_id="t1", task="pick up the red block", state="running",
                                                 subtasks=sorted({c[2] for c in cycles}, key=[c[2] for c in cycles].index)), 10**9)
        for n, (cycle, index, subtask, steps) in enumerate(cycles):
            stamp = 10**9 + (1 + 3 * n) * 10**8
            bag.write(topics.POLICY_CHUNK.name, text(task_id="t1", cycle=cycle, subtask_index=index, subtask=subtask,
                                                    steps=steps, plan=f"plan {cycle}", image_stamp_ns=stamp), stamp + 1)
            executed = len(steps) if aborted_steps is None or cycle != len(cycles) else aborted_steps
            bag.write(topics.EXECUTOR_EVENT.name, text(task_id="t1", cycle=cycle, event="done" if executed == len(steps) else "aborted",
                                                      steps_executed=executed, chunk_image_stamp_ns=stamp,
                                                      after_stamp_ns=stamp + 2 * 10**8), stamp + 2)
        bag.write(topics.POLICY_STATUS.name, text(task_id="t1", task="pick up the red block", state=state),
                  (3 + len(cycles)) * 10**9)
    return path


def test_rollout_bag_becomes_an_annotated_episode(tmp_path):
    report = export_bag_episodes([write_rollout(tmp_path / "bag")], tmp_path / "eps")
    assert report.written == ["bag-bag-19700101-000001-t1"] and report.skipped == []
    (episode,) = load_episodes([tmp_path / "eps"]).episodes
    assert episode.instruction == "pick up the red block" and episode.source == "bag" and episode.success is True
    assert [s.delta_cm for s in episode.steps] == [(3, 0, -2), (1, 0, -1), (0, 0.5, 0), (0, 0, 4), (0, 0, 2)]
    assert episode.gripper_states() == [1, 0, 0, 0, 0]
    assert episode.subtask_spans() == [(0, 3, "reach"), (3, 5, "lift")]
    assert [s.image is not None for s in episode.steps] == [True, False, True, True, False]
    # the chunk's own frame (stamp 1.1 s -> value 10), and the frame after the last chunk
    from PIL import Image

    assert np.asarray(Image.open(episode.image_path(episode.steps[0].image)))[0, 0, 0] == 10
    assert np.asarray(Image.open(episode.image_path(episode.final_image)))[0, 0, 0] == 90
    again = export_bag_episodes([tmp_path / "bag"], tmp_path / "eps")
    assert again.existing == ["bag-bag-19700101-000001-t1"] and again.written == []


def test_a_task_that_went_back_to_its_move_keeps_its_last_attempt_from_there(tmp_path):
    """A missed grasp sends the task back to its move (TaskRun.move_again_after): the move and
    grasp it left are dropped and counted, so each subtask is one sub-trajectory again."""
    cycles = ((1, 0, "move", [[3.0, 0.0, -2.0, 1]]), (2, 1, "grasp", [[0.0, 0.0, -5.0, 0]]),
              (3, 0, "move", [[0.0, 1.0, 0.0, 1], [0.0, 0.5, 0.0, 1]]), (4, 1, "grasp", [[0.0, 0.0, -1.0, 0]]),
              (5, 2, "lift", [[0.0, 0.0, 4.0, 0]]))
    report = export_bag_episodes([write_rollout(tmp_path / "bag", cycles=cycles)], tmp_path / "eps")
    assert report.skipped == [] and len(report.written) == 1
    (episode,) = load_episodes([tmp_path / "eps"]).episodes
    assert [s.delta_cm for s in episode.steps] == [(0, 1, 0), (0, 0.5, 0), (0, 0, -1), (0, 0, 4)]
    assert episode.subtask_spans() == [(0, 2, "move"), (2, 3, "grasp"), (3, 4, "lift")]
    assert episode.meta["abandoned_steps"] == 2
    # the kept move starts at its own chunk's frame (cycle 3: stamp 1.7 s -> value 70)
    from PIL import Image

    assert np.asarray(Image.open(episode.image_path(episode.steps[0].image)))[0, 0, 0] == 70
    assert episode.success is True
    # back to a later move (a missed place after "move above the bowl"): no frame shows the lift's
    # end apart from the attempt it left, so the task is skipped with the reason
    cycles = ((1, 0, "grasp", [[0.0, 0.0, -5.0, 0]]), (2, 1, "move", [[3.0, 0.0, 0.0, 0]]),
              (3, 2, "place", [[0.0, 0.0, -2.0, 1]]), (4, 1, "move", [[1.0, 0.0, 0.0, 0]]),
              (5, 2, "place", [[0.0, 0.0, -2.0, 1]]))
    report = export_bag_episodes([write_rollout(tmp_path / "bag2", cycles=cycles)], tmp_path / "eps2")
    assert report.written == [] and len(report.skipped) == 1
    assert "cycle 4 went back to subtask 2 after subtask 1 was done" in report.skipped[0][1]


def test_a_camera_driver_in_bgra8_reads_as_the_nodes_read_it(tmp_path):
    report = export_bag_episodes([write_rollout(tmp_path / "bag", encoding="bgra8")], tmp_path / "eps")
    assert report.written == ["bag-bag-19700101-000001-t1"] and report.skipped == []
    (episode,) = load_episodes([tmp_path / "eps"]).episodes
    from PIL import Image

    assert tuple(np.asarray(Image.open(episode.image_path(episode.steps[0].image)))[0, 0]) == (10, 11, 12)


def test_a_missing_frame_is_stood_in_for_only_by_one_taken_after_the_previous_chunk_ended(tmp_path):
    """Cycle 2 names the frame at 1.4 s and cycle 1 ended at 1.3 s. Without the 1.4 s frame, the
    1.3 s one shows the scene cycle 2 saw; without both, the 1.2 s one shows the scene before
    cycle 1 moved the arm, and the task is skipped rather than paired with it."""
    from PIL import Image

    stood_in = export_bag_episodes([write_rollout(tmp_path / "one", drop_frames=(4,))], tmp_path / "eps")
    assert stood_in.written == ["bag-one-19700101-000001-t1"]
    (episode,) = load_episodes([tmp_path / "eps"]).episodes
    assert np.asarray(Image.open(episode.image_path(episode.steps[2].image)))[0, 0, 0] == 30  # the 1.3 s frame
    refused = export_bag_episodes([write_rollout(tmp_path / "two", drop_frames=(3, 4))], tmp_path / "eps")
    assert refused.written == [] and refused.skipped == [
        ("bag-two-19700101-000001-t1", f"cycle 2's frame (stamp {14 * 10**8}) is not in the bag, nor one taken after the previous chunk ended")]


def test_aborted_chunk_keeps_only_executed_steps_and_drops_its_plan(tmp_path):
    export_bag_episodes([write_rollout(tmp_path / "bag", state="failed", aborted_steps=1)], tmp_path / "eps")
    (episode,) = load_episodes([tmp_path / "eps"]).episodes
    assert len(episode.steps) == 4 and episode.success is False
    assert episode.steps[-1].plan is None and episode.steps[0].plan == "plan 1"


def test_corrupt_and_truncated_bags_are_skipped_with_a_reason(tmp_path):
    bag = write_rollout(tmp_path / "bag")
    (db,) = bag.glob("*.db3")
    db.write_bytes(db.read_bytes()[:2000])
    (tmp_path / "notabag").mkdir()
    report = export_bag_episodes([bag, tmp_path / "notabag"], tmp_path / "eps")
    assert report.written == [] and len(report.skipped) == 2
    assert all("cannot be read" in reason for _, reason in report.skipped)


def test_a_bag_still_being_written_at_close_is_an_error_not_a_silent_return(tmp_path):
    """close() waits for the writer thread; past its limit it says the bag is unfinished (no
    metadata.yaml) instead of returning as if it were done, and a later close finishes it."""
    import threading

    from vlm2vla_ros.recording import RecordingError, read_bag

    bag = BagWriter(tmp_path / "bag", (topics.TASK,))
    bag.write(topics.TASK.name, humble_typestore().serialize_cdr(humble_typestore().types["std_msgs/msg/String"](data="go"),
                                                          "std_msgs/msg/String"), 10**9)
    gate, finish = threading.Event(), bag._writer.close
    bag._writer.close = lambda: (gate.wait(10), finish())  # a slow disk: the close takes its time
    with pytest.raises(RecordingError, match="still being written after 0.2 s"):
        bag.close(timeout_s=0.2)
    assert not (tmp_path / "bag" / "metadata.yaml").exists()
    gate.set()
    assert bag.close() == tmp_path / "bag" and (tmp_path / "bag" / "metadata.yaml").is_file()
    assert [m.data for _, m in read_bag(tmp_path / "bag")[topics.TASK.name]] == ["go"]


def copy_with_bad_frames(src, dst):
    """The bag at src with every frame an rgb8 2x4 image whose step (4) is shorter than a row (12 bytes)."""
    from dataclasses import replace

    from rosbags.rosbag2 import Reader

    ts = humble_typestore()
    with Reader(src) as reader, BagWriter(dst, topics.ROLLOUT_TOPICS) as bag:
        for conn, stamp, raw in reader.messages():
            if conn.topic == topics.IMAGE.name:
                msg = replace(ts.deserialize_cdr(raw, conn.msgtype), height=2, width=4, step=4, data=np.zeros(8, np.uint8))
                raw = ts.serialize_cdr(msg, conn.msgtype)
            bag.write(conn.topic, raw, stamp)
    return dst


def test_a_frame_with_a_short_step_skips_its_task_with_the_reason_and_the_next_bag_goes_on(tmp_path, capsys):
    from vlm2vla_ros.tools.dataset import main as dataset_main

    bad = copy_with_bad_frames(write_rollout(tmp_path / "good0"), tmp_path / "bad")
    good = write_rollout(tmp_path / "good")
    report = export_bag_episodes([bad, good], tmp_path / "eps")
    assert report.written == ["bag-good-19700101-000001-t1"]
    assert report.skipped == [("bag-bad-19700101-000001-t1", "an image's step 4 is smaller than width x channels = 12")]
    capsys.readouterr()
    assert dataset_main(["bag", str(bad), str(good), "--out", str(tmp_path / "eps2")]) == 0
    out = capsys.readouterr().out
    assert "skipped bag-bad-19700101-000001-t1: an image's step 4 is smaller than width x channels = 12" in out


def test_a_retried_subtask_has_its_plans_verbalised_and_a_single_chunk_keeps_its_own(tmp_path):
    """"reach" took two chunks with two plans: neither plan describes both chunks' moves, so the
    builder verbalises the moves instead of pairing "plan 1" with the second chunk's moves too."""
    from vlm2vla_ros.data.labeller import AnnotationLabeller

    export_bag_episodes([write_rollout(tmp_path / "bag")], tmp_path / "eps")
    (episode,) = load_episodes([tmp_path / "eps"]).episodes
    labels = AnnotationLabeller().label(episode).subtasks
    assert [(label.start, label.stop, label.subtask, label.plan) for label in labels] == [
        (0, 3, "reach", None), (3, 5, "lift", "plan 3")]


def test_an_id_sent_again_is_a_new_episode_unfinished_tasks_are_not_successes_and_one_bag_is_one_split_group(tmp_path):
    """Run 1 of "t1" fails; a request refused under "t1" changes nothing; "t1" sent again runs
    and succeeds (its cycles count from 1 again); "t2" is pre-empted. Three episodes, none
    mixing another's chunks, and only the run that succeeded counts as a success."""
    ts = humble_typestore()
    Image, Header, Time, String = (ts.types[f"{m}"] for m in (
        "sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time", "std_msgs/msg/String"))

    def text(**fields):
        return ts.serialize_cdr(String(data=topics.encode(**fields)), "std_msgs/msg/String")

    with BagWriter(tmp_path / "bag", topics.ROLLOUT_TOPICS) as bag:
        for k in range(40):
            stamp = 10**9 + k * 10**8
            header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
            data = np.full((8, 8, 3), k, np.uint8).reshape(-1)
            bag.write(topics.IMAGE.name, ts.serialize_cdr(Image(header=header, height=8, width=8, encoding="rgb8",
                                                                is_bigendian=0, step=24, data=data), "sensor_msgs/msg/Image"), stamp)

        def task(task_id, at, instruction, dx, end):
            stamp = 10**9 + at * 10**8
            for state in ("planning", "running"):
                bag.write(topics.POLICY_STATUS.name, text(task_id=task_id, task=instruction, state=state), stamp)
            bag.write(topics.POLICY_CHUNK.name, text(task_id=task_id, cycle=1, subtask_index=0, subtask="reach",
                                                    steps=[[dx, 0.0, 0.0, 1]], plan="go", image_stamp_ns=stamp), stamp + 1)
            bag.write(topics.EXECUTOR_EVENT.name, text(task_id=task_id, cycle=1, event="done", steps_executed=1,
                                                      after_stamp_ns=stamp + 10**8), stamp + 2)
            bag.write(topics.POLICY_STATUS.name, text(task_id=task_id, task=instruction, state=end), stamp + 3)

        task("t1", 1, "pick up the red block", 1.0, "failed")
        bag.write(topics.POLICY_STATUS.name, text(task_id="t1", task="   ", state="rejected"), 10**9 + 5 * 10**8)
        task("t1", 10, "pick up the blue block", 2.0, "succeeded")
        task("t2", 20, "pick up the green block", 3.0, "preempted")
    report = export_bag_episodes([tmp_path / "bag"], tmp_path / "eps")
    assert report.written == ["bag-bag-19700101-000001-t1", "bag-bag-19700101-000001-t1-run2", "bag-bag-19700101-000001-t2"], report
    episodes = {e.episode_id: e for e in load_episodes([tmp_path / "eps"]).episodes}
    got = {k: (e.instruction, [s.delta_cm for s in e.steps], e.success) for k, e in episodes.items()}
    assert got == {
        "bag-bag-19700101-000001-t1": ("pick up the red block", [(1.0, 0.0, 0.0)], False),
        "bag-bag-19700101-000001-t1-run2": ("pick up the blue block", [(2.0, 0.0, 0.0)], True),
        "bag-bag-19700101-000001-t2": ("pick up the green block", [(3.0, 0.0, 0.0)], False),
    }
    # One bag's tasks share a split group: its name and when its recording began.
    assert {split_group(e) for e in episodes.values()} == {"bag-bag-19700101-000001"}


def test_two_bags_of_one_folder_name_are_apart_by_when_they_were_recorded() -> None:
    """Every demo run's bag is called `bag`: their episodes must not take each other's ids
    (the second would be skipped as already exported) nor share a split group."""
    from vlm2vla_ros.data.bag_source import bag_split_group

    assert bag_split_group("bag", 1_700_000_000 * 10**9) == "bag-bag-20231114-221320"
    assert bag_split_group("bag", 1_700_000_000 * 10**9) != bag_split_group("bag", 1_700_000_060 * 10**9)
    assert bag_split_group("my bag/1", 0) == "bag-my_bag_1-19700101-000000"


def test_a_bag_whose_metadata_gives_no_usable_start_time_is_skipped_with_the_reason(tmp_path, monkeypatch) -> None:
    from rosbags.rosbag2 import Reader

    bag = write_rollout(tmp_path / "bag")
    monkeypatch.setattr(Reader, "start_time", property(lambda self: 10**30))
    report = export_bag_episodes([bag, bag], tmp_path / "eps")
    assert report.written == [] and len(report.skipped) == 2
    assert "metadata gives no usable start time (1000000000000000000000000000000)" in report.skipped[0][1]


def test_a_bag_whose_recorder_was_killed_is_recovered_whole(tmp_path, capsys):
    """A recorder killed outright (kill -9, a power cut) leaves its database, committed every
    second, but no metadata.yaml, which every reader needs: the import says how to recover it,
    and `vlm2vla-dataset recover` makes a whole bag of it that imports as the closed one does."""
    import shutil

    from vlm2vla_ros.recording import read_bag
    from vlm2vla_ros.tools.dataset import main as dataset_main

    whole = write_rollout(tmp_path / "whole")
    killed = tmp_path / "killed"
    killed.mkdir()
    (db,) = whole.glob("*.db3")
    shutil.copy(db, killed / "killed.db3")  # what was on the disk: the database, never its metadata.yaml
    report = export_bag_episodes([killed], tmp_path / "eps-killed")
    assert report.written == [] and "vlm2vla-dataset recover" in report.skipped[0][1]
    assert dataset_main(["recover", str(killed), "--out", str(tmp_path / "recovered")]) == 0
    assert "recovered 20 messages" in capsys.readouterr().out  # 12 frames, 2 statuses, 3 chunks, 3 events
    original, recovered = read_bag(whole), read_bag(tmp_path / "recovered")
    assert {t: len(m) for t, m in recovered.items()} == {t: len(m) for t, m in original.items()}
    assert [m.data for _, m in recovered[topics.POLICY_CHUNK.name]] == [m.data for _, m in original[topics.POLICY_CHUNK.name]]
    exported = export_bag_episodes([tmp_path / "recovered"], tmp_path / "eps")
    assert len(exported.written) == 1 and exported.skipped == []
    # a whole bag, or a folder taken already, is refused with the reason
    assert dataset_main(["recover", str(whole), "--out", str(tmp_path / "again")]) == 1
    assert "the bag is whole" in capsys.readouterr().err
    assert dataset_main(["recover", str(killed), "--out", str(tmp_path / "recovered")]) == 1
    assert "exists already" in capsys.readouterr().err


def test_only_the_frames_an_episode_can_use_are_held_in_memory(tmp_path):
    """An hour of camera frames must not have to fit in memory: frames no chunk or report names
    (within a second before the stamp) are passed over, and the episode is the same."""
    from dataclasses import replace

    from rosbags.rosbag2 import Reader

    from vlm2vla_ros.data.bag_source import read_rollouts

    whole = write_rollout(tmp_path / "whole")
    ts = humble_typestore()
    longer = tmp_path / "longer"
    with Reader(whole) as reader, BagWriter(longer, topics.ROLLOUT_TOPICS) as bag:
        template = None
        for conn, stamp, raw in reader.messages():
            bag.write(conn.topic, raw, stamp)
            if conn.topic == topics.IMAGE.name:
                template = ts.deserialize_cdr(raw, conn.msgtype)
        for k in range(200):  # 40 s of frames at 5 Hz after the task, named by nothing
            stamp = 5 * 10**9 + k * 2 * 10**8
            header = type(template.header)(stamp=type(template.header.stamp)(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                           frame_id="cam")
            bag.write(topics.IMAGE.name, ts.serialize_cdr(replace(template, header=header), "sensor_msgs/msg/Image"), stamp)
    frames, tasks, bad, _started = read_rollouts(longer)
    assert bad == 0 and len(tasks) == 1 and len(frames) <= 12  # the rollout's own, not the 200 after it
    a = export_bag_episodes([whole], tmp_path / "eps-a")
    b = export_bag_episodes([longer], tmp_path / "eps-b")
    (ea,), (eb,) = load_episodes([tmp_path / "eps-a"]).episodes, load_episodes([tmp_path / "eps-b"]).episodes
    assert len(a.written) == len(b.written) == 1
    assert [s.delta_cm for s in ea.steps] == [s.delta_cm for s in eb.steps]
    assert [s.image is None for s in ea.steps] == [s.image is None for s in eb.steps]


def test_a_flush_commits_what_was_written_while_the_bag_stays_open(tmp_path):
    """What the recorder's once-a-second flush is for: a killed recorder loses at most the last
    second. Another connection reads the messages from the database before the bag is closed."""
    import sqlite3

    ts = humble_typestore()
    raw = ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="{}"), "std_msgs/msg/String")
    bag = BagWriter(tmp_path / "open", topics.ROLLOUT_TOPICS)
    try:
        for k in range(3):
            bag.write(topics.POLICY_STATUS.name, raw, 10**9 + k)
        (db,) = (tmp_path / "open").glob("*.db3")

        def on_disk():
            with sqlite3.connect(db, timeout=10) as other:
                return other.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

        bag.flush()
        assert on_disk() == 3
        bag.write(topics.POLICY_STATUS.name, raw, 2 * 10**9)
        bag.flush()
        assert on_disk() == 4
    finally:
        bag.close()


def test_a_rosbags_writer_without_a_database_to_commit_is_refused_at_the_start(tmp_path, monkeypatch):
    """A rosbags that keeps its sqlite3 connection elsewhere would leave every recording one
    uncommitted transaction, lost whole if the recorder is killed: refused when the bag opens."""
    from rosbags.rosbag2 import Writer

    from vlm2vla_ros.recording import RecordingError

    monkeypatch.setattr(Writer, "open", lambda self: setattr(self, "storage", object()) or None, raising=True)
    monkeypatch.setattr(Writer, "add_connection", lambda self, *a, **k: None, raising=True)
    with pytest.raises(RecordingError, match=r"no sqlite3 connection at Writer.storage.conn.*rosbags>=0.11"):
        BagWriter(tmp_path / "bag", topics.ROLLOUT_TOPICS)
