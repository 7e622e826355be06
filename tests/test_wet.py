"""The WET reader on real Common Crawl excerpts and on deliberately broken files."""

from __future__ import annotations

import gzip
import os

import pytest

from ccpipe.errors import InputError
from ccpipe.io.inputs import plan_shards
from ccpipe.config import InputConfig
from ccpipe.io.wet import ByteRange, read_wet
from ccpipe.stats import Stats
from tests.conftest import data_path, write_wet


def read(path, rng=ByteRange(), truncated="keep"):
    st = Stats()
    return list(read_wet(str(path), st, rng, truncated=truncated)), st


def test_2017_excerpt_exact_count_and_fields(wet_dir):
    docs, st = read(wet_dir / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz")
    assert len(docs) == 170 and st.docs_read == 170 and not st.errors
    assert st.counters["records_warcinfo"] == 1
    assert len({d.id for d in docs}) == 170
    first = docs[0]
    assert first.title == "Бион 3 в Москве"
    assert first.url.startswith("http") and first.source_domain in first.url
    assert first.date_download.startswith("2017-07-")
    assert first.digest.startswith("sha1:")
    assert first.length == len(first.raw_content) and first.nlines == first.raw_content.count("\n") + 1
    assert first.original_length == first.length and first.original_nlines == first.nlines


def test_single_gzip_stream_reads_the_same_records(wet_dir):
    multi, _ = read(wet_dir / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz")
    single, st = read(wet_dir / "CC-MAIN-2017-30-00008.excerpt.single-gzip-stream.wet.gz")
    assert [d.id for d in single] == [d.id for d in multi]
    assert [d.raw_content for d in single] == [d.raw_content for d in multi]
    assert not st.errors and not st.file_errors


def test_2016_excerpt(wet_dir):
    docs, st = read(wet_dir / "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz")
    assert len(docs) == 25
    assert docs[0].id == "<urn:uuid:9019f293-5cdf-4a61-a537-abaf628cc665>"
    assert docs[0].url == "http://100-things-to-do-before-high-school.wikia.com/wiki/File:Say_yes_28.PNG"
    assert docs[0].nlines == 140 and docs[0].length == 2818
    assert docs[-1].id == "<urn:uuid:25b07336-ded8-4cf9-81af-e6b16327f6e5>"


def test_2024_record_headers_read_by_name(wet_dir):
    (doc,), st = read(wet_dir / "CC-MAIN-2024-22-00000.one-page.warc.wet.gz")
    assert doc.id == "<urn:uuid:ba729a40-ff84-4085-8d48-0a5b2ee0c42d>"
    assert doc.url == "https://an.wikipedia.org/wiki/Escopete"
    assert doc.date_download == "2024-05-18T01:58:10Z"
    assert doc.digest == "sha1:RDTSR52RUHWDA7QK4BK7OUHU3EXTXYUL"
    assert doc.cc_languages == "spa"  # WARC-Identified-Content-Language, a 2018+ header
    assert doc.title == "Escopete - Biquipedia, a enciclopedia libre"
    assert doc.content_length == 4456 and doc.nlines == 181


# file -> (documents read, documents errored by reason, file-level problems), with
# input.truncated: drop; with keep (the default) a truncated_record is a document
BROKEN = {
    "corrupt_starts_with_conversion.wet.gz": (5, {}, {}),
    "corrupt_two_warcinfo.wet.gz": (5, {}, {}),
    "corrupt_warcconversion_1.wet.gz": (4, {"missing_header": 1}, {}),
    "corrupt_warcconversion_2.wet.gz": (0, {"missing_header": 1}, {}),
    "corrupt_warcinfo_1.wet.gz": (5, {}, {}),
    "file_and_wet_headers_only.wet.gz": (0, {"truncated_header": 1}, {"warcinfo_repaired": 1}),
    "file_headers_only.wet.gz": (0, {}, {"warcinfo_truncated_record": 1}),
    "fragment1_asthma_incomplete_last.wet.gz": (1, {"truncated_record": 1}, {}),
    "fragment1_incomplete_last.wet.gz": (1, {"truncated_record": 1}, {}),
    "fragment2_no_header.wet.gz": (1, {"truncated_record": 1}, {}),
    "fragment3.wet.gz": (5, {}, {}),
    "inconsistent_warcinfo_length.wet": (1, {}, {"warcinfo_repaired": 1}),
    "starts_mid_record.wet.gz": (8, {"truncated_record": 1}, {}),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_exact_counts(name):
    path = data_path("wet", "broken", name)
    n_docs, errors, file_errors = BROKEN[name]
    docs, st = read(path, truncated="drop")
    assert len(docs) == n_docs
    assert dict(st.errors) == errors
    assert dict(st.file_errors) == file_errors
    assert st.docs_read == n_docs + sum(errors.values())  # every record met is accounted for
    assert all(d.url and d.id for d in docs)
    assert not any(d.truncated for d in docs)
    # keep: the readable text of a record cut off by the end of the file is a document
    kept, st = read(path)
    cut = errors.get("truncated_record", 0)
    assert len(kept) == n_docs + cut
    assert dict(st.errors) == {k: v for k, v in errors.items() if k != "truncated_record"}
    assert st.counters["records_truncated_kept"] == cut
    assert sum(d.truncated for d in kept) == cut
    assert [d.id for d in kept if not d.truncated] == [d.id for d in docs]


def test_truncated_record_keeps_its_text_up_to_the_cut(tmp_path, wet_dir):
    """Cut a real file inside its last record, even inside a multi-byte character:
    the kept text is exactly the readable prefix of the original record's text."""
    import gzip

    full, _ = read(wet_dir / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz")
    raw = gzip.decompress((wet_dir / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz").read_bytes())
    last = full[-1]
    body = (last.title + "\n" + last.raw_content).encode()
    start = raw.rindex(body[:200])
    mb = next(i for i in range(len(body) // 2, len(body)) if body[i] >= 0xC0)  # a lead byte: cut after it
    (tmp_path / "cut.wet").write_bytes(raw[: start + mb + 1])
    docs, st = read(tmp_path / "cut.wet")
    assert docs[-1].id == last.id and docs[-1].truncated
    assert (docs[-1].title + "\n" + docs[-1].raw_content).encode() == body[:mb].rstrip(b"\n")
    assert st.counters["records_truncated_kept"] == 1 and not st.errors


def test_starts_mid_record_skips_leading_fragment():
    docs, st = read(data_path("wet", "broken", "starts_mid_record.wet.gz"))
    assert st.counters["bytes_skipped_outside_records"] > 0
    assert docs[0].title.startswith("寂寞聊天群")


def test_length_repaired_record_keeps_whole_body():
    (doc,), st = read(data_path("wet", "broken", "inconsistent_warcinfo_length.wet"))
    assert st.counters["records_length_repaired"] == 1
    # Content-Length says 26 bytes, the record really holds the whole sentence
    assert doc.title.startswith("Lorem Ipsum is simply dummy text") and doc.title.endswith("specimen book.")


def test_garbage_and_truncated_gzip_never_crash(tmp_path, wet_dir):
    src = (wet_dir / "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz").read_bytes()
    cut = tmp_path / "cut.wet.gz"
    cut.write_bytes(src[: len(src) // 2])
    docs, st = read(cut)
    assert 0 < len(docs) < 25 and st.docs_read == len(docs) + st.docs_errored
    junk = tmp_path / "junk.wet.gz"
    junk.write_bytes(os.urandom(5000))
    docs, st = read(junk)
    assert docs == [] and st.docs_read == 0
    mixed = tmp_path / "mixed.wet.gz"  # a corrupt member in the middle of good ones
    members = src.split(b"\x1f\x8b\x08")
    bad = members[:5] + [members[5][:10] + b"\x00" * 40 + members[5][50:]] + members[6:]
    mixed.write_bytes(b"\x1f\x8b\x08".join(bad))
    docs, st = read(mixed)
    assert len(docs) >= 20 and st.file_errors


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot open input"):
        list(read_wet(str(tmp_path / "nope.wet.gz"), Stats()))


def test_byte_range_shards_partition_the_records(tmp_path):
    pages = [(f"https://example.org/{i}", f"Title {i}\n" + "\n".join(f"line {i} {j} " * 30 for j in range(40))) for i in range(300)]
    path = write_wet(tmp_path / "big.warc.wet.gz", pages)
    whole, _ = read(path)
    size = path.stat().st_size
    cfg = InputConfig(paths=[str(path)], split_mb=size / 6.5 / 1024 / 1024)
    shards = plan_shards(cfg, group_size=50)
    assert len(shards) == 7
    pieces = [read(path, s.range)[0] for s in shards]
    assert [d.id for p in pieces for d in p] == [d.id for d in whole]
    assert all(pieces), "every shard got some records"


def test_plain_wet_and_single_stream_are_one_shard(tmp_path, wet_dir):
    path = wet_dir / "CC-MAIN-2017-30-00008.excerpt.single-gzip-stream.wet.gz"
    shards = plan_shards(InputConfig(paths=[str(path)], split_mb=0.1), group_size=50)
    assert len(shards) > 1
    docs = [d for s in shards for d in read(path, s.range)[0]]
    assert len(docs) == 170  # only the shard at byte 0 reads a single-stream file


def test_globs_and_directories(tmp_path, wet_dir):
    cfg = InputConfig(paths=[str(wet_dir / "*.warc.wet.gz")])
    shards = plan_shards(cfg, group_size=2)
    assert [os.path.basename(s.path) for s in shards] == sorted(
        p.name for p in wet_dir.glob("*.warc.wet.gz")
    )
    assert [s.group_id for s in shards] == [0, 0, 1]
    with pytest.raises(InputError, match="matches no file"):
        plan_shards(InputConfig(paths=[str(tmp_path / "*.gz")]), 1)
