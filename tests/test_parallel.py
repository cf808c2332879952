"""Parallel CPU training (ddadlib.models.parallel) and the CPU plan (ddadlib.devices.cpu_plan).

The members trained in worker processes of one thread equal, weight for weight, the members
trained one after the other in this process with one thread; checkpoints, interrupts and NaN
losses behave as on the sequential path. Worker processes are spawned (a second or more each on a
busy machine), so each test here starts them once.
"""

import pytest
import torch

from ddadlib import devices
from ddadlib.cli import main
from ddadlib.devices import cpu_plan
from ddadlib.errors import TrainingError
from ddadlib.models import parallel
from ddadlib.models.checkpoints import load_checkpoint
from ddadlib.models.ensemble import EnsembleConfig
from ddadlib.models.parallel import ModuleJob, estimate_line, format_duration, train_ensembles


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def images(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=g) * 2 - 1


def configs(epochs=2):
    common = dict(k=2, epochs=epochs, batch_size=16, size=32)
    return EnsembleConfig(module="B", **common), EnsembleConfig(module="A", **common)


def assert_same(seq, par):
    for s, p in zip(seq, par):
        assert s.losses == p.losses
        for ms, mp in zip(s.members, p.members):
            a, b = ms.state_dict(), mp.state_dict()
            assert a.keys() == b.keys()
            for name in a:
                assert torch.equal(a[name], b[name]), name


def test_parallel_members_equal_sequential_ones_exactly(one_thread):
    x = images()
    cb, ca = configs()
    seq = train_ensembles([ModuleJob(x[:24], cb), ModuleJob(x, ca)], workers=1, progress=False)
    par = train_ensembles(
        [ModuleJob(x[:24].clone(), cb), ModuleJob(x.clone(), ca)],
        workers=2,
        threads=1,
        progress=False,
    )
    assert seq[0].path == "sequential"
    assert par[0].path == "parallel (2 workers x 1 thread)"
    assert_same(seq, par)
    # training moved the weights, and members and modules differ
    assert not torch.equal(
        par[0].members[0].state_dict()["encoder.0.0.weight"],
        par[0].members[1].state_dict()["encoder.0.0.weight"],
    )
    assert all(not m.training for r in par for m in r.members)


def test_parallel_interrupt_keeps_finished_epochs_and_resumes_to_the_same_weights(
    one_thread, tmp_path
):
    x = images()
    cb, ca = configs(epochs=3)
    full = train_ensembles([ModuleJob(x[:24], cb), ModuleJob(x, ca)], progress=False)

    def stop(epoch, losses):
        if epoch == 1:  # after module A's second epoch
            raise KeyboardInterrupt

    ckpt_b, ckpt_a = tmp_path / "B.ckpt", tmp_path / "A.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_ensembles(
            [ModuleJob(x[:24].clone(), cb, ckpt_b), ModuleJob(x.clone(), ca, ckpt_a, stop)],
            workers=2,
            threads=1,
            checkpoint_every=1e9,  # only the interrupt writes (and a finished module)
            progress=False,
        )
    # A stopped in its callback after epoch 2: the epochs before it are kept, as sequentially
    assert load_checkpoint(ckpt_a, ca.to_dict())["epoch"] == 1
    assert load_checkpoint(ckpt_b, cb.to_dict())["epoch"] >= 1
    # resumed on the sequential path: the checkpoint format is the same
    resumed = train_ensembles(
        [ModuleJob(x[:24], cb, ckpt_b), ModuleJob(x, ca, ckpt_a)], workers=1, progress=False
    )
    assert resumed[1].resumed_from == 1
    for f, r in zip(full, resumed):
        for mf, mr in zip(f.members, r.members):
            for name, v in mf.state_dict().items():
                assert torch.equal(v, mr.state_dict()[name]), name


def test_parallel_nan_loss_names_the_member(one_thread, tmp_path):
    x = images()
    bad = x.clone()
    bad[3, 0, 5, 5] = float("nan")
    cb, ca = configs()
    with pytest.raises(TrainingError, match=r"module A \(ae, 2 members\): the loss of member"):
        train_ensembles(
            [ModuleJob(x[:24].clone(), cb), ModuleJob(bad, ca)],
            workers=2,
            threads=1,
            progress=False,
        )


# --- the CPU plan ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cores, load, workers, threads, want",
    [
        (2, 1.9, None, None, (2, 1)),  # busy: one-thread workers only share cores fairly
        (2, 0.1, None, None, (2, 1)),
        (2, 0.1, 1, None, (1, 2)),  # one process on an idle machine: all cores as threads
        (2, 1.9, 1, None, (1, 1)),  # one process on a busy machine: no spin-waiting threads
        (16, 0.0, None, None, (6, 2)),  # 6 members, 16 idle cores
        (16, 12.0, None, None, (6, 1)),
        (2, 0.0, None, 2, (1, 2)),
        (4, 0.0, 3, 5, (3, 5)),  # what the user asks for is kept
    ],
)
def test_cpu_plan_keeps_workers_times_threads_within_the_free_cores(
    cores, load, workers, threads, want
):
    plan = cpu_plan(workers, threads, tasks=6, cores=cores, load=load)
    assert (plan.workers, plan.threads) == want


