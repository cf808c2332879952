"""`ddad reproduce` on other executors: --jobs N local processes and Ray tasks give the results
of the sequential path; module B is trained once; a killed reproduction resumes; a failing run
is reported and does not stop the others."""

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ddadlib.cli import main
from ddadlib.errors import ConfigError, TrainingError
from ddadlib.runs.config import LOCK_FILE
from ddadlib.runs.executors import (
    Executor,
    ProcessExecutor,
    SequentialExecutor,
    Task,
    call_task,
    make_executor,
    run_tasks,
)
from ddadlib.runs.reproduce import reproduce
from ddadlib.runs.run import Run

# the AR ablation, seed 0: six AE runs that share one module B
SETTINGS = dict(experiments=["ablation"], seeds=(0,), epochs=1, n_boot=20, progress=False)
QUIET = dict(log=lambda s: None)
ROOT = Path(__file__).resolve().parents[1]


def _grid(data, out, **kwargs) -> tuple[pd.DataFrame, list[str]]:
    logs: list[str] = []
    reproduce(data, out, "quick", **SETTINGS, **kwargs, log=logs.append)
    return pd.read_csv(out / "results.csv"), logs


def _argv(data: Path, out: Path, experiment: str) -> list[str]:
    """``ddad reproduce`` of ``experiment``, seed 0, one epoch, two processes."""
    return (
        f"reproduce --data {data} --out {out} --protocol quick --experiments {experiment} "
        "--seeds 0 --epochs 1 --n-boot 20 --jobs 2 --quiet"
    ).split()


def _same_results(a: pd.DataFrame, b: pd.DataFrame, a_out: Path, b_out: Path) -> None:
    keep = ["backbone", "ar", "seed", "n_unlabeled", "score", "auc", "ap", "sens_at_95_spec"]
    pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=False, atol=1e-6)
    for run in sorted((a_out / "runs").iterdir()):
        np.testing.assert_allclose(
            Run(run).scores().drop(columns=["id"]).to_numpy(),
            Run(b_out / "runs" / run.name).scores().drop(columns=["id"]).to_numpy(),
            rtol=1e-4,
            atol=1e-6,
        )


def _b_sources(out: Path) -> dict[str, str | None]:
    return {p.name: Run(p).train_log().get("module_b_from") for p in (out / "runs").iterdir()}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, tiny_synthetic):
    out = tmp_path_factory.mktemp("seq") / "out"
    return out, *_grid(tiny_synthetic, out)


# -- the scheduling loop, without training ----------------------------------------------------
def _step(name: str, fail: bool = False, *, log) -> str:
    log(f"{name} ran")
    if fail:
        raise ValueError(f"{name} broke")
    return name


class _Threads(Executor):
    """Two tasks at once in threads: the scheduling of run_tasks without processes."""

    slots = 2

    def __init__(self) -> None:
        self.pool = cf.ThreadPoolExecutor(2)

    def submit(self, task, log):
        return self.pool.submit(call_task, task.fn, task.kwargs, task.name, log)


def _slow_step(name: str, fail: bool = False, *, log) -> str:
    time.sleep(0.3)
    return _step(name, fail, log=log)


def test_a_group_waits_for_its_first_task_and_a_failed_first_hands_over():
    tasks = [
        Task("b0", _slow_step, dict(name="b0", fail=True), group="b"),
        Task("b1", _step, dict(name="b1"), group="b"),
        Task("f", _step, dict(name="f")),
        Task("b2", _step, dict(name="b2"), group="b"),
    ]
    events: list[str] = []
    outcomes = run_tasks(
        _Threads(),
        tasks,
        log=lambda s: None,
        on_start=lambda i, t: events.append(f"start {t.name}"),
        on_done=lambda i, t, o: events.append(f"end {t.name}"),
    )
    # b1 waits for b0 (f does not); b0 fails, so b1 leads its group alone, then b2 starts
    assert events == [
        "start b0",
        "start f",
        "end f",
        "end b0",
        "start b1",
        "end b1",
        "start b2",
        "end b2",
    ]
    assert [o.ok for o in outcomes] == [False, True, True, True]
    assert outcomes[0].error == "ValueError: b0 broke" and "Traceback" in outcomes[0].details
    assert [o.result for o in outcomes[1:]] == ["b1", "f", "b2"]
    # one at a time (--jobs 1): the order of the plan, as before there were executors
    order: list[str] = []
    run_tasks(
        SequentialExecutor(), tasks, log=lambda s: None, on_start=lambda i, t: order.append(t.name)
    )
    assert order == ["b0", "b1", "f", "b2"]


