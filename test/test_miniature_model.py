"""The miniature's full-weight training loop: what it trains and what it leaves alone, and the
order in which it draws examples."""

import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _batches(count, batch_size, seed, lengths=None, n=None):
    from vlm2vla_ros.miniature.model import batch_stream

    stream = batch_stream(count, batch_size, random.Random(seed), lengths)
    return [next(stream) for _ in range(n if n is not None else count // batch_size)]


def test_plain_batches_run_through_shuffled_epochs_and_carry_the_remainder():
    batches = _batches(10, 4, seed=3, n=5)  # 20 draws: two epochs of 10
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4]
    flat = [i for b in batches for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != list(range(10))  # shuffled
    assert [len(b) for b in _batches(3, 4, seed=0, n=2)] == [3, 3]  # fewer examples than a batch: one epoch each


def test_length_grouped_batches_hold_near_equal_lengths_and_every_example_once_per_epoch():
    rng = random.Random(0)
    lengths = [rng.choice((40, 41, 42, 55, 67, 84, 103)) for _ in range(1000)]
    batches = _batches(1000, 8, seed=1, lengths=lengths)  # 125 batches: one epoch
    assert sorted(i for b in batches for i in b) == list(range(1000))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    plain = _batches(1000, 8, seed=1)
    padded_plain = sum(max(lengths[i] for i in b) * len(b) for b in plain)
    total = sum(lengths)
    assert padded / total < 1.05 < 1.3 < padded_plain / total
    # batches are shuffled, not served shortest first
    means = [sum(lengths[i] for i in b) / len(b) for b in batches]
    assert means != sorted(means)


def test_length_grouped_epochs_drop_a_remainder_batch_and_draw_everything_again():
    lengths = list(range(10))
    batches = _batches(10, 4, seed=2, lengths=lengths, n=4)  # 2 whole batches per epoch
    assert all(len(b) == 4 for b in batches)
    assert len(set(batches[0] + batches[1])) == 8 and len(set(batches[2] + batches[3])) == 8


@pytest.fixture(scope="module")
def examples_and_model_dir(tmp_path_factory):
    from vlm2vla_ros.miniature import vqa
    from vlm2vla_ros.policy.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("mini_model")
    model_dir = build_tiny_model(root / "model", hidden_size=32, vocab_size=600)
    return vqa.location_examples(range(4), blocks=1, image_size=64), model_dir


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _recorded(make):
    """(the steps asked, a draw that records its step and returns make(step))."""
    asked = []

    def draw(step):
        asked.append(step)
        return make(step)

    return asked, draw


@pytest.mark.parametrize("train_tower", [False, True])
def test_train_full_freezes_only_the_vision_tower_when_asked(examples_and_model_dir, train_tower):
    from vlm2vla_ros.miniature.model import load_model, train_full

    examples, model_dir = examples_and_model_dir
    model, processor = load_model(model_dir)
    before = _snapshot(model)
    result = train_full(model, processor, examples, steps=2, batch_size=4, learning_rate=1e-2, seed=0,
                        train_vision_tower=train_tower)
    assert result.steps == 2 and len(result.losses) == 2
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    tower = {n for n in before if "vision_tower" in n}
    assert any("multi_modal_projector" in n for n in changed)  # the projection always trains
    assert any("language_model" in n for n in changed)
    if train_tower:
        assert changed & tower
    else:
        assert not changed & tower
    assert all(p.requires_grad for p in model.parameters())  # later stages train every weight again


def test_train_stream_takes_new_examples_for_every_step(examples_and_model_dir):
    from vlm2vla_ros.miniature import vqa
    from vlm2vla_ros.miniature.model import load_model, train_stream

    _, model_dir = examples_and_model_dir
    model, processor = load_model(model_dir)
    before = _snapshot(model)
    asked, draw = _recorded(lambda step: vqa.location_examples(range(10 * step, 10 * step + 3), blocks=2, image_size=64))

    result = train_stream(model, processor, draw, steps=3, learning_rate=1e-2, seed=0, train_vision_tower=False)
    assert asked == [0, 1, 2] and result.steps == 3 and result.examples == 9
    assert len(result.losses) == 3 and all(loss > 0 for loss in result.losses)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("language_model" in n for n in changed) and not any("vision_tower" in n for n in changed)
    with pytest.raises(ValueError, match="no training examples"):
        train_stream(model, processor, lambda step: [], steps=1, learning_rate=1e-2, seed=0)


def test_train_full_mixes_new_examples_into_every_batch(examples_and_model_dir):
    from vlm2vla_ros.miniature import vqa
    from vlm2vla_ros.miniature.model import load_model, train_full

    examples, model_dir = examples_and_model_dir
    model, processor = load_model(model_dir)
    asked, sizes = [], []

    def draw(step):
        asked.append(step)
        return vqa.location_examples([500 + step], blocks=1, image_size=64)

    forward = model.forward

    def counting_forward(**batch):
        sizes.append((batch["input_ids"].shape[0], batch["pixel_values"].shape[0]))
        return forward(**batch)

    model.forward = counting_forward
    result = train_full(model, processor, examples, steps=3, batch_size=3, learning_rate=1e-2, seed=0,
                        train_vision_tower=False, fresh=(1, draw))
    assert asked == [0, 1, 2] and result.steps == 3 and result.examples == len(examples) + 3
    assert sizes == [(3, 3)] * 3  # two of the fixed set and one new example, one image each
    with pytest.raises(ValueError, match="fresh examples per batch"):
        train_full(model, processor, examples, steps=1, batch_size=3, learning_rate=1e-2, seed=0, fresh=(3, draw))
    with pytest.raises(ValueError, match="no training examples"):
        train_full(model, processor, examples, steps=1, batch_size=3, learning_rate=1e-2, seed=0, fresh=(1, lambda s: []))


def test_train_reading_trains_the_tower_and_projection_on_new_scenes_and_leaves_the_language_model(examples_and_model_dir):
    from vlm2vla_ros.miniature import vqa
    from vlm2vla_ros.miniature.model import load_model
    from vlm2vla_ros.miniature.vision import block_from_gripper_cm, train_reading

    _, model_dir = examples_and_model_dir
    model, processor = load_model(model_dir)
    before = _snapshot(model)
    asked, draw = _recorded(lambda step: vqa.near_scenes(range(10 * step, 10 * step + 4)))

    losses = train_reading(model, processor, draw, steps=3, learning_rate=1e-2, seed=0, image_size=64, view="gripper")
    assert asked == [0, 1, 2] and len(losses) == 3 and all(loss > 0 for loss in losses)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("vision_tower" in n for n in changed) and any("multi_modal_projector" in n for n in changed)
    assert not any("language_model" in n for n in changed)
    assert not model.model.vision_tower.training
    world = vqa.near_scenes([3])[0]
    (block,) = world.objects
    assert block_from_gripper_cm(world) == pytest.approx(
        [100 * (block.x - world.gripper_x), 100 * (block.y - world.gripper_y), 100 * (block.top - world.gripper_z)], abs=1e-4)


def test_train_reading_by_colour_gives_every_present_colours_place(examples_and_model_dir):
    from vlm2vla_ros.miniature import vqa
    from vlm2vla_ros.miniature.model import load_model
    from vlm2vla_ros.miniature.vision import blocks_by_colour_cm, train_reading
    from vlm2vla_ros.sim.scene import BLOCK_COLOURS

    colours = sorted(BLOCK_COLOURS)
    world = next(w for w in vqa.near_scenes(range(40), blocks=3) if len(w.objects) == 3)
    places, present = blocks_by_colour_cm(world, colours)
    assert places.shape == (len(colours), 3) and present.shape == (len(colours), 1)
    assert sorted(colours[k] for k in present[:, 0].nonzero()[0]) == sorted(b.colour for b in world.objects)
    for block in world.objects:
        assert places[colours.index(block.colour)] == pytest.approx(
            [100 * (block.x - world.gripper_x), 100 * (block.y - world.gripper_y), 100 * (block.top - world.gripper_z)],
            abs=1e-4)
    assert not places[present[:, 0] == 0].any()

    _, model_dir = examples_and_model_dir
    model, processor = load_model(model_dir)
    before = _snapshot(model)
    asked, draw = _recorded(lambda step: vqa.near_scenes(range(10 * step, 10 * step + 4), blocks=3))
    losses = train_reading(model, processor, draw, steps=3, learning_rate=1e-2, seed=0, image_size=64, view="gripper",
                           colours=colours)
    assert asked == [0, 1, 2] and len(losses) == 3 and all(0 < loss < float("inf") for loss in losses)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("vision_tower" in n for n in changed) and not any("language_model" in n for n in changed)


def test_a_place_head_trains_on_relative_questions_and_steers_the_language_model(examples_and_model_dir):
    from vlm2vla_ros.miniature import vqa
    from vlm2vla_ros.miniature.model import load_model, train_full, train_stream
    from vlm2vla_ros.training.place_head import PlaceHead

    examples, model_dir = examples_and_model_dir  # location questions: no place target

    def relative(step):
        return vqa.location_examples(range(20 * step, 20 * step + 3), blocks=2, image_size=64, kinds=("relative",))

    after = {}
    for name in ("plain", "head"):
        model, processor = load_model(model_dir)
        head = PlaceHead(model.config.text_config.hidden_size, 1.0, vqa.relative_place_cm, seed=0) if name == "head" else None
        start = head.linear.weight.detach().clone() if head is not None else None
        result = train_stream(model, processor, relative, steps=2, learning_rate=1e-2, seed=0, train_vision_tower=False,
                              place_head=head)
        after[name] = _snapshot(model)
        if head is None:
            assert result.place_losses == []
            continue
        assert len(result.place_losses) == 2 and all(v > 0 for v in result.place_losses)
        assert not torch.equal(head.linear.weight, start)
        # fixed location questions have no target; the new relative ones in every batch do
        mixed = train_full(model, processor, examples, steps=2, batch_size=3, learning_rate=1e-2, seed=0,
                           train_vision_tower=False, fresh=(1, lambda step: relative(step)[:1]), place_head=head)
        assert len(mixed.place_losses) == 2
        alone = train_full(model, processor, examples, steps=2, batch_size=3, learning_rate=1e-2, seed=0,
                           train_vision_tower=False, place_head=head)
        assert alone.place_losses == [] and len(alone.losses) == 2
    # the head's term reaches the language model: the same steps without it train other weights
    lm = [n for n in after["plain"] if "language_model" in n]
    assert any(not torch.equal(after["plain"][n], after["head"][n]) for n in lm)
