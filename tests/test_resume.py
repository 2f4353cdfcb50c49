"""Interrupted runs: SIGTERM mid-epoch saves a checkpoint and ends the MLflow run KILLED; resuming
continues the same run and ends with exactly the metrics of an uninterrupted run."""

import signal
import subprocess
import time

import pytest
import torch

from conftest import write_toy_csv
from entry_points import INTERRUPTIBLE_RUN, command, polled_store

pytestmark = pytest.mark.slow  # end to end, through subprocesses

ARGS = INTERRUPTIBLE_RUN


def _train(out, data, *extra, wait=True):
    # One tokenizer cache for all runs: the tiny model's tokenizer is trained by HF tokenizers, whose
    # tie-breaking differs between processes, so only a shared (cached) tokenizer gives equal runs.
    cmd = command(
        "train.py", f"paths.outputs={out}", f"paths.cache={out.parent / 'cache'}", f"data.train={data}", *ARGS, *extra
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc.communicate(timeout=600) + (proc.returncode,) if wait else proc


def _runs(out):
    client = polled_store(out)
    exp = client.get_experiment_by_name("titlesweep")
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def _wait_for_first_logged_step(out, proc, timeout=300):
    """Poll the store until training has logged a step (well inside epoch 1: about 200 steps per epoch)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            client, runs = _runs(out)
            if runs and client.get_metric_history(runs[0].info.run_id, "train_loss"):
                return runs[0].info.run_id
        except Exception:  # the store is still being created
            pass
        time.sleep(0.05)
    raise AssertionError("training never logged a step")


def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = write_toy_csv(tmp_path / "toy.csv", n_per_class=1000)
    _, err, rc = _train(tmp_path / "straight", data)
    assert rc == 0, err[-2000:]
    _, (straight,) = _runs(tmp_path / "straight")
    # Equality with a constant classifier would prove little: the run must have learned the toy set.
    assert straight.data.metrics["test_accuracy"] >= 0.9 and straight.data.metrics["test_f1"] >= 0.9

    out = tmp_path / "interrupted"
    proc = _train(out, data, wait=False)
    run_id = _wait_for_first_logged_step(out, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted: SIGTERM received: checkpoint saved to" in err
    client, (killed,) = _runs(out)
    assert killed.info.status == "KILLED"
    saved = torch.load(killed.data.tags["checkpoint"], weights_only=True)  # plain tensors and numbers only
    per_epoch = int(straight.data.params["train.total_steps"]) // 2
    assert saved["loop"]["epoch"] == 1 and 0 < saved["loop"]["next_batch"] < per_epoch  # stopped mid-epoch 1

    _, err, rc = _train(out, data, f"trainer.resume={run_id}")
    assert rc == 0, err[-2000:]
    client, (resumed,) = _runs(out)  # the same MLflow run, continued
    assert resumed.info.run_id == run_id and resumed.info.status == "FINISHED"
    for key in ("test_accuracy", "test_loss", "test_roc_auc", "best_val_loss", "best_epoch"):
        assert resumed.data.metrics[key] == pytest.approx(straight.data.metrics[key], rel=1e-6, abs=1e-9), key
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))
    assert steps == sorted(set(steps)) and steps[-1] == 2 * per_epoch  # no step logged twice, every step done


def test_resume_of_an_unknown_run_is_one_line(tmp_path):
    data = write_toy_csv(tmp_path / "toy.csv", n_per_class=50)
    _, err, rc = _train(tmp_path / "o", data, "trainer.resume=0123abcd")
    assert rc == 2 and "error: trainer.resume=0123abcd: neither a checkpoint file nor a run id" in err
