"""The external labeller against a stand-in OpenAI-compatible server on loopback."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlm2vla_ros.data import (
    LabellerSettings,
    OpenAILabellerConfig,
    build_dataset,
    load_episodes,
    make_labeller,
)
from vlm2vla_ros.data.labeller import LabelError, RateLimiter, parse_label_answer
from vlm2vla_ros.data.sim_source import export_sim_episodes


class StandIn:
    """Answers /v1/chat/completions with `mode`: good, slow, garbage, notjson, error."""

    def __init__(self):
        self.mode = "good"
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if outer.mode == "error":
                    self.send_response(503)
                    self.end_headers()
                    return
                if outer.mode == "slow":
                    time.sleep(1.0)
                steps = int(body["messages"][1]["content"][-1]["text"].split("has ")[1].split(" steps")[0])
                content = {
                    "good": "```json\n" + json.dumps({"subtasks": [
                        {"start_step": 0, "subtask": "reach the block", "plan": "Move forward and down."},
                        {"start_step": steps // 2, "subtask": "take the block", "plan": "Move up."},
                    ]}) + "\n```",
                    "slow": "{}",
                    "garbage": "I would rather talk about the weather.",
                }.get(outer.mode, "")
                payload = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                data = b"not json at all" if outer.mode == "notjson" else json.dumps(payload).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def server():
    s = StandIn()
    yield s
    s.close()


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("eps")
    export_sim_episodes(root, ["pick_up"], [0, 1], image_size=32)
    return load_episodes([root]).episodes


def labeller(server, tmp_path, **kw):
    config = dict(base_url=server.url, model="stand-in", api_key="k", timeout_s=0.3, retries=2, backoff_s=0.0,
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
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer k"
    content = request["body"]["messages"][1]["content"]
    assert any(item["type"] == "image_url" and item["image_url"]["url"].startswith("data:image/png;base64,") for item in content)
    assert "+dy is to the robot's left" in request["body"]["messages"][0]["content"]
    # a rerun (new process, same cache) pays nothing
    again = labeller(server, tmp_path)
    assert again.label(episodes[0]) == labels
    assert len(server.requests) == 1 and again.stats.cache_hits == 1


def test_timeouts_are_retried_counted_and_fall_back(server, episodes, tmp_path):
    server.mode = "slow"
    slow = labeller(server, tmp_path)
    with pytest.raises(LabelError, match="did not answer within 0.3 s"):
        slow.label(episodes[0])
    assert slow.stats.timeouts == 2 and slow.stats.failed_episodes == 1
    report = build_dataset(episodes, tmp_path / "ds", labeller(server, tmp_path), fallback=True)
    assert report.notes["labeller_fallbacks"] == 2 and len(report.episodes_built) == 2
    assert report.labeller["timeouts"] == 4


def test_garbage_is_counted_and_skipped_when_asked(server, episodes, tmp_path):
    server.mode = "garbage"
    report = build_dataset(episodes, tmp_path / "ds", labeller(server, tmp_path), fallback=False)
    assert report.episodes_built == [] and len(report.skipped) == 2
    assert all("no usable answer in 2 tries" in reason for _, reason in report.skipped)
    assert report.labeller["malformed"] == 4
    assert not list((tmp_path / "cache").glob("*.json"))  # garbage is never cached
    server.mode = "good"  # the rerun labels what failed before
    report = build_dataset(episodes, tmp_path / "ds", labeller(server, tmp_path), fallback=False)
    assert len(report.episodes_built) == 2


@pytest.mark.parametrize("mode, message", [("notjson", "not an OpenAI chat completion"), ("error", "HTTP 503")])
def test_broken_servers_give_one_clear_reason(server, episodes, tmp_path, mode, message):
    server.mode = mode
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
    ],
)
def test_malformed_label_answers_are_rejected(answer, reason):
    with pytest.raises(LabelError, match=reason):
        parse_label_answer(answer, 10)


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
