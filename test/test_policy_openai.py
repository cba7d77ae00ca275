"""The OpenAI-compatible backend against a loopback stand-in that speaks vLLM's chat API."""

from __future__ import annotations

import base64
import io
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_standin import CANNED_CHUNK, StandInServer

from vlm2vla_ros.action_language import chunk_regex, parse_action_chunk
from vlm2vla_ros.policy import OpenAIConfig, PolicyConfig, PolicyError, load_policy
from vlm2vla_ros.policy.prompts import VERDICT_REGEX, subtasks_regex

TASK = "pick up the carrot"


def policy(server: StandInServer, **openai):
    settings = {"base_url": server.base_url, "model": "vlm2vla", "base_model": "gemma-3-12b-it",
                "api_key": "secret", "timeout_s": 2.0, **openai}
    return load_policy(PolicyConfig(backend="openai", max_retries=2, openai=OpenAIConfig(**settings)))


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def decoded_image(content_item: dict) -> np.ndarray:
    from PIL import Image

    url = content_item["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_all_stages_send_vllm_requests_and_parse_the_answers() -> None:
    with StandInServer() as server:
        engine = policy(server)
        subtasks = engine.subtasks(image(0), TASK)
        cycle = engine.cycle(image(1), TASK, subtasks.subtasks[0])
        verdict = engine.verify(image(1), image(2), subtasks.subtasks[0], subtasks.subtasks[1])
    assert subtasks.subtasks == ["Grasp the block", "Lift the block"]
    assert cycle.chunk == parse_action_chunk(CANNED_CHUNK) and cycle.raw_chunk == CANNED_CHUNK
    assert verdict.advance is True
    sub_req, plan_req, chunk_req, verify_req = server.requests
    # The adapter by its served name for the policy, the base model's name for the verifier.
    assert [r["model"] for r in server.requests] == ["vlm2vla"] * 3 + ["gemma-3-12b-it"]
    # The same grammars as the in-process backend, as vLLM's structured outputs.
    assert sub_req["structured_outputs"] == {"regex": subtasks_regex()}
    assert "structured_outputs" not in plan_req
    assert chunk_req["structured_outputs"] == {"regex": chunk_regex()}
    assert verify_req["structured_outputs"] == {"regex": VERDICT_REGEX}
    # Images inline, lossless, in prompt order; the chunk request continues the plan conversation.
    assert np.array_equal(decoded_image(plan_req["messages"][0]["content"][0]), image(1))
    verify_images = [item for item in verify_req["messages"][0]["content"] if item["type"] == "image_url"]
    assert [decoded_image(item).sum() for item in verify_images] == [image(1).sum(), image(2).sum()]
    assert chunk_req["messages"][:1] == plan_req["messages"]
    assert chunk_req["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": cycle.plan}]}
    assert plan_req["temperature"] == 0.1 and chunk_req["temperature"] == 0.5 and plan_req["top_p"] == 0.95
    assert chunk_req["max_tokens"] > len(CANNED_CHUNK) and isinstance(chunk_req["seed"], int)
    assert server.headers[0]["Authorization"] == "Bearer secret"


def test_legacy_servers_get_guided_regex() -> None:
    with StandInServer() as server:
        policy(server, legacy_guided_regex=True).cycle(image(0), TASK, "Grasp")
    assert server.requests[1]["guided_regex"] == chunk_regex() and "structured_outputs" not in server.requests[1]


def test_unparseable_answers_are_retried_then_fail_clearly() -> None:
    server = StandInServer(answer=lambda body: "I would move the arm a bit.")
    with server, pytest.raises(PolicyError, match="chunk stage produced no usable answer in 2 tries") as info:
        policy(server).cycle(image(0), TASK, "Grasp")
    assert info.value.failures == 2 and len(server.requests) == 3  # one plan, two chunk tries


def test_an_answer_the_server_stopped_at_the_token_limit_is_cut_off() -> None:
    """vLLM's finish_reason 'length': a subtask list that may have lost its last items is a failed try."""
    with StandInServer() as server:
        engine = policy(server)
        assert engine.subtasks(image(0), TASK).subtasks == ["Grasp the block", "Lift the block"]
        server.finish_reason = "length"
        with pytest.raises(PolicyError, match="subtasks stage produced no usable answer .*cut off at"):
            engine.subtasks(image(0), TASK)


def test_timeouts_http_errors_and_malformed_answers_become_policy_errors() -> None:
    with StandInServer() as server:
        engine = policy(server, timeout_s=0.2)
        server.delay_s = 1.0
        with pytest.raises(PolicyError, match=r"did not answer within 0.2 s"):
            engine.verify(image(0), image(1), "a", "b")
        server.delay_s = 0.0
        server.status = 503
        with pytest.raises(PolicyError, match="answered HTTP 503"):
            engine.verify(image(0), image(1), "a", "b")
        server.status = 200
        server.malformed = True
        with pytest.raises(PolicyError, match="malformed chat completion"):
            engine.verify(image(0), image(1), "a", "b")


def test_unreachable_server_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = load_policy(PolicyConfig(backend="openai", openai=OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1")))
    with pytest.raises(PolicyError, match=f"cannot reach the inference server at http://127.0.0.1:{port}/v1"):
        engine.cycle(image(0), TASK, "Grasp")


def test_a_server_that_speaks_no_http_is_a_policy_error() -> None:
    """http.client's errors are not OSErrors: they once escaped as raw BadStatusLine."""
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def babble():
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"SSH-2.0-OpenSSH_8.9\r\n")

        threading.Thread(target=babble, daemon=True).start()
        engine = load_policy(PolicyConfig(backend="openai", openai=OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1")))
        with pytest.raises(PolicyError, match="connection to the inference server .* failed: BadStatusLine"):
            engine.cycle(image(0), TASK, "Grasp")


def test_verifier_needs_the_base_model_name() -> None:
    with StandInServer() as server:
        engine = policy(server, base_model="")
        with pytest.raises(PolicyError, match="openai.base_model"):
            engine.verify(image(0), image(1), "a", "b")
    assert not server.requests


def test_a_huge_answer_and_an_endless_timeout_are_refused() -> None:
    """A broken server that sends megabytes is cut off at MAX_RESPONSE_BYTES; an infinite or NaN
    timeout (urllib would raise OverflowError on every request) is refused up front."""
    from vlm2vla_ros.policy.openai_backend import MAX_RESPONSE_BYTES

    huge = f"answered more than {MAX_RESPONSE_BYTES} bytes"
    with StandInServer(answer=lambda body: "x" * (2 * MAX_RESPONSE_BYTES)) as server, pytest.raises(PolicyError, match=huge):
        policy(server).verify(image(0), image(1), "a", "b")
    for bad in (float("inf"), float("nan"), 0.0):
        with pytest.raises(ValueError, match="openai.timeout_s must be a finite number > 0"):
            OpenAIConfig(base_url="http://127.0.0.1:1/v1", timeout_s=bad)
