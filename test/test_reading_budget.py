"""The reading budget: the scripted expert as a closed-loop policy, misreading the named block."""

import dataclasses

import pytest

from vlm2vla_ros.miniature.experiment import ExperimentConfig, eval_seeds
from vlm2vla_ros.miniature.reading_budget import (
    MisreadingExpert,
    ReadingError,
    StatedTotal,
    budget_point,
    budget_table,
    estimate_reading,
)
from vlm2vla_ros.tools.reading_budget import main
from vlm2vla_ros.training.evaluate import closed_loop_episode, evaluation_scene

CONFIG = dataclasses.replace(ExperimentConfig.full(), chunk_moves=1, pick_up_seeds=4, cycles_per_subtask=3)
BUILD = CONFIG.action_build()
SEEDS = eval_seeds(CONFIG, "pick_up")


def point(sigma, persistent=0.0, cycles=3, alone=False, dead_band=0.0):
    config = dataclasses.replace(CONFIG, cycles_per_subtask=cycles)
    return budget_point(ReadingError(sigma, persistent, dead_band), "pick_up", config, alone)


def test_a_perfect_reading_picks_up_every_held_out_block_in_one_move_chunks():
    perfect = point(0.0)
    assert (perfect.successes, perfect.episodes, perfect.median_error_cm) == (4, 4, 0.0)


@pytest.mark.parametrize("kind", ["put_in", "pick_place_lift", "stack"])
def test_a_perfect_reading_solves_every_kind_of_task(kind):
    """"Lift the gripper" names no object, so nothing is misread there."""
    perfect = budget_point(ReadingError(0.0), kind, dataclasses.replace(CONFIG, eval_seeds=2))
    assert (perfect.successes, perfect.episodes) == (2, 2)


def test_a_reading_a_block_away_picks_up_nothing():
    # 6 cm a side, fixed for the episode: the grasp lands beside the 4-5 cm block every time.
    assert point(6.0, persistent=1.0).successes == 0


def test_each_chunk_is_one_merged_move_and_the_loop_stops_when_the_task_is_done():
    world, task = evaluation_scene("pick_up", SEEDS[0], False)
    engine = MisreadingExpert(world, task, SEEDS[0], ReadingError(0.0), BUILD.merge, BUILD.limits)
    chunks = []
    real_cycle = engine.cycle

    def cycle(image, instruction, subtask):
        result = real_cycle(image, instruction, subtask)
        chunks.append((subtask, result.chunk))
        return result

    engine.cycle = cycle
    record = closed_loop_episode(engine, "pick_up", SEEDS[0], 11, image_size=32, view=CONFIG.view, judge=engine.judge)
    assert record["success"] and record["ended"] == "all subtasks done"
    assert all(len(chunk) == 1 for _, chunk in chunks)
    grasps = [chunk.steps[0] for subtask, chunk in chunks if subtask.startswith("grasp")]
    assert len(grasps) == 1 and grasps[0].dz < 0 and grasps[0].gripper == 0  # down and close, one move


def test_a_persistent_error_is_one_bias_and_a_fresh_one_is_drawn_each_cycle():
    world, task = evaluation_scene("pick_up", SEEDS[0], False)
    kept = MisreadingExpert(world, task, SEEDS[0], ReadingError(2.0, persistent=1.0), BUILD.merge, BUILD.limits)
    fresh = MisreadingExpert(world, task, SEEDS[0], ReadingError(2.0, persistent=0.0), BUILD.merge, BUILD.limits)
    subtask = task.subtasks("en")[0]
    for engine in (kept, fresh):
        for _ in range(3):
            engine.cycle(None, task.instruction(), subtask)
    assert len(set(kept.errors_cm)) == 1 and kept.errors_cm[0] > 0
    assert len(set(fresh.errors_cm)) == 3


def test_the_expert_never_verifies_itself():
    world, task = evaluation_scene("pick_up", SEEDS[0], False)
    engine = MisreadingExpert(world, task, SEEDS[0], ReadingError(0.0), BUILD.merge, BUILD.limits)
    with pytest.raises(RuntimeError, match="judged by the simulator"):
        engine.verify(None, None, "move above the red block", "")


