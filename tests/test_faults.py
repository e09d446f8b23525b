"""A user's mistake is one line and exit status 2, never a traceback (docs/faults.md lists every case)."""

import errno
import os

import pytest
import torch

from siamdetr.cli import main
from siamdetr.config import load_config
from siamdetr.engine.checkpoint import save_checkpoint
from siamdetr.stages.data import run as prepare_data


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Prepared smoke data, an empty params file and a small good checkpoint."""
    root = tmp_path_factory.mktemp("faults")
    prepare_data(load_config(params=None, profile="smoke", overrides=[f"data.prepared_dir={root / 'prepared'}"]))
    (root / "empty.yaml").write_text("")
    save_checkpoint(root / "good.pth", {"model": {"w": torch.arange(1000.0)}})
    return root


def finetune(workspace, tmp_path, *extra):
    args = ["finetune", "--params", str(workspace / "empty.yaml"), "--profile", "smoke"]
    sets = [f"data.prepared_dir={workspace / 'prepared'}", f"finetune.out_dir={tmp_path / 'run'}", "finetune.epochs=1"]
    return main([*args, *(a for s in sets for a in ("--set", s)), *extra])


def one_line_error(capsys, fragment: str) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert fragment in captured.err, captured.err[-2000:]
    return captured.err


def write_bad_checkpoint(workspace, path, kind):
    good = (workspace / "good.pth").read_bytes()
    if kind == "unsafe":

        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))

        torch.save({"model": Evil()}, path)
    elif kind == "not-a-dict":
        torch.save([1, 2], path)
    else:
        path.write_bytes({"random": bytes(range(256)) * 8, "empty": b"", "truncated": good[: len(good) // 2]}[kind])


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("random", "not a PyTorch checkpoint"),
        ("empty", "empty file, not a checkpoint"),
        ("truncated", "truncated or corrupt checkpoint"),
        ("not-a-dict", "holds a list, expected a dict of tensors"),
        ("unsafe", "refused as unsafe"),
    ],
)
def test_a_bad_init_checkpoint(workspace, tmp_path, capsys, kind, fragment):
    write_bad_checkpoint(workspace, tmp_path / "init.pth", kind)
    assert finetune(workspace, tmp_path, "--init", str(tmp_path / "init.pth")) == 2
    err = one_line_error(capsys, f"init.pth: {fragment}")
    assert "weights_only" not in err


def test_a_corrupt_run_checkpoint_says_how_to_restart(workspace, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    write_bad_checkpoint(workspace, tmp_path / "run" / "checkpoint.pth", "truncated")
    assert finetune(workspace, tmp_path) == 2
    one_line_error(capsys, f"delete it: rm {tmp_path / 'run' / 'checkpoint.pth'}")


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("finetune.lr=.inf", "finetune.lr = inf: expected a finite number"),
        ("finetune.lr=1e30", "finetune.lr = 1e+30: must be in (0, 1]"),
        ("seed=99999999999999999999", "must be in [0, 2**31)"),
        ("finetune.test_size=4", "below the small backbone's stride"),
    ],
)
def test_numbers_that_would_fail_later(workspace, tmp_path, capsys, setting, fragment):
    assert finetune(workspace, tmp_path, "--set", setting) == 2
    one_line_error(capsys, fragment)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_diverging_run_stops_with_one_line_before_the_matcher_fails(workspace, tmp_path, capsys):
    assert finetune(workspace, tmp_path, "--set", "finetune.lr_backbone=1e30") == 2
    one_line_error(capsys, "training diverged")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["proposals", "--method", "random", "--images", ".", "--out", "x", "--workers", "-1"],
            "--workers: -1 is below 0",
        ),
        (["sweep", "--workers", "0"], "--workers: 0 is below 1"),
        (["evaluate", "--gt", "g", "--detections", "d", "--out", "o", "--area-scale", "0"], "--area-scale: 0"),
        (["evaluate", "--gt", "g", "--detections", "d", "--out", "o", "--area-scale", "-1"], "--area-scale: -1"),
    ],
)
def test_bad_command_line_numbers(capsys, argv, fragment):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    one_line_error(capsys, fragment)


def test_a_params_file_that_is_not_utf8(workspace, tmp_path, capsys):
    (tmp_path / "latin1.yaml").write_bytes("finetune:\n  lr: 1e-4  # café\n".encode("latin-1"))
    assert main(["config", "show", "--params", str(tmp_path / "latin1.yaml")]) == 2
    one_line_error(capsys, "latin1.yaml: not UTF-8 text")


def test_an_invalid_compare_filter(tmp_path, capsys):
    assert main(["compare", "tags.x ==== 'y'", "workspace", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    one_line_error(capsys, "is not exp:NAME, workspace or a valid MLflow filter")


def test_an_unreachable_tracking_server_fails_before_any_compute(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert finetune(workspace, tmp_path) == 2
    one_line_error(capsys, "MLFLOW_TRACKING_URI=http://127.0.0.1:9: no MLflow server answers")
    assert not (tmp_path / "run").exists()


def test_a_corrupt_tracking_database(workspace, tmp_path, capsys, monkeypatch):
    (tmp_path / "mlflow.db").write_text("not a database")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert finetune(workspace, tmp_path) == 2
    one_line_error(capsys, f"{tmp_path / 'mlflow.db'}: not a readable SQLite database")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files: the check cannot be exercised")
def test_a_read_only_tracking_database(workspace, tmp_path, capsys, monkeypatch):
    import sqlite3

    sqlite3.connect(tmp_path / "mlflow.db").close()
    (tmp_path / "mlflow.db").chmod(0o444)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert finetune(workspace, tmp_path) == 2
    one_line_error(capsys, "the MLflow store is read-only")


def test_disk_full_while_writing_names_the_file(workspace, tmp_path, capsys, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    argv = ["data", "synth", "--out", str(tmp_path / "synth"), "--workers", "1", "--profile", "smoke"]
    assert main([*argv, "--params", str(workspace / "empty.yaml")]) == 2
    one_line_error(capsys, "No space left on device while writing it")


def test_an_unreachable_tracking_database_fails_before_any_compute(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://user:secret@127.0.0.1:1/mlflow")  # nothing listens
    assert finetune(workspace, tmp_path) == 2
    err = one_line_error(capsys, "MLFLOW_TRACKING_URI=postgresql://user:***@127.0.0.1:1/mlflow: cannot connect")
    assert "secret" not in err and not (tmp_path / "run").exists()


def test_a_store_this_user_cannot_write_is_named(tmp_path, monkeypatch):
    """The read-only check as a non-root user meets it (root writes read-only files, so it is simulated)."""
    import sqlite3

    from siamdetr.errors import TrackingError
    from siamdetr.tracking import check_store

    sqlite3.connect(tmp_path / "mlflow.db").close()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK else real(path, mode))
    with pytest.raises(TrackingError, match="the MLflow store is read-only"):
        check_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
