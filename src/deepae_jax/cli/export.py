"""``deepae export --checkpoint=LOGDIR --out=DIR``: the inference network as ONNX and
``jax.export`` (:mod:`deepae_jax.export`); also ``python -m deepae_jax.export`` and the
``deepae-export`` script."""
from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from deepae_jax import export
from deepae_jax.cli.flags import Command, error, run_command
from deepae_jax.run import checkpoint as ckpt


def run_export(cfg: export.ExportConfig, args: Sequence[str] = ()) -> int:
    """Exports as ``cfg`` says and prints ``what<TAB>path<TAB>size``; 2 after one ``error:``
    line when the export fails."""
    logging.getLogger("deepae_jax").setLevel(logging.WARNING)
    try:
        written = export.export_model(cfg.checkpoint, cfg.out, cfg.save_path,
                                      export.split_list(cfg.formats),
                                      export.split_list(cfg.platforms), cfg.opset)
    except (export.ExportError, ckpt.CheckpointError, ValueError, OSError) as e:
        error(e)
        return 2
    for what, path in written.items():
        print(f"{what}\t{path}\t{os.path.getsize(path)} bytes")
    return 0


COMMAND = Command("export", export.ExportConfig, run_export,
                  "the model as ONNX and jax.export files (ONNX: the export extra)",
                  export.__doc__)


def main(argv: Sequence[str] | None = None) -> int:
    """``deepae export [flags]``; returns the exit code."""
    return run_command(COMMAND, list(sys.argv[1:] if argv is None else argv), "deepae export")


def run() -> None:
    """Console-script entry point (``deepae-export``)."""
    sys.exit(main())
