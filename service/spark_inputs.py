"""What the Spark job reads: its INPUTs as claim files (read by Spark) and companion files (indexed
on the driver, the index shipped to the executors).

- **Local inputs** (plain paths, ``file:`` URIs) are listed as the local engine lists them
  (:func:`service.bulk_input.input_files`: a Bulk Data export's directory or manifest, per-type
  files, NDJSON claim files).
- **Inputs on a Hadoop file system** (``hdfs:``, ``s3a:``, ``abfs:``, ``gs:``, ``viewfs:``, ...; and
  globs, local or not) are listed through Hadoop's ``FileSystem`` API in the driver's JVM, with the
  job's Hadoop configuration, by the same rules: a directory's manifests (``*.json`` files that are
  ``$export`` status responses) else its ``*.ndjson`` / ``*.jsonl`` files (``.gz`` too); a
  manifest's ``output[]`` files, found in the manifest's directory by their url's last segment; a
  file's type by its name, else by its first record (read by Spark). The companion files are
  copied to the driver's local disk (``FileSystem.copyToLocalFile``, streamed by the JVM) and
  indexed there; the claim files stay where they are and are read by Spark. Errors name the files
  as given (the url), never the local copies.

Inputs without companion files (NDJSON claim files, a folder of Spark's part files) are handed to
Spark as given, as before.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid

from .batch import review_table
from .bulk_input import (BODIES_SUFFIX, CLAIM_TYPES, NDJSON_NAME, BatchInput, InputError, InputFile, UsageError, classified,
                         input_files, is_manifest, manifest_outputs, record_type)
from .jsonio import dumps, loads

MANIFEST_MAX_BYTES = 16 << 20  # a manifest is read whole on the driver


def local_path(path: str) -> str | None:
    """The local path of an INPUT (a plain path or a ``file:`` URI); None for another scheme."""
    if path.startswith("file:"):
        return path.removeprefix("file:").removeprefix("//")
    return None if "://" in path else path


class HadoopFiles:
    """Listing and copying through Hadoop's FileSystem API (the driver's JVM, the job's Hadoop
    configuration): what the Spark job needs of an export on ``hdfs:``, ``s3a:``, ...."""

    def __init__(self, sc) -> None:
        self._jvm = sc._jvm
        self._conf = sc._jsc.hadoopConfiguration()

    def _fs(self, url: str):
        path = self._jvm.org.apache.hadoop.fs.Path(url)
        return path, path.getFileSystem(self._conf)

    def matches(self, pattern: str) -> list[tuple[str, bool, int]]:
        """(url, is a directory, length) of what a path or glob names; [] when nothing."""
        path, fs = self._fs(pattern)
        found = fs.globStatus(path)
        return [(st.getPath().toString(), bool(st.isDirectory()), int(st.getLen())) for st in (found or [])]

    def listing(self, directory: str) -> list[tuple[str, bool, int]]:
        """(url, is a directory, length) of a directory's entries, by name."""
        path, fs = self._fs(directory)
        entries = [(st.getPath().toString(), bool(st.isDirectory()), int(st.getLen())) for st in fs.listStatus(path)]
        return sorted(entries, key=lambda e: e[0].rsplit("/", 1)[-1])

    def exists(self, url: str) -> bool:
        path, fs = self._fs(url)
        return bool(fs.exists(path))

    def copy(self, url: str, local: str) -> None:
        """Copy a file to the local disk (streamed by the JVM; no .crc beside it)."""
        path, fs = self._fs(url)
        target = self._jvm.org.apache.hadoop.fs.Path("file://" + os.path.abspath(local))
        fs.copyToLocalFile(False, path, target, True)


def _name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def remote_input_files(sc, hadoop: HadoopFiles, pattern: str, scratch: str) -> list[InputFile] | None:
    """The files of an INPUT on a Hadoop file system (see the module docstring), each an InputFile
    whose path is its url; None for a directory holding neither a manifest nor NDJSON files (a
    folder of part files: Spark reads it as claims). Raises UsageError."""
    found = hadoop.matches(pattern)
    if not found:
        raise UsageError(f"no such input file or directory: {pattern}")
    files: list[InputFile] = []
    for url, is_dir, size in found:
        if is_dir:
            entries = [(u, n) for u, d, n in hadoop.listing(url) if not d]
            manifests = [u for u, n in entries if u.endswith(".json") and _is_remote_manifest(hadoop, u, n, scratch)]
            if manifests:
                for m in manifests:
                    files += _remote_manifest_files(hadoop, m, scratch)
            else:
                named = [u for u, _n in entries if NDJSON_NAME.search(_name(u))]
                if not named and len(found) == 1:
                    return None
                files += [classified(u, lambda u=u: _first_type(sc, u)) for u in named]
        elif url.endswith(".json") and _is_remote_manifest(hadoop, url, size, scratch):
            files += _remote_manifest_files(hadoop, url, scratch)
        else:
            files.append(classified(url, lambda u=url: _first_type(sc, u)))
    return files


