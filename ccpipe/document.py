"""The one record type every step sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Document:
    """One web page, as read from a WET conversion record or extracted from the HTML
    of a WARC response record (:mod:`ccpipe.io.warc`).

    Field names follow CCNet's output where CCNet has the field. ``length`` and
    ``original_length`` count characters of ``raw_content`` (CCNet's first
    ``length`` is the record's byte Content-Length; we keep that as
    ``content_length``). Steps added later in the pipeline write their values into
    ``extras`` and declare them in ``Step.output_fields`` so every shard has one schema.
    """

    id: str
    """WARC-Record-ID of the conversion record, e.g. ``<urn:uuid:...>``."""
    url: str
    date_download: str
    digest: str
    title: str
    raw_content: str
    source_domain: str = ""
    cc_segment: str = ""
    content_length: int = 0
    length: int = 0
    nlines: int = 0
    original_length: int = 0
    original_nlines: int = 0
    language: str | None = None
    language_score: float | None = None
    cc_languages: str | None = None
    """WARC-Identified-Content-Language of 2018+ files (Common Crawl's own guess)."""
    truncated: bool = False
    """The record was cut off by the end of its file; ``raw_content`` is the readable part."""
    content_type: str | None = None
    """WARC input: the HTTP Content-Type media type (``text/html``); None for WET."""
    charset: str | None = None
    """WARC input: the character encoding the HTML was decoded with (WHATWG name)."""
    html_lang: str | None = None
    """WARC input: the language the page declares (``<html lang>``, else a
    content-language meta tag or HTTP header), as written there."""
    position: int = -1
    """Index of the record among the documents read from its shard (its place in the
    run's scratch files); set by the run, -1 outside one."""
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.length:
            self.length = len(self.raw_content)
        if not self.nlines:
            self.nlines = self.raw_content.count("\n") + 1 if self.raw_content else 0
        if not self.original_length:
            self.original_length = self.length
        if not self.original_nlines:
            self.original_nlines = self.nlines

    def set_content(self, text: str, nlines: int | None = None) -> None:
        """Replace the text and keep ``length``/``nlines`` in step with it."""
        self.raw_content = text
        self.length = len(text)
        self.nlines = nlines if nlines is not None else (text.count("\n") + 1 if text else 0)
