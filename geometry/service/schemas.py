"""Request and response bodies of the query service (they are its OpenAPI schema).

Static constraints here are the ones that hold for every deployment (k >= 1, non-empty
lists); the configurable limits (text size, k, batch size, path points) are checked by
the handlers against :class:`~geometry.service.config.ServiceConfig`, so one schema serves
every configuration and the error message names the limit that was hit.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

Mode = Literal["geodesic", "upper", "graph"]

MAX_ID_CHARS = 2048
"""Longest document id accepted (ids are WARC record ids of ~50 characters, or URLs)."""


def _unicode(s: object) -> object:
    # JSON may carry a lone surrogate ("\ud800"): Python decodes it into a str that no
    # tokenizer, parquet filter or UTF-8 response can take (a plain ``str`` field lets it
    # through). Refused before any other check, as a 422 that says what is wrong.
    if isinstance(s, str):
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"not valid Unicode: lone surrogate U+{ord(s[e.start]):04X} at character {e.start}") from None
    return s


Text = Annotated[str, StringConstraints(min_length=1), BeforeValidator(_unicode)]
"""A non-empty string that encodes as UTF-8 (no lone surrogates)."""
DocId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), BeforeValidator(_unicode)]
"""A document id: a non-empty UTF-8 string of at most MAX_ID_CHARS characters."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocRef(_Body):
    """A document of the run (``id``) or a raw text, embedded on the fly (``text``)."""

    id: DocId | None = Field(default=None, description="Document id of the run")
    text: Text | None = Field(default=None, description="Raw text, embedded with the run's model")

    @model_validator(mode="after")
    def _one_of(self) -> "DocRef":
        if (self.id is None) == (self.text is None):
            raise ValueError("give exactly one of 'id' or 'text'")
        return self


class DistanceRequest(_Body):
    a: DocRef
    b: DocRef
    mode: Mode = Field(default="geodesic", description="geodesic (solver), upper (straight arc, cheap bound) or graph (kNN graph)")


class DistancesRequest(_Body):
    pairs: list[tuple[DocRef, DocRef]] = Field(min_length=1, description="Pairs to measure in one call")
    mode: Mode = "geodesic"


class NeighboursRequest(_Body):
    query: DocRef
    k: int = Field(default=10, ge=1)
    mode: Mode = "upper"
    candidates: int | None = Field(default=None, ge=1, description="ANN candidates re-ranked by Stein distance (default: the index's)")


class PathRequest(_Body):
    a: DocId = Field(description="Document id")
    b: DocId = Field(description="Document id")
    n_points: int | None = Field(default=None, ge=3, description="Points on the geodesic, endpoints included")


class EmbedRequest(_Body):
    texts: list[Text] = Field(min_length=1)


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer the service itself gives."""

    detail: str = Field(description="What was wrong, in one line; user input is quoted by a short prefix at most")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where in the request, e.g. ['body', 'k']")
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """A request that does not fit the schema (422)."""

    detail: str = Field(description="Every problem found, in one line")
    errors: list[FieldError]


class DistanceResult(BaseModel):
    a: str = Field(description="Id of a, or 'text:' + the first characters of the text")
    b: str
    distance: float | None = Field(description="Stein distance; null when the computation produced no finite number")
    converged: bool = Field(description="False: the solver did not meet its tolerance, do not trust the distance")
    energy: float | None
    mode: Mode


class DistancesResponse(BaseModel):
    mode: Mode
    lam: float
    c: float
    converged: bool = Field(description="Every pair converged")
    results: list[DistanceResult]


class Neighbour(BaseModel):
    id: str
    distance: float | None
    converged: bool
    energy: float | None
    cosine: float


class NeighboursResponse(BaseModel):
    query: str
    mode: Mode
    k: int
    candidates: int
    lam: float
    converged: bool = Field(description="Every returned neighbour converged")
    neighbours: list[Neighbour]


class PathDocument(BaseModel):
    id: str
    points: list[int] = Field(description="Indices of the path points this document is nearest to")
    cosine: float = Field(description="Best cosine similarity between the document and a path point")
    title: str | None = None
    url: str | None = None


class PathResponse(BaseModel):
    a: str
    b: str
    mode: Literal["geodesic"] = "geodesic"
    distance: float | None
    converged: bool
    energy: float | None
    lam: float
    n_points: int
    documents: list[PathDocument] = Field(description="Stored documents along the path, in order")


class EmbedResponse(BaseModel):
    model: str
    mode: str = Field(description="Long-document policy that computed the vectors")
    converged: bool = Field(default=True, description="Always true: embedding has no solver")
    dim: int
    vectors: list[list[float]]


class Document(BaseModel):
    id: str
    partition: str
    fields: dict[str, object] = Field(description="The parquet row (raw_content only when asked for)")


class Health(BaseModel):
    status: Literal["ok"]
    run: str
    documents: int
    dim: int
    lam: float
    c: float
    sphere: bool
    modes: list[str]
    score_model: dict[str, object]
    limits: dict[str, int]
    batching: dict[str, float]
