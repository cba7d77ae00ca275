"""PolicyConfig parsing and the prompts/answer formats (no model needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm2vla_ros.action_language import ActionLimits, format_subtasks, parse_subtasks
from vlm2vla_ros.policy import PolicyConfig, PromptTemplates, StageSampling, prompts


def test_defaults_follow_the_paper() -> None:
    config = PolicyConfig(model_path="/models/gemma")
    assert (config.subtasks.temperature, config.plan.temperature, config.chunk.temperature) == (0.5, 0.1, 0.5)
    assert config.subtasks.top_p == config.plan.top_p == config.chunk.top_p == 0.95
    assert config.constrained and config.reuse_prefix and config.limits == ActionLimits()


def test_from_dict_reads_nested_sections() -> None:
    config = PolicyConfig.from_dict({
        "model_path": "/m", "adapter_path": "/a", "device": "cuda:1", "seed": 3,
        "chunk": {"temperature": 0.2}, "limits": {"max_steps": 4},
        "prompts": {"chunk": "Actions please."}, "openai": {"model": "policy", "timeout_s": 5},
    })
    assert config.chunk == StageSampling(temperature=0.2, top_p=0.95)
    assert config.plan.max_new_tokens == 64  # untouched stages keep their defaults
    assert config.limits.max_steps == 4 and config.device == "cuda:1"
    assert config.prompts.chunk == "Actions please." and config.prompts.plan == PromptTemplates().plan
    assert config.openai.model == "policy" and config.openai.timeout_s == 5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model_path": "/m", "temprature": 1}, r"unknown key\(s\) \['temprature'\] in policy config"),
        ({"model_path": "/m", "plan": {"top_k": 5}}, r"unknown key\(s\) \['top_k'\] in policy config section 'plan'"),
        ({"model_path": "/m", "openai": {"url": "x"}}, r"unknown key\(s\) \['url'\] in policy config section 'openai'"),
        ({"model_path": "/m", "prompts": {"plans": "x"}}, r"unknown prompt template\(s\) \['plans'\]"),
        ({"model_path": "/m", "backend": "onnx"}, "backend must be one of"),
        ({"model_path": "/m", "device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"model_path": "/m", "dtype": "int8"}, "dtype must be one of"),
        ({"model_path": "/m", "chunk": {"temperature": -1}}, "temperature must be a finite number >= 0"),
        ({"model_path": "/m", "chunk": {"temperature": float("nan")}}, "temperature must be a finite number >= 0"),
        ({"model_path": "/m", "plan": {"temperature": float("inf")}}, "temperature must be a finite number >= 0"),
        ({"model_path": "/m", "plan": {"temperature": 10**400}}, "temperature must be a finite number >= 0"),
        ({"model_path": "/m", "limits": {"max_abs_cm": 10**400}}, "max_abs_cm must be a finite number"),
        ({"model_path": "/m", "plan": {"top_p": 0}}, r"top_p must be a finite number in \(0, 1\]"),
        ({"model_path": "/m", "plan": {"max_new_tokens": 0}}, "max_new_tokens must be a positive integer"),
        ({"model_path": "/m", "max_retries": 0}, "max_retries must be a positive integer"),
        ({"model_path": "/m", "constrained": "yes"}, "constrained must be true or false"),
        ({"model_path": "/m", "limits": {"max_steps": 0}}, "max_steps must be a positive integer"),
        ({"model_path": "/m", "openai": {"base_url": "localhost:8000"}}, "base_url must start with http"),
        ({"model_path": "/m", "chunk": 0.5}, "section 'chunk' must be a mapping"),
        ({"model_path": "/m", "seed": -1}, r"seed must be an integer from 0 to 2\*\*30 - 1"),
        ({"model_path": "/m", "seed": 2**30}, r"seed must be an integer from 0 to 2\*\*30 - 1"),
    ],
)
def test_bad_settings_are_named(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicyConfig.from_dict(data)


def test_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("model_path: /m\nverify:\n  max_new_tokens: 4\n")
    assert PolicyConfig.from_yaml(str(path)).verify.max_new_tokens == 4
    path.write_text("model_path: /m\nadapter_path: ''\n")  # no adapter, not the folder '.'
    assert PolicyConfig.from_yaml(str(path)).adapter_path is None
    path.write_text("model_path: [unclosed\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        PolicyConfig.from_yaml(str(path))
    with pytest.raises(ValueError, match="does not exist"):
        PolicyConfig.from_yaml(str(tmp_path / "missing.yaml"))


def test_chunk_prompt_continues_the_plan_conversation() -> None:
    plan = prompts.plan_messages("pick up the carrot", "Grasp the carrot")
    chunk = prompts.chunk_messages("pick up the carrot", "Grasp the carrot", "  Move down.  ")
    assert chunk[0] == plan[0]
    assert chunk[1] == {"role": "assistant", "content": [{"type": "text", "text": "Move down."}]}
    assert [m["role"] for m in chunk] == ["user", "assistant", "user"]
    assert prompts.count_images(plan) == prompts.count_images(chunk) == 1
    assert prompts.count_images(prompts.verify_messages("a", "b")) == 2
    assert "pick up the carrot" in plan[0]["content"][1]["text"]


def test_training_examples_use_the_same_prompts_and_answer_formats() -> None:
    example = prompts.with_answer(prompts.subtasks_messages("pick up the carrot"), prompts.subtasks_answer(["Grasp", "Lift"]))
    assert example[0] == prompts.subtasks_messages("pick up the carrot")[0]
    assert example[-1]["content"][0]["text"] == "1. Grasp\n2. Lift"
    assert prompts.verify_answer(True) == "advance" and prompts.verify_answer(False) == "retry"
    with pytest.raises(ValueError, match="direction must be one of"):
        prompts.direction_answer("up")


def test_custom_templates_and_their_errors() -> None:
    templates = PromptTemplates(plan="Do {subtask} for {task}.")
    assert prompts.plan_messages("t", "s", templates)[0]["content"][1]["text"] == "Do s for t."
    with pytest.raises(ValueError, match="placeholder 'next_subtask'"):
        prompts.plan_messages("t", "s", PromptTemplates(plan="{next_subtask}"))
    with pytest.raises(ValueError, match="non-empty plan"):
        prompts.chunk_messages("t", "s", " ")


@pytest.mark.parametrize(("text", "advance"), [("advance", True), (" Retry.", False), ("ADVANCE!", True)])
def test_parse_verdict(text: str, advance: bool) -> None:
    assert prompts.parse_verdict(text) is advance


def test_parse_verdict_rejects_other_words() -> None:
    with pytest.raises(ValueError, match="neither 'advance' nor 'retry'"):
        prompts.parse_verdict("yes")


@settings(max_examples=200, deadline=None)
@given(st.from_regex(prompts.subtasks_regex(max_items=4, max_chars=20), fullmatch=True))
def test_every_text_the_subtask_grammar_allows_parses(text: str) -> None:
    subtasks = parse_subtasks(text)
    assert len(subtasks) == text.count("\n") + 1


_ITEM_TEXT = st.text(st.characters(codec="utf-8"), max_size=100)
_LETTER_FIRST = st.builds(str.__add__, st.sampled_from("aZ"), st.text(st.characters(codec="utf-8", exclude_categories=("Cc",)), max_size=79))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_LETTER_FIRST, _LETTER_FIRST, _LETTER_FIRST, _ITEM_TEXT), min_size=1, max_size=4))
def test_every_subtask_list_the_formatter_writes_the_grammar_allows(items: list[str]) -> None:
    """Training data the constrained decoder could never write is refused where it is written:
    whatever the formatter accepts, the decoder's grammar allows and the parser reads back."""
    try:
        text = format_subtasks(items)
    except ValueError:
        return
    assert re.fullmatch(prompts.subtasks_regex(), text)
    assert parse_subtasks(text) == [" ".join(item.split()) for item in items]


