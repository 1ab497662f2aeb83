"""Content digests: one format (sha256 hex) for files, file sets, rows and parts."""

import hashlib
import json

import polars as pl

from pipeline.digest import HEX_LENGTH, digest, dir_digest, file_digest, files_digest, frame_digest, rows_digest


def test_digests_follow_content_not_location(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "x.bin").write_bytes(b"same")
        (d / ".hidden").write_text(str(d))  # hidden files do not count
    assert dir_digest(a) == dir_digest(b) is not None
    (b / "x.bin").write_bytes(b"changed")
    assert dir_digest(a) != dir_digest(b)
    assert files_digest([]) is None and dir_digest(tmp_path / "missing") is None
    assert len(dir_digest(a)) == HEX_LENGTH


def test_a_file_digest_is_its_sha256(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc" * 100_000)
    assert file_digest(path) == hashlib.sha256(b"abc" * 100_000).hexdigest()


def test_files_are_named_by_their_path_under_the_root(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"1")
    (tmp_path / "x").write_bytes(b"1")
    nested, flat = files_digest([tmp_path / "d" / "x"], tmp_path), files_digest([tmp_path / "x"], tmp_path)
    assert nested != flat and files_digest([tmp_path / "d" / "x"]) == files_digest([tmp_path / "x"])


def test_rows_digest_is_sha256_over_canonical_json_lines():
    rows = [{"b": 1, "a": "é"}, {"a": None, "b": [1, 2]}]
    lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
    # the format dataset manifests have recorded as `content_hash`: their hashes stay valid
    assert rows_digest(rows) == hashlib.sha256(lines.encode()).hexdigest()
    assert rows_digest(iter(rows)) == rows_digest(rows) != rows_digest(rows[::-1])
    assert rows_digest([{"a": "é", "b": 1}]) == rows_digest([{"b": 1, "a": "é"}])  # key order does not matter
    assert frame_digest(pl.DataFrame(rows[:1])) == rows_digest(rows[:1])


def test_parts_are_framed():
    assert digest("ab", "c") != digest("a", "bc") and digest("a\nb") != digest("a", "b")
    assert digest("a", 1) == rows_digest(["a", 1]) and len(digest()) == HEX_LENGTH
