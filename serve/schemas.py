"""Request and response bodies of the HTTP API (what ``/docs`` shows)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

HARD_MAX_K = 1000
HARD_MAX_QUERIES = 256
HARD_MAX_DOCUMENTS = 1000
MAX_QUERY_CHARS = 10_000
MAX_DOCUMENT_CHARS = 200_000

# ``pattern`` is a search: the text must contain at least one non-space character.
QueryText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S")]
DocId = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"\S")]
Scalar = str | int | float | bool
FilterValue = Scalar | list[Scalar]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, and so is every value of the wrong JSON type.

    Strict on purpose: ``"k": "5"`` or ``"include_text": "true"`` is a 422 ``wrong_type``, not a
    silent conversion (a client that sends strings where numbers belong has a bug worth seeing).
    """

    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(Strict):
    """One query (``query``) or a batch (``queries``), top ``k``, optional metadata filter."""

    query: QueryText | None = Field(None, description="a single query")
    queries: list[QueryText] | None = Field(
        None, min_length=1, max_length=HARD_MAX_QUERIES, description="a batch of queries"
    )
    k: int = Field(10, ge=1, le=HARD_MAX_K, description="results per query")
    filter: dict[str, FilterValue] | None = Field(
        None, description='metadata equality filter, e.g. {"lang": "en"}; a list means any of'
    )
    include_text: bool = Field(False, description="return each document's title and text")

    @model_validator(mode="after")
    def _one_of(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' and 'queries'")
        return self


class SearchHit(BaseModel):
    id: str
    score: float
    title: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    """``results`` is a list of hits for ``query``, a list of lists for ``queries``."""

    results: list[SearchHit] | list[list[SearchHit]]
    truncated: bool | list[bool] = Field(description="query longer than the student's max length (cut)")
    partial: bool | list[bool] = Field(
        description="the search stopped after examining --max-candidates nearest hits and found fewer "
        "than k that pass the filter: more matches may exist further away (narrow the query or raise the cap)"
    )
    k: int
    took_ms: float = Field(description="time in the service for this request")
    encode_ms: float = Field(description="waiting for and running the student forward pass (shared batch)")
    search_ms: float = Field(description="index search and document lookup")


class DocumentIn(Strict):
    id: DocId
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOCUMENT_CHARS, pattern=r"\S")]
    title: str | None = Field(None, max_length=10_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpsertRequest(Strict):
    documents: list[DocumentIn] = Field(min_length=1, max_length=HARD_MAX_DOCUMENTS)

    @model_validator(mode="after")
    def _unique_ids(self) -> UpsertRequest:
        ids = [d.id for d in self.documents]
        dups = sorted({i for i in ids if ids.count(i) > 1})
        if dups:
            raise ValueError(f"duplicate document ids in one upsert: {', '.join(dups[:5])}")
        return self


class UpsertResponse(BaseModel):
    upserted: int
    ids: list[str]


class DeleteResponse(BaseModel):
    deleted: str


class DocumentOut(BaseModel):
    id: str
    title: str | None
    text: str
    metadata: dict[str, Any]


class EmbedRequest(Strict):
    """``role: query`` embeds with the student; ``role: document`` with the teacher, which is a write
    (it runs the teacher and grows its cache): it needs the API key and fits ``--max-teacher-tokens``."""

    texts: list[QueryText] = Field(min_length=1, max_length=HARD_MAX_QUERIES)
    role: Literal["query", "document"] = "query"


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int
    role: str
    model: str
    truncated: list[bool] | None = None


class Health(BaseModel):
    status: str
    documents: int


class ErrorBody(BaseModel):
    detail: Any
    error: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 500, 503, 507)
}


class StudentSwapRequest(Strict):
    """A student folder inside the service's ``--students-dir``."""

    name: str = Field(min_length=1, max_length=512, description="folder name inside --students-dir, e.g. v2")


class StudentSwapResponse(BaseModel):
    student: str = Field(description="the student now serving queries")
    previous: str = Field(description="the student it replaced")
    dim: int
    load_ms: float
    warmup_ms: float


class QueryLogDeleted(BaseModel):
    deleted: int = Field(description="logged queries deleted")
    cache_vectors_deleted: int = Field(description="their teacher vectors deleted from the teacher cache")
