"""Export of the inference network: jax.export artifact and ONNX (the optional export extra)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deepae_jax import export
from deepae_jax.core import model
from deepae_jax.cli import export as export_cli
from conftest import TINY_SPEC as SPEC

MISSING_EXTRA = [m for m in ("jax2onnx", "onnx", "onnxruntime")
                 if importlib.util.find_spec(m) is None]


def onnx_export_unsupported() -> str:
    """Why ONNX export cannot run here ('' when it can)."""
    if MISSING_EXTRA:
        return (f"the export extra is not installed (missing {', '.join(MISSING_EXTRA)}): "
                "pip install 'deepae_jax[export]'")
    try:
        export._import_jax2onnx()
    except export.ExportError as e:
        return str(e)
    return ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    # tied decoder, linear last layer: the variants the converter must handle too
    root, cfg = tiny_model
    params, model_cfg, _ = export.load_trained(cfg.logdir)
    rng = np.random.default_rng(0)
    x = (rng.random((7, SPEC.n_items)) < 0.3) * rng.integers(1, 6, (7, SPEC.n_items))
    x = x.astype(np.float32)
    expected = np.asarray(model.apply(params, x, model_cfg))
    return root, cfg, x, expected


STANDALONE = textwrap.dedent("""
    import sys
    import numpy as np
    import jax
    exp = jax.export.deserialize(open(sys.argv[1], "rb").read())
    x = np.load(sys.argv[2])
    np.save(sys.argv[3], np.asarray(exp.call(x)))
    np.save(sys.argv[4], np.asarray(exp.call(x[:1])))
    assert not any(m.startswith("deepae_jax") for m in sys.modules), "training code imported"
