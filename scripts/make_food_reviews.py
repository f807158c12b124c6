"""Build ``examples/data/food-reviews/`` (train/test JSONL + PROVENANCE.md) from Debian's modeldata.

Why a script: the committed JSONL must be reproducible by anyone on a fresh machine, without R.
It downloads ``r-cran-modeldata`` (MIT) with ``apt-get download`` (run ``apt-get update`` first),
unpacks it into a temp dir, reads the R objects ``training_data`` / ``testing_data`` from the
lazy-load database, and writes one JSON object per review. Usage::

    python scripts/make_food_reviews.py [--out DIR] [--deb path/to/r-cran-modeldata_*.deb]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from r_lazyload import (  # noqa: E402
    DebPackage,
    fetch_deb,
    find_lazyload_db,
    read_description,
    read_lazyload_object,
)

PACKAGE = "r-cran-modeldata"
R_PACKAGE_DIR = "usr/lib/R/site-library/modeldata"
COPYRIGHT = f"usr/share/doc/{PACKAGE}/copyright"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "examples" / "data" / "food-reviews"
COLUMNS = ("product", "review", "score")
LABELS = ("great", "other")
# split file stem -> (R object, expected rows); a different count means upstream changed the data
# and the PROVENANCE facts below need a human look, so we stop rather than write quietly.
SPLITS = {"train": ("training_data", 4000), "test": ("testing_data", 1000)}


def clean_reviews(df: pd.DataFrame) -> pd.DataFrame:
    """Keep ``product, review, score`` as plain strings with surrounding whitespace stripped.

    Row order is kept (the R row names are dropped). The text is otherwise untouched: the
    upstream reviews contain HTML (``<br />``, ``&eacute;``) and a few U+FFFD characters, and
    deciding what to do with them belongs to a model's preprocessing, not to the data file.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"missing columns {missing}; have {list(df.columns)}")
    out = df.loc[:, list(COLUMNS)].reset_index(drop=True)
    if out.isna().any().any():
        raise ValueError(f"missing values: {out.isna().sum().to_dict()}")
    out = out.astype(str).apply(lambda col: col.str.strip()).astype(object)
    bad = sorted(set(out["score"]) - set(LABELS))
    if bad:
        raise ValueError(f"unexpected score labels {bad}; expected {LABELS}")
    empty = int((out["review"] == "").sum())
    if empty:
        raise ValueError(f"{empty} empty reviews")
    return out


def write_jsonl(df: pd.DataFrame, path: Path) -> None:
    """One JSON object per line, UTF-8 kept as is (``ensure_ascii=False``), ``\\n`` line ends."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in df.itertuples(index=False):
            f.write(json.dumps(dict(zip(df.columns, row, strict=True)), ensure_ascii=False) + "\n")


def class_balance(df: pd.DataFrame) -> dict[str, int]:
    """Rows per label, in the fixed label order."""
    counts = df["score"].value_counts()
    return {label: int(counts.get(label, 0)) for label in LABELS}


def render_provenance(
    pkg: DebPackage, copyright_text: str, splits: dict[str, pd.DataFrame], sizes: dict[str, int]
) -> str:
    """PROVENANCE.md text; every number in it is computed from the files just written."""
    rows = []
    for split, df in splits.items():
        bal = class_balance(df)
        n = len(df)
        shares = ", ".join(f"{k} {v} ({v / n:.1%})" for k, v in bal.items())
        rows.append(
            f"| `{split}.jsonl` | `{SPLITS[split][0]}` | {n:,} | {df['product'].nunique():,} "
            f"| {shares} | {sizes[split]:,} |"
        )
    r_version = read_description(pkg.path(R_PACKAGE_DIR))["Version"]
    train, test = splits["train"], splits["test"]
    dup_train = int(train["review"].duplicated().sum())
    shared = len(set(train["review"]) & set(test["review"]))
    # MIT asks that the notice travel with copies, so the whole (short) file is quoted.
    quoted = "\n".join(f"    {line}".rstrip() for line in copyright_text.strip().splitlines())
    table = "\n".join(rows)
    return f"""# Food reviews (text classification)