def test_the_formatter_accepts_letter_first_items_the_decoder_can_write() -> None:
    items = ["Grasp the red block", "Coge el bloque rojo", "z\t tabs and  spaces", "A" * 80]
    text = format_subtasks(items)
    assert re.fullmatch(prompts.subtasks_regex(), text) and len(parse_subtasks(text)) == 4


def test_subtask_grammar_bounds() -> None:
    regex = prompts.subtasks_regex(max_items=3, max_chars=5)
    assert re.fullmatch(regex, "1. Grasp\n2. Lift\n3. Place")
    assert not re.fullmatch(regex, "1. Grasp\n2. Lift\n3. Place\n4. Go")
    assert not re.fullmatch(regex, "1. Grasps")
    assert not re.fullmatch(regex, "2. Grasp")
    longest = "\n".join(f"{n}. {'x' * 5}" for n in (1, 2, 3))
    assert re.fullmatch(regex, longest) and len(longest) == prompts.subtasks_max_chars(3, 5)


def test_every_simulated_tasks_subtask_list_fits_the_decoders_grammar() -> None:
    """The constrained decoder must be able to write the list the expert's data teaches, for the
    longest task (a two-part multi-step task has ten subtasks), in both languages."""
    from vlm2vla_ros.action_language import MAX_SUBTASKS
    from vlm2vla_ros.sim.scene import make_scene
    from vlm2vla_ros.sim.tasks import TASK_KINDS

    regex = prompts.subtasks_regex()
    longest = 0
    for kind in TASK_KINDS:
        for seed in range(20):
            _, task = make_scene(seed, kind)
            for lang in ("en", "es"):
                text = format_subtasks(task.subtasks(lang))
                longest = max(longest, len(task.subtasks(lang)))
                assert re.fullmatch(regex, text), (kind, seed, lang, text)
                assert len(text) <= prompts.subtasks_max_chars()
    assert longest == 10 and prompts.SUBTASK_LIST_MAX_ITEMS == MAX_SUBTASKS


