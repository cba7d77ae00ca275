"""The verifier's margin bar (VerdictMargin): the rule, its config, its file, and the engine's use of it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlm2vla_ros.policy import PolicyConfig, PolicyEngine, VerdictMargin
from vlm2vla_ros.policy.config import VERDICT_MARGIN_FILE, read_verdict_margin
from vlm2vla_ros.policy.types import Generation

MOVE, LIFT = "move above the red block", "lift the red block"


def test_the_bar_falls_with_each_retry_and_only_for_the_named_verbs() -> None:
    rule = VerdictMargin(start=2.0, step=0.75, verbs=["Move"])
    assert rule.verbs == ("move",)
    assert [rule.bar(k) for k in range(4)] == [2.0, 1.25, 0.5, -0.25]
    # a margin of 1.0 under the first two bars, over the third: retry, retry, advance, whatever the word
    assert [rule.advance(MOVE, 1.0, False, k) for k in range(3)] == [False, False, True]
    assert rule.advance(MOVE, -0.1, True, 0) is False  # the decoded "advance" does not clear the bar
    assert rule.advance(MOVE.upper(), 2.5, False, 0) is True  # the verb matched in any case
    # another verb, or no margin from the backend: the decoded word
    assert rule.advance(LIFT, 0.1, True, 0) is True and rule.advance(LIFT, 9.0, False, 5) is False
    assert rule.advance(MOVE, None, True, 0) is True and rule.advance(MOVE, None, False, 9) is False
    assert rule.advance("", 5.0, False, 0) is False
    # no verbs: every subtask; start = step = 0: the greedy verdict itself, even at a tie
    assert VerdictMargin(1.0, 0.5).advance(LIFT, 0.7, False, 1) is True
    assert VerdictMargin().advance(MOVE, 0.0, True, 3) is True and VerdictMargin().advance(MOVE, 3.0, False, 0) is False
    assert VerdictMargin().greedy and VerdictMargin(0.0, 0.0, ("move",)).greedy and not rule.greedy


@pytest.mark.parametrize(
    "kwargs",
    [dict(step=-0.5), dict(start=float("nan")), dict(start="2"), dict(verbs="move"), dict(verbs=["move above"]),
     dict(verbs=[""]), dict(verbs=[3])],
)
def test_a_bad_rule_is_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="verdict_margin"):
        VerdictMargin(**kwargs)


@pytest.mark.parametrize("retries", [-1, 1.0, True, "2"])
def test_a_bad_retry_count_is_refused(retries) -> None:
    with pytest.raises(ValueError, match="retries"):
        VerdictMargin(2.0, 0.75).advance(MOVE, 1.0, True, retries)


def test_the_rule_is_read_from_the_policy_config_and_from_a_verifier_folder(tmp_path) -> None:
    config = PolicyConfig.from_dict({"model_path": "m", "verdict_margin": {"start": 2, "step": 0.75, "verbs": ["move"]}})
    assert config.verdict_margin == VerdictMargin(2.0, 0.75, ("move",))
    assert PolicyConfig.from_dict({"model_path": "m"}).verdict_margin is None  # the model folder's, at load
    assert PolicyConfig.from_dict({"model_path": "m", "verdict_margin": None}).verdict_margin is None
    with pytest.raises(ValueError, match="unknown key"):
        PolicyConfig.from_dict({"model_path": "m", "verdict_margin": {"strat": 2}})
    assert read_verdict_margin(tmp_path) == VerdictMargin()  # no file: the greedy verdict
    (tmp_path / VERDICT_MARGIN_FILE).write_text(json.dumps({"start": 1.5, "step": 0.5, "verbs": ["move"]}))
    assert read_verdict_margin(tmp_path) == VerdictMargin(1.5, 0.5, ("move",))
    (tmp_path / VERDICT_MARGIN_FILE).write_text('{"start": 1.5,')
    with pytest.raises(ValueError, match="not readable JSON"):
        read_verdict_margin(tmp_path)
    (tmp_path / VERDICT_MARGIN_FILE).write_text('{"start": 1.5, "slope": 1}')
    with pytest.raises(ValueError, match="unknown key"):
        read_verdict_margin(tmp_path)


class Judging:
    """A backend that answers every verdict with one word and first-token logits; records requests."""

    def __init__(self, word: str, logits: dict[str, float] | None) -> None:
        self.word, self.logits, self.requests = word, logits, []

    def generate(self, request):
        self.requests.append(request)
        return Generation(text=self.word, new_tokens=1, prompt_tokens=1, reused_tokens=0, seconds=0.0,
                          first_token_logits=self.logits)

    def close(self) -> None:
        pass


def frame(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, np.uint8)


def test_the_engine_asks_for_the_margin_and_advances_by_the_bar() -> None:
    backend = Judging("retry", {"advance": 1.0, "retry": 0.0})
    config = PolicyConfig(model_path="unused", verdict_margin=VerdictMargin(2.0, 0.75, ("move",)))
    engine = PolicyEngine(backend, config)
    verdicts = [engine.verify(frame(0), frame(1), MOVE, "grasp the red block", k) for k in range(3)]
    assert [v.advance for v in verdicts] == [False, False, True] and {v.margin for v in verdicts} == {1.0}
    assert {v.raw_text for v in verdicts} == {"retry"}  # the decoded word is kept beside the verdict
    assert backend.requests[0].first_token_choices == ("advance", "retry") and not backend.requests[0].use_adapter
    assert engine.verify(frame(0), frame(1), LIFT, "", 4).advance is False  # not a "move": the word
    with pytest.raises(ValueError, match="retries"):
        engine.verify(frame(0), frame(1), MOVE, "", -1)
    assert len(backend.requests) == 4  # the bad count was refused before the model ran
    # a backend without logits (a server): the word, and no margin
    blind = PolicyEngine(Judging("advance", None), config).verify(frame(0), frame(1), MOVE, "", 0)
    assert blind.advance is True and blind.margin is None
    # no rule in the config (an engine built directly): the greedy verdict, with its margin reported
    plain = PolicyEngine(Judging("retry", {"advance": 5.0, "retry": 0.0}), PolicyConfig(model_path="unused"))
    result = plain.verify(frame(0), frame(1), MOVE, "", 0)
    assert result.advance is False and result.margin == 5.0


def test_held_out_cases_are_judged_greedily_on_the_same_weights(caplog) -> None:
    from vlm2vla_ros.miniature.experiment import greedy

    backend = Judging("retry", {"advance": 1.0, "retry": 0.0})
    engine = PolicyEngine(backend, PolicyConfig(model_path="unused", verdict_margin=VerdictMargin(-1.0, 0.0)))
    assert engine.verify(frame(0), frame(1), MOVE, "", 0).advance is True  # the bar of -1 passes a margin of 1
    plain = greedy(engine)
    assert plain.backend is backend and plain.config.verdict_margin == VerdictMargin()
    assert plain.verify(frame(0), frame(1), MOVE, "", 0).advance is False  # the word
    # a rule with no margin to read is said once, and the word stands
    blind = PolicyEngine(Judging("advance", None), engine.config)
    with caplog.at_level("WARNING"):
        for _ in range(3):
            assert blind.verify(frame(0), frame(1), MOVE, "", 0).advance is True
    assert len([r for r in caplog.records if "gives no margin" in r.message]) == 1
