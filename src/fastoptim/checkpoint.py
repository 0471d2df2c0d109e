"""Checkpoint files: one .npz per optimizer, written atomically, read with full checks.

Layout: a JSON header in the array "__meta__" (format version, optimizer kind, step count,
hyperparameters, the state names of each param and, optionally, "scalars": per-optimizer
numbers that are not arrays, and "bits": see below) and one array per state buffer, named
"state/<param index>/<name>". Members are stored uncompressed (what np.savez writes).
Nothing is pickled. A dtype the .npy format has no name for (ml_dtypes' bfloat16, which
np.save writes as raw "V2" bytes) is stored as its bits, an unsigned integer array of the
same width, and "bits" maps such a member's name to its dtype ({"state/0/exp_avg":
"bfloat16"}); a file without such arrays has no "bits" key, as before.

Writing. The data goes to a temporary file ``.fastoptim-<pid>-<random>.npz.tmp`` in the
target's folder, is fsynced and renamed over the target, so a crash leaves the old file or
the new one, never a mix. The temporary file is removed on any exception (KeyboardInterrupt
included). A process killed outright (SIGKILL, power loss) cannot remove it; the next
successful save into the same folder removes such leftovers once they are a minute old *and*
their writer process is gone, so a save in progress elsewhere is never touched. The saved
file keeps the permission bits of the file it replaces; a new file gets the permissions
open() would give it under the umask.

Reading. Before any array data is read, the zip directory and every member's .npy header
are checked: only the expected members, stored uncompressed, each with a declared size equal
to what its header's dtype and shape imply, all within the file's own size. So reading never
takes more memory than the file occupies on disk (a "zip bomb" is refused at once), and with
``expected`` a checkpoint for another optimizer is refused before anything is inflated.
"""
import errno
import json
import os
import secrets
import stat
import time
import zipfile

import numpy as np
import numpy.lib.format as npy

from fastoptim._checks import DTYPE_NAMES

FORMAT = "fastoptim-checkpoint"
VERSION = 1
META = "__meta__"
# the header keys of VERSION 1; "scalars" and "bits" are optional
META_KEYS = {"format", "version", "optimizer", "step_count", "hyperparameters", "state_names"}
OPTIONAL_META_KEYS = {"scalars", "bits"}

TMP_PREFIX = ".fastoptim-"
TMP_SUFFIX = ".npz.tmp"
STALE_AFTER_SECONDS = 60


def member_name(param_index, state_name):
    return f"state/{param_index}/{state_name}"


# -- writing ----------------------------------------------------------------------------------

def write_atomic(path, state_dict):
    """Write state_dict to path so that a crash leaves either the old file or the new one.

    The data goes to a temporary file in the same folder, is flushed and fsynced, then
    renamed over path (an atomic replace on POSIX and Windows); the folder is fsynced so
    the rename itself survives a power loss. A missing folder raises FileNotFoundError
    naming the folder, before anything is written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    _check_target(path, folder)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "optimizer": state_dict["optimizer"],
        "step_count": state_dict["step_count"],
        "hyperparameters": state_dict["hyperparameters"],
        "state_names": [list(s) for s in state_dict["state"]],
    }
    if "scalars" in state_dict:
        meta["scalars"] = _checked_scalars(state_dict["scalars"])
    arrays, bits = {}, {}
    for i, state in enumerate(state_dict["state"]):
        for name, array in state.items():
            member = member_name(i, name)
            if _stored_as_bits(array.dtype):
                bits[member] = array.dtype.name
                array = array.view(_bits_dtype(array.dtype))
            arrays[member] = array
    if bits:
        meta["bits"] = bits
    arrays = {META: np.array(json.dumps(meta)), **arrays}

    fd, tmp = _create_temporary(path, folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_folder(folder)
    remove_stale_temporaries(folder)


def _stored_as_bits(dtype):
    """A dtype .npy cannot name (it would read back as raw void bytes): bfloat16."""
    return dtype.kind == "V" and dtype.names is None and DTYPE_NAMES.get(dtype.name) == dtype


def _bits_dtype(dtype):
    return np.dtype(f"u{dtype.itemsize}")


def _check_target(path, folder):
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(errno.ENOTDIR,
                                     f"cannot save checkpoint {path!r}: not a folder", folder)
        raise FileNotFoundError(errno.ENOENT,
                                f"cannot save checkpoint {path!r}: the folder does not exist",
                                folder)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "cannot save checkpoint: the path is a folder",
                                path)


def _checked_scalars(scalars):
    if not isinstance(scalars, dict):
        raise TypeError(f"state_dict scalars must be a dict, got {type(scalars).__name__}")
    for key, value in scalars.items():
        if not isinstance(key, str) or isinstance(value, bool) \
                or not isinstance(value, (int, float)):
            raise TypeError(f"state_dict scalars must map names to ints or floats, got "
                            f"{key!r}: {value!r}")
    return dict(scalars)


def _create_temporary(path, folder):
    """Open a new temporary file in folder: (fd, its path). It gets the permission bits of
    the file at path when there is one (set before any data is written), else those of a
    plain open() under the umask."""
    try:
        keep_mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        keep_mode = None
    while True:
        tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
                                   f"{TMP_SUFFIX}")
        try:
            # 0o600 while the final bits are set, 0o666 & ~umask (what open() gives) for new
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o600 if keep_mode is not None else 0o666)
            break
        except FileExistsError:     # 48 random bits taken: draw again
            continue
        except OSError as exc:      # name the folder, not the temporary file
            raise OSError(exc.errno, f"cannot save checkpoint {path!r}: cannot create a "
                                     f"file in its folder ({exc.strerror})", folder) from exc
    if keep_mode is not None:
        try:
            os.chmod(tmp, keep_mode)
        except BaseException:
            os.close(fd)
            _remove_quietly(tmp)
            raise
    return fd, tmp


def _remove_quietly(filename):
    try:
        os.unlink(filename)
    except OSError:
        pass


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(folder, *, older_than=STALE_AFTER_SECONDS):
    """Remove the temporary files a killed save left in folder: only those at least
    ``older_than`` seconds old whose writer process no longer runs (a save in progress in
    another process, or one stalled, is left alone). Returns the names removed; errors
    (another process removing the same file, no permission) are ignored."""
    removed = []
    now = time.time()
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        pid = _writer_pid(name)
        if pid is None or _process_exists(pid):
            continue
        filename = os.path.join(folder, name)
        try:
            if now - os.lstat(filename).st_mtime < older_than:
                continue
            os.unlink(filename)
        except OSError:
            continue
        removed.append(name)
    return removed


def _writer_pid(name):
    """The pid in a temporary file's name ``.fastoptim-<pid>-<hex>.npz.tmp``, else None."""
    if not (name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)):
        return None
    pid, _, token = name[len(TMP_PREFIX):-len(TMP_SUFFIX)].partition("-")
    if not (pid.isdigit() and token and all(c in "0123456789abcdef" for c in token)):
        return None
    return int(pid)