def test_an_adapters_recorded_language_is_checked_against_the_policy_config(tmp_path: Path) -> None:
    import json

    from vlm2vla_ros.policy.adapter_language import (
        ADAPTER_LANGUAGE_FILE,
        AdapterLanguage,
        language_differences,
        read_adapter_language,
    )
    from vlm2vla_ros.policy.types import PolicyError

    learnt = AdapterLanguage(ActionLimits(max_abs_cm=10.0, max_steps=4, decimals=1), PromptTemplates())
    assert read_adapter_language(tmp_path) is None  # an adapter without a record loads unchecked
    (tmp_path / ADAPTER_LANGUAGE_FILE).write_text(json.dumps(learnt.to_dict()))
    assert read_adapter_language(tmp_path) == learnt
    # looser limits than learnt, the same prompts: nothing to say
    assert language_differences(PolicyConfig(), learnt) == ([], [])
    errors, warnings = language_differences(PolicyConfig(limits=ActionLimits(decimals=2)), learnt)
    assert errors == ["the adapter writes numbers with 1 decimal(s) and the policy's limits read 2: set limits.decimals to 1"]
    assert warnings == []
    # unconstrained, the parser rounds the adapter's numbers to the config's decimals: a warning
    assert language_differences(PolicyConfig(limits=ActionLimits(decimals=2), constrained=False), learnt) == (
        [], ["the adapter writes numbers with 1 decimal(s) and the policy's limits read 2; the parser rounds its numbers "
             "to that"])
    tight = PolicyConfig(limits=ActionLimits(max_abs_cm=5.0, max_steps=2),
                         prompts=PromptTemplates(chunk="Write the chunk.", verify="Done? Answer advance or retry."))
    errors, warnings = language_differences(tight, learnt)
    assert errors == []
    assert warnings == ["chunks are cut to 2 step(s); the adapter learnt up to 4",
                        "moves are held to 5.0 cm; the adapter learnt up to 10.0 cm",
                        "the prompt template(s) chunk differ from the ones the adapter was trained on"]  # not verify: adapter off
    (tmp_path / ADAPTER_LANGUAGE_FILE).write_text('{"limits": {"decimals": 9}, "prompts": {}}')
    with pytest.raises(PolicyError, match="does not record the adapter's action language .*decimals must be an integer"):
        read_adapter_language(tmp_path)