""")


def test_jax_export_artifact_runs_without_the_training_code(trained, tmp_path, capsys):
    root, cfg, x, expected = trained
    out = tmp_path / "exported"
    assert export_cli.main(["--checkpoint", cfg.logdir, "--out", str(out), "--formats", "jax"]) == 0
    assert "model.jax_export" in capsys.readouterr().out
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["files"]["jax"] == "model.jax_export" and manifest["n_items"] == SPEC.n_items
    with np.load(out / "vocab.npz") as z:
        assert len(z["col_ids"]) == SPEC.n_items and str(z["major"]) == "users"
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "standalone.py"
    script.write_text(STANDALONE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, str(script), str(out / "model.jax_export"),
                    str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(tmp_path / "y1.npy")],
                   check=True, cwd=str(tmp_path), env=env, timeout=120)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "y1.npy"), expected[:1], rtol=0, atol=1e-5)


@pytest.mark.skipif(bool(onnx_export_unsupported()), reason=onnx_export_unsupported())
def test_onnx_file_matches_jax(trained, tmp_path):
    import onnxruntime as ort
    root, cfg, x, expected = trained
    written = export.export_model(cfg.logdir, str(tmp_path / "onnx"), formats=["onnx"])
    session = ort.InferenceSession(written["onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["ratings"]
    assert session.get_inputs()[0].shape[1] == SPEC.n_items
    for batch in (x, x[:1]):  # dynamic batch dimension
        (y,) = session.run(["predictions"], {"ratings": batch})
        np.testing.assert_allclose(y, expected[:len(batch)], rtol=0, atol=1e-5)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["deepae.layer_sizes"]) == [SPEC.n_items, 12, 6]


def test_missing_converter_is_a_clear_error(trained, tmp_path, monkeypatch):
    root, cfg, _, _ = trained
    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    with pytest.raises(export.ExportError, match=r"deepae_jax\[export\]"):
        export.export_model(cfg.logdir, str(tmp_path / "x"), formats=["onnx"])
    assert not (tmp_path / "x").exists()  # refused before anything is written
    assert export_cli.main(["--checkpoint", cfg.logdir, "--out", str(tmp_path / "y"),
                        "--formats", "onnx"]) == 2
    with pytest.raises(ValueError, match="formats"):
        export.export_model(cfg.logdir, str(tmp_path / "z"), formats=["tflite"])


@pytest.mark.skipif(bool(MISSING_EXTRA), reason="the export extra is not installed")
def test_onnx_export_on_a_jax_too_new_for_jax2onnx_is_one_clear_error(trained, tmp_path,
                                                                        monkeypatch):
    """jax2onnx <= 0.17.1 on a jax without ``jax._src.core.ClosedJaxpr`` (0.12): an ExportError
    naming both versions and the jax it needs, and no output folder."""
    root, cfg, _, _ = trained
    monkeypatch.setattr(export, "_jax_has_closed_jaxpr", lambda: False)  # as on jax 0.12
    with pytest.raises(export.ExportError, match=r"jax2onnx \S+ does not run on jax .*jax<0\.12"):
        export.export_model(cfg.logdir, str(tmp_path / "x"), formats=["onnx", "jax"])
    assert not (tmp_path / "x").exists()


def test_re_export_removes_files_it_did_not_write(trained, tmp_path):
    """A jax-only export into a folder of an earlier ONNX export used to leave model.onnx."""
    root, cfg, _, _ = trained
    out = tmp_path / "again"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"an earlier export's model")
    written = export.export_model(cfg.logdir, str(out), formats=["jax"])
    assert sorted(os.listdir(out)) == ["export.json", "model.jax_export", "vocab.npz"]
    assert set(json.loads((out / "export.json").read_text())["files"].values()) == set(
        os.path.basename(p) for k, p in written.items() if k != "manifest")


@pytest.mark.parametrize("argv,needle", [
    (["--out=x"], "--checkpoint='': required"),
    (["--checkpoint=x"], "--out='': required"),
    (["--checkpoint=x", "--out=y", "--formats=tflite"], "--formats='tflite': expected"),
    (["--checkpoint=x", "--out=y", "--platforms="], "--platforms='': expected"),
    (["--checkpoint=x", "--out=y", "--opset=abc"], "flag --opset=abc"),
    (["--checkpoint=x", "--out=y", "--format=jax"], "Unknown command line flag 'format'"),
])
def test_bad_flags_are_one_error_line_naming_the_flag(argv, needle, capsys):
    assert export_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_help_lists_the_flags_generated_from_export_config():
    import dataclasses
    proc = subprocess.run([sys.executable, "-m", "deepae_jax", "export", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for f in dataclasses.fields(export.ExportConfig):
        assert f"--{f.name}: " in proc.stdout, f.name
    assert "--mode" not in proc.stdout  # the trainer's flags are not the exporter's


@pytest.mark.skipif(bool(onnx_export_unsupported()), reason=onnx_export_unsupported())
@pytest.mark.parametrize("opset", [7, 29])  # invalid to onnx's checker / refused by onnxruntime
def test_an_opset_the_converter_cannot_honour_writes_nothing(trained, tmp_path, opset, capsys):
    """Issue 23, class 8: such a model was written (exit 0) and onnxruntime then refused it."""
    root, cfg, _, _ = trained
    out = tmp_path / "o"
    assert export_cli.main(["--checkpoint", cfg.logdir, "--out", str(out), "--formats", "onnx",
                        f"--opset={opset}"]) == 2
    err = capsys.readouterr().err
    assert f"error: --opset={opset}: " in err and "try another --opset" in err
    assert not out.exists()


def test_item_based_manifest_describes_an_item_based_model(tmp_path):
    from deepae_jax.config import Config
    from deepae_jax.data.datasets import synthetic
    from deepae_jax.training import trainer
    cfg = Config(path_to_train_data=str(tmp_path / "train"), logdir=str(tmp_path / "run"),
                 hidden_layers=(5,), major="items", batch_size=8, num_epochs=1, progress=False)
    synthetic.ensure_dataset(cfg.path_to_train_data, "", SPEC)
    trainer.train_and_evaluate(cfg)
    export.export_model(cfg.logdir, str(tmp_path / "out"), formats=["jax"])
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    with np.load(tmp_path / "out" / "vocab.npz") as z:
        n_items, n_users = len(z["row_ids"]), len(z["col_ids"])  # rows are items
    assert manifest["major"] == "items"
    assert (manifest["n_items"], manifest["n_users"]) == (n_items, n_users) != (n_users, n_items)
    assert manifest["input"]["shape"] == ["B", n_users]
    assert manifest["input"]["is"] == "one item's ratings of every user (0 = unrated)"
    assert "ORIGINAL user id of column j" in manifest["columns"]
