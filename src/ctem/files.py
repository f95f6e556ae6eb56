"""How ctem writes files: atomically (a temporary file or folder beside the target, renamed
into place when complete, removed on any failure), inside their output folder, with the
user's umask, like every other tool.

Temporaries are hidden siblings named ``.<target name>.<host hash>-<pid>.<random>.tmp``; a process
killed before it could remove its own (``kill -9``, a power cut) leaves them behind, and the
next write of the same target on that host removes those whose process no longer runs.

A folder written with :func:`staged_folder` and :func:`write_complete_marker` holds
``ctem_complete.json``, written last: the list of the files it was completed with.
:func:`check_complete` names the first of them that is missing or not of its recorded size.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

from ctem.errors import CtemInputError

COMPLETE_MARKER = "ctem_complete.json"
# Files a complete folder may lose without being broken (documentation only).
OPTIONAL_FILES = frozenset({"README.md"})
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class OutputPathError(CtemInputError, ValueError):
    """A name from a file or setting would put an output outside its folder, or two outputs
    of one command on the same path."""


class IncompleteFolderError(CtemInputError, FileNotFoundError):
    """A folder ctem writes as a whole lacks one of its files (an interrupted write)."""


# --------------------------------------------------------------------------- names
def check_file_name(name: str, what: str = "name") -> str:
    """``name`` when it is one plain file-name component; else ``OutputPathError`` saying why
    (empty, ``.``/``..``, a path separator, a NUL byte)."""
    if not isinstance(name, str) or not name.strip():
        reason = "is empty"
    elif name in (".", ".."):
        reason = "is a folder reference"
    elif "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        reason = "contains a path separator"
    elif "\0" in name:
        reason = "contains a NUL byte"
    else:
        return name
    raise OutputPathError(f"{what} {name!r} {reason}: it must be a plain file name")


def confined_path(root: str | os.PathLike, *names: str) -> Path:
    """``root/names[0]/names[1]/...`` after checking that every name is a plain file name
    (:func:`check_file_name`) and that the resolved path (symbolic links followed) stays
    inside ``root``."""
    base = Path(root)
    path = base.joinpath(*(check_file_name(n) for n in names))
    if not path.resolve().is_relative_to(base.resolve()):
        raise OutputPathError(f"{path} leads outside the output folder {base}")
    return path


def check_distinct(paths: Iterable[str | os.PathLike]) -> None:
    """``OutputPathError`` when two outputs would be one file (case-insensitively, as on
    macOS and Windows file systems)."""
    seen: dict[str, str] = {}
    for path in map(str, paths):
        key = os.path.normpath(os.path.abspath(path)).casefold()
        if key in seen:
            raise OutputPathError(f"two outputs would be written to one file: {seen[key]} and {path}")
        seen[key] = path


def check_not_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """``OutputPathError`` when an output is one of the inputs (the same path after resolving
    links, or the same file under another name)."""
    sources = [Path(p) for p in inputs]
    for out in map(Path, outputs):
        for source in sources:
            same = out.resolve() == source.resolve()
            if not same and out.exists() and source.exists():
                same = os.path.samefile(out, source)
            if same:
                raise OutputPathError(f"output {out} would overwrite its input {source}; write the output elsewhere")


# --------------------------------------------------------------------------- temporaries
def check_writable_folder(folder: str | os.PathLike, setting: str) -> Path:
    """``folder``, created if needed, once a file could be created in it; else
    ``OutputPathError`` naming ``setting`` and why (checked before a run does any work, so
    that a folder it cannot write is not found only at its end)."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".ctem-write-check."):
            pass
    except OSError as err:
        raise OutputPathError(f"{setting}={folder}: cannot write there ({err.strerror or err}: {err.filename or path})") from None
    return path


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{_HOST}-{os.getpid()}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def remove_stale_temps(target: str | os.PathLike) -> None:
    """Remove the temporaries of ``target`` left by processes of this host that have ended."""
    out = Path(target)
    pattern = re.compile(re.escape(f".{out.name}.{_HOST}-") + r"(\d+)\.[^./]+\.tmp")
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)


def os_error_of(err: BaseException) -> OSError | None:
    """``err`` as an ``OSError``: itself, or one rebuilt from the ``(os error N)`` that the
    Rust writers of safetensors and tokenizers put in their messages; ``None`` otherwise."""
    if isinstance(err, OSError):
        return err
    match = _RUST_OS_ERROR.search(str(err))
    return OSError(int(match.group(1)), os.strerror(int(match.group(1)))) if match else None


