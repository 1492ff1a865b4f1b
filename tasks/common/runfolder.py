"""A run folder as a unit: every state a kill can leave is the previous save or the new one.

Layout (``fit`` writes it; ``load_checkpoint(OUT)``, ``resfields eval OUT`` read its top level)::

    OUT/config.json                  -> .run/current/config.json
    OUT/model.safetensors            -> .run/current/model.safetensors
    OUT/training_state.json          -> .run/current/training_state.json
    OUT/training_state.safetensors   -> .run/current/training_state.safetensors
    OUT/.run/current                 -> 00000007   (a relative symlink)
    OUT/.run/00000006/               the previous save (kept for readers that opened it)
    OUT/.run/00000007/               the four files of the latest save
    OUT/.lock                        held with flock by the one process writing OUT

A save writes its four files into a fresh ``OUT/.run/.staging-*`` folder, fsyncs them, renames the
folder to the next sequence number and then replaces the symlink ``OUT/.run/current`` with one
``rename(2)``. The top-level names are fixed symlinks through ``current``, so that one rename switches
all four files at once: a kill at any instant leaves ``current`` on the old save or on the new one,
both complete. Saves are immutable once published; ``training_state.json`` also records the SHA-256
of the other three files, so a save damaged later (a hand edit, a bad copy) is refused on resume
with the files named, never used. Staging folders and temporary links of killed saves are removed
by the next writer (it holds the lock, so nothing else can be using them).

A folder written before this layout (the four files as plain files at the top) is adopted on
``--resume`` or ``--overwrite``: its files are copied into a first save and the top-level files are
swapped for links to identical content one at a time, so it stays the old run throughout.

POSIX only (``fcntl.flock``, symlinks), like the rest of the training stack.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
from safetensors.numpy import load as load_safetensors

from resfields.checkpoint import CONFIG_NAME, WEIGHTS_NAME, Checkpoint, fsync_path, load_checkpoint, shared_mode
from resfields.errors import CheckpointError
from resfields.jsonio import loads_strict

__all__ = [
    "RUN_FILES",
    "STATE_ARRAYS",
    "STATE_JSON",
    "RunFolder",
    "SavedRun",
    "check_not_in_use",
    "checkpoint_folder",
    "read_latest_save",
    "read_saved_run",
    "sha256",
]

STATE_ARRAYS = "training_state.safetensors"
STATE_JSON = "training_state.json"
# link order when a folder is (re)linked: config.json last, so a loader never finds a config whose
# weights link is not there yet
RUN_FILES = (STATE_ARRAYS, WEIGHTS_NAME, STATE_JSON, CONFIG_NAME)
SAVES = ".run"
CURRENT = "current"
LOCK = ".lock"
# outputs derived from a run: they belong to the run a folder held, and go when --overwrite replaces it
DERIVED = ("metrics.json", "training_curve.png", "media")
_SEQ_DIGITS = 8
# the only names this module makes, and so the only ones it ever removes (a user's own files stay):
# saves in .run ("00000007"; [0-9], not \d, which also matches other scripts' digits), staging folders
# and the temporary links that replace .run/current
_SAVE_NAME = re.compile(r"[0-9]{8}")
_SAVES_LITTER = re.compile(r"\.staging-.+|\.current-[0-9]{8}\.tmp")
# at the top: temporaries of _link_top_level (".config.json.<pid>.link.tmp") and of
# resfields.checkpoint.write_files_atomically (".metrics.json.<pid>.XXXX.tmp", ".model.safetensors.<pid>.XXXX.tmp"),
# all ".<one of our file names>.<suffix>.tmp"
_TOP_LITTER = re.compile(
    r"\.(?:" + "|".join(re.escape(name) for name in (*RUN_FILES, "metrics.json")) + r")\.[A-Za-z0-9_.]+\.tmp"
)


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _is_litter(name: str) -> bool:
    """A top-level name of a killed writer's temporary (see ``_TOP_LITTER``); only files of such names are removed."""
    return _TOP_LITTER.fullmatch(name) is not None