def test_cpu_plan_reads_the_machine_once(monkeypatch):
    monkeypatch.setattr(devices, "available_cores", lambda: 2)
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (1.9, 1.0, 1.0))
    devices._load_at_start.cache_clear()
    try:
        plan = cpu_plan(1, tasks=6)
        assert plan.describe() == (
            "CPU: 2 cores, load 1.9: 1 worker x 1 thread (--workers / --threads to change)"
        )
        monkeypatch.setattr(devices.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        assert cpu_plan(1, tasks=6).load == 1.9  # our own training does not count later
    finally:
        devices._load_at_start.cache_clear()
    over = cpu_plan(3, 2, cores=2, load=0.0).describe()
    assert "more than the 2 cores" in over


def test_small_trainings_run_in_one_process():
    assert cpu_plan(tasks=6, work=1000, cores=2, load=0.0).workers == 1
    assert cpu_plan(tasks=6, work=10**6, cores=2, load=0.0).workers == 2
    assert cpu_plan(2, tasks=6, work=1000, cores=2, load=0.0).workers == 2


# --- the time estimate ----------------------------------------------------------------------


def test_estimate_line_only_for_long_trainings(monkeypatch):
    cb, ca = configs(epochs=250)
    x = torch.zeros(200, 1, 32, 32)
    jobs = [ModuleJob(x[:100], cb), ModuleJob(x, ca)]
    monkeypatch.setattr(parallel, "seconds_per_step", lambda job: 0.5)
    # (2 members x 250 epochs) x (7 + 13 batches) = 10,000 steps of 0.5 s on 2 workers: 2,500 s
    assert estimate_line(jobs, workers=2) == (
        "estimated 42 min for 250 epochs of modules B and A (measured on the first batches)"
    )
    monkeypatch.setattr(parallel, "seconds_per_step", lambda job: 0.001)
    assert estimate_line(jobs, workers=2) is None  # 5 s
    short = [ModuleJob(x[:10], EnsembleConfig(k=2, epochs=1, batch_size=16, size=32))]
    assert estimate_line(short, workers=1) is None  # not even measured


def test_estimate_measures_real_steps():
    cfg = EnsembleConfig(k=2, epochs=1, batch_size=8, size=32)
    secs = parallel.seconds_per_step(ModuleJob(images(24), cfg))
    assert 0 < secs < 60


def test_format_duration():
    assert format_duration(3 * 3600 + 10 * 60) == "3 h 10 min"
    assert format_duration(2 * 3600) == "2 h"
    assert format_duration(150) == "2 min"
    assert format_duration(45) == "45 s"


# --- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "argument --workers: must be from 1 to 1,024, not 0"),
        (["--threads", "two"], "argument --threads: 'two' is not a whole number"),
        (["--workers", "5000"], "argument --workers: must be from 1 to 1,024, not 5000"),
    ],
)
def test_workers_and_threads_are_checked_in_one_line(capsys, tmp_path, args, message):
    for cmd in (["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")], ["demo"]):
        with pytest.raises(SystemExit) as exc:
            main([*cmd, *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err
        assert err.startswith(f"ddad {cmd[0]}: error: {message}")


# --- a run records the plan ------------------------------------------------------------------


def test_run_logs_and_records_its_cpu_plan_outside_its_definition(tiny_synthetic, tmp_path):
    import json

    from ddadlib.runs.config import RunConfig, run_config
    from ddadlib.runs.train import train_run

    lines: list[str] = []
    cfg = run_config(tiny_synthetic, k=2, epochs=1, n_unlabeled=10, device="cpu", log=lines.append)
    model = train_run(tmp_path / "run", cfg, progress=False, workers=1, threads=1, log=lines.append)
    assert any(ln.startswith("CPU: ") and "1 worker x 1 thread" in ln for ln in lines)
    saved = RunConfig.read(tmp_path / "run")
    assert saved.provenance["cpu"]["workers"] == 1 and saved.provenance["cpu"]["threads"] == 1
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert log["cpu"]["threads"] == 1 and model.history_["cpu"]["workers"] == 1
    assert "cpu" not in saved.defining() and saved.defining() == cfg.defining()
    # the same run with other workers/threads is the same run: reused, not refused
    lines.clear()
    train_run(tmp_path / "run", cfg, progress=False, workers=2, threads=1, log=lines.append)
    assert any("reusing it" in ln for ln in lines)
