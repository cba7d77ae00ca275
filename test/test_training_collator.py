"""Answer-only labels: the loss sees exactly the answer and its end-of-turn, nothing else."""

import numpy as np
import pytest
from PIL import Image

from vlm2vla_ros.policy import prompts
from vlm2vla_ros.policy.tiny_model import ensure_tiny_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def processor():
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(ensure_tiny_model(), local_files_only=True)


def examples(tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "b.png")
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    plan = "Move forward and slightly down, then close the gripper."
    return [
        {"messages": prompts.with_answer(prompts.plan_messages("pick up the red block", "grasp it"), plan), "images": [a]},
        {"messages": prompts.with_answer(prompts.chunk_messages("pick up the red block", "grasp it", plan),
                                          "[[2.5, 0.0, -1.2, 0]]"), "images": [a]},
        {"messages": prompts.with_answer(prompts.verify_messages("grasp it", "lift it"), "advance"), "images": [a, b]},
        {"messages": prompts.with_answer(prompts.subtasks_messages("pick up the red block"),
                                          prompts.subtasks_answer(["reach", "grasp it", "lift it"])), "images": [b]},
    ]


def test_labels_are_exactly_the_answer_and_end_of_turn(processor, tmp_path):
    from vlm2vla_ros.training import IGNORE_INDEX, AnswerOnlyCollator

    batch_examples = examples(tmp_path)
    batch = AnswerOnlyCollator(processor)(batch_examples)
    assert batch["labels"].shape == batch["input_ids"].shape
    assert batch["pixel_values"].shape[0] == 5  # 1 + 1 + 2 + 1 images
    image_token = processor.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    for row, example in enumerate(batch_examples):
        labels = batch["labels"][row]
        kept = batch["input_ids"][row][labels != IGNORE_INDEX]
        answer = example["messages"][-1]["content"][0]["text"]
        assert processor.tokenizer.decode(kept) == answer + "<end_of_turn>"
        assert not (batch["input_ids"][row][labels != IGNORE_INDEX] == image_token).any()
        # the answer is contiguous and comes last (before padding)
        positions = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
        assert positions == list(range(positions[0], positions[-1] + 1))
        assert batch["attention_mask"][row][positions[-1] + 1 :].sum() <= 1  # only the template's final newline


def test_images_in_memory_give_the_same_batch_as_their_files(processor, tmp_path):
    """A training stream of fresh scenes passes PIL images instead of writing files."""
    import torch

    from vlm2vla_ros.training import AnswerOnlyCollator

    on_disk = examples(tmp_path)
    in_memory = [{**e, "images": [Image.open(path) for path in e["images"]]} for e in on_disk]
    collator = AnswerOnlyCollator(processor)
    expected = collator(on_disk)
    for got in (collator(in_memory), collator.pretokenize(in_memory).batch(range(4))):
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert torch.equal(got[key], value), key
    # the same image object in two examples is processed once, like the same file
    shared = Image.open(on_disk[0]["images"][0])
    assert collator.pretokenize([{**e, "images": [shared]} for e in on_disk[:2]]).pixels.shape[0] == 1


def test_an_example_without_an_answer_is_an_error(processor, tmp_path):
    from vlm2vla_ros.training import AnswerOnlyCollator

    example = {"id": "x", "messages": prompts.plan_messages("t", "s"), "images": [str(tmp_path / "a.png")]}
    with pytest.raises(ValueError, match="does not end with the assistant's answer"):
        AnswerOnlyCollator(processor)([example])


def test_pretokenized_batches_equal_the_collators(processor, tmp_path):
    """The miniature's pretraining loop batches pre-tokenised examples; they must be the very
    tensors the collator builds (ids, mask, labels, images and their order, token types)."""
    import torch

    from vlm2vla_ros.training import AnswerOnlyCollator

    batch_examples = examples(tmp_path)
    collator = AnswerOnlyCollator(processor)
    prepared = collator.pretokenize(batch_examples)
    assert len(prepared) == 4 and prepared.pixels.shape[0] == 2  # two distinct image files
    for order in ([0, 1, 2, 3], [3, 2], [1]):
        expected = collator([batch_examples[i] for i in order])
        got = prepared.batch(order)
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert torch.equal(got[key], value), key


def test_a_fixed_set_and_fresh_examples_batch_together_as_the_collator_would(processor, tmp_path):
    """Rows of a pre-tokenised set followed by every row of another (examples made for one
    step, images in memory): the collator's batch of the same examples, images in row order."""
    import torch

    from vlm2vla_ros.training import AnswerOnlyCollator

    fixed = examples(tmp_path)
    fresh = [dict(fixed[2], images=[Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (90, 30)]),
             dict(fixed[0], images=[Image.fromarray(np.full((32, 32, 3), 60, np.uint8))])]
    collator = AnswerOnlyCollator(processor)
    prepared, extra = collator.pretokenize(fixed), collator.pretokenize(fresh)
    for order in ([3, 0], [1], [2, 1, 0]):
        expected = collator([fixed[i] for i in order] + fresh)
        got = prepared.batch(order, extra)
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert torch.equal(got[key], value), key
    assert got["pixel_values"].shape[0] == 4 + 3  # a, b, a, a, then the fresh examples' three


def test_pretokenize_refuses_an_example_without_an_answer(processor, tmp_path):
    from vlm2vla_ros.training import AnswerOnlyCollator

    example = {"id": "y", "messages": prompts.plan_messages("t", "s"), "images": []}
    with pytest.raises(ValueError, match="y does not end with the assistant's answer"):
        AnswerOnlyCollator(processor).pretokenize([example])


def test_a_conversation_longer_than_max_length_is_refused_not_cut(processor, tmp_path):
    """Cut, the chunk example would train "[[2.5, 0.0," with no end: the model would learn to stop
    mid-action. lengths() is what vlm2vla-train leaves such examples out by."""
    from vlm2vla_ros.training import AnswerOnlyCollator

    batch_examples = [{**e, "id": f"e{i}"} for i, e in enumerate(examples(tmp_path))]
    lengths = AnswerOnlyCollator(processor).lengths(batch_examples)
    full = AnswerOnlyCollator(processor)(batch_examples)["attention_mask"].sum(dim=1).tolist()
    assert lengths == full
    longest = max(range(len(lengths)), key=lambda i: lengths[i])
    tight = AnswerOnlyCollator(processor, max_length=lengths[longest] - 1)
    pattern = f"example e{longest} is {lengths[longest]} tokens long, more than max_length {lengths[longest] - 1}"
    with pytest.raises(ValueError, match=pattern):
        tight(batch_examples)
    with pytest.raises(ValueError, match=pattern):
        tight.pretokenize(batch_examples)
    fitting = [e for e, n in zip(batch_examples, lengths) if n < lengths[longest]]
    assert fitting and tight(fitting)["input_ids"].shape[0] == len(fitting)