def _first_type(sc, url: str) -> str | None:
    """The resourceType of a remote file's first non-blank record (read by Spark)."""
    first = sc.textFile(url).filter(lambda line: bool(line.strip())).take(1)
    return record_type(first[0]) if first else None


def _fetched(hadoop: HadoopFiles, url: str, scratch: str) -> str:
    local = os.path.join(scratch, f"{uuid.uuid4().hex}-{_name(url)}")
    hadoop.copy(url, local)
    return local


def _is_remote_manifest(hadoop: HadoopFiles, url: str, size: int, scratch: str) -> bool:
    if size > MANIFEST_MAX_BYTES:
        return False
    local = _fetched(hadoop, url, scratch)
    try:
        return is_manifest(local)
    finally:
        os.unlink(local)


def _remote_manifest_files(hadoop: HadoopFiles, url: str, scratch: str) -> list[InputFile]:
    local = _fetched(hadoop, url, scratch)
    try:
        with open(local, "rb") as fh:
            manifest = loads(fh.read())
    finally:
        os.unlink(local)
    base = url.rstrip("/").rsplit("/", 1)[0]
    files = []
    for i, (rtype, name) in enumerate(manifest_outputs(manifest, url)):
        target = f"{base}/{name}"
        if not hadoop.exists(target):
            raise UsageError(f"{url}: output[{i}].url names a file that is not in {base}")
        files.append(InputFile(target, rtype, rtype in CLAIM_TYPES))
    return files


class ExportOnDriver:
    """The INPUTs as the Spark job reads them (see the module docstring): the companion files of
    their exports indexed on the driver (:class:`~service.bulk_input.BatchInput`'s on-disk index,
    bounded whatever the export's size) and the index shipped to the executors (``addFile``, a
    folder of a name of its own holding the index and its bodies file), where each partition joins its claims with it as the local engine's
    workers do. ``claim_files``: what Spark reads as claims; ``errors``: the companion files' bad
    records (errors.ndjson lines); ``duplicates``: their repeats. Raises UsageError for an INPUT
    that names nothing."""

    def __init__(self, inputs: list[str], sc) -> None:
        self._source: BatchInput | None = None
        self._scratch: str | None = None
        self.index_name: str | None = None
        self.errors: list[str] = []
        self.duplicates: dict[str, int] = {}
        self.claim_files = list(inputs)
        files: list[InputFile] = []
        remote: set[str] = set()  # the files listed through Hadoop (urls), not on the local disk
        copies: dict[str, str] = {}  # local copy -> the url it was read from
        hadoop = HadoopFiles(sc)
        try:
            for path in inputs:
                local = local_path(path)
                if local is not None and os.path.exists(local):
                    try:
                        files += input_files([local])
                    except UsageError:
                        return  # not an export; left to Spark, as before
                    continue
                if self._scratch is None:
                    self._scratch = tempfile.mkdtemp(prefix="fluoro-cds-remote-")
                listed = remote_input_files(sc, hadoop, path, self._scratch)
                if listed is None:  # a folder of part files
                    files.append(InputFile(path, None, True))
                    continue
                files += listed
                remote.update(f.path for f in listed)
            companions = [f for f in files if not f.claims]
            if not companions:  # NDJSON claim files (or a folder of part files): Spark reads them as given
                return
            local_files = []
            for f in companions:
                if f.path in remote:
                    copy = _fetched(hadoop, f.path, self._scratch or "")
                    copies[copy] = f.path
                    f = InputFile(copy, f.kind, False)
                local_files.append(f)
            source = self._source = BatchInput([], files=local_files).__enter__()
            self.claim_files = [f.path for f in files if f.claims]
            self.duplicates = dict(source.duplicates)
            for err in source.companion_errors():
                err = _as_given(err, copies)
                self.errors.append(dumps(review_table(err, (err.file, err.line), None, {}, ("", "", ""))[1]).decode())
            if source.index_path is not None:  # the index and its bodies file, as one folder
                self.index_name = f"fluoro-cds-index-{uuid.uuid4().hex}"  # addFile names are per context
                shipped = os.path.join(os.path.dirname(source.index_path), self.index_name)
                os.mkdir(shipped)
                folder, name = os.path.split(source.index_path)
                for entry in os.listdir(folder):
                    if entry == name or entry.startswith(name + BODIES_SUFFIX):  # the index and its stores
                        os.link(os.path.join(folder, entry), os.path.join(shipped, entry))
                sc.addFile(shipped, recursive=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._source is not None:
            self._source.__exit__(None, None, None)
            self._source = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _as_given(err: InputError, copies: dict[str, str]) -> InputError:
    """A companion file's error naming the file as given (the url), not the driver's local copy."""
    if not copies:
        return err
    reason = err.reason
    for copy, url in copies.items():
        reason = reason.replace(copy, url)
    return err._replace(file=copies.get(err.file, err.file), reason=reason)
