"""Grammar, parser, formatter, subtask lists and motion plans of the action language."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlm2vla_ros.action_language import (
    DEFAULT_LIMITS,
    ActionChunk,
    ActionLimits,
    ActionParseError,
    ActionStep,
    ActionValueError,
    chunk_regex,
    chunk_to_array,
    format_action_chunk,
    format_subtasks,
    number_regex,
    parse_action_chunk,
    parse_subtasks,
    validate_chunk,
    verbalise_moves,
)
from vlm2vla_ros.action_language.grammar import units_to_text

LIMITS = [
    ActionLimits(),
    ActionLimits(max_abs_cm=12.34, max_steps=3, decimals=2),
    ActionLimits(max_abs_cm=150, max_steps=1, decimals=0),
    ActionLimits(max_abs_cm=0.5, max_steps=4, decimals=1),
]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chunks(draw, limits: ActionLimits = DEFAULT_LIMITS):
    """Valid chunks: coordinates on the limits' grid, 1..max_steps steps."""
    scale = 10**limits.decimals
    coord = st.integers(-limits.max_units, limits.max_units).map(lambda u: u / scale)
    step = st.builds(ActionStep, coord, coord, coord, st.sampled_from([0, 1]))
    return ActionChunk(tuple(draw(st.lists(step, min_size=1, max_size=limits.max_steps))))


# --- grammar -----------------------------------------------------------------------------


@pytest.mark.parametrize("limits", LIMITS, ids=str)
def test_number_regex_matches_exactly_the_canonical_numbers_within_limits(limits):
    pattern = re.compile(number_regex(limits))
    top = limits.max_units
    inside = {units_to_text(u, limits.decimals) for u in range(-top, top + 1)}
    outside = {units_to_text(u, limits.decimals) for u in range(top + 1, top + 300)}
    outside |= {"-" + text for text in outside} | {
        "-" + units_to_text(0, limits.decimals),
        "00",
        "01.0",
        "1.",
        ".5",
    }
    assert all(pattern.fullmatch(text) for text in inside)
    assert not [text for text in outside - inside if pattern.fullmatch(text)]


@pytest.mark.parametrize("limits", LIMITS, ids=str)
@FAST
@given(data=st.data())
def test_every_grammar_string_parses_back_to_itself(limits, data):
    text = data.draw(st.from_regex(chunk_regex(limits), fullmatch=True))
    chunk = parse_action_chunk(text, limits)
    assert format_action_chunk(chunk, limits) == text


@pytest.mark.parametrize("limits", LIMITS, ids=str)
@FAST
@given(data=st.data())
def test_formatted_chunks_match_the_grammar_and_parse_back(limits, data):
    chunk = data.draw(chunks(limits))
    text = format_action_chunk(chunk, limits)
    assert re.fullmatch(chunk_regex(limits), text)
    assert parse_action_chunk(text, limits) == chunk


def test_grammar_bounds_steps_magnitudes_and_negative_zero():
    pattern = re.compile(chunk_regex())
    step = "[1.0, 0.0, 0.0, 1]"
    assert pattern.fullmatch("[" + ", ".join([step] * 16) + "]")
    assert not pattern.fullmatch("[" + ", ".join([step] * 17) + "]")
    assert not pattern.fullmatch("[]")
    for bad in (
        "[[10.1, 0.0, 0.0, 1]]",
        "[[-0.0, 0.0, 0.0, 1]]",
        "[[1, 0.0, 0.0, 1]]",
        "[[1.0, 0.0, 0.0, 2]]",
    ):
        assert not pattern.fullmatch(bad), bad


def test_grammar_avoids_constructs_other_engines_lack():
    pattern = chunk_regex(ActionLimits(max_abs_cm=12.34, decimals=2))
    for construct in ("(?=", "(?!", "(?<", "(?:", "(?P", "*?", "+?", "??", "}?", "\\1", "\\d", "\\s"):
        assert construct not in pattern, construct


