"""The lake on object storage: `ENRICH_LAKE_URI=s3://bucket/prefix` (any S3-compatible store).

The object store is the source of truth; each process works on a local working copy, the
data folder (`ENRICH_DATA_DIR`: a scratch folder, like a pod's emptyDir), on which DuckDB,
Polars and Arrow run exactly as they do on the embedded default. `LakeMirror` keeps the two
in step, through pyarrow's `S3FileSystem` (no DuckDB extension, nothing downloaded at run
time):

- `pull` (a command or a run starts): one listing of the prefix; each object that is new or
  changed since this copy last saw it (size and modification time) is downloaded to a hidden
  temporary file and renamed into place, so no reader sees half an object. A file changed
  here and not pushed yet is kept (it is pushed next).
- `push` (a run or a command ends, failed or not): each file written here since the last
  sync is uploaded as one object (one stream = one PUT, or one multipart upload that
  appears whole on completion; a writer that dies mid-upload leaves no object). Data files
  go first, then, once they are all in, the files that point at them (manifests, export
  receipts, the content index), then the statuses (`completed` only once the exports are
  there). A file removed here is removed there.

Synced: `lake/` (but `lake/locks/` and `lake/claims/`, which belong to one machine),
`export/` and `reports/`. Hidden temporary files and lock files never are. What was synced
is remembered in `<data folder>/.lake_sync/state.json` (under a lock: the processes of one
machine may share a working copy).

S3-compatible stores differ: pyarrow's AWS SDK frames uploads with `aws-chunked` checksums,
which some stores (SeaweedFS among them) keep as part of the object. So, unless the user
set them, `AWS_REQUEST_CHECKSUM_CALCULATION` and `AWS_RESPONSE_CHECKSUM_VALIDATION` default
to `WHEN_REQUIRED` before the first S3 filesystem is made.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from enrichment_assets import settings as env_settings
from enrichment_assets.faults import fault_point
from enrichment_assets.lake import atomic_path

LAKE_URI_ENV = "ENRICH_LAKE_URI"
S3_ENDPOINT_ENV = "ENRICH_S3_ENDPOINT"
CHECKSUM_DEFAULTS = {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "WHEN_REQUIRED",
}
SYNCED_FOLDERS = ("lake", "export", "reports")
_LOCAL_ONLY = ("lake/locks/", "lake/claims/")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TRANSFER_THREADS = 8
_CHUNK = 1 << 20


class LakeStoreError(Exception):
    """The object store cannot be used: a bad URI, an endpoint down, no such bucket."""


@dataclass(frozen=True)
class S3Location:
    """`s3://bucket/prefix`."""

    bucket: str
    prefix: str

    @property
    def root(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def __str__(self) -> str:
        return f"s3://{self.root}"


def parse_lake_uri(text: str) -> S3Location | Path:
    """An `s3://bucket/prefix` location, or a local folder (a path or `file://` URI)."""
    text = text.strip()
    if not text:
        raise LakeStoreError(f"{LAKE_URI_ENV} is empty: a local folder or s3://bucket/prefix")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "file":
        return Path(urlsplit(text).path)
    if not scheme:
        return Path(text)
    if scheme != "s3":
        raise LakeStoreError(
            f"{LAKE_URI_ENV}: unsupported scheme {scheme!r} in {text!r}; use a local folder "
            "or s3://bucket/prefix"
        )
    bucket, _, prefix = text[5:].partition("/")
    if not _BUCKET.match(bucket):
        raise LakeStoreError(
            f"{LAKE_URI_ENV}: {bucket!r} is not a bucket name (3 to 63 characters: lowercase "
            f"letters, digits, dots, hyphens) in {text!r}"
        )
    return S3Location(bucket, prefix.strip("/"))


def s3_filesystem(
    endpoint: str | None,
    access_key: str | None = None,
    secret_key: str | None = None,
    **options: object,
):
    """pyarrow's S3 filesystem for `endpoint` (None = AWS); credentials None = the standard
    AWS variables and files. The checksum defaults are set first (see the module)."""
    for name, value in CHECKSUM_DEFAULTS.items():
        env_settings.default_to(name, value)
    from pyarrow import fs

    settings: dict[str, object] = {
        "region": env_settings.text("AWS_REGION")
        or env_settings.text("AWS_DEFAULT_REGION", "us-east-1"),
        "connect_timeout": 5.0,
        "request_timeout": 60.0,
        "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LakeStoreError(f"{S3_ENDPOINT_ENV}: {endpoint!r} is not an http(s) address")
        settings.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    if access_key and secret_key:
        settings.update(access_key=access_key, secret_key=secret_key)
    return fs.S3FileSystem(**{**settings, **options})


@dataclass(frozen=True)
class StoreSettings:
    """Where the lake is: `uri` (empty = the data folder), `endpoint` (empty = AWS),
    credentials (empty = the standard AWS variables, read by the AWS SDK)."""

    uri: str = ""
    endpoint: str = ""
    access_key: str = ""
    secret_key: str = ""

    @classmethod
    def from_env(
        cls, uri: str = "", endpoint: str = "", access_key: str = "", secret_key: str = ""
    ) -> StoreSettings:
        """These values; an empty `uri` is `ENRICH_LAKE_URI`, an empty `endpoint`
        `ENRICH_S3_ENDPOINT` (for the `lake` resource and the command line)."""
        return cls(
            uri or env_settings.text(LAKE_URI_ENV),
            endpoint or env_settings.text(S3_ENDPOINT_ENV),
            access_key,
            secret_key,
        )

    def location(self) -> S3Location | Path | None:
        """The object-store location, a local folder, or None (the data folder)."""
        return parse_lake_uri(self.uri) if self.uri.strip() else None


def _synced(rel: str) -> bool:
    parts = rel.split("/")
    return (
        parts[0] in SYNCED_FOLDERS
        and not rel.startswith(_LOCAL_ONLY)
        and not any(p.startswith(".") and p != ".index" for p in parts)
        and not parts[-1].endswith(".lock")
        and not parts[-1].startswith("tmp_")
    )


def _tier(rel: str) -> int:
    """The order of a push: 0 the data; 1 what points at data (manifests, export receipts,
    the content index, publication records); 2 the statuses, which say `completed` only
    once the exports and their receipts are in."""
    if rel.startswith("lake/status/"):
        return 2
    pointer = (
        rel.endswith("/manifest.json")
        or rel.startswith("lake/exports/")
        or "/.index/" in rel
        or rel.endswith(".published.json")
    )
    return 1 if pointer else 0


class LakeMirror:
    """The working copy `data_dir` of the lake at `location` (see the module)."""

    def __init__(self, filesystem: object, location: S3Location, data_dir: Path) -> None:
        self.fs = filesystem
        self.location = location
        self.data_dir = data_dir
        self._state_dir = data_dir / ".lake_sync"
        self._thread_lock = threading.Lock()

    def check(self) -> None:
        """Raise LakeStoreError unless the bucket answers (one request)."""
        from pyarrow import fs

        try:
            info = self.fs.get_file_info(self.location.bucket)  # type: ignore[attr-defined]
        except OSError as error:
            raise self._error(error) from error
        if info.type != fs.FileType.Directory:
            raise LakeStoreError(
                f"object store {self.location}: no bucket {self.location.bucket!r}"
            )

    # -- state ---------------------------------------------------------------------------

    @contextmanager
    def _state(self) -> Iterator[dict[str, list[int]]]:
        """{rel: [local size, local mtime ns, remote size, remote mtime ns]} as last synced,
        held under this working copy's lock; saved at exit."""
        self._state_dir.mkdir(parents=True, exist_ok=True)
        path = self._state_dir / "state.json"
        with self._thread_lock:
            fd = os.open(self._state_dir / "sync.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                state = orjson.loads(path.read_bytes()) if path.exists() else {}
                yield state
                with atomic_path(path) as tmp:
                    tmp.write_bytes(orjson.dumps(state))
            finally:
                os.close(fd)

    def _remote(self) -> dict[str, tuple[int, int]]:
        """Every synced object under the prefix: {rel: (size, mtime ns)} (one listing)."""
        from pyarrow import fs

        root = self.location.root
        try:
            infos = self.fs.get_file_info(
                fs.FileSelector(root, recursive=True, allow_not_found=True)
            )  # type: ignore[attr-defined]
        except OSError as error:
            raise self._error(error) from error
        return {
            rel: (info.size, _ns(info.mtime))
            for info in infos
            if info.type == fs.FileType.File and _synced(rel := info.path[len(root) + 1 :])
        }

    def _local(self) -> dict[str, tuple[int, int]]:
        found = {}
        for folder in SYNCED_FOLDERS:
            for root, _, files in os.walk(self.data_dir / folder):
                for name in files:
                    path = Path(root) / name
                    rel = path.relative_to(self.data_dir).as_posix()
                    if _synced(rel):
                        with suppress(FileNotFoundError):
                            stat = path.stat()
                            found[rel] = (stat.st_size, stat.st_mtime_ns)
        return found

    # -- pull ----------------------------------------------------------------------------

    def pull(self) -> int:
        """Bring what changed there since this copy last saw it; returns the objects fetched."""
        with self._state() as state:
            remote = self._remote()
            local = self._local()
            wanted = []
            for rel, info in remote.items():
                known = state.get(rel)
                if known is not None and tuple(known[2:]) == info:
                    continue  # unchanged there
                if rel in local and (known is None or tuple(known[:2]) != local[rel]):
                    continue  # changed here, not pushed yet: kept, pushed next
                wanted.append(rel)
            with ThreadPoolExecutor(_TRANSFER_THREADS, thread_name_prefix="lake-pull") as pool:
                for rel, local_info in zip(wanted, pool.map(self._download, wanted), strict=True):
                    state[rel] = [*local_info, *remote[rel]]
            for rel in [r for r in state if r not in remote]:
                # Removed there: removed here too, unless changed here since.
                if local.get(rel) == tuple(state[rel][:2]):
                    (self.data_dir / rel).unlink(missing_ok=True)
                if rel not in local or local.get(rel) == tuple(state[rel][:2]):
                    del state[rel]
            return len(wanted)

    def _download(self, rel: str) -> tuple[int, int]:
        target = self.data_dir / rel
        with atomic_path(target) as tmp:
            try:
                with self.fs.open_input_stream(self._key(rel)) as source, tmp.open("wb") as out:  # type: ignore[attr-defined]
                    while chunk := source.read(_CHUNK):
                        out.write(chunk)
            except OSError as error:
                raise self._error(error) from error
        stat = target.stat()
        return stat.st_size, stat.st_mtime_ns

    # -- push ----------------------------------------------------------------------------

    def push(self) -> int:
        """Send what changed here since the last sync; returns the objects written."""
        with self._state() as state:
            local = self._local()
            changed = [rel for rel, info in local.items() if tuple(state.get(rel, [])[:2]) != info]
            sent: dict[str, tuple[int, int]] = {}
            with ThreadPoolExecutor(_TRANSFER_THREADS, thread_name_prefix="lake-push") as pool:
                for tier in range(3):
                    group = [rel for rel in changed if _tier(rel) == tier]
                    sent.update(zip(group, pool.map(self._upload, group), strict=True))
                    if tier == 0:
                        fault_point("object_pointers")  # data objects in, pointers not yet
                        self._remove_deleted(state, local)
            if sent:
                remote = self._remote()
                for rel, local_info in sent.items():
                    state[rel] = [*local_info, *remote.get(rel, (-1, -1))]
            return len(sent)

    def _remove_deleted(self, state: dict[str, list[int]], local: dict[str, object]) -> None:
        for rel in [r for r in state if r not in local]:
            # Removed by the pipeline (its folder is there): removed there too. A folder
            # wiped by hand (to free the disk) is not a removal.
            if (self.data_dir / rel).parent.is_dir():
                self._delete(rel)
            del state[rel]

    def _upload(self, rel: str) -> tuple[int, int]:
        """One object from one local file: one stream, so it appears whole or not at all.

        Copied by Arrow outside the interpreter (no signal handler runs halfway); a process
        killed meanwhile never completes the upload, so no object appears.
        """
        from pyarrow import fs

        path = self.data_dir / rel
        try:
            stat = path.stat()  # replaced meanwhile: uploaded again by the next push
            fs.copy_files(
                str(path),
                self._key(rel),
                source_filesystem=fs.LocalFileSystem(),
                destination_filesystem=self.fs,
                use_threads=False,
            )
        except FileNotFoundError:
            return (-1, -1)  # removed meanwhile: the next push deletes it there
        except OSError as error:
            raise self._error(error) from error
        return stat.st_size, stat.st_mtime_ns

    def _delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self._key(rel))  # type: ignore[attr-defined]
        except FileNotFoundError:
            pass
        except OSError as error:
            raise self._error(error) from error

    def _error(self, error: OSError) -> LakeStoreError:
        return LakeStoreError(f"object store {self.location}: {_first_line(error)}")

    def _key(self, rel: str) -> str:
        return f"{self.location.root}/{rel}"