def _process_exists(pid):
    if os.name != "posix":  # no safe probe (os.kill would end the process): assume it runs
        return True
    try:
        os.kill(pid, 0)     # signal 0: only asks whether pid exists
    except ProcessLookupError:
        return False
    except OSError:         # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


# -- reading ----------------------------------------------------------------------------------

def read(path, expected=None):
    """Read a checkpoint file into a state dict; ValueError if it is not a readable
    fastoptim checkpoint (corrupt, truncated, foreign). A missing file stays
    FileNotFoundError.

    ``expected``, optional, describes the optimizer that will load the file: one dict per
    param, ``{state name: (dtype, shape)}``; or a function that raises ValueError/TypeError
    for a state dict it would refuse (fastoptim.Optimizer.load passes its own checks), called
    with the file's state dict whose arrays are memory-less stand-ins of the members' dtypes
    and shapes. A file that does not fit is refused with ValueError before any array data
    is read.

    The returned dict has optimizer, step_count, hyperparameters, state (one dict of arrays
    per param) and, when the file has them, scalars.
    """
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_archive(archive, os.path.getsize(path), expected)
    except (FileNotFoundError, IsADirectoryError, PermissionError, MemoryError):
        raise
    except _Mismatch as exc:
        raise ValueError(f"checkpoint {path} does not fit this optimizer: {exc}") from None
    except Exception as exc:  # anything else means the bytes are not a valid checkpoint
        raise ValueError(f"{path} is not a readable fastoptim checkpoint: {exc}") from exc


class _Mismatch(ValueError):
    """A well-formed checkpoint that does not match ``expected``."""


def _read_archive(archive, file_size, expected):
    members = _members(archive, file_size)
    meta_info = members.pop(META + ".npy", None)
    if meta_info is None:
        raise ValueError("no fastoptim header (__meta__)")
    meta = _read_meta(archive, meta_info)
    names = meta["state_names"]
    wanted = {member_name(i, name) + ".npy" for i, state in enumerate(names) for name in state}
    if set(members) != wanted:
        extra, missing = sorted(set(members) - wanted), sorted(wanted - set(members))
        raise ValueError(f"members do not match the header: unexpected {extra}, "
                         f"missing {missing}")
    bits = _bits_entries(meta.get("bits", {}), wanted)
    described = expected is not None and not callable(expected)
    if described:
        _check_names(names, expected)
    headers, previews = {}, []   # every header is checked before any data is read
    for i, state in enumerate(names):
        previews.append({})
        for name in state:
            member = member_name(i, name)
            info = members[member + ".npy"]
            dtype, shape = _array_header(archive, info)
            if dtype.hasobject:
                raise ValueError(f"state[{i}][{name!r}] holds Python objects")
            if member in bits:
                if dtype != _bits_dtype(bits[member]):
                    raise ValueError(f"state[{i}][{name!r}] is {dtype}, but the header's bits "
                                     f"say it holds the {_bits_dtype(bits[member])} bits of "
                                     f"{bits[member]}")
                dtype = bits[member]
            if described:
                _check_array(i, name, dtype, shape, expected[i][name])
            headers[i, name] = info, dtype
            # an array of the member's dtype and shape that occupies no memory
            previews[i][name] = np.broadcast_to(np.zeros((), dtype), shape)
    if callable(expected):
        try:
            expected(_state_dict(meta, previews))
        except (TypeError, ValueError) as exc:
            raise _Mismatch(str(exc)) from None
    return _state_dict(meta, [
        {name: _read_array(archive, headers[i, name][0]).view(headers[i, name][1])
         for name in st} for i, st in enumerate(names)])


