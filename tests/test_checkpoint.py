"""fastoptim.checkpoint: what a file on disk may do to the reader (zip bombs, lying headers,
bit flips, truncation) and what a save does to the folder (permissions, missing folder,
temporary files left by a crash)."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import numpy as np
import numpy.lib.format as npy
import pytest

import fastoptim as fo
from conftest import assert_same_bits
from fastoptim import checkpoint

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and signals")


def adam_checkpoint(path, steps=2):
    """An Adam over two params of different shapes and dtypes, stepped and saved to path."""
    params = [np.linspace(-1, 1, 37, dtype=np.float32), np.arange(15.0).reshape(5, 3)]
    opt = fo.Adam(params, lr=0.1, amsgrad=True)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
    opt.save(path)
    return opt


def description(opt):
    """What `expected` says about an optimizer: per param, state name -> (dtype, shape)."""
    return [{name: (a.dtype, a.shape) for name, a in st.items()} for st in opt.state]


def assert_same_state(state, opt):
    assert [sorted(st) for st in state] == [sorted(st) for st in opt.state]
    for st, own in zip(state, opt.state):
        for name in own:
            assert st[name].shape == own[name].shape
            assert_same_bits(st[name], own[name], name)


def peak_bytes_while(call):
    """The largest memory traced (Python and NumPy allocations) while call() runs."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_read_returns_what_save_wrote_with_and_without_expected(tmp_path):
    opt = adam_checkpoint(tmp_path / "a.npz")
    for expected in (None, description(opt)):
        sd = checkpoint.read(tmp_path / "a.npz", expected=expected)
        assert sd["optimizer"] == "Adam" and sd["step_count"] == 2
        assert sd["hyperparameters"]["lr"] == 0.1 and sd["hyperparameters"]["amsgrad"] is True
        assert sd.get("scalars", {}) == {}     # Adam carries no scalars between steps
        assert_same_state(sd["state"], opt)


def test_a_version_1_file_written_by_hand_loads(tmp_path):
    """The format as documented, written with np.savez directly (no fastoptim code)."""
    exp_avg, exp_avg_sq = np.full(4, 0.5), np.full(4, 0.25)
    meta = {"format": "fastoptim-checkpoint", "version": 1, "optimizer": "Adam",
            "step_count": 3,
            "hyperparameters": {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8,
                                "weight_decay": 0.0, "amsgrad": False, "maximize": False,
                                "eps_root": 0.0},
            "state_names": [["exp_avg", "exp_avg_sq"]]}
    path = tmp_path / "v1.npz"
    np.savez(path, __meta__=np.array(json.dumps(meta)),
             **{"state/0/exp_avg": exp_avg, "state/0/exp_avg_sq": exp_avg_sq})
    opt = fo.Adam(np.zeros(4), lr=1.0)
    opt.load(path)
    assert opt.step_count == 3 and opt.lr == 0.01
    assert_same_bits(opt.state[0]["exp_avg"], exp_avg)
    assert_same_bits(opt.state[0]["exp_avg_sq"], exp_avg_sq)


def test_scalars_are_written_and_read_back(tmp_path):
    opt = adam_checkpoint(tmp_path / "plain.npz")
    sd = opt.state_dict()
    sd["scalars"] = {"mu_product": 0.8123456789012345, "count": 7}
    checkpoint.write_atomic(tmp_path / "s.npz", sd)
    back = checkpoint.read(tmp_path / "s.npz")
    assert back["scalars"] == {"mu_product": 0.8123456789012345, "count": 7}
    assert type(back["scalars"]["count"]) is int
    assert_same_state(back["state"], opt)
    for bad in ({"flag": True}, {"name": "x"}, {1: 2.0}, [("a", 1.0)]):
        sd["scalars"] = bad
        with pytest.raises(TypeError, match="scalars"):
            checkpoint.write_atomic(tmp_path / "bad.npz", sd)
        assert not (tmp_path / "bad.npz").exists()


def rewrite_meta(src, dst, change):
    """Copy checkpoint src to dst with its JSON header passed through change(meta)."""
    with np.load(src) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    change(meta)
    np.savez(dst, __meta__=np.array(json.dumps(meta)), **arrays)


@pytest.mark.parametrize("change", [
    lambda m: m.update(scalars={"mu_product": "0.5"}),
    lambda m: m.update(scalars=[1.0]),
    lambda m: m.update(extra=1),
    lambda m: m.update(version=2),
    lambda m: m.pop("state_names"),
    lambda m: m.update(state_names=[["exp_avg"], "exp_avg_sq"]),
    lambda m: m["state_names"][0].append("momentum_buffer"),   # no such member
    lambda m: m["state_names"][1].remove("exp_avg"),            # a member nobody names
], ids=["scalar string", "scalars list", "unknown key", "version 2", "no state_names",
        "state_names shape", "missing member", "unexpected member"])