def test_a_dead_band_as_wide_as_the_table_never_moves_above_the_block():
    assert point(0.0, dead_band=100.0).successes == 0  # the perfect reading picks up all four
    world, task = evaluation_scene("pick_up", SEEDS[0], False)
    engine = MisreadingExpert(world, task, SEEDS[0], ReadingError(0.0, 0.0, 100.0), BUILD.merge, BUILD.limits)
    chunk = engine.cycle(None, task.instruction(), task.subtasks("en")[0]).chunk
    # Only the expert's own aim jitter (ExpertConfig.grasp_jitter_m, 0.4 cm) moves it sideways.
    assert all(abs(step.dx) <= 0.5 and abs(step.dy) <= 0.5 for step in chunk.steps)


@pytest.mark.parametrize("sigma, persistent, dead_band",
                         [(-1.0, 0.0, 0.0), (float("nan"), 0.0, 0.0), (1.0, 1.5, 0.0), (1.0, -0.1, 0.0), (1.0, 0.0, -2.0),
                          ("2", 0.0, 0.0), (1.0, float("nan"), 0.0), (1.0, True, 0.0)])
def test_reading_errors_out_of_range_are_refused(sigma, persistent, dead_band):
    with pytest.raises(ValueError, match="ReadingError"):
        ReadingError(sigma, persistent, dead_band)


def test_the_table_has_a_row_per_sigma_and_a_column_per_persistent_share():
    points = [point(0.0), point(0.0, 1.0), point(6.0), point(6.0, 1.0)]
    lines = budget_table(points, [0.0, 6.0], [0.0, 1.0])
    assert lines[0] == "| sigma a side (cm) | median error (cm) | 0 persistent | 1 persistent |"
    assert lines[2].startswith("| 0 | 0.0 | 4 / 4 | 4 / 4 |")
    assert lines[3].startswith("| 6 |") and lines[3].endswith("| 0 / 4 |")


def test_the_command_writes_its_table(tmp_path, capsys):
    out = tmp_path / "new" / "budget.md"
    assert main(["--scenes", "2", "--sigmas", "0", "--persistent", "0", "--out", str(out)]) == 0
    text = out.read_text()
    assert "2 held-out scenes from seed 50000" in text and "| 0 | 0.0 | 2 / 2 |" in text
    assert "| 0 | 0.0 | 2 / 2 |" in capsys.readouterr().out


def test_the_command_refuses_a_bad_error(capsys):
    assert main(["--scenes", "1", "--sigmas", "-2"]) == 2
    assert "sigma_cm must be a finite number >= 0" in capsys.readouterr().err


def totals(*episodes):
    """StatedTotals from (cycle, error x, error y) with the block 10 cm ahead."""
    return [[StatedTotal(k, 10.0, 0.0, 10.0 + x, y) for k, x, y in episode] for episode in episodes]


def test_a_bias_every_plan_shares_is_wholly_persistent():
    estimate = estimate_reading(totals([(0, 1.0, 0.0), (1, 1.0, 0.0)], [(0, 1.0, 0.0), (1, 1.0, 0.0), (2, 1.0, 0.0)]))
    assert (estimate.plans, estimate.pairs, estimate.median_error_cm, estimate.persistent) == (5, 3, 1.0, 1.0)


def test_errors_that_flip_every_cycle_do_not_persist_and_a_gap_breaks_a_pair():
    flipping = estimate_reading(totals([(0, 2.0, 0.0), (1, -2.0, 0.0), (2, 2.0, 0.0)]))
    assert flipping.persistent == 0.0 and flipping.median_error_cm == 2.0
    half = estimate_reading(totals([(0, 2.0, 0.0), (1, 2.0, 2.0)]))  # shared 4 of a mean power of 6
    assert half.persistent == pytest.approx(4 / 6)
    assert estimate_reading(totals([(0, 1.0, 1.0), (2, 1.0, 1.0)], [])) is None  # cycle 1 stated no total


def test_the_dead_band_counts_near_plans_that_say_already_there():
    near = [[StatedTotal(0, 3.0, 0.0, 0.1, 0.1),  # 3 cm away, "0.1 cm to go": the dead band
             StatedTotal(1, 0.0, -4.0, 0.0, -3.5),  # 4 cm away, a move towards it
             StatedTotal(2, 1.0, 0.0, 0.0, 0.0),  # 1 cm away: nearer than the band
             StatedTotal(3, 8.0, 0.0, 0.0, 0.0)]]  # 8 cm away: beyond it
    estimate = estimate_reading(near)
    assert (estimate.near_plans, estimate.near_still) == (2, 1)