def test_xgrammar_compiles_the_grammar_and_enforces_it():
    xgr = pytest.importorskip("xgrammar")
    vocab = list("[]0123456789.-, ") + ["</s>", ", [", "10.0"]
    info = xgr.TokenizerInfo(vocab, stop_token_ids=[vocab.index("</s>")])
    grammar = xgr.GrammarCompiler(info, max_threads=1).compile_regex(chunk_regex())

    def accepts(text: str) -> bool:
        matcher = xgr.GrammarMatcher(grammar)
        return matcher.accept_string(text) and matcher.accept_token(vocab.index("</s>"))

    assert accepts("[[2.5, -0.3, 1.0, 1], [0.0, 0.0, -1.2, 0]]")
    assert accepts("[[10.0, -10.0, 0.0, 0]]")
    assert not accepts("[[10.1, 0.0, 0.0, 1]]")
    assert not accepts("[[-0.0, 0.0, 0.0, 1]]")
    assert not accepts("[[1.0, 0.0, 0.0, 1]")  # incomplete: the stop token is refused


# --- parser --------------------------------------------------------------------------------


def test_paper_single_step_and_multi_step_examples():
    assert parse_action_chunk("[0.2, -0.3, 0.5, 0]") == ActionChunk((ActionStep(0.2, -0.3, 0.5, 0),))
    assert parse_action_chunk(" ```\n[0.2, -0.3, 0.5, 0]\n``` ") == ActionChunk((ActionStep(0.2, -0.3, 0.5, 0),))
    chunk = parse_action_chunk("[[2.5, -0.3, 1.0, 1], [0.0, 0.0, -1.2, 0]]")
    assert chunk.steps == (ActionStep(2.5, -0.3, 1.0, 1), ActionStep(0.0, 0.0, -1.2, 0))


@pytest.mark.parametrize(
    "text",
    [
        "Here is the chunk: [[2.5, -0.3, 1.0, 1], [0.0, 0.0, -1.2, 0]]. Done.",
        "```python\n[[2.5, -0.3, 1.0, 1],\n [0.0, 0.0, -1.2, 0]]\n```",
        "[ [ 2.5 ,\t-0.3 , 1 , 1.0 ] ,\n\n  [ 0 , 0.00 , -1.2 , 0 ] , ]",
        "[[+2.5, \u22120.3, 1., 1], [.0, -0, -1.20, 0.0]]",
        "[[2.54, -0.25, 0.95, 1], [0.04, -0.04, -1.15, 0]]",  # rounded to 1 mm, ties away from 0
        "The [see note] chunk [[2.5, -0.3, 1.0, 1], [0.0, 0.0, -1.2, 0]]",  # bracketed prose, no digits
    ],
)
def test_parser_accepts_what_models_write_around_a_valid_chunk(text):
    expected = ActionChunk((ActionStep(2.5, -0.3, 1.0, 1), ActionStep(0.0, 0.0, -1.2, 0)))
    assert parse_action_chunk(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no chunk here", "no action chunk"),
        ("[]", "no action chunk"),
        ("[[]]", "empty list"),
        ("[[1, 2, 3]]", "has 3 values"),
        ("[1, 2, 3, 0, 1]", "more than 4 values"),
        # unconstrained prose: four bracketed numbers are not a move unless they are the whole answer
        ("The block is at [5, 3, 2, 1].", "a chunk only as the whole answer"),
        ("Step: [0.2, -0.3, 0.5, 0]", "a chunk only as the whole answer"),
        ("[[nan, 0, 0, 1]]", "'nan' is not a finite number"),
        ("[[0, Infinity, 0, 1]]", "not a finite number"),
        ("[[1e309, 0, 0, 1]]", "unexpected 'e309'"),
        ("[[10.1, 0, 0, 1]]", "beyond the limit"),
        ("[[0, 0, -10.05, 1]]", "beyond the limit"),  # rounds to -10.1
        ("[[0, 0, 0, 0.5]]", "gripper must be 0"),
        ("[[0, 0, 0, 2]]", "gripper must be 0"),
        ("[[1, 2, 3, 0]] or [[1, 2, 3, 1]]", "more than one bracketed list"),
        ("[[1, 2, 3, 0]", "never closed"),
        ("[[1, 2, 3, 0]]]", "no matching"),
        ("[[[1, 2, 3, 0]]]", "nested deeper"),
        ("[[1, 2, 3, 0] [1, 2, 3, 0]]", "expected ',' or ']' after step 1"),
        ("[[1, 2, 3, 0], 5]", "expected step 2"),
        ("[[1 2, 3, 0]]", "expected ',' or ']' after a number"),
        ("[[1,, 2, 3, 0]]", "expected a number"),
        ("[['1', 2, 3, 0]]", "unexpected character"),
        ("[[" + "1" * 30 + ", 0, 0, 0]]", "too long"),
        ("[" + ", ".join(["[0, 0, 0, 1]"] * 17) + "]", "limit of 16 steps"),
    ],
)
def test_parser_rejects_what_is_not_unambiguously_one_valid_chunk(text, reason):
    with pytest.raises(ActionParseError) as caught:
        parse_action_chunk(text)
    assert reason in caught.value.reason
    assert caught.value.text == text


