from __future__ import annotations

import gzip

import pytest

from pipeline.maybe_gzip import open_maybe_gzip


def test_a_gz_name_is_decompressed_and_any_other_read_as_is(tmp_path):
    plain, packed = tmp_path / "a.jsonl", tmp_path / "a.jsonl.gz"
    plain.write_text("héllo\nworld\n", encoding="utf-8")
    packed.write_bytes(gzip.compress("héllo\nworld\n".encode()))
    for path in (plain, packed, str(packed)):
        with open_maybe_gzip(path) as f:
            assert f.read() == "héllo\nworld\n"
        with open_maybe_gzip(path, "rb") as f:
            assert f.read() == "héllo\nworld\n".encode()


def test_undecodable_bytes_follow_errors_and_writing_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b"ok \xff\n"))
    with pytest.raises(UnicodeDecodeError), open_maybe_gzip(path) as f:
        f.read()
    with open_maybe_gzip(path, errors="replace") as f:
        assert f.read() == "ok \ufffd\n"
    with pytest.raises(ValueError, match="mode='w'"):
        open_maybe_gzip(path, "w")


def test_a_link_is_never_opened_when_links_are_not_followed(tmp_path):
    target = tmp_path / "outside.jsonl.gz"
    target.write_bytes(gzip.compress(b"secret\n"))
    link = tmp_path / "day.jsonl.gz"
    link.symlink_to(target)
    with open_maybe_gzip(link, "rb") as f:
        assert f.read() == b"secret\n"
    with pytest.raises(OSError), open_maybe_gzip(link, "rb", follow_symlinks=False):
        pass


def test_closing_the_gzip_stream_closes_the_file_under_it(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b"x\n"))
    f = open_maybe_gzip(path, "rb")
    raw = f.myfileobj
    f.close()
    assert raw.closed


def test_gzip_is_known_by_its_bytes_not_its_name(tmp_path):
    packed, plain = tmp_path / "packed.jsonl", tmp_path / "plain.jsonl.gz"
    packed.write_bytes(gzip.compress(b"inside\n"))
    plain.write_bytes(b"as is\n")
    with open_maybe_gzip(packed, "rb") as f:
        assert f.read() == b"inside\n"
    with open_maybe_gzip(plain, "rb") as f:
        assert f.read() == b"as is\n"
