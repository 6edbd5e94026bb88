import json

import pytest

from qtbench.atomic import atomic_write, atomic_write_json
from qtbench.benchmarks_md import HEADER, markdown_table, write_section


def test_sections_are_replaced_in_place(tmp_path):
    path = tmp_path / "benchmarks.md"
    write_section("env", "env v1", path)
    write_section("data", "data v1", path)
    write_section("env", "env v2", path)
    text = path.read_text()
    assert text.startswith(HEADER)
    assert "env v1" not in text and text.index("env v2") < text.index("data v1")
    assert text.count("<!-- qtbench:env -->") == 1


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "eval.json", {})
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