def test_a_bad_header_is_refused(tmp_path, change):
    adam_checkpoint(tmp_path / "good.npz")
    rewrite_meta(tmp_path / "good.npz", tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match="not a readable fastoptim checkpoint"):
        checkpoint.read(tmp_path / "bad.npz")


def test_a_zip_bomb_is_refused_before_anything_is_inflated(tmp_path):
    """A member whose header and zip entry agree on 1 GiB of zeros, deflated to a few MB:
    np.load would allocate and inflate all of it."""
    opt = adam_checkpoint(tmp_path / "good.npz")
    bomb = tmp_path / "bomb.npz"
    with np.load(tmp_path / "good.npz") as npz, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name in npz.files:      # every other member stored, as np.savez does
            if name != "state/0/exp_avg":
                z.writestr(name + ".npy", _npy_bytes(npz[name]), zipfile.ZIP_STORED)
        with z.open("state/0/exp_avg.npy", "w", force_zip64=True) as f:
            npy.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                           "shape": (2**28,)})
            zeros = bytes(2**26)
            for _ in range(16):
                f.write(zeros)
    assert bomb.stat().st_size < 8 * 2**20
    with zipfile.ZipFile(bomb) as z:
        assert z.getinfo("state/0/exp_avg.npy").file_size > 2**30

    def load():
        with pytest.raises(ValueError, match="compressed"):
            checkpoint.read(bomb)
        with pytest.raises(ValueError, match="compressed"):
            opt.load(bomb)

    assert peak_bytes_while(load) < 2**20


def _npy_bytes(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_header_claiming_more_than_its_member_is_refused(tmp_path):
    """A stored member (CRC correct) whose .npy header says 2**28 elements where the member
    holds 37: refused from the sizes, before the reader allocates for the claimed shape."""
    adam_checkpoint(tmp_path / "good.npz")
    honest, lie = b"'shape': (37,), }", b"'shape': (268435456,),}"
    with zipfile.ZipFile(tmp_path / "good.npz") as good, \
            zipfile.ZipFile(tmp_path / "lie.npz", "w", zipfile.ZIP_STORED) as bad:
        for info in good.infolist():
            data = good.read(info)
            if info.filename == "state/0/exp_avg.npy":
                padded = honest + b" " * (len(lie) - len(honest))
                assert padded in data
                data = data.replace(padded, lie)
            bad.writestr(info.filename, data)

    def load():
        with pytest.raises(ValueError, match="header .*268435456.* implies"):
            checkpoint.read(tmp_path / "lie.npz")

    assert peak_bytes_while(load) < 2**20


def test_expected_refuses_another_optimizer_before_reading_its_arrays(tmp_path):
    big = fo.Adam(np.zeros(10**7, np.float32))          # 80 MB of state on disk
    big.save(tmp_path / "big.npz")
    small = adam_checkpoint(tmp_path / "small.npz")
    mismatches = {
        "is float32[10000000], expected float32[37]": [{
            "exp_avg": (np.float32, (37,)), "exp_avg_sq": (np.float32, (37,))}],
        "is float32[10000000], expected float64[10000000]": [{
            "exp_avg": ("float64", (10**7,)), "exp_avg_sq": ("float64", (10**7,))}],
        "state for 1 params, the optimizer has 2": description(small),
        "holds ['exp_avg', 'exp_avg_sq'], expected ['momentum_buffer']": [{
            "momentum_buffer": (np.float32, (10**7,))}],
    }
    for message, expected in mismatches.items():
        def load():
            with pytest.raises(ValueError,
                               match="does not fit this optimizer.*" + re.escape(message)):
                checkpoint.read(tmp_path / "big.npz", expected=expected)

        assert peak_bytes_while(load) < 2**20, message


def test_every_bit_flip_is_refused_or_harmless(tmp_path):
    """Flip one bit in each byte of a checkpoint: the read fails with ValueError, or (a flip
    in a field the reader does not use, e.g. a timestamp) returns exactly the saved state."""
    opt = fo.Adam(np.linspace(-1, 1, 7, dtype=np.float32), lr=0.1)   # small: ~1.3 kB
    opt.step(np.ones(7, np.float32))
    opt.save(tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    flipped = tmp_path / "flipped.npz"
    refused = 0
    for position in range(len(good)):
        data = bytearray(good)
        data[position] ^= 1 << (position % 8)
        flipped.write_bytes(data)
        try:
            sd = checkpoint.read(flipped)
        except ValueError:
            refused += 1
            continue
        assert_same_state(sd["state"], opt)
        assert sd["step_count"] == 1 and sd["optimizer"] == "Adam"
    assert refused > 0.8 * len(good)   # every byte of data and header is covered by a CRC


def test_every_truncation_is_refused(tmp_path):
    adam_checkpoint(tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    for length in [*range(0, len(good), 97), *range(len(good) - 30, len(good))]:
        cut.write_bytes(good[:length])
        with pytest.raises(ValueError, match="not a readable"):
            checkpoint.read(cut)


# -- saving -----------------------------------------------------------------------------------

def test_saving_into_a_missing_folder_names_the_folder(tmp_path):
    opt = fo.SGD(np.zeros(3), lr=0.1)
    folder = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match="folder does not exist") as exc:
        opt.save(folder / "ckpt.npz")
    assert exc.value.filename == str(folder)
    assert ".tmp" not in str(exc.value)
    assert not (tmp_path / "no").exists()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(NotADirectoryError) as exc:
        opt.save(tmp_path / "file" / "ckpt.npz")
    assert exc.value.filename == str(tmp_path / "file")
    with pytest.raises(IsADirectoryError):
        opt.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["file"]


@posix_only
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_saving_into_a_read_only_folder_names_the_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    with pytest.raises(PermissionError) as exc:
        fo.SGD(np.zeros(3), lr=0.1).save(folder / "ckpt.npz")
    assert exc.value.filename == str(folder)


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027], ids=lambda m: f"umask {m:03o}")
def test_saving_keeps_permissions_or_follows_the_umask(tmp_path, umask):
    opt = fo.Adam(np.zeros(3), lr=0.1)
    old_umask = os.umask(umask)
    try:
        opt.save(tmp_path / "new.npz")
        with open(tmp_path / "plain.txt", "w"):      # what open() gives under this umask
            pass
        for mode in (0o644, 0o600, 0o640, 0o444):
            existing = tmp_path / f"existing-{mode:o}.npz"
            existing.write_bytes(b"old")
            existing.chmod(mode)
            opt.save(existing)
            assert existing.stat().st_mode & 0o7777 == mode, oct(mode)
            checkpoint.read(existing)
    finally:
        os.umask(old_umask)
    assert (tmp_path / "new.npz").stat().st_mode & 0o7777 == 0o666 & ~umask
    assert (tmp_path / "new.npz").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def tmp_name(pid, token="0123abcd4567"):
    return f".fastoptim-{pid}-{token}.npz.tmp"


