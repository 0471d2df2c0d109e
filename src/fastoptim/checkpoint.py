"""Checkpoint files: one .npz per optimizer, written atomically, read with full checks.

Layout: a JSON header in the array "__meta__" (format version, optimizer kind, step count,
hyperparameters, the state names of each param) and one array per state buffer, named
"state/<param index>/<name>". Nothing is pickled: np.load runs with allow_pickle=False.
"""
import json
import os
import tempfile

import numpy as np

FORMAT = "fastoptim-checkpoint"
VERSION = 1


def write_atomic(path, state_dict):
    """Write state_dict to path so that a crash leaves either the old file or the new one.

    The data goes to a temporary file in the same folder, is flushed and fsynced, then
    renamed over path (an atomic replace on POSIX and Windows); the folder is fsynced so
    the rename itself survives a power loss.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "optimizer": state_dict["optimizer"],
        "step_count": state_dict["step_count"],
        "hyperparameters": state_dict["hyperparameters"],
        "state_names": [list(s) for s in state_dict["state"]],
    }
    arrays = {"__meta__": np.array(json.dumps(meta))}
    for i, state in enumerate(state_dict["state"]):
        for name, array in state.items():
            arrays[f"state/{i}/{name}"] = array
    fd, tmp = tempfile.mkstemp(prefix=".fastoptim-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path):
    """Read a checkpoint file into a state dict; ValueError if it is not a readable
    fastoptim checkpoint (corrupt, truncated, foreign). A missing file stays
    FileNotFoundError."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "__meta__" not in npz.files:
                raise ValueError("no fastoptim header (__meta__)")
            meta = json.loads(str(npz["__meta__"]))
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}"
                                 f", expected {FORMAT!r} version {VERSION}")
            state = [
                {name: npz[f"state/{i}/{name}"] for name in names}
                for i, names in enumerate(meta["state_names"])
            ]
            return {
                "optimizer": meta["optimizer"],
                "step_count": meta["step_count"],
                "hyperparameters": meta["hyperparameters"],
                "state": state,
            }
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # anything else means the bytes are not a valid checkpoint
        raise ValueError(f"{path} is not a readable fastoptim checkpoint: {exc!r}") from exc