def _saves_folder(out: Path) -> Path | None:
    """``out/.run`` if it is a real folder, None if it does not exist; CheckpointError for anything else.

    A writer removes what it does not keep in ``.run``, and a reader reads the save it names: through a
    ``.run`` that links elsewhere, either would act on a folder that is not this run's."""
    saves = out / SAVES
    try:
        mode = os.lstat(saves).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointError(f"cannot read the run folder {out}: {saves}: {_reason(e)}") from e
    if not stat.S_ISDIR(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
        raise CheckpointError(
            f"{saves} is not a folder of its own ({what}): refusing to use {out} as a run folder; "
            "move it away or choose another --out"
        )
    return saves


def _write_new_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def checkpoint_folder(out: str | os.PathLike[str]) -> Path:
    """Where the latest complete save of run folder ``out`` lives (``out`` itself for a plain checkpoint).

    Reading every file from this one folder gives a consistent set even while a writer publishes a
    new save (the top-level links are resolved one file at a time)."""
    out = Path(out)
    saves = _saves_folder(out)
    if saves is None:
        return out
    current = saves / CURRENT
    if not current.is_symlink():
        return out  # no save yet (or a copy that followed the links, which the next writer relinks)
    # anything but a bare save name could lead out of the folder, and the checkpoint would then be read
    # from anywhere (checkpoint_path's containment rule sees only the folder it is given)
    name = os.readlink(current)
    target = saves / name
    try:
        is_save = _SAVE_NAME.fullmatch(name) is not None and stat.S_ISDIR(os.lstat(target).st_mode)
    except OSError:
        is_save = False
    if not is_save:
        raise CheckpointError(
            f"{current} links to {name!r}, not to a save folder inside {saves}: refusing to read a run from it"
        )
    return target


@dataclass(frozen=True)
class SavedRun:
    """One complete save: the checkpoint, the training state and Adam's arrays, read from ``folder``."""

    folder: Path
    checkpoint: Checkpoint
    state: dict[str, Any]
    optimizer: dict[str, np.ndarray]


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_JSON
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {STATE_JSON}, so this run cannot be resumed (it holds only a checkpoint)")
    try:
        text = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the training state: {_reason(e)}") from e
    state = loads_strict(text, f"{path}: corrupt or half-written training state", CheckpointError)
    history = state.get("history") if isinstance(state, dict) else None
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("step"), int)
        or state["step"] < 0
        or not isinstance(history, dict)
        or not isinstance(history.get("step"), list)
        or not isinstance(history.get("loss"), list)
        or not isinstance(state.get("wall_time_s"), int | float)
    ):
        raise CheckpointError(f"{path}: not a training state (needs step, wall_time_s and history.step/loss)")
    return state


def read_saved_run(folder: str | os.PathLike[str]) -> SavedRun:
    """Read and cross-check one save (a ``.run/NNNNNNNN`` folder, or the top of an older run folder).

    Raises CheckpointError naming the file for a missing, half-written or corrupt file, and naming
    every file that disagrees with ``training_state.json`` (its recorded SHA-256, or the step)."""
    folder = Path(folder)
    state = _read_state(folder)
    recorded = state.get("files")
    if recorded is not None:
        # only the save's own three files, by their exact names: a listed path would be read (and hashed)
        # wherever it leads, /dev/zero forever; a missing one would not be checked at all
        expected = set(RUN_FILES) - {STATE_JSON}
        if not isinstance(recorded, dict) or set(recorded) != expected:
            raise CheckpointError(
                f"{folder / STATE_JSON}: 'files' must map exactly {', '.join(sorted(expected))} to SHA-256 digests"
            )
        wrong = []
        for name, digest in sorted(recorded.items()):
            try:
                actual = sha256((folder / name).read_bytes())
            except OSError:
                actual = None
            if actual != digest:
                wrong.append(name)
        if wrong:
            raise CheckpointError(
                f"{folder}: {', '.join(wrong)} do not match the SHA-256 recorded in {STATE_JSON} "
                "(changed or damaged after the save); refusing to resume from it"
            )
    ckpt = load_checkpoint(folder)
    try:
        optimizer = load_safetensors((folder / STATE_ARRAYS).read_bytes())
    except (OSError, safetensors.SafetensorError, ValueError) as e:
        raise CheckpointError(f"{folder / STATE_ARRAYS}: missing, corrupt or half-written optimizer state: {e}") from e
    step = state["step"]
    problems = []
    if ckpt.metadata.get("step") != step:
        problems.append(f"{CONFIG_NAME} is at step {ckpt.metadata.get('step')}")
    if "adam.step" in optimizer and int(np.asarray(optimizer["adam.step"]).reshape(-1)[0]) != step:
        problems.append(f"{STATE_ARRAYS} is at step {int(np.asarray(optimizer['adam.step']).reshape(-1)[0])}")
    if len(state["history"]["loss"]) != step:
        problems.append(f"the loss history has {len(state['history']['loss'])} steps")
    if problems:
        raise CheckpointError(
            f"{folder}: {STATE_JSON} is at step {step} but {'; '.join(problems)}: the files come from different saves"
        )
    return SavedRun(folder=folder, checkpoint=ckpt, state=state, optimizer=optimizer)


