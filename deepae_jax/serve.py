"""A small HTTP JSON service over a trained model (FastAPI on uvicorn; ``pip install .[serve]``).

``python -m deepae_jax.serve --checkpoint LOGDIR [--port 8000] [--host 127.0.0.1]``

LOGDIR is the ``--logdir`` of a training run (checkpoints + vocab.npz). Known users are scored from
their TRAINING ratings, so the service loads the training data: ``--path_to_train_data``, by default
the path recorded in ``LOGDIR/config.json``. Without it only new users (given ratings) are served.
All ids are the ORIGINAL ids of the data.

* ``POST /recommend`` ``{"user": ID, "k": K}`` (a training user) or
  ``{"ratings": [{"item": ID, "rating": R}, ...], "k": K}`` (a new user, scored from these ratings
  in one forward pass) -> ``{"user": ID|null, "k": K, "recommendations": [{"item": ID,
  "rating": PREDICTED}, ...]}``, best first, excluding items the user rated. ``k`` defaults to 10.
* ``POST /predict`` ``{"user": ID, "items": [ID, ...]}`` (or ``"ratings"`` instead of ``"user"``)
  -> ``{"user": ID|null, "predictions": [{"item": ID, "rating": PREDICTED}, ...]}``.
* ``GET /healthz`` -> ``{"status": "ok", "users": N, "items": N, "checkpoint": FILE}``.

Errors are JSON ``{"error": MESSAGE}`` with a 4xx status: 400 malformed JSON, 404 unknown user or
path, 405 wrong method, 413 body over ``--max_body_bytes``, 422 invalid fields (unknown item ids,
k out of range, a rating of 0, a rating that is not a JSON number or is outside the
training ratings' range, ...). A bad request never stops the service.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import sys
from typing import Annotated, Optional

import numpy as np

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, model_validator
    from starlette.exceptions import HTTPException
except ImportError as e:  # pragma: no cover (the serve extra is optional)
    raise ImportError(f"the JSON service needs FastAPI and uvicorn ({e}); install the serve "
                      "extra: pip install 'deepae_jax[serve]'") from None

from deepae_jax.recommend import Recommender, RecommendError, UnknownIdError

log = logging.getLogger("deepae_jax.serve")

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_K = 1000
DEFAULT_MAX_ITEMS = 10_000

Id = Annotated[int, Field(strict=True, ge=-(2 ** 63), le=2 ** 63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RatingIn(_Strict):
    item: Id
    # strict: a JSON number only ("5" and true are refused); the range is checked against the
    # model's rating scale (Recommender.vector)
    rating: Annotated[float, Field(strict=True, allow_inf_nan=True)]


class _UserOrRatings(_Strict):
    user: Optional[Id] = None
    ratings: Optional[list[RatingIn]] = None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.user is None) == (self.ratings is None):
            raise ValueError('give exactly one of "user" (a known user id) or "ratings" '
                             '(a new user\'s [{"item": ID, "rating": R}, ...])')
        return self


class RecommendRequest(_UserOrRatings):
    k: Annotated[int, Field(strict=True)] = 10


class PredictRequest(_UserOrRatings):
    items: list[Id]


class _BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = HTTPException(413, f"request body over the limit of {self.max_bytes} bytes")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    response = JSONResponse({"error": too_large.detail}, 413)
                    return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message
        return await self.app(scope, limited_receive, send)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    parts, status = [], 422
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            status = 400
            reason = (err.get("ctx") or {}).get("error", "")
            parts.append(f"malformed JSON body ({reason})" if reason else "malformed JSON body")
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        if not loc and err.get("type") in ("model_attributes_type", "dict_type", "model_type"):
            parts.append("the body must be a JSON object (sent with Content-Type: "
                         "application/json)")
            continue
        msg = str(err.get("msg", "invalid"))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return status, "; ".join(parts) or "invalid request"


def create_app(rec: Recommender, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_k: int = DEFAULT_MAX_K, max_items: int = DEFAULT_MAX_ITEMS) -> FastAPI:
    """The FastAPI application serving ``rec`` (see the module docstring)."""
    app = FastAPI(title="deepae_jax", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    k_max = min(max_k, rec.n_items)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, message = _validation_message(exc)
        return JSONResponse({"error": message}, status)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such path: {request.url.path}"
        elif exc.status_code == 400:  # FastAPI could not read the body (e.g. not UTF-8)
            detail = f"malformed JSON body ({detail})"
        return JSONResponse({"error": str(detail)}, exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RecommendError)
    async def _rec_error(request: Request, exc: RecommendError):
        status = 404 if isinstance(exc, UnknownIdError) and exc.kind == "user" else 422
        return JSONResponse({"error": str(exc)}, status)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # logged, answered, service goes on
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, 500)

    def vector_of(req: _UserOrRatings) -> np.ndarray:
        if req.user is not None:
            return rec.training_vector(req.user)
        if len(req.ratings) > rec.n_items:
            raise RecommendError(f"ratings: {len(req.ratings)} ratings, more than the "
                                 f"{rec.n_items} items")
        values = [r.rating for r in req.ratings]
        if not all(math.isfinite(v) and v != 0 for v in values):
            raise RecommendError("ratings: every rating must be a finite non-zero number "
                                 "(0 means 'unrated')")
        return rec.vector([r.item for r in req.ratings], values)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "users": int(len(rec.user_ids)), "items": rec.n_items,
                "checkpoint": os.path.basename(rec.checkpoint),
                "rating_range": list(rec.rating_range) if rec.rating_range else None}

    @app.post("/recommend")
    def recommend(req: RecommendRequest):
        if not 1 <= req.k <= k_max:
            raise RecommendError(f"k={req.k} is out of range: must be in 1..{k_max}")
        top = rec.recommend_vector(vector_of(req), req.k)
        return {"user": req.user, "k": req.k,
                "recommendations": [{"item": i, "rating": s} for i, s in top]}

    @app.post("/predict")
    def predict(req: PredictRequest):
        if not 1 <= len(req.items) <= max_items:
            raise RecommendError(f"items: give 1..{max_items} item ids, got {len(req.items)}")
        cols = rec.item_columns(req.items)
        x = vector_of(req)
        out = rec.predict_dense(x)[0, cols]
        return {"user": req.user,
                "predictions": [{"item": int(i), "rating": float(s)}
                                for i, s in zip(req.items, out)]}

    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepae_jax.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="the --logdir of a training run (checkpoints + vocab.npz)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    parser.add_argument("--path_to_train_data", default=None,
                        help="the training ratings (default: from CHECKPOINT/config.json)")
    parser.add_argument("--save_path", default="", help="a checkpoint file (default: latest)")
    parser.add_argument("--delimiter", default=None, help="field separator of text ratings")
    parser.add_argument("--column_order", default=None,
                        choices=["user,item,rating", "item,user,rating"])
    parser.add_argument("--batch_size", type=int, default=1,
                        help="rows per forward pass (compiled shape); the CLI's "
                             "--eval_batch_size gives bit-identical scores")
    parser.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--max_k", type=int, default=DEFAULT_MAX_K)
    parser.add_argument("--log_level", default="warning",
                        choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    import uvicorn
    try:
        rec = Recommender.from_logdir(args.checkpoint, args.path_to_train_data, args.save_path,
                                      args.delimiter, args.column_order, args.batch_size)
        rec.warm_up()
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = create_app(rec, args.max_body_bytes, args.max_k)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e})", file=sys.stderr)
        return 2
    sock.listen(2048)  # connections made from now on wait for uvicorn instead of failing
    port = sock.getsockname()[1]
    print(f"serving {rec.checkpoint} ({len(rec.user_ids)} users, {rec.n_items} items) on "
          f"http://{args.host}:{port}", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