def test_parser_respects_custom_limits_and_text_length():
    limits = ActionLimits(max_abs_cm=2.0, max_steps=2, decimals=2)
    assert parse_action_chunk("[[1.999, 0, 0, 1]]", limits).steps[0].dx == 2.0
    with pytest.raises(ActionParseError, match="beyond the limit"):
        parse_action_chunk("[[2.01, 0, 0, 1]]", limits)
    with pytest.raises(ActionParseError, match="more than the limit of 2 steps"):
        parse_action_chunk("[[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]]", limits)
    with pytest.raises(ActionParseError, match="more than the limit of 50"):
        parse_action_chunk("x" * 51 + "[[0, 0, 0, 1]]", max_chars=50)


def test_parser_rejects_non_text():
    for value in (None, 3, b"[[0, 0, 0, 1]]", ["[[0, 0, 0, 1]]"]):
        with pytest.raises(ActionParseError, match="expected text"):
            parse_action_chunk(value)


def _assert_within_limits(chunk: ActionChunk, limits: ActionLimits = DEFAULT_LIMITS) -> None:
    assert 1 <= len(chunk) <= limits.max_steps
    for step in chunk.steps:
        assert all(abs(v) <= limits.max_abs_cm for v in (step.dx, step.dy, step.dz))
        assert step.gripper in (0, 1)
    assert re.fullmatch(chunk_regex(limits), format_action_chunk(chunk, limits))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="[]0123456789.,-+ e\u2212nan\n", max_size=80)))
def test_parser_only_ever_raises_action_parse_error(text):
    try:
        chunk = parse_action_chunk(text)
    except ActionParseError:
        return
    _assert_within_limits(chunk)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "text",
    [
        "[[" * 10000,
        "[" * 19999 + "]",
        "]" * 20000,
        "[" + "[0, 0, 0, 1], " * 1400 + "[0, 0, 0, 1]]",
        "[[" + "1, " * 6000 + "1]]",
        "[[1, 2, 3, 0]" + " [1]" * 4000 + "]",
        "[1]" * 6000,
        "[[" + "9" * 19000 + ", 0, 0, 1]]",
        "[[1e309, -1e309, 0, 1]]",
        "[[NaN, nan, inf, -inf]]",
        "[[" + "\u2212" * 19000 + "1, 1, 1, 1]]",
        "x" * 10_000_000,
    ],
    ids=lambda t: repr(t[:24]),
)
def test_adversarial_inputs_are_rejected_quickly(text):
    with pytest.raises(ActionParseError):
        parse_action_chunk(text)


# --- formatter and helpers ---------------------------------------------------------------


