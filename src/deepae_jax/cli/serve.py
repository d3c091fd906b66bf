"""``deepae serve --checkpoint=LOGDIR``: the JSON service over a trained model
(:mod:`deepae_jax.serve.app`, which needs the serve extra); also ``python -m deepae_jax.serve``
and the ``deepae-serve`` script."""
from __future__ import annotations

import logging
import socket
import sys
from typing import Sequence

from deepae_jax.cli.flags import Command, error, run_command
from deepae_jax.extras import require


def run_serve(cfg, args: Sequence[str] = ()) -> int:
    """Runs the service until it is stopped; 2 after one ``error:`` line for a model that does
    not load or an address it cannot listen on."""
    from deepae_jax.serve.app import Recommender, create_app
    logging.getLogger("deepae_jax").setLevel(cfg.log_level.upper())
    uvicorn = require("uvicorn", "serve", "deepae serve")
    try:
        rec = Recommender.from_logdir(cfg.checkpoint, cfg.path_to_train_data or None,
                                      cfg.save_path, cfg.delimiter or None,
                                      cfg.column_order or None, cfg.batch_size)
        rec.warm_up()
    except (ValueError, OSError) as e:
        error(e)
        return 2
    app = create_app(rec, cfg.max_body_bytes, cfg.max_k)
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError as e:
        error(f"cannot listen on {cfg.host}:{cfg.port} ({e})")
        return 2
    sock.listen(2048)  # connections made from now on wait for uvicorn instead of failing
    port = sock.getsockname()[1]
    print(f"serving {rec.checkpoint} ({len(rec.user_ids)} users, {rec.n_items} items, "
          f"{rec.major[:-1]}-based) on http://{cfg.host}:{port}", flush=True)
    config = uvicorn.Config(app, log_level=cfg.log_level, access_log=False,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def command() -> Command:
    """``deepae serve`` (imports the service, which needs FastAPI: the serve extra)."""
    require("fastapi", "serve", "deepae serve")
    from deepae_jax.serve import app
    return Command("serve", app.ServeConfig, run_serve, SUMMARY, app.__doc__)


SUMMARY = "a JSON service over a trained model (the serve extra)"


def main(argv: Sequence[str] | None = None) -> int:
    """``deepae serve [flags]``; returns the exit code."""
    return run_command(command(), list(sys.argv[1:] if argv is None else argv), "deepae serve")


def run() -> None:
    """Console-script entry point (``deepae-serve``)."""
    sys.exit(main())