def _state_dict(meta, state):
    result = {
        "optimizer": meta["optimizer"],
        "step_count": meta["step_count"],
        "hyperparameters": meta["hyperparameters"],
        "state": state,
    }
    if "scalars" in meta:
        result["scalars"] = meta["scalars"]
    return result


def _members(archive, file_size):
    """The zip directory as {name: ZipInfo}, after checks that bound what reading costs."""
    members = {}
    for info in archive.infolist():
        if info.filename in members:
            raise ValueError(f"member {info.filename!r} appears twice")
        if info.flag_bits & 0x1:
            raise ValueError(f"member {info.filename!r} is encrypted")
        # np.savez stores; compression is what lets a small file claim a huge member
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"member {info.filename!r} is compressed; fastoptim checkpoints "
                             "are stored uncompressed")
        if info.compress_size != info.file_size:
            raise ValueError(f"member {info.filename!r} declares {info.file_size} bytes but "
                             f"stores {info.compress_size}")
        members[info.filename] = info
    declared = sum(info.file_size for info in members.values())
    if declared > file_size:
        raise ValueError(f"members declare {declared} bytes, more than the file's {file_size}")
    return members


def _array_header(archive, info):
    """(dtype, shape) from a member's .npy header, checked against the member's declared
    size; reads only the header."""
    with archive.open(info) as f:
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npy.read_array_header_2_0(f)
        else:
            raise ValueError(f"member {info.filename!r}: .npy version {version}")
        header_size = f.tell()
    implied = header_size + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if implied != info.file_size:
        raise ValueError(f"member {info.filename!r} declares {info.file_size} bytes, its "
                         f"header ({dtype}, shape {shape}) implies {implied}")
    return dtype, shape


def _bits_entries(bits, wanted):
    """The header's "bits" as {member: dtype}, each naming a member and a dtype stored as
    bits."""
    entries = {}
    for member, name in bits.items():
        dtype = DTYPE_NAMES.get(name)
        if dtype is None or not _stored_as_bits(dtype):
            raise ValueError(f"bits: {member!r} is said to hold {name!r}, not a dtype stored "
                             "as bits" + ("" if name != "bfloat16" else
                                          " here (bfloat16 needs `pip install ml_dtypes`)"))
        if member + ".npy" not in wanted:
            raise ValueError(f"bits names {member!r}, which is not a state member")
        entries[member] = dtype
    return entries


def _read_array(archive, info):
    with archive.open(info) as f:
        return npy.read_array(f, allow_pickle=False)


def _read_meta(archive, info):
    dtype, shape = _array_header(archive, info)
    if dtype.kind != "U" or shape != ():
        raise ValueError(f"the header is {dtype}{list(shape)}, expected one string")
    meta = json.loads(str(_read_array(archive, info)))
    if not isinstance(meta, dict):
        raise ValueError("the header is not a JSON object")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, "
                         f"expected {FORMAT!r} version {VERSION}")
    keys = set(meta)
    if not META_KEYS <= keys <= META_KEYS | OPTIONAL_META_KEYS:
        raise ValueError(f"header keys {sorted(keys)}, expected {sorted(META_KEYS)} and "
                         f"optionally {sorted(OPTIONAL_META_KEYS)}")
    names = meta["state_names"]
    if not isinstance(names, list) or not all(
            isinstance(st, list) and all(isinstance(n, str) for n in st) for st in names):
        raise ValueError("state_names is not a list of lists of names")
    if not isinstance(meta["hyperparameters"], dict):
        raise ValueError("hyperparameters is not a JSON object")
    if "scalars" in meta:
        meta["scalars"] = _checked_scalars(meta["scalars"])
    bits = meta.get("bits", {})
    if not isinstance(bits, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in bits.items()):
        raise ValueError("bits is not a JSON object of member names to dtype names")
    return meta


def _check_names(names, expected):
    if len(names) != len(expected):
        raise _Mismatch(f"it holds state for {len(names)} params, the optimizer has "
                                 f"{len(expected)}")
    for i, (have, want) in enumerate(zip(names, expected)):
        if set(have) != set(want):
            raise _Mismatch(f"state[{i}] holds {sorted(have)}, expected "
                                     f"{sorted(want)}")


def _check_array(i, name, dtype, shape, want):
    want_dtype, want_shape = np.dtype(want[0]), tuple(want[1])
    if dtype != want_dtype or tuple(shape) != want_shape:
        raise _Mismatch(f"state[{i}][{name!r}] is {dtype}{list(shape)}, expected "
                                 f"{want_dtype}{list(want_shape)}")
