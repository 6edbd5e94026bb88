"""`qtbench headroom`: pairs the bc and bc robust-only cells by seed and writes its section."""

from __future__ import annotations

import json
from dataclasses import asdict

from qtbench.cli import main
from qtbench.results import wilson_interval
from qtbench.train import reference_config


def write_cell(root, label_dir, seed, successes, episodes=300, algo_config=None):
    cell = root / label_dir / "drawer_open" / "bc" / f"seed{seed}"
    cell.mkdir(parents=True)
    rate = successes / episodes
    record = {"task": "drawer_open", "algo": "bc", "seed": seed, "success_rate": rate, "train_steps": 3000,
              "machine": "test machine",
              "ci95": list(wilson_interval(successes, episodes)),
              "per_skill": {"drawer_open": {"episodes": episodes, "successes": successes}}}
    (cell / "eval.json").write_text(json.dumps(record))
    if algo_config is not None:
        (cell / "config.json").write_text(json.dumps({"algo_config": algo_config}))


def test_pairs_seeds_and_writes_the_section(tmp_path, capsys, monkeypatch, caplog):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "no-data"))
    root = tmp_path / "results"
    for seed, (robust, every) in enumerate([(150, 90), (180, 105)]):
        write_cell(root, "ablations/bc+demo_styles__robust___", seed, robust)
        write_cell(root, ".", seed, every)
    write_cell(root, "ablations/bc+demo_styles__robust___", 2, 100)  # unpaired: left out
    # made with another learning rate than the all-demos run: left out
    defaults = json.loads(json.dumps(asdict(reference_config("bc"))))
    write_cell(root, "ablations/bc+demo_styles__robust___", 3, 200,
               algo_config=dict(defaults, learning_rate=defaults["learning_rate"] / 3, demo_styles=["robust"]))
    write_cell(root, ".", 3, 90, algo_config=defaults)
    bench = tmp_path / "benchmarks.md"
    assert main(["headroom", "--results-dir", str(root), "--benchmarks", str(bench)]) == 0
    text = bench.read_text()
    # robust 50.0, 60.0; all 30.0, 35.0; paired differences 20, 25: mean 22.5, t(0.975, 1) = 12.706,
    # sd 3.536 -> half width 31.77
    assert "| drawer_open | 55.0 ± 7.1 [0.0, 100.0] | 32.5 ± 3.5 [0.7, 64.3] | +22.5 [-9.3, +54.3] | 300 | 0, 1 |" in text
    lo, hi = wilson_interval(150, 300)
    assert f"| drawer_open | 0 | 50.0 [{100 * lo:.1f}, {100 * hi:.1f}] |" in text
    assert "<!-- qtbench:headroom -->" in text and "| drawer_open | 2 |" not in text
    assert "| drawer_open | 3 |" not in text and "differ in learning_rate besides the demo styles" in caplog.text
    assert "- machine: test machine" in text


def test_nothing_to_pair_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "results"
    write_cell(root, ".", 0, 90)
    bench = tmp_path / "benchmarks.md"
    assert main(["headroom", "--results-dir", str(root), "--benchmarks", str(bench)]) == 2
    err = capsys.readouterr().err
    assert "qtbench: error:" in err and "demo_styles=robust" in err and not bench.exists()