def read_latest_save(out: str | os.PathLike[str]) -> SavedRun:
    """The latest complete save of the run folder ``out``, cross-checked (:func:`read_saved_run`), read
    without locking it: how the other ranks of a distributed run resume from the folder rank 0 holds.
    CheckpointError if nothing has been saved there."""
    out = Path(out)
    folder = checkpoint_folder(out)
    if folder == out:
        raise CheckpointError(f"{out}: no run to resume (nothing has been saved there yet)")
    return read_saved_run(folder)


def _in_use_error(out: Path, fd: int, err: OSError) -> CheckpointError:
    if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        return CheckpointError(f"cannot lock the run folder {out}: {_reason(err)}")
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
    who = f" (pid {holder})" if holder.isdigit() else ""
    return CheckpointError(f"{out} is being written by another `resfields fit`{who}; wait for it or use another --out")


def check_not_in_use(out: str | os.PathLike[str]) -> None:
    """CheckpointError if another process is writing run folder ``out`` (it holds the lock).

    For a clearer message where a reader finds a folder incomplete; a writer relies on
    :meth:`RunFolder.open` alone, since this probe races with a writer that starts meanwhile."""
    try:  # never through a link (or blocking on a FIFO): the lock is our own file or no lock at all
        fd = os.open(Path(out) / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        raise _in_use_error(Path(out), fd, e) from e
    finally:
        os.close(fd)


def _describe_run(folder: Path) -> str:
    """``' (step 30 of 60)'`` for a folder holding a fit run's config.json, else ``''``."""
    try:
        path = folder / CONFIG_NAME
        meta = loads_strict(path.read_bytes(), str(path), CheckpointError)["metadata"]
        return f" (step {meta['step']} of {meta['run']['train']['steps']})"
    except (OSError, CheckpointError, KeyError, TypeError):
        return ""


def _holds_plain_run(out: Path) -> bool:
    """A run written before the ``.run`` layout (or copied with its links followed): plain files on top."""
    config = out / CONFIG_NAME
    if config.is_symlink() or not config.is_file():
        return False
    try:
        return "run" in loads_strict(config.read_bytes(), str(config), CheckpointError).get("metadata", {})
    except (OSError, CheckpointError, AttributeError, TypeError):
        return False


def _foreign_entries(out: Path) -> list[str]:
    """What in the folder is not this module's: the user's files (or a foreign checkpoint)."""
    names = []
    for entry in os.scandir(out):
        if entry.name in (LOCK, SAVES) or (_is_litter(entry.name) and not entry.is_dir(follow_symlinks=False)):
            continue  # (a folder named like a temporary is the user's: _collect leaves it, so it is foreign)
        if entry.name in RUN_FILES and entry.is_symlink() and os.readlink(entry.path) == _link(entry.name):
            continue
        names.append(entry.name)
    return sorted(names)


def _check_target(out: Path, *, resume: bool, overwrite: bool) -> tuple[bool, bool]:
    """Whether ``out`` holds a save and whether it holds a run in the plain (older) layout; refuses
    (CheckpointError) what ``fit`` may not do there without ``resume`` or ``overwrite``."""
    current = checkpoint_folder(out)
    has_save = current != out
    plain = not has_save and _holds_plain_run(out)
    if has_save or plain:
        if not resume and not overwrite:
            raise CheckpointError(
                f"{out} already holds a run{_describe_run(current)}: pass --resume to continue it "
                "or --overwrite to replace it"
            )
    elif resume:
        raise CheckpointError(f"{out}: no run to resume (nothing has been saved there yet)")
    elif not overwrite:
        others = _foreign_entries(out)
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise CheckpointError(
                f"{out} is not empty and holds no run of `resfields fit` (it has {shown}): "
                "pass --overwrite to write the run into it anyway, or choose another --out"
            )
    return has_save, plain


class RunFolder:
    """A run folder opened for writing by this process (it holds ``OUT/.lock``); see the module doc.

    Use :meth:`open` (a context manager), :meth:`read` for ``--resume`` and :meth:`publish` for a save.
    """

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._saves = path / SAVES
        self._replaces_run = False  # --overwrite of a run: its derived outputs go with the first save
        self.saved_step: int | None = None  # the step of the latest complete save (None: nothing saved yet)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, resume: bool = False, overwrite: bool = False) -> RunFolder:
        """Create (if needed) and lock ``path`` for one ``fit``, before any training starts.

        Refuses (CheckpointError): a path that cannot be created or written, a folder another process
        is writing, a folder holding a run unless ``resume`` or ``overwrite``, a non-empty folder that
        holds no run unless ``overwrite``, ``resume`` of a folder without a run, and a folder whose
        ``.run`` or ``.lock`` is not its own (a link, or not a folder / regular file).
        """
        out = Path(path)
        if resume and not out.is_dir():
            raise CheckpointError(f"{out}: no run to resume (the folder does not exist)")
        if out.exists() and not out.is_dir():
            raise CheckpointError(f"{out} exists and is not a folder; choose another --out")
        if out.is_dir():  # refuse before adding anything to a folder that is not ours to write
            _check_target(out, resume=resume, overwrite=overwrite)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create or write the run folder {out}: {_reason(e)}") from e
        fd = _open_lock(out / LOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            busy = _in_use_error(out, fd, e)
            os.close(fd)
            raise busy from e
        folder = cls(out, fd)
        try:
            folder._prepare(resume=resume, overwrite=overwrite)
        except BaseException:
            folder.close()
            raise
        return folder

    def _prepare(self, *, resume: bool, overwrite: bool) -> None:
        out = self.path
        try:
            os.ftruncate(self._lock_fd, 0)  # _open_lock made sure it is our own regular file
            os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
            if _saves_folder(out) is None:  # never mkdir(exist_ok=True): that accepts a link to any folder
                self._saves.mkdir()
            self._relink_copied_save()
            self._collect()
        except OSError as e:
            raise CheckpointError(f"cannot write the run folder {out}: {_reason(e)}") from e
        has_save, plain = _check_target(out, resume=resume, overwrite=overwrite)
        if plain:
            self._adopt_plain_run()
        self._replaces_run = overwrite and (has_save or plain)
        self._link_top_level()
        self.saved_step = self._current_step()

    def _relink_copied_save(self) -> None:
        """A copy that followed the links (``shutil.copytree``, ``cp -L``) made ``.run/current`` a real
        folder, which no rename can replace by a link: give it a sequence number and link to it."""
        current = self._saves / CURRENT
        if current.is_symlink() or not current.is_dir():
            return
        numbers = self._sequence_numbers()
        name = f"{(numbers[-1] + 1 if numbers else 1):0{_SEQ_DIGITS}d}"
        os.rename(current, self._saves / name)
        link = self._saves / f".current-{name}.tmp"
        os.symlink(name, link)
        os.replace(link, current)

    def _adopt_plain_run(self) -> None:
        """Copy a plain-layout run into a first save; its top-level files become links to the same bytes."""
        files = {name: (self.path / name).read_bytes() for name in RUN_FILES if (self.path / name).is_file()}
        self.publish(files)

    def _link_top_level(self) -> None:
        changed = False
        for name in RUN_FILES:
            path = self.path / name
            if path.is_symlink() and os.readlink(path) == _link(name):
                continue
            changed = True
            tmp = self.path / f".{name}.{os.getpid()}.link.tmp"
            try:
                if tmp.is_symlink() or tmp.exists():
                    tmp.unlink()
                os.symlink(_link(name), tmp)
                os.replace(tmp, path)
            except OSError as e:
                if e.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise CheckpointError(
                        f"{self.path}: this file system does not support symbolic links, which a run folder needs "
                        "to save atomically; choose an --out on another file system"
                    ) from e
                raise CheckpointError(f"cannot write the run folder {self.path}: {_reason(e)}") from e
        if changed:
            fsync_path(self.path, directory=True)

    # ------------------------------------------------------------------ reading

    def read(self) -> SavedRun:
        """The latest complete save (for ``--resume``), cross-checked; CheckpointError if there is none."""
        return read_latest_save(self.path)

    def _current_step(self) -> int | None:
        folder = checkpoint_folder(self.path)
        if folder == self.path:
            return None
        try:
            path = folder / STATE_JSON
            return int(loads_strict(path.read_bytes(), str(path), CheckpointError)["step"])
        except (OSError, CheckpointError, KeyError, TypeError, ValueError):
            return None

    # ------------------------------------------------------------------ saving

    def _sequence_numbers(self) -> list[int]:
        return sorted(int(p.name) for p in self._saves.iterdir() if _SAVE_NAME.fullmatch(p.name))

    def publish(self, files: dict[str, bytes]) -> None:
        """Make ``files`` the run folder's content with one atomic rename (see the module doc).

        Raises CheckpointError (one line, e.g. "No space left on device") if the save cannot be
        written; the previous save is then untouched and still the folder's content."""
        staging: Path | None = None
        link: Path | None = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self._saves))
            for name, data in files.items():
                _write_new_file(staging / name, data)
            os.chmod(staging, shared_mode(0o777))  # mkdtemp makes 0700; a run folder is shared like any folder
            fsync_path(staging, directory=True)
            numbers = self._sequence_numbers()
            final = self._saves / f"{(numbers[-1] + 1 if numbers else 1):0{_SEQ_DIGITS}d}"
            os.rename(staging, final)
            staging = None
            fsync_path(self._saves, directory=True)  # the save's name is durable before anything points at it
            link = self._saves / f".current-{final.name}.tmp"
            os.symlink(final.name, link)
            os.replace(link, self._saves / CURRENT)
            link = None
            fsync_path(self._saves, directory=True)
        except OSError as e:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if link is not None:
                try:
                    link.unlink()
                except OSError:
                    pass
            kept = "nothing was saved before" if self.saved_step is None else f"the save of step {self.saved_step}"
            raise CheckpointError(f"cannot save the run in {self.path}: {_reason(e)}; {kept} is intact there") from e
        self.saved_step = _step_of(files, self.saved_step)
        if self._replaces_run:
            self._replaces_run = False
            for name in DERIVED:
                try:
                    _remove(self.path / name)
                except OSError:  # a stale output left behind is named by its own step; not worth failing for
                    pass
        try:
            self._collect()
        except OSError:  # litter is harmless; the next writer removes it
            pass

    def _collect(self) -> None:
        """Remove killed saves' litter and every save but the current and the one before it."""
        for entry in os.scandir(self.path):
            if _is_litter(entry.name) and not entry.is_dir(follow_symlinks=False):  # temporaries are files or links
                os.unlink(entry.path)
        saves = _saves_folder(self.path)  # checked again: nothing below may run through a link
        if saves is None:
            return
        current = saves / CURRENT
        keep = {CURRENT}
        if current.is_symlink():
            name = os.readlink(current)
            keep.add(name)
            older = [n for n in self._sequence_numbers() if f"{n:0{_SEQ_DIGITS}d}" < name]
            if older:
                keep.add(f"{older[-1]:0{_SEQ_DIGITS}d}")
        for entry in os.scandir(saves):
            if entry.name in keep or not (_SAVE_NAME.fullmatch(entry.name) or _SAVES_LITTER.fullmatch(entry.name)):
                continue  # not a name this module makes: the user's, left alone
            if entry.is_dir(follow_symlinks=False):  # a real folder: rmtree never follows links inside it
                shutil.rmtree(entry.path, ignore_errors=True)
            else:  # a file or a link (removed as a link, whatever it points to)
                os.unlink(entry.path)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Release the lock (the lock file stays: removing it would let two writers lock different files)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_lock(path: Path) -> int:
    """Open (creating) the lock file ``path``; CheckpointError unless it is a regular file of its own.

    The writer truncates and writes its pid into the lock: through a link, that would destroy whatever
    file the link points to, so links are never followed (O_NOFOLLOW) and the opened file is checked."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO never hangs us
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise CheckpointError(f"{path} is not a regular file (a link, folder or device): refusing to use it") from e
        raise CheckpointError(f"cannot create or write the run folder {path.parent}: {_reason(e)}") from e
    try:
        is_file = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        is_file = False
    if not is_file:
        os.close(fd)
        raise CheckpointError(f"{path} is not a regular file (a link, folder or device): refusing to use it")
    return fd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _link(name: str) -> str:
    return f"{SAVES}/{CURRENT}/{name}"


def _step_of(files: dict[str, bytes], default: int | None) -> int | None:
    try:
        return int(loads_strict(files[STATE_JSON], STATE_JSON, CheckpointError)["step"])
    except (KeyError, ValueError, TypeError):  # CheckpointError is a ValueError
        return default