def _ns(mtime: object) -> int:
    return int(mtime.timestamp() * 1_000_000) * 1000 if mtime is not None else -1  # type: ignore[attr-defined]


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# -- one mirror per working copy and location, per process ------------------------------------

_mirrors: dict[tuple[str, Path], LakeMirror] = {}
_mirrors_lock = threading.Lock()
_opened: list[LakeMirror] = []


def mirror_of(data_dir: Path, settings: StoreSettings) -> LakeMirror | None:
    """The mirror of the working copy `data_dir` (its bucket checked once per process), or
    None when the lake is a local folder. LakeStoreError when the store cannot be used."""
    location = settings.location()
    if not isinstance(location, S3Location):
        return None
    key = (str(location), data_dir.resolve())
    with _mirrors_lock:
        if key not in _mirrors:
            filesystem = s3_filesystem(
                settings.endpoint or None, settings.access_key, settings.secret_key
            )
            mirror = LakeMirror(filesystem, location, data_dir)
            mirror.check()
            _mirrors[key] = mirror
        return _mirrors[key]


def open_working_copy(data_dir: Path, settings: StoreSettings) -> LakeMirror | None:
    """For a command: the mirror of `data_dir`, pulled once per command (None: local lake);
    `push_opened` pushes it when the command ends."""
    mirror = mirror_of(data_dir, settings)
    if mirror is not None and mirror not in _opened:
        mirror.pull()
        _opened.append(mirror)
    return mirror


@contextmanager
def synced(mirror: LakeMirror | None) -> Iterator[None]:
    """Pull at entry, push at exit (also after a failure: what was written here is whole)."""
    if mirror is None:
        yield
        return
    mirror.pull()
    try:
        yield
    finally:
        mirror.push()


def shown(path: Path) -> str:
    """`path` for people: on an s3 lake, the object URI of a working-copy path it syncs."""
    resolved = path.resolve()
    for location, data_dir in list(_mirrors):
        if resolved.is_relative_to(data_dir):
            rel = resolved.relative_to(data_dir).as_posix()
            if rel.split("/")[0] in SYNCED_FOLDERS:
                return f"{location}/{rel}"
    return str(resolved)


def push_opened() -> None:
    """Push the working copies this command opened (`open_working_copy`), at its end."""
    while _opened:
        _opened.pop().push()