Short Amazon fine-food reviews labelled by whether the reviewer gave 5 stars (`great`) or fewer
(`other`). One JSON object per line: `product` (Amazon product id), `review` (text), `score`.

| file | R object | rows | products | score balance | bytes |
| --- | --- | ---: | ---: | --- | ---: |
{table}

## Source
- Debian package `{pkg.name}` version `{pkg.version}` (from `dpkg-deb -f`; `.deb` sha256
  `{pkg.sha256}`),
  which packages the CRAN package **modeldata** {r_version} by Max Kuhn (Posit / RStudio), data set `small_fine_foods` (objects `training_data`,
  `testing_data`).
- modeldata's help page says the reviews come from Amazon via the Stanford SNAP collection
  "Amazon Fine Foods reviews", <https://snap.stanford.edu/data/web-FineFoods.html>:
  J. McAuley and J. Leskovec, "From amateurs to connoisseurs: modeling the evolution of user
  expertise through online reviews", WWW 2013. The outcome is whether the reviewer gave a
  5-star rating.

## License
MIT, per the package's Debian copyright file (`/{COPYRIGHT}`),
quoted in full:

{quoted}

## How it was produced
`python scripts/make_food_reviews.py` (needs `apt-get update` once; does not install R):
`apt-get download {pkg.name}`, `dpkg -x` into a temp dir, read `training_data` and
`testing_data` from `{R_PACKAGE_DIR}/data/Rdata.rdx/.rdb` with
`scripts/r_lazyload.py` (PyPI `rdata`), keep the three columns as strings with surrounding
whitespace stripped, keep the original row order, and write JSONL (UTF-8, not ASCII-escaped).

## Things to know
- The text is as upstream wrote it: HTML line breaks (`<br />`), entities (`&eacute;`), links,
  and a few U+FFFD replacement characters from the original crawl.
- `train` has {dup_train} reviews that repeat an earlier train review word for word, under other
  product ids (probably one review listed under several variants of a product); {shared}
  review texts appear in both `train` and `test`. Deduplicate before trusting test scores to
  the last decimal.
- modeldata's help page says the training set holds all reviews of 10 sampled products and the
  test set one review from each of 500 other products. The objects as shipped do not match
  that: every one of the {len(train) + len(test):,} rows has a different `product` id, so no
  product spans train and test and there are no product groups to resample by.
"""


def build(out_dir: Path, pkg: DebPackage) -> dict[str, pd.DataFrame]:
    """Read both splits from the unpacked package and write JSONL + PROVENANCE.md."""
    rdx, rdb = find_lazyload_db(pkg.path(R_PACKAGE_DIR), SPLITS["train"][0])
    out_dir.mkdir(parents=True, exist_ok=True)
    splits: dict[str, pd.DataFrame] = {}
    sizes: dict[str, int] = {}
    for split, (obj, expected) in SPLITS.items():
        df = clean_reviews(read_lazyload_object(rdx, rdb, obj))
        if len(df) != expected:
            raise ValueError(f"{obj}: {len(df)} rows, expected {expected}; check upstream")
        path = out_dir / f"{split}.jsonl"
        write_jsonl(df, path)
        splits[split], sizes[split] = df, path.stat().st_size
    copyright_text = pkg.path(COPYRIGHT).read_text(encoding="utf-8")
    (out_dir / "PROVENANCE.md").write_text(
        render_provenance(pkg, copyright_text, splits, sizes), encoding="utf-8"
    )
    return splits


def main(argv: list[str] | None = None) -> int:
    """Entry point: fetch the package into a temp dir, build, print a one-line summary per split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--deb", type=Path, help="use this .deb instead of apt-get download")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="food-reviews-") as tmp:
        pkg = fetch_deb(PACKAGE, Path(tmp), args.deb)
        splits = build(args.out, pkg)
    for split, df in splits.items():
        print(f"{args.out / (split + '.jsonl')}: {len(df)} rows, {class_balance(df)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
