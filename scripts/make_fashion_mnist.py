"""Build ``examples/data/fashion/`` (PNG image folders + PROVENANCE.md) from Debian's Fashion-MNIST.

Why a script: the image-classification example needs real labeled images committed in a plain
format (one PNG per image, one folder per label, what an image-folder reader expects), small
enough for git, and reproducible by anyone. It reads the IDX files of Debian's
``dataset-fashion-mnist`` (MIT; ``apt-get install dataset-fashion-mnist``, or, if it is not
installed, ``apt-get download`` + ``dpkg -x`` into a temp dir) and writes a seeded, class-balanced
subset: 300 images per class from the training file, 100 per class from the test file. File names
are the image's index in its source file, so every PNG can be traced back. Usage::

    python scripts/make_fashion_mnist.py [--out DIR] [--src DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGE = "dataset-fashion-mnist"
DATA_DIR = "usr/share/datasets/fashion-mnist"
COPYRIGHT = f"usr/share/doc/{PACKAGE}/copyright"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "examples" / "data" / "fashion"
# Fashion-MNIST label index -> folder name (upstream: T-shirt/top, Trouser, Pullover, Dress, Coat,
# Sandal, Shirt, Sneaker, Bag, Ankle boot); folder names must be plain path components.
CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip
# our split -> (upstream file prefix, images per class, expected upstream rows)
SPLITS = {"train": ("train", 300, 60_000), "test": ("t10k", 100, 10_000)}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzip'd IDX file (big-endian int32 magic and dims, then uint8 data)."""
    raw = gzip.decompress(path.read_bytes())
    (found,) = np.frombuffer(raw[:4], dtype=">i4")
    if found != magic:
        raise ValueError(f"{path}: magic {found}, expected {magic}")
    ndim = magic & 0xFF
    dims = tuple(int(d) for d in np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">i4"))
    data = np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)


def package_root(workdir: Path) -> Path:
    """`/` when the Debian package is installed, else the package unpacked into `workdir`."""
    if (Path("/") / DATA_DIR).is_dir():
        return Path("/")
    subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, check=True)
    deb = next(workdir.glob(f"{PACKAGE}_*.deb"))
    root = workdir / "root"
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def package_version() -> str:
    """The installed (or downloadable) package version, for the provenance note."""
    for cmd in (["dpkg-query", "-W", "-f=${Version}", PACKAGE], ["apt-cache", "policy", PACKAGE]):
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            text = out.stdout.strip()
            if cmd[0] == "apt-cache":
                text = next(
                    (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "Candidate" in ln),
                    text,
                )
            return text
    return "unknown"


def pick_balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` indices of each label, drawn without replacement, sorted for stable output."""
    chosen = []
    for label in range(len(CLASSES)):
        pool = np.flatnonzero(labels == label)
        if pool.size < per_class:
            raise ValueError(f"class {CLASSES[label]}: only {pool.size} images")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def write_split(out: Path, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
    if out.exists():
        shutil.rmtree(out)  # no stale PNGs from an earlier run with other settings
    for name in CLASSES:
        (out / name).mkdir(parents=True)
    for i in indices:
        path = out / CLASSES[labels[i]] / f"{i:05d}.png"
        Image.fromarray(images[i]).save(path, optimize=True)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def provenance(
    version: str, copyright_text: str, sums: dict[str, str], seed: int, size: int
) -> str:
    lines = [
        "# Fashion-MNIST subset",
        "",
        "Zalando's Fashion-MNIST: 28 x 28 grayscale photos of clothing articles, 10 classes.",
        f"Source: Debian package `{PACKAGE}` version {version}",
        "(upstream https://github.com/zalandoresearch/fashion-mnist), files",
        f"`/{DATA_DIR}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz`.",
        "Built by `scripts/make_fashion_mnist.py`; do not edit by hand.",
        "",
        "## Content",
        "",
        f"A class-balanced random subset (numpy `default_rng({seed})`, per class without",
        "replacement):",
        "",
        "| split | from upstream file | per class | images |",
        "| --- | --- | --- | --- |",
    ]
    for split, (prefix, per_class, _) in SPLITS.items():
        lines.append(f"| {split} | {prefix} | {per_class} | {per_class * len(CLASSES)} |")
    lines += [
        "",
        "Layout: `SPLIT/LABEL/NNNNN.png`, one 28 x 28 8-bit grayscale PNG per image;",
        "`NNNNN` is the image's index in its upstream file.",
        "Labels (upstream index: folder): "
        + ", ".join(f"{i}: {name}" for i, name in enumerate(CLASSES))
        + ".",
        f"Total size of the PNG files: {size:,} bytes.",
        "",
        "SHA-256 of the upstream files:",
        "",
    ]
    lines += [f"- `{name}`: `{digest}`" for name, digest in sums.items()]
    lines += [
        "",
        "## License",
        "",
        "MIT (Expat). The package's copyright file, verbatim:",
        "",
        "```",
        copyright_text.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--src", type=Path, help="unpacked package root (default: installed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.src or package_root(Path(tmp))
        data_dir = root / DATA_DIR
        copyright_text = (root / COPYRIGHT).read_text()
        rng = np.random.default_rng(args.seed)
        sums = {}
        for split, (prefix, per_class, rows) in SPLITS.items():
            files = [
                data_dir / f"{prefix}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")
            ]
            sums.update({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files})
            images, labels = read_idx(files[0], IMAGES_MAGIC), read_idx(files[1], LABELS_MAGIC)
            if images.shape != (rows, 28, 28) or labels.shape != (rows,):
                raise ValueError(
                    f"{prefix}: shapes {images.shape} / {labels.shape}, expected {rows}"
                )
            write_split(args.out / split, images, labels, pick_balanced(labels, per_class, rng))

    size = sum(folder_bytes(args.out / split) for split in SPLITS)
    note = provenance(package_version(), copyright_text, sums, args.seed, size)
    (args.out / "PROVENANCE.md").write_text(note)
    print(f"wrote {args.out} ({size:,} bytes of PNG)")


if __name__ == "__main__":
    main()
