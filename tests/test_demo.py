"""fastoptim.cli.demo: the three PNGs, the exit code without matplotlib, and that what the
pictures show is true (the MLP learns, the paths converge, SGD zigzags)."""
import os
import sys

import numpy as np
import pytest

import fastoptim as fo
from fastoptim.cli import demo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANCE = 0.1  # ten classes


def test_main_writes_three_pngs_and_a_table(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "new" / "docs"          # created when missing
    assert demo.main(["--out", str(out), "--quick"]) == 0
    for name in ("paths.png", "ewma.png", "training.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        assert len(data) > 20_000, f"{name} is only {len(data)} bytes"
    printed = capsys.readouterr().out
    for name in ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam", "AdamW"):
        assert f"\n{name} " in printed
    assert "test acc" in printed and "training.png" in printed


def test_the_default_folder_is_new_and_docs_is_left_alone(tmp_path, monkeypatch, capsys):
    """Run where a checkout's docs/ holds the README's pictures: they stay as they were.
    (The drawing is replaced by a stub writing the file name; the training is real.)"""
    pytest.importorskip("matplotlib")
    docs = tmp_path / "docs"
    docs.mkdir()
    pictures = {name: f"README picture {name}".encode()
                for name in ("paths.png", "ewma.png", "training.png")}
    for name, data in pictures.items():
        (docs / name).write_bytes(data)

    def draw_stub(Figure, filename, *args):
        with open(filename, "w") as f:
            f.write(os.path.basename(filename))

    for draw in ("plot_paths", "plot_ewma", "plot_training"):
        monkeypatch.setattr(demo, draw, draw_stub)
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--epochs", "1", "--dataset", "synthetic"]) == 0
    assert {p.name: p.read_bytes() for p in docs.iterdir()} == pictures
    out = tmp_path / "fastoptim-demo"
    assert sorted(p.name for p in out.iterdir()) == sorted(pictures)
    assert (out / "paths.png").read_text() == "paths.png"
    assert os.path.join("fastoptim-demo", "training.png") in capsys.readouterr().out


def test_main_without_matplotlib_says_how_to_install_and_returns_2(tmp_path, monkeypatch,
                                                                   capsys):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)   # import raises ImportError
    out = tmp_path / "docs"
    assert demo.main(["--out", str(out), "--quick"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "fastoptim[plot]"' in err
    assert not out.exists()                  # nothing computed or written


def test_bad_epochs_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        demo.main(["--epochs", "0"])
    assert exc.value.code == 2


@pytest.mark.parametrize("dataset", ["digits", "synthetic"])
def test_every_optimizer_trains_the_mlp_well_above_chance(dataset):
    if dataset == "digits":
        pytest.importorskip("sklearn")
    data = demo.load_dataset(dataset)
    results = demo.train_all(data, epochs=4)
    assert set(results) == {name for name, _, _ in demo.TRAIN_OPTIMIZERS}
    for name, r in results.items():
        assert r["test_accuracy"] > 0.7, (name, r["test_accuracy"])
        assert r["train_accuracy"] > 0.7, (name, r["train_accuracy"])
        assert r["epoch_loss"][-1] < 0.5 * r["epoch_loss"][0], name
        steps = 4 * -(-len(data[1]) // demo.BATCH_SIZE)
        assert r["iteration_loss"].shape == (steps,)


def test_without_scikit_learn_auto_falls_back_to_synthetic(monkeypatch):
    for name in ("sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, name, None)
    description, X, y, X_test, y_test = demo.load_dataset("auto")
    assert "synthetic" in description
    assert X.shape[1] == 64 and len(X) + len(X_test) == 1797
    assert 0.0 <= X.min() and X.max() <= 1.0
    assert set(np.unique(y)) == set(range(10))
    with pytest.raises(ImportError):
        demo.load_dataset("digits")


def test_training_is_reproducible():
    data = demo.load_dataset("synthetic", seed=3)
    a = demo.train(*demo.TRAIN_OPTIMIZERS[-2][1:], data, epochs=1, seed=3)
    b = demo.train(*demo.TRAIN_OPTIMIZERS[-2][1:], data, epochs=1, seed=3)
    np.testing.assert_array_equal(a["iteration_loss"], b["iteration_loss"])


def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    model = demo.MLP(6, 5, 3, seed=1)
    X, y = rng.normal(size=(8, 6)), rng.integers(0, 3, 8)
    loss, grads = model.loss_and_gradients(X, y)
    assert loss == pytest.approx(model.loss(X, y))
    h = 1e-6
    for param, grad in zip(model.params, grads):
        assert grad.shape == param.shape and grad.flags.c_contiguous
        numeric = np.empty_like(param)
        for i in np.ndindex(param.shape):
            saved = param[i]
            param[i] = saved + h
            up = model.loss(X, y)
            param[i] = saved - h
            down = model.loss(X, y)
            param[i] = saved
            numeric[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name,cls,hyper", demo.PATH_OPTIMIZERS,
                         ids=[name for name, _, _ in demo.PATH_OPTIMIZERS])
def test_every_path_ends_closer_to_the_minimum(name, cls, hyper):
    path = demo.optimizer_path(cls, hyper)
    assert path.shape == (demo.PATH_STEPS + 1, 2)
    np.testing.assert_array_equal(path[0], demo.PATH_START)
    assert np.all(np.isfinite(path))
    start, end = demo.bowl(*path[0]), demo.bowl(*path[-1])
    assert end < 0.05 * start, (name, end)
    assert np.linalg.norm(path[-1]) < np.linalg.norm(path[0])


def test_adam_path_ends_near_the_minimum():
    hyper = next(h for n, _, h in demo.PATH_OPTIMIZERS if n == "Adam")
    path = demo.optimizer_path(fo.Adam, hyper)
    assert np.linalg.norm(path[-1]) < 0.1 * np.linalg.norm(demo.PATH_START)


def test_sgd_zigzags_across_the_steep_direction():
    hyper = next(h for n, _, h in demo.PATH_OPTIMIZERS if n == "SGD")
    path = demo.optimizer_path(fo.SGD, hyper)
    x, y = path[:, 0], path[:, 1]
    assert np.all(np.sign(y[1:]) == -np.sign(y[:-1]))        # y flips sign every step
    assert np.all(np.diff(x) > 0)                             # while x creeps toward 0


def test_bowl_gradient_is_the_derivative():
    p, h = np.array([-3.0, 1.5]), 1e-6
    numeric = [(demo.bowl(p[0] + h, p[1]) - demo.bowl(p[0] - h, p[1])) / (2 * h),
               (demo.bowl(p[0], p[1] + h) - demo.bowl(p[0], p[1] - h)) / (2 * h)]
    np.testing.assert_allclose(demo.bowl_gradient(p), numeric, rtol=1e-7)


def test_temperatures_are_seeded_and_seasonal():
    day, t = demo.daily_temperatures(seed=0)
    _, again = demo.daily_temperatures(seed=0)
    _, other = demo.daily_temperatures(seed=1)
    assert day.tolist() == list(range(1, 366)) and t.shape == (365,)
    np.testing.assert_array_equal(t, again)
    assert not np.array_equal(t, other)
    assert t[170:220].mean() > t[:30].mean() + 10          # summer is warmer than January
