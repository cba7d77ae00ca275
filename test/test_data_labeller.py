"""The external labeller against a stand-in OpenAI-compatible server on loopback."""

import json

import pytest
from openai_standin import StandInServer

from vlm2vla_ros.action_language import format_subtasks
from vlm2vla_ros.data import (
    LabellerSettings,
    OpenAILabellerConfig,
    build_dataset,
    load_episodes,
    make_labeller,
)
from vlm2vla_ros.data.labeller import LabelError, RateLimiter, parse_label_answer
from vlm2vla_ros.data.sim_source import export_sim_episodes


def label_answer(body):
    """A well-formed labeller answer for the episode the request describes."""
    steps = int(body["messages"][1]["content"][-1]["text"].split("has ")[1].split(" steps")[0])
    return "```json\n" + json.dumps({"subtasks": [
        {"start_step": 0, "subtask": "reach the block", "plan": "Move forward and down."},
        {"start_step": steps // 2, "subtask": "take the block", "plan": "Move up."},
    ]}) + "\n```"


@pytest.fixture()
def server():
    with StandInServer(label_answer) as s:
        yield s


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("eps")
    export_sim_episodes(root, ["pick_up"], [0, 1], image_size=32)
    return load_episodes([root]).episodes


def labeller(server, tmp_path, **kw):
    config = dict(base_url=server.base_url, model="stand-in", api_key="k", timeout_s=0.3, retries=2, backoff_s=0.0,
                  requests_per_minute=6000, cache_dir=str(tmp_path / "cache"))
    config.update(kw)
    return make_labeller(LabellerSettings("openai", openai=OpenAILabellerConfig(**config)))


def test_good_answers_label_the_episode_and_are_cached(server, episodes, tmp_path):
    first = labeller(server, tmp_path)
    labels = first.label(episodes[0])
    n = len(episodes[0].steps)
    assert [(s.start, s.stop, s.subtask, s.plan) for s in labels.subtasks] == [
        (0, n // 2, "reach the block", "Move forward and down."),
        (n // 2, n, "take the block", "Move up."),
    ]
    request = server.requests[0]
    assert server.headers[0]["Authorization"] == "Bearer k"
    content = request["messages"][1]["content"]
    assert any(item["type"] == "image_url" and item["image_url"]["url"].startswith("data:image/png;base64,") for item in content)
    assert "+dy is to the robot's left" in request["messages"][0]["content"]
    # a rerun (new process, same cache) pays nothing
    again = labeller(server, tmp_path)
    assert again.label(episodes[0]) == labels
    assert len(server.requests) == 1 and again.stats.cache_hits == 1


def test_timeouts_are_retried_counted_and_fall_back(server, episodes, tmp_path):
    server.delay_s = 1.0
    slow = labeller(server, tmp_path)
    with pytest.raises(LabelError, match="did not answer within 0.3 s"):
        slow.label(episodes[0])
    assert slow.stats.timeouts == 2 and slow.stats.failed_episodes == 1
    report = build_dataset(episodes, tmp_path / "ds", labeller(server, tmp_path), fallback=True)
    assert report.notes["labeller_fallbacks"] == 2 and len(report.episodes_built) == 2
    assert report.labeller["timeouts"] == 4


def test_garbage_is_counted_and_skipped_when_asked(server, episodes, tmp_path):
    server.answer = lambda body: "I would rather talk about the weather."
    report = build_dataset(episodes, tmp_path / "ds", labeller(server, tmp_path), fallback=False)
    assert report.episodes_built == [] and len(report.skipped) == 2
    assert all("no usable answer in 2 tries" in reason for _, reason in report.skipped)
    assert report.labeller["malformed"] == 4
    assert not list((tmp_path / "cache").glob("*.json"))  # garbage is never cached
    server.answer = label_answer  # the rerun labels what failed before
    report = build_dataset(episodes, tmp_path / "ds", labeller(server, tmp_path), fallback=False)
    assert len(report.episodes_built) == 2


@pytest.mark.parametrize("fault, message", [("malformed", "not an OpenAI chat completion"), ("status", "HTTP 503")])
def test_broken_servers_give_one_clear_reason(server, episodes, tmp_path, fault, message):
    setattr(server, fault, 503 if fault == "status" else True)
    with pytest.raises(LabelError, match=message):
        labeller(server, tmp_path).label(episodes[0])


@pytest.mark.parametrize(
    "answer, reason",
    [
        ('{"subtasks": []}', "1 to"),
        ('{"subtasks": [{"start_step": 1, "subtask": "a", "plan": "b"}]}', "not 0"),
        ('{"subtasks": [{"start_step": 0, "subtask": "a", "plan": "b"}, {"start_step": 0, "subtask": "c", "plan": "d"}]}', "not after"),
        ('{"subtasks": [{"start_step": 0, "subtask": "", "plan": "b"}]}', "subtask is not"),
        ('{"subtasks": [{"start_step": 0, "subtask": "a", "plan": "b"}, {"start_step": 99, "subtask": "c", "plan": "d"}]}', "not a step"),
        ('{"subtasks": [{"start_step": 0, "subtask": "a", "plan": "b"}, {"start_step": 5, "subtask": "%s", "plan": "d"}]}'
         % ("c" * 81), "subtask 1 of the labeller's answer: it has 81 characters, more than 80"),
        ('{"subtasks": [{"start_step": 0, "subtask": "2 blocks", "plan": "b"}]}', "subtask 0 of the labeller's answer: it starts"),
    ],
)
def test_malformed_label_answers_are_rejected(answer, reason):
    with pytest.raises(LabelError, match=reason):
        parse_label_answer(answer, 10)


def test_label_subtasks_are_written_as_the_formatter_writes_them():
    """A subtask with a tab and runs of spaces is kept in the one form the dataset builder and the
    decoder use, so the same words never become two training targets."""
    answer = json.dumps({"subtasks": [{"start_step": 0, "subtask": "  reach\tthe   block ", "plan": "Move  down."}]})
    (label,) = parse_label_answer(answer, 10)
    assert (label.subtask, label.plan) == ("reach the block", "Move down.")
    assert format_subtasks([label.subtask]) == "1. reach the block"


def test_rate_limiter_spaces_requests():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(30, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.wait()
        now[0] += 0.5
    assert slept == pytest.approx([1.5, 1.5])


def test_a_corrupt_frame_skips_its_episode_instead_of_crashing_the_build(server, tmp_path):
    root = tmp_path / "eps"
    export_sim_episodes(root, ["pick_up"], [0, 1], image_size=32)
    episodes = load_episodes([root]).episodes
    broken = episodes[0]
    broken.image_path(broken.steps[0].image).write_bytes(b"")  # emptied after the loader checked it
    report = build_dataset(episodes, tmp_path / "ds", labeller(server, tmp_path), fallback=True)
    assert [e for e, _ in report.skipped] == [broken.episode_id]
    assert "cannot identify image file" in report.skipped[0][1]
    assert report.episodes_built == [episodes[1].episode_id]


def test_annotations_keep_a_plan_only_for_one_chunk_that_gives_it_throughout(tmp_path):
    """In a recorded rollout a frame starts each chunk: a subtask retried with the same words, or
    ending in an aborted chunk (no plan), is verbalised; a demonstration's plan for a whole
    subtask with a frame at every step is kept."""
    from vlm2vla_ros.data.episode import EpisodeRecord, StepRecord
    from vlm2vla_ros.data.labeller import AnnotationLabeller

    def episode(source, *steps):
        return EpisodeRecord("e", "pick it up", source, [
            StepRecord(image, (1.0, 0.0, 0.0), 1, subtask, index, plan) for image, subtask, index, plan in steps], tmp_path)

    retried = episode("bag", ("a.png", "reach", 0, "Move forward."), (None, "reach", 0, "Move forward."),
                      ("b.png", "reach", 0, "Move forward."), ("c.png", "lift", 1, "Move up."), (None, "lift", 1, None))
    assert [label.plan for label in AnnotationLabeller().label(retried).subtasks] == [None, None]
    single = episode("bag", ("a.png", "reach", 0, "Move forward."), (None, "reach", 0, "Move forward."))
    assert [label.plan for label in AnnotationLabeller().label(single).subtasks] == ["Move forward."]
    demonstration = episode("jsonl", ("a.png", "reach", 0, "Move forward."), ("b.png", "reach", 0, "Move forward."))
    assert [label.plan for label in AnnotationLabeller().label(demonstration).subtasks] == ["Move forward."]
