"""The finding-14 probe's hints: what each chunk request adds, and only to chunk examples."""

import importlib.util
import json
import random
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "chunk_copy_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("chunk_copy_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chunk_example(chunk):
    text = json.dumps(chunk)
    return {
        "stage": "chunk",
        "meta": {"chunk": chunk},
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "plan request"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Move left."}]},
            {"role": "user", "content": [{"type": "text", "text": "chunk request"}]},
            {"role": "assistant", "content": [{"type": "text", "text": text}]},
        ],
    }


def test_summed_move_adds_the_steps_per_axis(probe):
    assert probe.summed_move([[-3.1, 9.8, -2.4, 1], [-3.2, 8.4, -2.1, 1]]) == [-6.3, 18.2, -4.5]


def test_each_request_extends_only_the_chunk_request(probe):
    example = _chunk_example([[1.0, 2.0, -3.0, 1], [4.0, 0.5, 0.0, 1]])
    plain = probe.with_hint(example, "plain")
    move = probe.with_hint(example, "move")
    chunk = probe.with_hint(example, "chunk")
    assert plain == example
    assert move["messages"][2]["content"][-1]["text"] == "chunk request\nThe gripper must move [5.0, 2.5, -3.0] cm in all."
    assert chunk["messages"][2]["content"][-1]["text"] == "chunk request\nThe chunk: " + example["messages"][3]["content"][-1]["text"]
    for hinted in (move, chunk):
        assert hinted["messages"][:2] == example["messages"][:2]
        assert hinted["messages"][3] == example["messages"][3]
    assert example["messages"][2]["content"][-1]["text"] == "chunk request"  # the original is left alone


def test_plan_and_subtask_examples_get_no_hint(probe):
    plan = {**_chunk_example([[1.0, 0.0, 0.0, 1]]), "stage": "plan"}
    assert probe.with_hint(plan, "chunk") == plan


def test_number_lists_have_the_chunks_shape(probe):
    rng = random.Random(3)
    for _ in range(20):
        rows = json.loads(probe.number_list(rng))
        assert 1 <= len(rows) <= 3 and all(len(r) == 4 and r[3] in (0, 1) for r in rows)
        assert all(-30 <= v <= 30 for r in rows for v in r[:3])
