"""Read one object out of an R lazy-load database (``.rdx`` index + ``.rdb`` blob) without R.

Why this exists: Debian ships CRAN data packages (``r-cran-*``) as installed R libraries, where
each data set lives in ``data/Rdata.rdb`` (or ``R/sysdata.rdb``) rather than in a plain ``.rda``.
Installing R just to export a few tables is heavy, so we decode the format directly:

* ``.rdx`` is a gzip'd R-serialized list ``(variables, references, compressed)``; ``variables``
  maps each object name to ``c(offset, length)`` inside the ``.rdb``.
* each ``.rdb`` chunk starts with the uncompressed length (4 bytes, big-endian), then a type byte:
  ``Z`` raw LZMA2 (xz without container), ``2`` bzip2, ``1`` zlib, ``0`` stored; any other byte
  means the old format, where zlib data follows the 4-byte length directly (no type byte).
  This mirrors ``R_decompress3`` in R's ``src/main/serialize.c``.
* the decompressed bytes are an ordinary R serialization stream, which PyPI ``rdata`` parses.

Objects that point at environments stored elsewhere in the database (``references``) are not
supported: data frames never need them. ``fetch_deb`` gets such a package without installing it
(``apt-get install r-cran-*`` would pull in all of R).
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import lzma
import struct
import subprocess
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import rdata

# R's init_filters() uses LZMA2 at preset 6; a decoder only needs a dictionary at least as large
# as the encoder's, so the preset-6 default (8 MiB) is what R writes and what we must read.
_LZMA2_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]


def _parse_serialized(data: bytes) -> Any:
    """Parse an R serialization stream and convert it to Python objects (DataFrame, dict, ...)."""
    with warnings.catch_warnings():
        # rdata warns when a stream has no .rds/.rda file magic; lazy-load chunks never do.
        warnings.simplefilter("ignore", UserWarning)
        parsed = rdata.parser.parse_data(data, extension=".rds")
        return rdata.conversion.convert(parsed)


def read_index(rdx_path: str | Path) -> dict[str, tuple[int, int]]:
    """Return ``{object name: (offset, length)}`` from a ``.rdx`` index file."""
    index = _parse_serialized(Path(rdx_path).read_bytes())  # rdata un-gzips on its own
    return {str(name): (int(pos[0]), int(pos[1])) for name, pos in index["variables"].items()}


def list_objects(rdx_path: str | Path) -> list[str]:
    """Names of all objects in a lazy-load database, in index order."""
    return list(read_index(rdx_path))


def decompress_chunk(chunk: bytes) -> bytes:
    """Undo R's lazy-load chunk compression (see the module docstring for the layout)."""
    if len(chunk) < 5:
        raise ValueError(f"lazy-load chunk too short ({len(chunk)} bytes)")
    (out_len,) = struct.unpack(">I", chunk[:4])
    kind = chunk[4:5]
    if kind == b"Z":
        out = lzma.decompress(chunk[5:], format=lzma.FORMAT_RAW, filters=_LZMA2_FILTERS)
    elif kind == b"2":
        out = bz2.decompress(chunk[5:])
    elif kind == b"1":
        out = zlib.decompress(chunk[5:])
    elif kind == b"0":
        out = chunk[5:]
    else:
        out = zlib.decompress(chunk[4:])
    if len(out) != out_len:
        raise ValueError(f"decompressed {len(out)} bytes, header says {out_len}")
    return out


def read_lazyload_raw(rdx_path: str | Path, rdb_path: str | Path, name: str) -> Any:
    """Return object ``name`` as converted by ``rdata`` (whatever Python type that gives)."""
    index = read_index(rdx_path)
    if name not in index:
        raise KeyError(f"{name!r} not in {rdx_path}; objects: {', '.join(index)}")
    offset, length = index[name]
    with open(rdb_path, "rb") as f:
        f.seek(offset)
        chunk = f.read(length)
    if len(chunk) != length:
        raise ValueError(f"{rdb_path} ends before {name!r} (wanted {length} bytes at {offset})")
    return _parse_serialized(decompress_chunk(chunk))


def read_lazyload_object(rdx_path: str | Path, rdb_path: str | Path, name: str) -> pd.DataFrame:
    """Return object ``name`` as a DataFrame; fail loudly if it is not a data frame."""
    obj = read_lazyload_raw(rdx_path, rdb_path, name)
    if not isinstance(obj, pd.DataFrame):
        raise TypeError(f"{name!r} is a {type(obj).__name__}, not a data frame")
    return obj


@dataclass(frozen=True)
class DebPackage:
    """An unpacked Debian package: where its files are, and what to cite in a PROVENANCE.md."""

    name: str
    version: str
    deb: Path
    sha256: str
    root: Path

    def path(self, relative: str) -> Path:
        """A file of the package, e.g. ``usr/share/doc/<name>/copyright``."""
        return self.root / relative


def fetch_deb(package: str, workdir: Path, deb: Path | None = None) -> DebPackage:
    """Download ``package`` with ``apt-get download`` (or use ``deb``) and ``dpkg -x`` it.

    Nothing is installed: the files land under ``workdir/root``. Needs a prior ``apt-get update``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if deb is None:
        done = subprocess.run(
            ["apt-get", "download", package], cwd=workdir, capture_output=True, text=True
        )
        debs = sorted(workdir.glob(f"{package}_*.deb"))
        if done.returncode != 0 or not debs:
            raise RuntimeError(
                f"apt-get download {package} failed (run `apt-get update` first?):\n{done.stderr}"
            )
        deb = debs[-1]
    root = workdir / "root"
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    sha256 = hashlib.sha256(deb.read_bytes()).hexdigest()
    return DebPackage(name=package, version=version, deb=deb, sha256=sha256, root=root)


def read_description(package_dir: Path) -> dict[str, str]:
    """Fields of an installed R package's ``DESCRIPTION`` (a Debian-control-like file)."""
    fields: dict[str, str] = {}
    key = ""
    for line in (package_dir / "DESCRIPTION").read_text(encoding="utf-8").splitlines():
        if line[:1].isspace() and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def find_lazyload_db(package_dir: Path, name: str) -> tuple[Path, Path]:
    """Return the ``(.rdx, .rdb)`` pair under an installed R package that holds object ``name``.

    Data sets usually sit in ``data/Rdata``, but some packages keep them in ``R/sysdata``.
    """
    for stem in ("data/Rdata", "R/sysdata"):
        rdx, rdb = package_dir / f"{stem}.rdx", package_dir / f"{stem}.rdb"
        if rdx.is_file() and rdb.is_file() and name in read_index(rdx):
            return rdx, rdb
    raise FileNotFoundError(f"no lazy-load database under {package_dir} holds {name!r}")


def main(argv: list[str] | None = None) -> int:
    """CLI: list the objects of a database, or print the head of one of them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rdx", type=Path, help="path to the .rdx index (the .rdb must sit beside)")
    parser.add_argument("name", nargs="?", help="object to show; omit to list all names")
    args = parser.parse_args(argv)
    if args.name is None:
        print("\n".join(list_objects(args.rdx)))
        return 0
    obj = read_lazyload_raw(args.rdx, args.rdx.with_suffix(".rdb"), args.name)
    print(obj.head() if isinstance(obj, pd.DataFrame) else obj)
    if isinstance(obj, pd.DataFrame):
        print(obj.dtypes, f"\n{len(obj)} rows", sep="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
