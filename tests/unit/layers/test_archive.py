"""Deterministic zips: same files, same bytes, whatever the order or the mtimes."""

from __future__ import annotations

import os
import zipfile
from typing import TYPE_CHECKING

from layers.archive import tree_entries, write_zip

if TYPE_CHECKING:
    from pathlib import Path


def _make(root: Path, names: list[str], mtime: int) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}\n")
        os.utime(path, (mtime, mtime))


def test_same_files_give_the_same_zip(tmp_path: Path) -> None:
    names = ["b/two.py", "a/one.py", "c.py", "a/z/deep.so"]
    _make(tmp_path / "first", names, 1_000_000_000)
    _make(tmp_path / "second", list(reversed(names)), 1_700_000_000)
    (tmp_path / "second" / "a/z/deep.so").chmod(0o755)
    (tmp_path / "first" / "a/z/deep.so").chmod(0o755)
    one = write_zip(tree_entries(tmp_path / "first", "python"), tmp_path / "one.zip")
    two = write_zip(tree_entries(tmp_path / "second", "python"), tmp_path / "two.zip")
    assert one == two
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        infos = archive.infolist()
    assert [info.filename for info in infos] == [
        "python/a/one.py",
        "python/a/z/deep.so",
        "python/b/two.py",
        "python/c.py",
    ]
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    modes = {info.filename: info.external_attr >> 16 for info in infos}
    assert modes["python/a/z/deep.so"] == 0o100755
    assert modes["python/c.py"] == 0o100644
    assert not (tmp_path / "one.zip.partial").exists()
