"""The miniature's full-weight training loop: what it trains and what it leaves alone."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def examples_and_model_dir(tmp_path_factory):
    from vlm2vla_ros.miniature import vqa
    from vlm2vla_ros.policy.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("mini_model")
    model_dir = build_tiny_model(root / "model", hidden_size=32, vocab_size=600)
    return vqa.single_block_examples(range(4), root / "images", image_size=64), model_dir


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


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