def test_formatter_writes_canonical_text():
    chunk = ActionChunk((ActionStep(2.5, -0.3, 1, 1), ActionStep(-0.01, 1.15, -1.2, 0.0)))
    assert format_action_chunk(chunk) == "[[2.5, -0.3, 1.0, 1], [0.0, 1.2, -1.2, 0]]"
    assert (
        format_action_chunk(chunk, ActionLimits(decimals=2))
        == "[[2.50, -0.30, 1.00, 1], [-0.01, 1.15, -1.20, 0]]"
    )
    assert (
        format_action_chunk(ActionChunk((ActionStep(np.float64(3.0), 0, 0, np.int64(1)),)))
        == "[[3.0, 0.0, 0.0, 1]]"
    )


@pytest.mark.parametrize(
    ("chunk", "reason"),
    [
        (ActionChunk(()), "no steps"),
        (ActionChunk((ActionStep(10.06, 0, 0, 1),)), "beyond the limit"),
        (ActionChunk((ActionStep(0, math.nan, 0, 1),)), "not a finite number"),
        (ActionChunk((ActionStep(0, 0, math.inf, 1),)), "not a finite number"),
        (ActionChunk((ActionStep(0, 0, 10**400, 1),)), "not a finite number"),
        (ActionChunk((ActionStep(0, "1", 0, 1),)), "not a finite number"),
        (ActionChunk((ActionStep(0, 0, 0, 0.5),)), "gripper must be 0"),
        (ActionChunk((ActionStep(0, 0, 0, 1),) * 17), "more than the limit of 16"),
        (ActionChunk(((0, 0, 0, 1),)), "not an ActionStep"),
        ("[[0, 0, 0, 1]]", "expected an ActionChunk"),
    ],
)
def test_formatter_and_validator_reject_chunks_outside_limits(chunk, reason):
    for function in (format_action_chunk, validate_chunk):
        with pytest.raises(ActionValueError, match=re.escape(reason)):
            function(chunk)


def test_validate_chunk_rounds_to_the_grid_and_array_has_four_columns():
    chunk = validate_chunk(ActionChunk((ActionStep(1.26, -0.04, 3, 1),)))
    assert chunk == ActionChunk((ActionStep(1.3, 0.0, 3.0, 1),))
    array = chunk_to_array(parse_action_chunk("[[1, 2, 3, 1], [4, 5, 6, 0]]"))
    assert array.shape == (2, 4)
    assert array.tolist() == [[1, 2, 3, 1], [4, 5, 6, 0]]


@pytest.mark.parametrize(
    "kwargs",
    [{"decimals": 5}, {"decimals": -1}, {"max_steps": 0}, {"max_abs_cm": math.nan}, {"max_abs_cm": 0.04},
     {"max_abs_cm": -10.0}, {"max_abs_cm": "10"}, {"max_abs_cm": True}, {"max_abs_cm": 10**400}],
)
def test_limits_reject_nonsense(kwargs):
    with pytest.raises(ValueError, match="ActionLimits"):
        ActionLimits(**kwargs)


