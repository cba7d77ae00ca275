"""vlm2vla-sim: render and expert subcommands, help and argument errors."""

import json

import cv2
import pytest

from vlm2vla_ros.sim.tasks import TASK_KINDS
from vlm2vla_ros.tools.sim_cli import main


def test_help_lists_the_task_kinds(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(kind in out for kind in TASK_KINDS)


def test_render_writes_the_image(tmp_path, capsys):
    out = tmp_path / "scene.png"
    assert main(["render", "--seed", "3", "--out", str(out), "--size", "96", "--task-kind", "stack"]) == 0
    image = cv2.imread(str(out))
    assert image.shape == (96, 96, 3)
    assert "stack the " in capsys.readouterr().out
    gripper = tmp_path / "gripper.png"
    assert main(["render", "--seed", "3", "--out", str(gripper), "--size", "96", "--task-kind", "stack", "--view", "gripper"]) == 0
    assert not (cv2.imread(str(gripper)) == image).all()


def test_expert_json_report(capsys):
    assert main(["expert", "--task-kind", "put_on", "--episodes", "4", "--seed", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task_kind"] == "put_on" and report["episodes"] == 4
    assert report["success_rate"] == report["successes"] / 4 and report["mean_steps"] > 10


def test_expert_all_kinds(capsys):
    assert main(["expert", "--task-kind", "all", "--episodes", "2", "--seed", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 2 * len(TASK_KINDS) and set(report["per_kind"]) == set(TASK_KINDS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["expert", "--task-kind", "juggle", "--episodes", "2"], "invalid choice: 'juggle'"),
        (["expert", "--task-kind", "pick_up", "--episodes", "0"], "expected a positive integer"),
        (["render", "--seed", "1", "--out", "scene.gif"], "output must end in one of"),
        (["render", "--seed", "1", "--out", "a.png", "--size", "20"], "image size must be 64 to 640"),
        (["render", "--out", "a.png"], "the following arguments are required: --seed"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
