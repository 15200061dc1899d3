"""storage: atomic writes, listing and safe names, locally and on the S3 server."""
import os

import pytest

from refine_ray import storage


def test_atomic_write_and_list_local(tmp_path):
    target = tmp_path / "a" / "b.bin"
    storage.atomic_write_bytes(str(target), b"hello")
    assert target.read_bytes() == b"hello"
    assert not [p for p in os.listdir(target.parent) if p.startswith(".tmp-")]
    storage.atomic_write_text(str(tmp_path / "a" / "c.txt"), "x")
    assert storage.list_files(str(tmp_path), [".bin"]) == [str(target)]


def test_s3_round_trip(s3_bucket):
    uri = storage.join(s3_bucket, "dir", "x.json")
    storage.atomic_write_text(uri, '{"a": 1}')
    assert storage.read_text(uri) == '{"a": 1}'
    assert storage.list_files(s3_bucket) == [uri]
    assert storage.exists(uri)


@pytest.mark.parametrize("bad,expected", [("../../etc/passwd", "passwd"), ("a/b\\..\\c.ply", "c.ply"), ("x y.abs", "x_y.abs")])
def test_safe_name_strips_paths(bad, expected):
    assert storage.safe_name(bad) == expected
