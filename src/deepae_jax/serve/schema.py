"""The JSON service's request bodies (pydantic models) and its id rules.

Ids are the ORIGINAL ids of the data, typed as the model keeps them (:mod:`deepae_jax.data`
readers: integers when every id of a column is a 64-bit integer, else the exact strings, e.g.
``"u_17"`` or 20-digit ids). A request gives an id as a JSON integer or a JSON string; it must
match the model's type for that kind of id: an integer-id model refuses the string ``"17"`` and a
string-id model refuses the number ``17`` (a 422 that says how to send it), so an id never means
two things. A JSON float or boolean is never an id. Responses give ids in the model's type.
"""
from __future__ import annotations

import json
import math
import re
from typing import Annotated, Literal, Optional, Sequence, Union

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from deepae_jax.recommend import RecommendError, UnknownIdError

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
IdKind = Literal["int", "str", "any"]
RawId = Union[int, str]


def _invalid(reason: str) -> PydanticCustomError:
    return PydanticCustomError("id", "{reason}", {"reason": reason})  # reason may hold braces


def json_type(value: object) -> str:
    """The JSON type name of a parsed JSON value ("a float", "a boolean", ...)."""
    if isinstance(value, bool):
        return "a boolean"
    return {int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def shown(value: RawId, limit: int = 40) -> str:
    """An id as JSON, cut to ``limit`` characters for error messages."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_raw_id(value: object) -> RawId:
    """A JSON id as parsed: an integer in the 64-bit range or a non-empty string (not a float,
    boolean, ...); whether it matches the model's id type is checked by :func:`model_ids`."""
    if type(value) is int:  # bool is a subclass of int: excluded
        if not INT64_MIN <= value <= INT64_MAX:
            raise _invalid(f"id {value} is outside the 64-bit range of integer ids")
        return value
    if type(value) is str:
        if not value:
            raise _invalid("an id must not be empty")
        if "\x00" in value:  # numpy's string arrays drop trailing NULs: "17\0" would be "17"
            raise _invalid(f"id {shown(value)} holds a NUL character, which no id may hold")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(f"id {shown(value)} is not valid Unicode (a lone surrogate "
                           "escape)") from None
        return value
    raise _invalid(f"an id must be a JSON integer or string, got {json_type(value)}")


Id = Annotated[RawId, PlainValidator(check_raw_id)]


def id_kind(ids: np.ndarray) -> IdKind:
    """The type of a model's id map: "str" (numpy 'U'), "int", or "any" when it is empty (no
    training users loaded: every user request is refused later anyway)."""
    if len(ids) == 0:
        return "any"
    return "str" if np.asarray(ids).dtype.kind == "U" else "int"


def _mismatch(value: RawId, kind: IdKind, what: str) -> str | None:
    if kind == "int" and isinstance(value, str):
        hint = (f"send {value} (a JSON number), not the string {shown(value)}"
                if re.fullmatch(r"-?[0-9]+", value) else f"got the string {shown(value)}")
        return f"this model's {what} ids are integers: {hint}"
    if kind == "str" and isinstance(value, int):
        return (f"this model's {what} ids are strings: send {json.dumps(str(value))} (a JSON "
                f"string), not the number {value}")
    return None


def model_ids(values: Sequence[RawId], model: np.ndarray, what: str,
              where: Sequence[str]) -> list[RawId]:
    """``values`` checked against the model's id map ``model`` (sorted ids of one kind, ``what``
    = "user" or "item"): RecommendError naming ``where[j]`` (the request field) for an id of
    the other JSON type; UnknownIdError for strings longer than every id of the model (so a
    request cannot make the id lookup allocate more than the model's own ids need)."""
    kind = id_kind(model)
    for value, field in zip(values, where):
        reason = _mismatch(value, kind, what)
        if reason:
            raise RecommendError(f"{field}: {reason}")
    if kind == "str":
        longest = np.asarray(model).dtype.itemsize // 4
        too_long = [shown(v) for v in values if len(v) > longest]
        if too_long:
            raise UnknownIdError(what, too_long)
    return list(values)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RatingIn(_Strict):
    item: Id
    # strict: a JSON number only ("5" and true are refused); the range is checked against the
    # model's rating scale (Recommender.vector)
    rating: Annotated[float, Field(strict=True, allow_inf_nan=True)]


class UserOrRatings(_Strict):
    user: Optional[Id] = None
    ratings: Optional[list[RatingIn]] = None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.user is None) == (self.ratings is None):
            raise ValueError('give exactly one of "user" (a known user id) or "ratings" '
                             '(a new user\'s [{"item": ID, "rating": R}, ...])')
        return self

    def checked_ratings(self, n_items: int) -> tuple[list[RawId], list[float]]:
        """(items, ratings) of a new user's ratings; RecommendError for too many ratings or a
        rating that is not finite and non-zero."""
        if not self.ratings:
            raise RecommendError('ratings: the list is empty; give at least one rating '
                                 '[{"item": ID, "rating": R}] (or a known "user")')
        if len(self.ratings) > n_items:
            raise RecommendError(f"ratings: {len(self.ratings)} ratings, more than the "
                                 f"{n_items} items")
        values = [r.rating for r in self.ratings]
        if not all(math.isfinite(v) and v != 0 for v in values):
            raise RecommendError("ratings: every rating must be a finite non-zero number "
                                 "(0 means 'unrated')")
        return [r.item for r in self.ratings], values


class RecommendRequest(UserOrRatings):
    k: Annotated[int, Field(strict=True)] = 10


class PredictRequest(UserOrRatings):
    items: list[Id]


def validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """(HTTP status, one-line message) of a request that failed validation: 400 for malformed
    JSON, else 422, each error prefixed with its field (e.g. ``ratings.0.item``)."""
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