# --- subtasks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1. Grasp the red block\n2. Move to the bowl",
        "Subtasks:\n\n1) Grasp the red  block\n2) Move to the bowl\n\nThat is all.",
        "- Grasp the red block\n* Move to the bowl",
        "\u2022 Grasp the red block\n\u2022 Move to the bowl",
        "```python\n[\"Grasp the red block\", 'Move to the bowl']\n```",
        "```\n1. Grasp the red block\n2. Move to the bowl\n```",
    ],
)
def test_subtasks_are_read_from_numbered_bulleted_or_python_lists(text):
    assert parse_subtasks(text) == ["Grasp the red block", "Move to the bowl"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no numbered list"),
        ("Grasp the block", "no numbered list"),
        ("[]", "no numbered list"),
        ("['a', 3]", "only strings"),
        ("['a', 'b'", "no numbered list"),
        ("['a' 'b' +]", "not a valid list"),
        ("1. Grasp\n2.\n3. Lift", "subtask 2 is empty"),
        ("1. Grasp\n3. Lift", "numbered [1, 3]"),
        ("1. Grasp\nthen carefully\n2. Lift", "between list items"),
        ("1. Grasp\n- Lift", "mixes numbered and bullet"),
        ("\n".join(f"{i}. Step" for i in range(1, 14)), "13 subtasks"),
        ("1. " + "a" * 81, "81 characters, more than 80"),
        ("1. 3 blocks: stack them", "starts with '3', not a letter"),
        ("1. Grasp the\x00 block", "control characters"),
        ("1. Grasp the \u202eblock", "control characters"),
        ("1. Grasp the block\n2. Lift\x1b[2J it", "control characters"),
        # controls that str.split() or str.splitlines() would have turned into spaces or breaks
        ("1. Grasp the\x85 block", "control characters"),
        ("1. Grasp the\u2028 block", "control characters"),
        ("1. Grasp\x1f the block", "control characters"),
        ("1. Grasp\x0c the block", "control characters"),
        ("1. Grasp the\u200f block", "control characters"),
        ("[" * 9000 + "'a'" + "]" * 9000, "not a valid list"),
        ("1. a\n" * 10001, "more than the limit of 20000"),
    ],
)
def test_subtask_parser_rejects_bad_lists(text, reason):
    with pytest.raises(ActionParseError) as caught:
        parse_subtasks(text)
    assert reason in caught.value.reason


def test_subtask_limit_is_configurable_and_formatter_is_canonical():
    assert parse_subtasks("1. a\n2. b\n3. c", max_subtasks=3) == ["a", "b", "c"]
    with pytest.raises(ActionParseError, match="more than the limit of 2"):
        parse_subtasks("1. a\n2. b\n3. c", max_subtasks=2)
    assert (
        format_subtasks(["Grasp the red block", " Move  to the bowl "])
        == "1. Grasp the red block\n2. Move to the bowl"
    )
    for bad in ([], ["ok", ""], ["two\nlines"], "a string", ["x" * 81], [3], ["-move left"], ["lift\x7f"]):
        with pytest.raises(ActionValueError):
            format_subtasks(bad)


@FAST
@given(
    st.lists(
        st.text(alphabet="abcdefghij ,.'-1", min_size=1, max_size=40).filter(lambda t: t.strip()[:1].isalpha()),
        min_size=1,
        max_size=12,
    )
)
def test_subtasks_round_trip(items):
    assert parse_subtasks(format_subtasks(items)) == [" ".join(item.split()) for item in items]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="1.)-*[]'\"\n ab", max_size=60)))
def test_subtask_parser_only_ever_raises_action_parse_error(text):
    try:
        items = parse_subtasks(text)
    except ActionParseError:
        return
    assert items and all(isinstance(item, str) and item.strip() for item in items)


# --- motion plans ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunk", "initial", "plan"),
    [
        ("[[3.0, 0.0, -1.0, 0]]", 1, "Move forward and slightly down, then close the gripper."),
        ("[[2.0, 0.1, 0.0, 1], [2.5, -0.2, 0.3, 1]]", None, "Move forward."),
        (
            "[[0.0, 0.0, -3.0, 1], [0.0, 0.0, 0.0, 0], [0.0, 0.0, 4.0, 0]]",
            None,
            "Move down, then close the gripper, then move up.",
        ),
        ("[[0.0, -3.0, 2.5, 1]]", None, "Move right and up."),
        ("[[1.0, 4.0, -3.0, 1]]", None, "Move left, down and slightly forward."),
        ("[[0.0, 0.0, 0.0, 1]]", None, "Hold still."),
        ("[[0.0, 0.0, 0.0, 1]]", 0, "Open the gripper."),
        (
            "[[0, 0, -3, 1], [0, 0, 0, 0], [0, 0, 3, 0], [-3, 0, 0, 0], [0, 0, 0, 1]]",
            None,
            "Move down, then close the gripper, then move up. Then move back, then open the gripper.",
        ),
    ],
)
def test_motion_plans(chunk, initial, plan):
    assert verbalise_moves(parse_action_chunk(chunk), initial_gripper=initial) == plan