def naming_target(err: OSError, temp: str | os.PathLike, target: str | os.PathLike) -> OSError:
    """``err`` naming ``target`` where it names ``temp`` (or something inside it) or nothing,
    so that messages show the output the user asked for."""
    temp, target = str(temp), str(target)
    name = err.filename
    if name is not None and not str(name).startswith(temp):
        return err
    shown = target if name is None else target + str(name)[len(temp):]
    return type(err)(err.errno, err.strerror or os.strerror(err.errno or 0), shown)


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the mode a plain ``open`` /
    ``mkdir`` would: 0666 / 0777 less the umask. Temporary files (``tempfile``, as
    transformers' safetensors writer and ``write_jsonl_atomic`` use) are created 0600."""
    mask = current_umask()
    root = Path(path)
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for p in paths:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


# --------------------------------------------------------------------------- files
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file path beside ``path`` to write (by any writer: ``torch.save``,
    ``np.save``, ...): it replaces ``path`` (with the umask's mode) when the block ends
    normally, and is removed when it raises (errors, KeyboardInterrupt), so ``path`` is
    either the old file or the complete new one. A file system error (:func:`os_error_of`)
    is raised as an ``OSError`` naming ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=_temp_prefix(out), suffix=".tmp")
    except OSError as err:  # named by the temporary it could not create: name the output
        raise type(err)(err.errno, err.strerror, str(out)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        apply_umask(tmp)
        os.replace(tmp, out)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        found = os_error_of(err)
        if found is None:
            raise
        raise naming_target(found, tmp, out) from err


@contextmanager
def atomic_writer(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text file to write ``path`` through, replacing it only when complete
    (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding=encoding) as handle:
        yield handle


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_writer(path) as handle:
        handle.write(text)
    return Path(path)


# --------------------------------------------------------------------------- folders
def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where the
    system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder ``new`` at ``target``. An existing ``target`` is swapped with it in one
    step where the system can (then ``new`` holds the old folder, for the caller to remove),
    else moved aside to ``new`` first."""
    new, target = Path(new), Path(target)
    if not target.exists() and not target.is_symlink():
        os.rename(new, target)
    elif not _exchange(new, target):
        aside = new.with_name(new.name + ".old.tmp")
        os.rename(target, aside)
        os.rename(new, target)
        os.rename(aside, new)


@contextmanager
def temporary_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A new, empty temporary folder beside ``target``, removed with its contents on every
    exit of the block. An ``OSError`` inside names ``target``."""
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=_temp_prefix(out), suffix=".tmp"))
    try:
        yield tmp
    except Exception as err:  # noqa: BLE001 - only file system errors are renamed
        found = os_error_of(err)
        if found is None:
            raise
        raise naming_target(found, tmp, out) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A new, empty folder beside ``target`` to fill; it replaces ``target`` (a folder, or
    nothing) when the block ends normally (:func:`replace_folder`) and is removed when it
    raises, so ``target`` is the old folder or the complete new one."""
    with temporary_folder(target) as tmp:
        yield tmp
        apply_umask(tmp)
        replace_folder(tmp, target)


@contextmanager
def staged_files(folder: str | os.PathLike, names: Sequence[str]) -> Iterator[Path]:
    """A hidden staging folder inside ``folder`` for a command's set of outputs, the plain
    file names ``names``, the last of which marks a complete set (e.g. a report). When the
    block ends normally, the old marker is removed first, then each name in order is moved
    into ``folder``, the marker last, and a name the block did not write is removed from
    ``folder`` (left from an earlier set); so a process killed while moving leaves no marker
    beside a mixed set. When the block raises, ``folder`` is left as it was. The staging
    folder is removed on every exit (one left by a killed process is removed by a later
    run). An ``OSError`` names ``folder``."""
    root = Path(folder)
    targets = [confined_path(root, name) for name in names]
    check_distinct(targets)
    with temporary_folder(root / "ctem-staging") as staging:
        try:
            yield staging
            targets[-1].unlink(missing_ok=True)
            for target in targets:
                staged = staging / target.name
                if staged.exists():
                    apply_umask(staged)
                    os.replace(staged, target)
                else:
                    target.unlink(missing_ok=True)
        except Exception as err:  # noqa: BLE001 - only file system errors are renamed
            found = os_error_of(err)
            if found is None:
                raise
            raise naming_target(found, staging, root) from err


def write_complete_marker(folder: str | os.PathLike) -> Path:
    """Write ``folder/ctem_complete.json`` listing every file now in ``folder`` (relative
    paths, sizes in bytes). Call it last: its presence says the folder was completed."""
    from ctem import __version__

    root = Path(folder)
    files = {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }
    marker = {"format": "ctem-complete/1", "ctem_version": __version__, "files": files}
    return write_text_atomic(root / COMPLETE_MARKER, json.dumps(marker, indent=2, ensure_ascii=False) + "\n")


def check_complete(folder: str | os.PathLike) -> None:
    """``IncompleteFolderError`` naming the marker when ``folder`` has none, or the first
    file the marker lists (documentation aside) that is missing or whose size differs from
    the recorded one (a truncated or altered file)."""
    root = Path(folder)
    marker = root / COMPLETE_MARKER
    if not marker.is_file():
        raise IncompleteFolderError(
            f"{marker}: missing: the folder was not completely written (an interrupted export?); write it again"
        )
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise IncompleteFolderError(f"{marker}: unreadable ({err}); write the folder again") from None
    for name, size in files.items():
        path = root / name
        if name in OPTIONAL_FILES:
            continue
        if not path.is_file():
            raise IncompleteFolderError(f"{path}: missing from a model folder that was written completely; write it again")
        if path.stat().st_size != size:
            raise IncompleteFolderError(
                f"{path}: {path.stat().st_size} bytes, but {size} when the folder was completed ({COMPLETE_MARKER}): "
                "truncated or changed since; write the folder again"
            )
