"""Export the inference network of a trained model: ONNX (via jax2onnx) and ``jax.export``.

``deepae export --checkpoint=LOGDIR --out=DIR`` (also ``python -m deepae_jax.export``) writes to DIR
(flags generated from :class:`ExportConfig`; ``--help`` lists them; the command is
:mod:`deepae_jax.cli.export`):

* ``model.onnx``: input ``ratings`` float32[B, n_items] (a user's ratings, 0 = unrated), output
  ``predictions`` float32[B, n_items]; B is a dynamic batch dimension. Needs the ``export``
  extra (``pip install deepae_jax[export]``: jax2onnx, onnx, onnxruntime).
* ``model.jax_export``: a serialized :func:`jax.export.export` artifact of the same function
  (parameters embedded), lowered for CPU and CUDA; load it with only JAX installed::

      exp = jax.export.deserialize(open("model.jax_export", "rb").read())
      predictions = exp.call(ratings)  # ratings: float32[B, n_items]

* ``vocab.npz``: the id maps (``col_ids``: the ORIGINAL item id of each input/output column;
  ``row_ids``: the training users), and ``export.json``: what was exported, from which checkpoint.

Dropout is off (evaluation mode); the network is f(x) of PAPER.md.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Sequence

import jax
import jax.numpy as jnp

from deepae_jax.run import files
from deepae_jax.run import checkpoint as ckpt
from deepae_jax.core import model
from deepae_jax import settings
from deepae_jax.settings import setting
from deepae_jax.run.files import atomic_write, atomic_write_text

log = logging.getLogger("deepae_jax")

FORMATS = ("onnx", "jax")
INPUT_NAME, OUTPUT_NAME = "ratings", "predictions"
ONNX_FILE, JAX_FILE, MANIFEST_FILE = "model.onnx", "model.jax_export", "export.json"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
EXTRA_HINT = "install the export extra: pip install 'deepae_jax[export]'"


def split_list(text: str) -> tuple[str, ...]:
    """``"onnx, jax"`` -> ("onnx", "jax") (empty items dropped)."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Every setting of ``python -m deepae_jax.export``; its absl flags are generated from
    these fields."""

    checkpoint: str = setting("", "The --logdir of a training run (checkpoints + vocab.npz); "
                              "required.")
    out: str = setting("", "Output folder; required.")
    save_path: str = setting("", "A checkpoint file (default: the latest that loads).")
    formats: str = setting("onnx,jax", "What to export: onnx, jax or onnx,jax.")
    platforms: str = setting("cpu,cuda", "Platforms of the jax.export artifact, "
                             "comma-separated: " + ", ".join(PLATFORMS) + ".")
    opset: int = setting(21, "ONNX opset.")

    def __post_init__(self):
        bad = lambda flag, why: settings.bad_setting(self, flag, why)  # noqa: E731
        for flag in ("checkpoint", "out"):
            if not getattr(self, flag):
                bad(flag, "required")
        if not split_list(self.formats) or set(split_list(self.formats)) - set(FORMATS):
            bad("formats", f"expected comma-separated formats among {list(FORMATS)}")
        if not split_list(self.platforms) or set(split_list(self.platforms)) - set(PLATFORMS):
            bad("platforms", f"expected comma-separated platforms among {list(PLATFORMS)}")
        if self.opset < 1:
            bad("opset", "must be >= 1")


class ExportError(RuntimeError):
    """Export could not be done (e.g. the optional converter is not installed)."""


def load_trained(logdir: str, save_path: str = ""):
    """(params, model config, checkpoint path) of the newest checkpoint of ``logdir`` that
    loads (or ``save_path``), via checkpoint.restore."""
    restored = ckpt.restore(logdir, save_path)
    return restored.params, restored.model_cfg, restored.path


def inference_fn(params: model.Params, model_cfg: model.ModelConfig):
    """x float32[B, n] -> f(x) float32[B, n], the parameters closed over (exported as constants)."""
    params = jax.tree_util.tree_map(jnp.asarray, params)

    def predict(x):
        return model.apply(params, x, model_cfg, train=False)
    return predict


JAX2ONNX_TESTED = "0.17.1"  # the newest jax2onnx, tested with jax 0.7-0.11; it fails on 0.12
JAX_FOR_ONNX = "jax<0.12"


def _import_jax2onnx():
    """jax2onnx, or ExportError naming what to install: it is missing, or too old for this jax
    (jax2onnx <= 0.17.1 reads ``jax._src.core.ClosedJaxpr``, which jax 0.12 removed)."""
    try:
        import jax2onnx  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs jax2onnx and onnx ({e}); {EXTRA_HINT}") from None
    from importlib import metadata
    version = metadata.version("jax2onnx")
    if not _jax_has_closed_jaxpr() and _version(version) <= _version(JAX2ONNX_TESTED):
        raise ExportError(f"ONNX export: jax2onnx {version} does not run on jax {jax.__version__}"
                          f" (it needs {JAX_FOR_ONNX}); install '{JAX_FOR_ONNX}' for ONNX "
                          "export, or export --formats=jax (jax.export, any jax)")
    return jax2onnx


def _jax_has_closed_jaxpr() -> bool:
    """Whether this jax still has ``jax._src.core.ClosedJaxpr`` (what jax2onnx 0.17.1 reads)."""
    from jax._src import core as jax_core
    return hasattr(jax_core, "ClosedJaxpr")


def _version(text: str) -> tuple[int, ...]:
    """The leading numbers of a version string ("0.17.1" -> (0, 17, 1))."""
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits or not piece[0].isdigit():
            break
        parts.append(int(digits))
    return tuple(parts)


def _load_core_plugins_only() -> bool:
    """Registers only jax2onnx's plugins for JAX primitives.

    jax2onnx's first conversion imports every plugin, including its Flax/Equinox examples, which
    compile JAX code at import time (20 s and more on a small CPU); our network only needs the
    JAX primitives. Uses jax2onnx internals, so any mismatch returns False and the normal,
    complete plugin import happens instead.
    """
    try:
        from pathlib import Path
        from jax2onnx.plugins import plugin_system as ps
        if getattr(ps, "_already_imported_plugins", True):
            return False
        ps._import_tree(Path(ps.__file__).parent / "jax", "jax2onnx.plugins.jax")
        ps._already_imported_plugins = True
        return True
    except Exception:  # noqa: BLE001 (an internal API changed: fall back to the full import)
        return False


def _reset_plugins() -> None:
    try:
        from jax2onnx.plugins import plugin_system as ps
        ps._already_imported_plugins = False
    except Exception:  # noqa: BLE001
        pass


def to_onnx_model(params: model.Params, model_cfg: model.ModelConfig, opset: int = 21):
    """The network as an ``onnx.ModelProto`` with a dynamic batch dimension ``B``."""
    _import_jax2onnx()
    from jax2onnx import to_onnx
    n = model_cfg.layer_sizes[0]
    fn = inference_fn(params, model_cfg)
    kwargs = dict(model_name="deepae", opset=opset, input_names=[INPUT_NAME],
                  output_names=[OUTPUT_NAME])
    partial = _load_core_plugins_only()
    try:
        return to_onnx(fn, [("B", n)], **kwargs)
    except Exception:
        if not partial:
            raise
        log.info("jax2onnx: retrying with all plugins")
        _reset_plugins()
        partial = False
        return to_onnx(fn, [("B", n)], **kwargs)
    finally:
        if partial:  # a later to_onnx call of the same process loads all plugins again
            _reset_plugins()


def to_jax_export(params: model.Params, model_cfg: model.ModelConfig,
                  platforms: Sequence[str] = ("cpu", "cuda")):
    """The network as a :class:`jax.export.Exported` with a symbolic batch dimension."""
    from jax import export as jax_export
    n = model_cfg.layer_sizes[0]
    batch, = jax_export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((batch, n), jnp.float32)
    return jax_export.export(jax.jit(inference_fn(params, model_cfg)),
                             platforms=tuple(platforms))(spec)


def export_model(logdir: str, out_dir: str, save_path: str = "",
                 formats: Sequence[str] = FORMATS, platforms: Sequence[str] = ("cpu", "cuda"),
                 opset: int = 21) -> dict[str, str]:
    """Writes the requested formats, ``vocab.npz`` and ``export.json`` to ``out_dir``; returns
    {what: path}."""
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    restored = ckpt.restore(logdir, save_path)
    params, model_cfg, path = restored.params, restored.model_cfg, restored.path
    folder = os.path.dirname(os.path.abspath(path))
    baseline = restored.spec.extras.get("baseline", "none")
    if baseline != "none" or os.path.isfile(os.path.join(folder, files.BASELINE_FILE)):
        raise ExportError(f"{path}: the model learned residuals of a --baseline={baseline}; "
                          "the exported network alone would not predict ratings (export of "
                          "such models is not supported yet: use the JSON service, "
                          "python -m deepae_jax.serve)")
    row_ids, col_ids, major = restored.row_ids, restored.col_ids, restored.major
    if "onnx" in formats:
        _import_jax2onnx()  # its errors before anything is written
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    if "onnx" in formats:
        proto = to_onnx_model(params, model_cfg, opset)
        for key, value in (("deepae.layer_sizes", json.dumps(list(model_cfg.layer_sizes))),
                           ("deepae.activation", model_cfg.activation),
                           ("deepae.major", major), ("deepae.checkpoint", os.path.basename(path))):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        data = proto.SerializeToString()
        written["onnx"] = os.path.join(out_dir, ONNX_FILE)
        atomic_write(written["onnx"], lambda fh: fh.write(data))
    if "jax" in formats:
        blob = bytes(to_jax_export(params, model_cfg, platforms).serialize())
        written["jax"] = os.path.join(out_dir, JAX_FILE)
        atomic_write(written["jax"], lambda fh: fh.write(blob))
    written["vocab"] = os.path.join(out_dir, files.VOCAB_FILE)
    if os.path.abspath(written["vocab"]) != os.path.abspath(os.path.join(folder, files.VOCAB_FILE)):
        with open(os.path.join(folder, files.VOCAB_FILE), "rb") as fh:
            vocab_bytes = fh.read()
        atomic_write(written["vocab"], lambda fh: fh.write(vocab_bytes))
    manifest = {"checkpoint": os.path.abspath(path), "major": major,
                "layer_sizes": list(model_cfg.layer_sizes), "activation": model_cfg.activation,
                "constrained": model_cfg.constrained,
                "last_layer_linear": model_cfg.last_layer_linear,
                "run_id": restored.run_id, "rating_range": restored.meta.get("rating_range"),
                "n_items": int(len(col_ids)), "n_users": int(len(row_ids)),
                "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["B", len(col_ids)]},
                "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["B", len(col_ids)]},
                "files": {k: os.path.basename(v) for k, v in written.items()},
                "jax_platforms": list(platforms) if "jax" in formats else [],
                "columns": "vocab.npz col_ids[j] is the ORIGINAL item id of column j"}
    written["manifest"] = os.path.join(out_dir, MANIFEST_FILE)
    atomic_write_text(written["manifest"], json.dumps(manifest, indent=2) + "\n")
    remove_stale(out_dir, written)
    return written


def remove_stale(out_dir: str, written: dict[str, str]) -> list[str]:
    """Removes the model files of an earlier export in ``out_dir`` that this export did not
    write (e.g. a model.onnx beside a new jax-only export); returns their paths."""
    kept = {os.path.abspath(p) for p in written.values()}
    stale = [os.path.join(out_dir, f) for f in (ONNX_FILE, JAX_FILE)
             if os.path.abspath(os.path.join(out_dir, f)) not in kept
             and os.path.isfile(os.path.join(out_dir, f))]
    for path in stale:
        os.unlink(path)
        log.warning("removed %s of an earlier export", path)
    return stale


if __name__ == "__main__":  # the command line lives in deepae_jax.cli (deepae export)
    from deepae_jax.cli.export import run
    run()
