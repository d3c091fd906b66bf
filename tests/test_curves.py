"""run/curves.py and ``deepae plot``: the learning curves, read back from the figure's data."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the plots extra (matplotlib) is not installed")

from deepae_jax.cli import app  # noqa: E402
from deepae_jax.run import curves  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_run(folder, train, evals, baselines=None, best=None):
    """A logdir with metrics.jsonl rows as the trainer writes them (and summary.json)."""
    folder.mkdir()
    rows = [{"kind": "baseline", "step": 0, **baselines}] if baselines else []
    rows += [{"kind": "epoch", "step": e, "epoch": e, "train_rmse": t, "eval_rmse": v}
             for e, (t, v) in enumerate(zip(train, evals), start=1)]
    rows.append({"kind": "epoch", "step": 1, "epoch": 1, "train_rmse": train[0],
                 "eval_rmse": evals[0]})  # a resumed run's repeated row: counted once
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows)
                                          + "{damaged\n")
    if best is not None:
        (folder / "summary.json").write_text(json.dumps({"best_epoch": best}))
    return str(folder)


def lines_by_label(fig):
    return {line.get_label(): line for line in fig.axes[0].get_lines()}


def test_curves_hold_the_metrics_of_every_run(tmp_path):
    a = fake_run(tmp_path / "a", [1.5, 1.1, 0.9], [1.2, 1.0, 1.05],
                 {"global_rmse": 1.13, "bias_rmse": 1.01}, best=2)
    b = fake_run(tmp_path / "b", [2.0, 1.4], [1.3, 1.25])
    fig = curves.plot_runs([a, b])
    lines = lines_by_label(fig)
    assert len(lines) == 5 + 3  # a: train, eval, best, 2 baselines; b: train, eval, best
    np.testing.assert_allclose(lines["a train"].get_ydata(), [1.5, 1.1, 0.9])
    np.testing.assert_allclose(lines["a eval"].get_ydata(), [1.2, 1.0, 1.05])
    np.testing.assert_allclose(lines["a train"].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(lines["b eval"].get_ydata(), [1.3, 1.25])
    assert list(lines["a best epoch 2"].get_xydata()[0]) == [2, 1.0]  # summary.json's epoch
    assert list(lines["b best epoch 2"].get_xydata()[0]) == [2, 1.25]  # lowest eval RMSE
    np.testing.assert_allclose(lines["a baseline: user + item biases"].get_ydata(), [1.01, 1.01])
    np.testing.assert_allclose(lines["a baseline: global mean"].get_ydata(), [1.13, 1.13])


def test_a_run_without_evaluation_has_only_its_train_curve(tmp_path):
    a = fake_run(tmp_path / "a", [1.5, 1.1], [None, None])
    assert list(lines_by_label(curves.plot_runs([a]))) == ["a train"]


def test_saved_png_and_svg_are_valid(tmp_path):
    import matplotlib.image
    a = fake_run(tmp_path / "a", [1.5, 1.1], [1.2, 1.0])
    png = curves.save_figure(curves.plot_runs([a]), str(tmp_path / "c.png"))
    assert open(png, "rb").read(8) == PNG_SIGNATURE
    assert matplotlib.image.imread(png).shape[2] in (3, 4)
    svg = curves.save_figure(curves.plot_runs([a]), str(tmp_path / "c.svg"))
    assert "<svg" in open(svg).read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.png", "c.svg"]  # no temp file


def test_deepae_plot_overlays_runs_and_refuses_bad_input(tmp_path, capsys):
    a = fake_run(tmp_path / "a", [1.5, 1.1], [1.2, 1.0])
    b = fake_run(tmp_path / "b", [1.6, 1.2], [1.3, 1.1])
    out = tmp_path / "both.png"
    assert app.main(["plot", a, b, f"--out={out}", "--labels=first,second"]) == 0
    assert open(out, "rb").read(8) == PNG_SIGNATURE and "wrote" in capsys.readouterr().out
    assert app.main(["plot", a, str(tmp_path / "none"), f"--out={tmp_path / 'x.png'}"]) == 2
    assert "none: no metrics.jsonl" in capsys.readouterr().err
    assert app.main(["plot", a, b, f"--out={out}", "--labels=one"]) == 2
    assert "--labels='one': 1 label(s) for 2 run(s)" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
