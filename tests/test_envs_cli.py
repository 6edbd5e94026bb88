"""`qtbench env list|render|play` and `qtbench bench env` through the real CLI entry point."""

from __future__ import annotations

import numpy as np
from PIL import Image

from qtbench.cli import main


def test_env_list_prints_every_task_with_counts(capsys):
    assert main(["env", "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line and not line.startswith(" ")}
    assert lines["drawer_open"][1:4] == ["qtbench/DrawerOpen-v2", "3", "instructions,"]
    assert lines["move_near"][1:3] == ["qtbench/MoveNear-v2", "42"]
    assert lines["all"][1:3] == ["qtbench/AllTasks-v2", "66"]
    assert "    move the orange near the white cup" in out
    assert "object_pos" in out


def test_env_render_writes_a_png(tmp_path, capsys):
    out = tmp_path / "frame.png"
    assert main(["env", "render", "--task", "drawer_close", "--seed", "2", "--width", "64", "--height", "48",
                 "--instruction", "close the top drawer", "--out", str(out)]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (48, 64, 3) and image.std() > 5
    assert "close the top drawer" in capsys.readouterr().out


def test_env_play_reports_success_per_skill_and_style(capsys):
    assert main(["env", "play", "--task", "drawer_open", "--policy", "expert", "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "drawer_open            100.0%  [ 43.9%, 100.0%]  (3/3)" in out  # Wilson interval of 3/3
    styles = {line.split()[0]: line for line in out.splitlines() if line.startswith("    ")}
    assert set(styles) <= {"grasp", "hook"} and sum(int(line.split("/")[-1][0]) for line in styles.values()) == 3


def test_env_play_pins_a_style_and_scales_the_noise(capsys):
    args = ["env", "play", "--task", "all", "--policy", "demo", "--episodes", "4", "--noise-scale", "3"]
    assert main(args + ["--style", "fragile"]) == 0
    out = capsys.readouterr().out
    assert "noise scale 3" in out
    styles = {line.split()[0] for line in out.splitlines() if line.startswith("    ")}
    assert styles and styles <= {"hook", "edge", "end"}
    assert main(args + ["--style", "hook,knob,end"]) == 0  # end: pick_place's and move_near's
    assert main(args + ["--style", "hook"]) == 2  # no style named for the other skills
    assert "one style per skill" in capsys.readouterr().err
    assert main(args + ["--style", "robust", "--noise-scale", "-1"]) == 2


def test_bad_names_exit_2_with_the_choices(capsys):
    assert main(["env", "play", "--task", "fridge", "--episodes", "1"]) == 2
    assert "drawer_open" in capsys.readouterr().err
    assert main(["env", "play", "--task", "all", "--policy", "oracle", "--episodes", "1"]) == 2
    assert "autonomous" in capsys.readouterr().err
    assert main(["env", "render", "--task", "all", "--instruction", "fly", "--out", "x.png"]) == 2
    assert "open the top drawer" in capsys.readouterr().err


def test_bench_env_writes_its_section(tmp_path, capsys):
    out = tmp_path / "benchmarks.md"
    out.write_text("# qtbench benchmarks\n\n<!-- qtbench:leaderboard -->\nkeep me\n<!-- /qtbench:leaderboard -->\n")
    assert main(["bench", "env", "--steps", "30", "--out", str(out)]) == 0
    text = out.read_text()
    assert "keep me" in text and "<!-- qtbench:env -->" in text
    for skill in ("drawer_open", "drawer_close", "pick_place", "move_near"):
        assert f"| {skill} | random |" in text and f"| {skill} | expert |" in text
    assert "30 env steps per row" in text


def test_bench_env_without_metaworld_says_how_to_get_it(tmp_path, capsys):
    code = main(["bench", "env", "--steps", "5", "--compare-metaworld", "--metaworld-python", "/nonexistent/python",
                 "--out", str(tmp_path / "b.md")])
    assert code == 2
    assert "pip install metaworld" in capsys.readouterr().err
