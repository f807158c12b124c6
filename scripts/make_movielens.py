"""Build ``examples/data/movielens/`` (ratings + movies Parquet, PROVENANCE.md) from Debian's dslabs.

Why a script: the committed Parquet must be reproducible on a fresh machine without R. It
downloads ``r-cran-dslabs`` with ``apt-get download`` (run ``apt-get update`` first), unpacks it
into a temp dir, reads the R data frame ``movielens`` (MovieLens "latest-small", 2016 edition,
one row per rating with the movie's title, year and genres repeated) from the lazy-load database,
and splits it into a ratings table and a movies table. Usage::

    python scripts/make_movielens.py [--out DIR] [--deb path/to/r-cran-dslabs_*.deb]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from r_lazyload import (  # noqa: E402
    DebPackage,
    fetch_deb,
    find_lazyload_db,
    read_description,
    read_lazyload_object,
)

PACKAGE = "r-cran-dslabs"
R_PACKAGE_DIR = "usr/lib/R/site-library/dslabs"
COPYRIGHT = f"usr/share/doc/{PACKAGE}/copyright"
R_OBJECT = "movielens"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "examples" / "data" / "movielens"
# Expected size; a different one means upstream changed and PROVENANCE needs a human look.
EXPECTED = {"ratings": 100_004, "users": 671, "movies": 9_066}

RATINGS_SCHEMA = pa.schema(
    [
        ("userId", pa.int64()),
        ("movieId", pa.int64()),
        ("rating", pa.float32()),
        ("timestamp", pa.int64()),
    ]
)
MOVIES_SCHEMA = pa.schema(
    [
        ("movieId", pa.int64()),
        ("title", pa.string()),
        ("year", pa.int64()),
        ("genres", pa.string()),
    ]
)


def split_movielens(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split dslabs' one-row-per-rating frame into ``(ratings, movies)``.

    Ratings keep the original row order (by userId, then movieId). Movies get one row per movieId,
    sorted by id; a movie whose title / year / genres differ between rows is an error, since
    the split would silently pick one. Titles are stripped of surrounding whitespace; a missing
    title or year (NA in dslabs) stays missing rather than being guessed.
    """
    need = {"userId", "movieId", "rating", "timestamp", "title", "year", "genres"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ValueError(f"missing columns {missing}; have {list(df.columns)}")
    ids = df[["userId", "movieId", "rating", "timestamp"]]
    if ids.isna().any().any():
        raise ValueError(f"missing ids / ratings: {ids.isna().sum().to_dict()}")
    ratings = pd.DataFrame(
        {
            "userId": df["userId"].to_numpy("int64"),
            "movieId": df["movieId"].to_numpy("int64"),
            "rating": df["rating"].to_numpy("float32"),
            "timestamp": df["timestamp"].to_numpy("int64"),
        }
    )
    meta = pd.DataFrame(
        {
            "movieId": ratings["movieId"],
            "title": df["title"].astype("string").str.strip().to_numpy(object),
            "year": df["year"].astype("Int64").to_numpy(),
            "genres": df["genres"].astype("string").to_numpy(object),
        }
    )
    varying = meta.groupby("movieId")[["title", "year", "genres"]].nunique(dropna=False)
    if (varying > 1).any().any():
        bad = varying[(varying > 1).any(axis=1)].index[:5].tolist()
        raise ValueError(f"movies with conflicting title/year/genres, e.g. movieId {bad}")
    movies = meta.drop_duplicates("movieId").sort_values("movieId", kind="stable")
    movies = movies.reset_index(drop=True)
    movies["year"] = movies["year"].astype("Int64")
    return ratings, movies


def write_parquet(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    """Write with a fixed schema (no pandas index or metadata) and zstd compression."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False).replace_schema_metadata()
    pq.write_table(table, path, compression="zstd")


def render_provenance(
    pkg: DebPackage,
    copyright_text: str,
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    sizes: dict[str, int],
) -> str:
    """PROVENANCE.md text; every number in it is computed from the tables just written."""
    r_version = read_description(pkg.path(R_PACKAGE_DIR))["Version"]
    # Quote the header and the per-file stanzas; the Artistic-2.0 text itself is long and standard.
    header = copyright_text.split("\nLicense: Artistic-2.0\n Everyone", 1)[0].strip()
    quoted = "\n".join(f"    {line}".rstrip() for line in header.splitlines())
    dist = ratings["rating"].value_counts().sort_index()
    dist_text = ", ".join(f"{k:g}: {v:,}" for k, v in dist.items())
    first = pd.to_datetime(ratings["timestamp"].min(), unit="s").date()
    last = pd.to_datetime(ratings["timestamp"].max(), unit="s").date()
    no_title = movies.loc[movies["title"].isna(), "movieId"].tolist()
    no_genre = int((movies["genres"] == "(no genres listed)").sum())
    n_users = ratings["userId"].nunique()
    density = len(ratings) / (n_users * len(movies))
    return f"""# MovieLens ratings (recommendation)

The MovieLens "latest-small" ratings (2016 edition) as two tables.

| file | rows | columns | bytes |
| --- | ---: | --- | ---: |
| `ratings.parquet` | {len(ratings):,} | userId int64, movieId int64, rating float32, timestamp int64 (Unix seconds) | {sizes["ratings"]:,} |
| `movies.parquet` | {len(movies):,} | movieId int64, title string, year int64 (nullable), genres string (`\\|`-separated) | {sizes["movies"]:,} |

{n_users:,} users, {len(movies):,} movies (only movies with at least one rating), density
{density:.2%}; ratings from {first} to {last}; every user has at least
{ratings.groupby("userId").size().min()} ratings. Rating counts (0.5-5 in half stars):
{dist_text}.

## Source
- Debian package `{pkg.name}` version `{pkg.version}` (from `dpkg-deb -f`; `.deb` sha256
  `{pkg.sha256}`),
  which packages the CRAN package **dslabs** {r_version}
  (Rafael A. Irizarry, Amy Gill), R object `{R_OBJECT}`.
- dslabs' help page names the source as "MovieLens Latest Dataset (Small)",
  <http://files.grouplens.org/datasets/movielens/ml-latest-small.zip>, by GroupLens Research,
  University of Minnesota. Cite: F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens
  Datasets: History and Context. ACM Transactions on Interactive Intelligent Systems (TiiS) 5,
  4, Article 19 (December 2015), 19 pages. <https://doi.org/10.1145/2827872>

## License
The data are under the GroupLens usage license of the MovieLens README (not an open-source
license). In short: research use; do not state or imply endorsement by the University of
Minnesota or GroupLens; acknowledge the data set in publications (cite the paper above);
redistribution, including transformations such as these files, only under the same
conditions; no commercial or revenue-bearing use without permission from GroupLens; no
warranty of correctness or fitness. Read the README in the zip above for the exact text.

The Debian copyright file (`/{COPYRIGHT}`) has no separate note on the data: it
lists the whole package, data included, as Artistic-2.0 (the R package's license). Its header
and stanzas:

{quoted}

## How it was produced
`python scripts/make_movielens.py` (needs `apt-get update` once; does not install R):
`apt-get download {pkg.name}`, `dpkg -x` into a temp dir, read `{R_OBJECT}` from
`{R_PACKAGE_DIR}/data/Rdata.rdx/.rdb` with `scripts/r_lazyload.py`
(PyPI `rdata`), then:
ratings = (userId, movieId, rating, timestamp) in the original row order (userId, movieId);
movies = the distinct (movieId, title, year, genres), sorted by movieId, title whitespace
stripped. Parquet with zstd compression, no pandas metadata.

## Things to know
- dslabs split the year out of the MovieLens title (`Heat (1995)` -> title `Heat`, year 1995),
  so titles are not unique ({int(movies["title"].duplicated().sum())} repeats, e.g. remakes).
- {len(no_title)} movies have neither title nor year (NA in dslabs; movieId
  {", ".join(map(str, no_title))}); they keep their ratings and genres. pandas reads `year`
  as float64 because of these nulls; pass `dtype_backend="numpy_nullable"` for Int64.
- {no_genre} movies have genres `(no genres listed)`, the MovieLens placeholder.
- Tags and links (IMDb / TMDb ids) of the original release are not in dslabs, nor are the
  movies of its `movies.csv` that nobody rated.
"""


def build(out_dir: Path, pkg: DebPackage) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``movielens`` from the unpacked package and write both tables + PROVENANCE.md."""
    rdx, rdb = find_lazyload_db(pkg.path(R_PACKAGE_DIR), R_OBJECT)
    ratings, movies = split_movielens(read_lazyload_object(rdx, rdb, R_OBJECT))
    got = {
        "ratings": len(ratings),
        "users": ratings["userId"].nunique(),
        "movies": len(movies),
    }
    if got != EXPECTED:
        raise ValueError(f"{R_OBJECT}: got {got}, expected {EXPECTED}; check upstream")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(ratings, RATINGS_SCHEMA, out_dir / "ratings.parquet")
    write_parquet(movies, MOVIES_SCHEMA, out_dir / "movies.parquet")
    sizes = {name: (out_dir / f"{name}.parquet").stat().st_size for name in ("ratings", "movies")}
    copyright_text = pkg.path(COPYRIGHT).read_text(encoding="utf-8")
    (out_dir / "PROVENANCE.md").write_text(
        render_provenance(pkg, copyright_text, ratings, movies, sizes), encoding="utf-8"
    )
    return ratings, movies


def main(argv: list[str] | None = None) -> int:
    """Entry point: fetch the package into a temp dir, build, print a short summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--deb", type=Path, help="use this .deb instead of apt-get download")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="movielens-") as tmp:
        pkg = fetch_deb(PACKAGE, Path(tmp), args.deb)
        ratings, movies = build(args.out, pkg)
    print(
        f"{args.out}: {len(ratings)} ratings, {ratings['userId'].nunique()} users, "
        f"{len(movies)} movies"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