def dead_pid():
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def backdate(path, seconds=120):
    then = time.time() - seconds
    os.utime(path, (then, then))


@posix_only
def test_a_save_removes_old_temporaries_of_dead_writers_only(tmp_path):
    dead, alive = dead_pid(), os.getpid()
    files = {
        tmp_name(dead): True,                          # stale: removed
        tmp_name(dead, "fedcba987654"): False,         # dead writer, but written just now
        tmp_name(alive): False,                        # this process: maybe another thread
        tmp_name(1): False,                            # a live process (init)
        ".fastoptim-abc.npz.tmp": False,               # not our naming: left alone
        "notes.npz.tmp": False,
    }
    for name, stale in files.items():
        (tmp_path / name).write_bytes(b"partial")
        if name != tmp_name(dead, "fedcba987654"):
            backdate(tmp_path / name)
    fo.SGD(np.zeros(3), lr=0.1).save(tmp_path / "ckpt.npz")
    left = set(os.listdir(tmp_path))
    assert left == {name for name, stale in files.items() if not stale} | {"ckpt.npz"}


@posix_only
def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    """A real SIGKILL halfway through writing: the old checkpoint is intact, one temporary
    file is left, and a later save in the folder (once it is a minute old) removes it."""
    path = tmp_path / "ckpt.npz"
    opt = adam_checkpoint(path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        import fastoptim as fo

        def killed_halfway(file, **arrays):
            file.write(b"PK\\x03\\x04 partial")
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        np.savez = killed_halfway
        fo.Adam(np.ones(37, np.float32)).save({str(path)!r})
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert path.read_bytes() == before
    (leftover,) = [name for name in os.listdir(tmp_path) if name.endswith(".npz.tmp")]
    opt.save(tmp_path / "other.npz")
    assert leftover in os.listdir(tmp_path)          # too recent: could be a save in progress
    backdate(tmp_path / leftover)
    opt.save(tmp_path / "other.npz")
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz", "other.npz"]


def test_an_interrupted_save_removes_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    opt = adam_checkpoint(path)
    before = path.read_bytes()

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        opt.save(path)
    assert os.listdir(tmp_path) == ["ckpt.npz"] and path.read_bytes() == before
