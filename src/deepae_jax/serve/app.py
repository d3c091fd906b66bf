"""A small HTTP JSON service over a trained model (FastAPI on uvicorn; ``pip install .[serve]``).

``deepae serve --checkpoint=LOGDIR [--port=8000] [--host=127.0.0.1]`` (also ``python -m
deepae_jax.serve``; flags generated from :class:`ServeConfig`: ``--help`` lists them,
``--flagfile=FILE`` reads them; the command is :mod:`deepae_jax.cli.serve`)

LOGDIR is the ``--logdir`` of a training run (checkpoints + vocab.npz). Known users are scored from
their TRAINING ratings, so the service loads the training data: ``--path_to_train_data``, by default
the path recorded in ``LOGDIR/config.json``. Without it only new users (given ratings) are served.
All ids are the ORIGINAL ids of the data, in the model's type: JSON integers for a model trained
on integer ids, JSON strings (e.g. ``"u_17"``) for one trained on string ids; an id of the other
JSON type (``"17"`` for an integer-id model, ``17`` for a string-id one), a float or a boolean is
a 422 (:mod:`deepae_jax.serve.schema`). ``/healthz`` says which type each kind of id has.

* ``POST /recommend`` ``{"user": ID, "k": K}`` (a training user) or
  ``{"ratings": [{"item": ID, "rating": R}, ...], "k": K}`` (a new user, scored from these ratings
  in one forward pass) -> ``{"user": ID|null, "k": K, "recommendations": [{"item": ID,
  "rating": PREDICTED}, ...]}``, best first, excluding items the user rated. ``k`` defaults to 10.
* ``POST /predict`` ``{"user": ID, "items": [ID, ...]}`` (or ``"ratings"`` instead of ``"user"``)
  -> ``{"user": ID|null, "predictions": [{"item": ID, "rating": PREDICTED}, ...]}``.
* ``GET /healthz`` -> ``{"status": "ok", "users": N, "items": N, "checkpoint": FILE,
  "rating_range": [MIN, MAX], "major": "users"|"items", "new_users": BOOL,
  "ids": {"user": "int"|"str", "item": "int"|"str"}}``.

Item-based models (``--major=items``) serve their training users (by ``"user"``); they cannot
score a new user given by ``"ratings"`` (a new user would be an input column the model does not
have): such a request is a 422 saying so (``"new_users": false`` in ``/healthz``).

Errors are JSON ``{"error": MESSAGE}`` with a 4xx status: 400 malformed JSON, 404 unknown user or
path, 405 wrong method, 413 body over ``--max_body_bytes``, 422 invalid fields (unknown item ids,
an id of the wrong type, k out of range, a rating of 0, a rating that is not a JSON number or is
outside the training ratings' range, new users for an item-based model, ...). A bad request never
stops the service.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os

import numpy as np

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
    from deepae_jax.serve import schema as schema
except ImportError as e:  # pragma: no cover (the serve extra is optional)
    raise ImportError(f"the JSON service needs FastAPI and uvicorn ({e}); install the serve "
                      "extra: pip install 'deepae_jax[serve]'") from None

from deepae_jax import settings
from deepae_jax.settings import setting
from deepae_jax.config import MAX_EVAL_BATCH
from deepae_jax.data.ratings import COLUMN_ORDERS
from deepae_jax.recommend import Recommender, RecommendError, UnknownIdError

log = logging.getLogger("deepae_jax.serve")

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_K = 1000
DEFAULT_MAX_ITEMS = 10_000
MAX_HEADER_BYTES = 16 * 1024  # an unfinished header block past this is a 400
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Every setting of the service; its absl flags are generated from these fields."""

    checkpoint: str = setting("", "The --logdir of a training run (checkpoints + vocab.npz); "
                              "required.")
    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8000, "Port to listen on (0: any free port; the service prints it).")
    path_to_train_data: str = setting(
        "", "The training ratings, to score known users (default: the path recorded in "
        "CHECKPOINT/config.json).")
    save_path: str = setting("", "A checkpoint file (default: the latest that loads).")
    delimiter: str = setting("", "Field separator of text training ratings (default: as "
                             "recorded in CHECKPOINT/config.json).")
    column_order: str = setting("", "Column order of text training ratings: user,item,rating "
                                "or item,user,rating (default: as recorded in config.json).")
    batch_size: int = setting(1, "Rows per forward pass (the compiled shape); the CLI's "
                              "--eval_batch_size gives bit-identical scores.")
    max_body_bytes: int = setting(DEFAULT_MAX_BODY_BYTES, "Largest request body (bytes); "
                                  "larger ones get a 413.")
    max_k: int = setting(DEFAULT_MAX_K, "Largest k of /recommend.")
    header_timeout: float = setting(10.0, "Seconds a client may take to send a request's "
                                    "headers; then the connection is closed.")
    body_timeout: float = setting(30.0, "Seconds the service waits for each part of a "
                                  "request body; then a 408.")
    max_connections: int = setting(1000, "Open connections at most; requests past them get a "
                                   "503.")
    log_level: str = setting("warning", "Log level of the service and uvicorn.", LOG_LEVELS)

    def __post_init__(self):
        bad = lambda flag, why: settings.bad_setting(self, flag, why)  # noqa: E731
        settings.check_choices(self)
        if not self.checkpoint:
            bad("checkpoint", "required: the --logdir of a training run")
        if not 0 <= self.port <= 65535:
            bad("port", "must be in 0..65535 (0: any free port)")
        if self.column_order and self.column_order not in COLUMN_ORDERS:
            bad("column_order", f"choose one of {list(COLUMN_ORDERS)} (or leave it empty)")
        for flag in ("batch_size", "max_body_bytes", "max_k", "max_connections"):
            if getattr(self, flag) < 1:
                bad(flag, "must be >= 1")
        if self.batch_size > MAX_EVAL_BATCH:
            bad("batch_size", f"must be <= {MAX_EVAL_BATCH}: a batch holds rows x items "
                "float32 scores")
        for flag in ("header_timeout", "body_timeout"):
            if not 0 < getattr(self, flag) <= 3600:
                bad(flag, "must be in (0, 3600] seconds")


