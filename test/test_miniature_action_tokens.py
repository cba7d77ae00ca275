"""The baseline's reserved action tokens: codec, vocabulary, dataset rewrite, tokenizer round trip."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlm2vla_ros.action_language import ActionLimits, ActionParseError, format_action_chunk
from vlm2vla_ros.miniature import action_tokens as at


def test_vocabulary_is_41_bins_per_axis_and_two_gripper_tokens():
    vocab = at.action_vocabulary()
    assert at.bins() == 41
    assert len(vocab) == 3 * 41 + 2 == len(set(vocab))
    assert vocab[0] == "<ax_00>" and vocab[-1] == "<ag_1>"


def test_encode_decode_example():
    text = at.encode_chunk([[2.5, 0.0, -3.0, 1], [10.0, -10.0, 0.2, 0]])
    assert text == "<ax_25><ay_20><az_14><ag_1><ax_40><ay_00><az_20><ag_0>"
    assert format_action_chunk(at.decode_chunk(text)) == "[[2.5, 0.0, -3.0, 1], [10.0, -10.0, 0.0, 0]]"


coordinate = st.floats(min_value=-10, max_value=10, allow_nan=False)


@given(st.lists(st.tuples(coordinate, coordinate, coordinate, st.integers(0, 1)), min_size=1, max_size=16))
def test_round_trip_error_is_at_most_half_a_bin(steps):
    chunk = at.decode_chunk(at.encode_chunk(steps))
    assert len(chunk.steps) == len(steps)
    for got, want in zip(chunk.steps, steps):
        for a, b in zip((got.dx, got.dy, got.dz), want[:3]):
            assert abs(a - b) <= at.BIN_CM / 2 + 1e-9
        assert got.gripper == want[3]


def test_out_of_range_values_are_clipped_to_the_limits():
    chunk = at.decode_chunk(at.encode_chunk([[25.0, -40.0, 0.0, 1]]))
    assert (chunk.steps[0].dx, chunk.steps[0].dy) == (10.0, -10.0)


def test_decode_tolerates_spaces_and_rejects_garbage():
    assert len(at.decode_chunk("<ax_20> <ay_20> <az_20> <ag_1> trailing <ax_2").steps) == 1
    for bad in ("", "[[1.0, 0.0, 0.0, 1]]", "<ax_20><ay_20><az_20>", "<ax_20><ay_20><az_20><ag_2>"):
        with pytest.raises(ActionParseError):
            at.decode_chunk(bad)
    with pytest.raises(ActionParseError):
        at.decode_chunk("<ax_99><ay_20><az_20><ag_1>")


def test_decode_keeps_at_most_max_steps():
    limits = ActionLimits(max_steps=2)
    text = at.encode_chunk([[1, 1, 1, 1]] * 5, limits)
    assert len(at.decode_chunk(text, limits).steps) == 2


def test_encode_rejects_bad_chunks():
    with pytest.raises(ValueError):
        at.encode_chunk([])
    with pytest.raises(ValueError):
        at.encode_chunk([[0, 0, 0, 2]])


def test_only_chunk_answers_are_rewritten():
    chunk = {"stage": "chunk", "meta": {"chunk": [[1.0, 0.0, 0.0, 1]]},
             "messages": [{"role": "user", "content": []}, {"role": "assistant", "content": [{"type": "text", "text": "[[1.0, 0.0, 0.0, 1]]"}]}]}
    plan = {"stage": "plan", "meta": {}, "messages": [{"role": "assistant", "content": [{"type": "text", "text": "Move forward."}]}]}
    out = at.to_action_token_examples([chunk, plan])
    assert out[0]["messages"][-1]["content"][0]["text"] == "<ax_22><ay_20><az_20><ag_1>"
    assert chunk["messages"][-1]["content"][0]["text"] == "[[1.0, 0.0, 0.0, 1]]"  # input untouched
    assert out[1] is plan


def test_tokens_join_the_vocabulary_and_survive_decoding(tmp_path):
    pytest.importorskip("transformers")
    from vlm2vla_ros.miniature.model import load_model
    from vlm2vla_ros.policy.tiny_model import ensure_tiny_model

    model, processor = load_model(ensure_tiny_model())
    before = len(processor.tokenizer)
    assert at.add_action_tokens(model, processor) == 125
    assert len(processor.tokenizer) == before + 125
    assert model.get_input_embeddings().weight.shape[0] == before + 125
    text = at.encode_chunk([[2.5, 0.0, -3.0, 1], [0.5, 0.5, 0.5, 0]])
    ids = processor.tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == 8  # one token per coordinate and gripper
    assert processor.tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == text