@FAST
@given(chunks())
def test_motion_plans_are_one_or_two_sentences(chunk):
    plan = verbalise_moves(chunk.steps)
    assert plan.endswith(".") and plan[0].isupper()
    assert 1 <= plan.count(". ") + 1 <= 2
    assert plan == verbalise_moves(chunk)


def test_motion_plan_rejects_bad_input():
    for bad in ([], "move", [ActionStep(0, math.nan, 0, 1)], [ActionStep(0, 0, 0, 3)], [(0, 0, 0, 1)]):
        with pytest.raises(ActionValueError):
            verbalise_moves(bad)
    with pytest.raises(ActionValueError, match="initial_gripper"):
        verbalise_moves([ActionStep(0, 0, 0, 1)], initial_gripper=2)


def test_plan_with_total_states_the_move_left_as_place_answers_write_it():
    from vlm2vla_ros.action_language import format_cm, plan_with_total

    assert plan_with_total(" Move forward. ", (12.04, -0.04, -6.0)) == "[12.0, 0.0, -6.0] cm to go. Move forward."
    assert plan_with_total("Move up.", (0, 25, 3.25)) == "[0.0, 25.0, 3.3] cm to go. Move up."  # ties away from zero
    assert [format_cm(v) for v in (-0.04, 0.05, -12.36, 40)] == ["0.0", "0.1", "-12.4", "40.0"]
    for plan, total in [("", (1, 2, 3)), ("Move up.", (1, 2)), ("Move up.", (1, math.inf, 3)), ("Move up.", "abc")]:
        with pytest.raises(ActionValueError):
            plan_with_total(plan, total)


def test_read_plan_total_reads_back_what_plan_with_total_wrote_and_nothing_else():
    from vlm2vla_ros.action_language import plan_with_total, read_plan_total

    for words, total in [("Move forward.", (12.0, 0.0, -6.0)), ("Move down, then close the gripper.", (-0.1, 100.0, -3.5))]:
        assert read_plan_total(plan_with_total(words, total)) == (total, words)
    assert read_plan_total(" [1, -2.5 ,3.0]cm to go.  Move up.") == ((1.0, -2.5, 3.0), "Move up.")
    for plan in ["Move up.", "Move up. [1.0, 2.0, 3.0] cm to go.", "[1.0, 2.0] cm to go. Move up.", "[1.0, 2.0, 3.0] Move up.",
                 "[1000.0, 2.0, 3.0] cm to go. Move up.", ""]:
        assert read_plan_total(plan) is None, plan



@pytest.mark.parametrize("move_cm", [0.25, 0.35, -0.35, 3.25, 1.15, 0.05, 2.675])
def test_a_total_and_the_chunk_that_copies_it_round_alike(move_cm):
    """One rounding in the dataset path (the grammar's: ties away from zero on the shortest
    decimal form): round-half-even made 0.25 a chunk of 0.2 that parses back as 0.3, and a
    0.35 total of "0.3" above a chunk of 0.4."""
    from vlm2vla_ros.action_language import format_cm, merge_trajectory, parse_action_chunk

    (step,) = merge_trajectory([[move_cm, 0.0, 0.0]], [1])
    assert format_cm(move_cm) == f"{step.dx:.1f}"
    assert parse_action_chunk(f"[[{move_cm}, 0.0, 0.0, 1]]").steps[0].dx == step.dx


def test_a_split_first_move_changes_the_gripper_with_its_last_piece():
    from vlm2vla_ros.action_language import merge_trajectory

    steps = merge_trajectory([[25.0, 0.0, 0.0]], [0], initial_gripper=1)
    assert [(s.dx, s.gripper) for s in steps] == [(8.3, 1), (8.3, 1), (8.4, 0)]
