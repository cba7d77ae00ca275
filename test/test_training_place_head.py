"""The temporary place head (training.place_head): which state it reads, what it is trained on."""

import pytest

torch = pytest.importorskip("torch")


def test_place_head_reads_the_state_that_predicts_the_first_answer_token():
    from vlm2vla_ros.training.place_head import PlaceHead, place_targets

    head = PlaceHead(4, 1.0, lambda example: example.get("place"), seed=0)
    hidden = torch.randn(3, 5, 4)
    labels = torch.full((3, 5), -100)
    labels[0, 2:4] = 7  # the answer starts at 2: the state at 1 predicts it
    labels[1, 3:] = 7
    labels[2, 1:] = 7
    targets = place_targets(head, [{"place": (10.0, -20.0, 5.0)}, {}, {"place": (0.0, 0.0, -30.0)}])
    assert targets == [(10.0, -20.0, 5.0), None, (0.0, 0.0, -30.0)]
    assert place_targets(None, [{"place": (1.0, 2.0, 3.0)}, {}]) == [None, None]
    loss = head.loss(hidden, labels, targets)
    with torch.no_grad():
        first = ((head.linear(hidden[0, 1]) - torch.tensor([1.0, -2.0, 0.5])) ** 2).sum()
        last = ((head.linear(hidden[2, 0]) - torch.tensor([0.0, 0.0, -3.0])) ** 2).sum()  # units of 10 cm
    assert torch.allclose(loss, (first + last) / 2)
    assert head.loss(hidden, labels, [None, None, None]) is None  # no row with a target: no term
    labels[2] = -100
    with pytest.raises(ValueError, match="no answer tokens"):
        head.loss(hidden, labels, targets)
    with pytest.raises(ValueError, match="must be positive"):
        PlaceHead(4, 0.0, lambda example: None, seed=0)


def _plan(answer, stage="plan", parts=True):
    content = [{"type": "text", "text": answer}] if parts else answer
    return {"stage": stage, "messages": [{"role": "user", "content": "Plan."}, {"role": "assistant", "content": content}]}


def test_plan_total_targets_are_the_totals_plans_state_and_nothing_else():
    from vlm2vla_ros.action_language import plan_with_total
    from vlm2vla_ros.training.place_head import PlaceHead, plan_total_cm

    stated = plan_with_total("move down and slightly right", (3.2, -1.0, -6.5))
    assert plan_total_cm(_plan(stated)) == (3.2, -1.0, -6.5)
    assert plan_total_cm(_plan(stated, parts=False)) == (3.2, -1.0, -6.5)
    assert plan_total_cm(_plan("move down and slightly right")) is None  # a plan without a total
    assert plan_total_cm(_plan(stated, stage="chunk")) is None  # the chunk copies the plan; the head reads the plan
    assert plan_total_cm(_plan(stated, stage="rehearsal")) is None
    assert PlaceHead.rms_cm(3 * 0.25) == pytest.approx(5.0)  # (0.5 x 10 cm)^2 on each axis