# -- --jobs 2 ----------------------------------------------------------------------------------
def test_jobs_2_gives_the_results_of_jobs_1_and_trains_module_b_once(
    sequential, tiny_synthetic, tmp_path
):
    seq_out, seq_results, seq_logs = sequential
    out = tmp_path / "out"
    t0 = time.perf_counter()
    results, logs = _grid(tiny_synthetic, out, executor=ProcessExecutor(jobs=2))
    print(f"--jobs 2: {time.perf_counter() - t0:.1f} s")
    assert any(line.startswith("runs: 2 local processes, 1 torch thread(s) each") for line in logs)
    _same_results(seq_results, results, seq_out, out)
    # one run trained module B, the five others reused it, as in the sequential reproduction
    sources = _b_sources(out)
    first = "ae-ar0-m30-e1-k3-s0"
    assert sources.pop(first) is None
    assert set(sources.values()) == {str((out / "runs" / first).resolve())}
    assert sum(v is None for v in _b_sources(seq_out).values()) == 1
    assert json.loads((out / "reproduce.json").read_text())["finished"]


def _wait_unlocked(out: Path, timeout: float = 60.0) -> None:
    import fcntl

    deadline = time.monotonic() + timeout
    for path in out.glob(f"runs/*/{LOCK_FILE}"):
        with open(path, "a") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"{path}: still locked"
                    time.sleep(0.1)
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.mark.skipif(sys.platform == "win32", reason="kills a process group (POSIX)")
def test_a_killed_reproduction_resumes(tiny_synthetic, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ddadlib.cli", *_argv(tiny_synthetic, out, "table1")]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # kill it (parent and workers) once a run has trained module B and is training module A
    interrupted = None
    deadline = time.monotonic() + 300
    while interrupted is None and proc.poll() is None and time.monotonic() < deadline:
        for ckpt in out.glob("runs/*/checkpoints/B.ckpt"):
            if not (ckpt.parent.parent / "model.pt").exists():
                interrupted = ckpt.parent.parent
                break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait_unlocked(out)  # the workers die a moment after their parent
    assert interrupted is not None, proc.stderr.read().decode()[-2000:]
    finished = {
        p.name: (p / "metrics.json").stat().st_mtime_ns
        for p in out.glob("runs/*")
        if Run(p).is_evaluated
    }
    # the same command again (here in this process, one run at a time: resuming does not
    # depend on the executor, and it spares the workers' start)
    reproduce(tiny_synthetic, out, "quick", **dict(SETTINGS, experiments=["table1"]), **QUIET)
    record = json.loads((out / "reproduce.json").read_text())
    assert record["finished"] and record["runs_done"] == 3 and not record["failed"]
    for name, stamp in finished.items():  # finished runs are reused as they were
        assert (out / "runs" / name / "metrics.json").stat().st_mtime_ns == stamp
    # the interrupted run resumed from its checkpoint (module B was not trained again)
    log = Run(interrupted).train_log()
    assert log["resumed"] is True and log["modules"]["B"]["resumed_from_epoch"] == 1, log


def test_a_failing_run_is_reported_and_the_others_finish(
    sequential, tiny_synthetic, tmp_path, capsys
):
    import shutil

    seq_out = sequential[0]
    out = shutil.copytree(seq_out, tmp_path / "out")
    broken, redo = out / "runs" / "ae-ar0.2-m30-e1-k3-s0", out / "runs" / "ae-ar0.8-m30-e1-k3-s0"
    (broken / "metrics.json").unlink()
    (broken / "config.json").write_text("{not json")
    for name in ("model.pt", "metrics.json", "scores.csv"):
        (redo / name).unlink()
    argv = _argv(tiny_synthetic, out, "ablation")
    assert main(argv) == 2
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("ddad reproduce: error: 1 of 6 runs failed")
    assert broken.name in error[0] and "config.json" in error[0]
    assert f"{broken.name}: failed: " in captured.out
    assert Run(redo).is_evaluated  # the other run was trained and evaluated
    record = json.loads((out / "reproduce.json").read_text())
    assert list(record["failed"]) == [broken.name] and record["missing"] == [broken.name]
    assert record["runs_done"] == 5 and record["finished"] is None
    text = (out / "results.md").read_text()
    assert "Partial: 5 of 6 runs" in text and "**Failed runs**" in text
    assert f"- `{broken.name}`: " in text and "config.json" in text


def test_a_failure_under_the_api_raises_after_the_tables(
    sequential, tiny_synthetic, tmp_path, monkeypatch
):
    import shutil

    import ddadlib.runs.reproduce as rp

    out = shutil.copytree(sequential[0], tmp_path / "out")
    for name in ("model.pt", "metrics.json", "scores.csv"):
        (out / "runs" / "ae-ar1-m30-e1-k3-s0" / name).unlink()
    real = rp.ensure_run

    def fails_at_ar_1(root, data, **kw):
        if kw["ar"] == 1.0:
            raise RuntimeError("out of luck")
        return real(root, data, **kw)

    monkeypatch.setattr(rp, "ensure_run", fails_at_ar_1)
    logs: list[str] = []
    with pytest.raises(
        TrainingError,
        match=r"1 of 6 runs failed \(ae-ar1-m30-e1-k3-s0: RuntimeError: out of luck\)",
    ):
        reproduce(tiny_synthetic, out, "quick", **SETTINGS, log=logs.append)
    assert any("Traceback" in line for line in logs)  # not ddadlib's error: its traceback is logged
    assert "Partial: 5 of 6 runs" in (out / "results.md").read_text()


# -- the executor's settings -------------------------------------------------------------------
def test_ray_options_need_the_ray_executor_and_jobs_the_local_one():
    with pytest.raises(ConfigError, match="--ray-address: only with --executor ray"):
        make_executor("local", address="ray://head:10001")
    with pytest.raises(ConfigError, match="--jobs is for --executor local"):
        make_executor("ray", jobs=2)
    assert isinstance(make_executor("local"), SequentialExecutor)
    assert make_executor("local", jobs=3).slots == 3


def test_without_ray_the_ray_executor_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(ConfigError, match=r'pip install "ddadlib\[ray\]"'):
        make_executor("ray")
    argv = ["reproduce", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--executor", "ray"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ddad reproduce: error: --executor ray needs Ray, which is not installed: "
        'pip install "ddadlib[ray]"'
    ]


# -- Ray ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "ddadlib[ray]")')
    for attempt in range(2):  # on a busy machine Ray's first start can time out
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    yield ray
    ray.shutdown()


def test_ray_gives_the_results_of_the_local_executor(
    local_ray, sequential, tiny_synthetic, tmp_path
):
    from ddadlib.runs.executors import RayExecutor

    seq_out, seq_results, _ = sequential
    out = tmp_path / "out"
    t0 = time.perf_counter()
    results, logs = _grid(tiny_synthetic, out, executor=RayExecutor())
    print(f"--executor ray: {time.perf_counter() - t0:.1f} s")
    assert "runs: Ray, 1 CPU(s) and 0 GPU(s) per run" in logs
    _same_results(seq_results, results, seq_out, out)
    assert sum(v is None for v in _b_sources(out).values()) == 1  # module B trained once
    assert local_ray.is_initialized()  # a Ray it did not start is left running
    md, seq_md = (out / "results.md").read_text(), (seq_out / "results.md").read_text()
    table = lambda text: text[text.index("**AR ablation**") : text.index("Runs:")]  # noqa: E731
    assert table(md) == table(seq_md)  # the same report


def test_ray_asks_for_gpus_only_when_the_device_needs_them():
    pytest.importorskip("ray", reason='Ray is not installed (pip install "ddadlib[ray]")')
    from ddadlib.runs.executors import RayExecutor

    assert RayExecutor(gpus_per_task=0.25).device("auto").type == "cuda"
    assert RayExecutor().device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="--ray-gpus-per-task > 0 for cuda"):
        RayExecutor().device("cuda")
