"""Configuration of the query service: where it listens, what it accepts, how it batches."""

from __future__ import annotations

from dataclasses import dataclass, field

from geometry.service.batching import BatchConfig


@dataclass(slots=True, frozen=True, kw_only=True)
class ServiceConfig:
    """One object for the server, its limits and its micro-batching."""

    host: str = "127.0.0.1"
    """Bind address; loopback unless the operator opens it on purpose."""
    port: int = 8000
    token: str | None = field(default=None, repr=False)
    """Bearer token every endpoint but /v1/health requires; None = no authentication."""
    max_text_chars: int = 20_000
    """Longest raw text accepted (the model reads about 8 kB of it anyway)."""
    max_k: int = 100
    """Most neighbours one request may ask for."""
    max_candidates: int = 1000
    """Most ANN candidates one neighbour request may re-rank."""
    max_batch: int = 256
    """Most pairs in /v1/distances and texts in /v1/embed."""
    max_path_points: int = 64
    """Most points on a path."""
    keep_alive_s: float = 75.0
    """Idle keep-alive connections are closed after this; above the usual client pool's idle
    time, so a client never reuses a connection the server is closing (uvicorn's 5 s default
    made loaded clients fail with connection resets)."""
    max_body_bytes: int = 4_000_000
    """Request bodies above this are refused (413) before they are parsed."""
    distance_batch: BatchConfig = BatchConfig(window_ms=2.0, max_items=64, max_weight=256)
    """Micro-batching of score-model calls (distances, neighbour re-ranking)."""
    embed_batch: BatchConfig = BatchConfig(window_ms=2.0, max_items=64)
    """Micro-batching of sentence-transformer calls (texts)."""
    embed_chunk: int = 8
    """Texts of one request queued for the sentence-transformer at a time: a request with
    more is embedded chunk after chunk, at a lower priority than smaller requests, whose
    texts go first (a text query waits for one chunk at most). 8 keeps the large request
    near the model's batched throughput on a CPU (per text, batches of 1-2 cost 3-5x more)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("max_text_chars", "max_k", "max_candidates", "max_batch", "max_body_bytes", "embed_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_path_points < 3:
            raise ValueError("max_path_points must be >= 3")
        if self.token is not None and not self.token:
            raise ValueError("token must be non-empty when given")

    def limits(self) -> dict[str, int]:
        return {
            "max_text_chars": self.max_text_chars,
            "max_k": self.max_k,
            "max_candidates": self.max_candidates,
            "max_batch": self.max_batch,
            "max_path_points": self.max_path_points,
            "max_body_bytes": self.max_body_bytes,
        }