class _BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes`` (declared or streamed), 408
    when a part of the body takes over ``timeout`` seconds to arrive."""

    def __init__(self, app, max_bytes: int, timeout: float = 30.0):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

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
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:  # the client stalls: its connection is closed after
                # the answer ("Connection: close"), not held for the keep-alive timeout
                raise HTTPException(408, f"request body not received within {self.timeout:g} "
                                    "s", headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message
        return await self.app(scope, limited_receive, send)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON ``{"error": MESSAGE}`` with its 4xx status (500 for a bug, logged)."""
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, message = schema.validation_message(exc)
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


def create_app(rec: Recommender, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_k: int =
               DEFAULT_MAX_K, max_items: int = DEFAULT_MAX_ITEMS, body_timeout: float = 30.0):
    """The FastAPI application serving ``rec`` (see the module docstring)."""
    app = FastAPI(title="deepae_jax", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes, timeout=body_timeout)
    k_max = min(max_k, rec.n_items)

    _add_error_handlers(app)

    @app.get("/healthz")
    def healthz():
        return health(rec)

    @app.post("/recommend")
    def recommend(req: schema.RecommendRequest):
        if not 1 <= req.k <= k_max:
            raise RecommendError(f"k={req.k} is out of range: must be in 1..{k_max}")
        if req.user is not None:
            top = rec.recommend_users(np.asarray([known_user(rec, req.user)]), req.k).for_user(0)
        else:
            top = rec.recommend_vector(new_user_vector(rec, req), req.k)
        return {"user": req.user, "k": req.k,
                "recommendations": [{"item": i, "rating": s} for i, s in top]}

    @app.post("/predict")
    def predict(req: schema.PredictRequest):
        if not 1 <= len(req.items) <= max_items:
            raise RecommendError(f"items: give 1..{max_items} item ids, got {len(req.items)}")
        items = schema.model_ids(req.items, rec.item_ids, "item",
                                 [f"items.{j}" for j in range(len(req.items))])
        cols = rec.item_columns(items)
        if req.user is not None:
            scores = rec.user_scores(np.asarray([known_user(rec, req.user)]))[0]
        else:
            scores = rec.predict_dense(new_user_vector(rec, req))[0]
        return {"user": req.user,
                "predictions": [{"item": rec.item_ids[c].item(), "rating": float(scores[c])}
                                for c in cols]}

    return app


def health(rec: Recommender) -> dict:
    """The body of ``GET /healthz``: sizes, checkpoint, rating scale, major and id types."""
    return {"status": "ok", "users": int(len(rec.user_ids)), "items": rec.n_items,
            "checkpoint": os.path.basename(rec.checkpoint),
            "rating_range": list(rec.rating_range) if rec.rating_range else None,
            "major": rec.major, "new_users": rec.major == "users",
            "ids": {"user": schema.id_kind(rec.user_ids), "item": schema.id_kind(rec.item_ids)}}


def known_user(rec: Recommender, user: schema.RawId) -> schema.RawId:
    """A request's ``"user"`` checked against the model's user id type (422 otherwise)."""
    return schema.model_ids([user], rec.user_ids, "user", ["user"])[0]


def new_user_vector(rec: Recommender, req: schema.UserOrRatings) -> np.ndarray:
    """The dense rating vector (1, n_items) of a request's ``"ratings"`` (a new user); a
    RecommendError (422) for an item-based model, which cannot score new users."""
    if rec.major != "users":
        raise RecommendError('ratings: this is an item-based model (--major=items): it scores '
                             'only its training users (a new user would be an input column the '
                             'model does not have); ask for a training user by "user" instead')
    items, values = req.checked_ratings(rec.n_items)
    schema.model_ids(items, rec.item_ids, "item",
                     [f"ratings.{j}.item" for j in range(len(items))])
    return rec.vector(items, values)
