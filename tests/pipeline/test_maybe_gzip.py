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
