"""Grids of cached runs (experiments), the course settings and `ddad reproduce`."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from reference_scores import inter_from_networks
from sklearn.metrics import roc_auc_score

from ddadlib import course
from ddadlib.cli import main
from ddadlib.errors import ConfigError, DataError
from ddadlib.paper import PAPER, PAPER_ARS
from ddadlib.presets import ablation_unlabeled
from ddadlib.runs.grid import (
    format_mean_sd,
    load_results,
    run_name,
    summarise,
    training_cpu,
)
from ddadlib.runs.reproduce import PROTOCOLS, plan, reproduce, spread
from ddadlib.runs.run import Run

quiet = dict(log=lambda s: None)


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory, tiny_synthetic):
    out = tmp_path_factory.mktemp("repro") / "out"
    logs: list[str] = []
    record = reproduce(
        tiny_synthetic,
        out,
        "quick",
        seeds=(0, 1),
        epochs=1,
        fanogan_epochs=1,
        n_boot=20,
        progress=False,
        log=logs.append,
    )
    return out, record, logs


def test_run_names_and_common_m(tiny_synthetic):
    assert run_name("ae", 0.6, 2, 20, 3, 500) == "ae-ar0.6-m500-e20-k3-s2"
    assert run_name("ae", 0.0, 0, 20, 3, 500) == "ae-ar0-m500-e20-k3-s0"
    assert run_name("fanogan", None, 1, 100) == "fanogan-e100-s1"
    # tiny_synthetic's pools hold 30 normal + 30 abnormal images: every AR meets M = 30
    assert ablation_unlabeled(tiny_synthetic, PAPER_ARS) == 30
    with pytest.raises(ConfigError, match="no AR"):
        ablation_unlabeled(tiny_synthetic, [])


def test_plan_puts_table1_first_and_shares_the_ar_06_runs():
    specs = plan(PROTOCOLS["cpu"])
    assert [s["backbone"] for s in specs[:3]] == ["ae", "memae", "aeu"]
    ae = [(s["ar"], s["seed"]) for s in specs if s["backbone"] == "ae"]
    assert len(ae) == len(set(ae)) == 6 * 3  # AR 0.6 is not trained twice
    assert sum(s["backbone"] == "fanogan" for s in specs) == 3
    assert [s["backbone"] for s in plan(PROTOCOLS["cpu"], ["ablation"])] == ["ae"] * 18
    with pytest.raises(ConfigError, match="unknown experiment"):
        plan(PROTOCOLS["quick"], ["table9"])


def test_the_ablation_is_planned_ends_and_middle_first():
    assert spread(PAPER_ARS) == [0.0, 1.0, 0.6, 0.8, 0.4, 0.2]
    assert spread([0.6]) == [0.6] and spread([]) == []
    ablation = plan(PROTOCOLS["cpu"], ["ablation"])
    assert [s["ar"] for s in ablation if s["seed"] == 0] == spread(PAPER_ARS)


def test_plan_keeps_the_backbones_asked_for_and_the_ablation_is_the_aes():
    m = {"table": 51, "ablation": 30}
    only_gan = plan(PROTOCOLS["cpu"], ["table2", "ablation"], m, backbones=["fanogan"])
    assert [s["backbone"] for s in only_gan] == ["ae"] * 18 + ["fanogan"] * 3
    assert {s["n_unlabeled"] for s in only_gan if s["backbone"] == "ae"} == {30}
    aeu = plan(PROTOCOLS["cpu"], ["table1", "refine"], m, backbones=["aeu"])
    assert {s["backbone"] for s in aeu} == {"aeu"} and len(aeu) == 3
    with pytest.raises(ConfigError, match="unknown backbone"):
        plan(PROTOCOLS["cpu"], backbones=["vae"])
    with pytest.raises(ConfigError, match="at least one backbone"):
        plan(PROTOCOLS["cpu"], backbones=[])


def test_plan_gives_table1_the_papers_m_and_the_ablation_its_own():
    specs = plan(PROTOCOLS["cpu"], m={"table": 51, "ablation": 30})
    table = [s for s in specs if s["backbone"] in ("memae", "aeu")]
    assert {s["n_unlabeled"] for s in table} == {51}
    ae = [(s["ar"], s["n_unlabeled"]) for s in specs if s["backbone"] == "ae" and s["seed"] == 0]
    # AR 0.6 twice: Table 1's run with M = 51 and the ablation's with M = 30
    assert sorted(ae) == sorted([(0.6, 51)] + [(ar, 30) for ar in PAPER_ARS])


def test_reproduce_writes_every_run_and_the_report(reproduction):
    out, record, logs = reproduction
    results = pd.read_csv(out / "results.csv")
    # Table 1: 3 backbones x 2 seeds; f-AnoGAN 2 seeds; ablation: 6 ARs x 2 seeds
    # (Table 1 at the paper's M, 51 here; the ablation at its own M, 30, so AR 0.6 twice)
    assert results["run"].nunique() == 6 + 2 + 12 == len(record["runs"])
    assert set(results["backbone"]) == {"ae", "memae", "aeu", "fanogan"}
    assert sorted(results.loc[results["backbone"] == "ae", "ar"].unique()) == list(PAPER_ARS)
    assert set(results.loc[results["backbone"] == "fanogan", "score"]) == {"rec"}
    for name in ("results.md", "reproduce.json", "histograms.png", "ablation.png"):
        assert (out / name).is_file(), name
    text = (out / "results.md").read_text()
    assert "Table 1" in text and "Table 2" in text and "AR ablation" in text
    # the footer says how the networks trained (the run's plan), not the parent's thread count
    plans = sorted(set(results["training_cpu"]))
    assert plans and all(re.fullmatch(r"\d+ workers? x \d+ threads?", p) for p in plans), plans
    assert f"each run's networks trained in {', '.join(plans)};" in text
    assert f"{PAPER['table']['aeu']['inter'][0]:.3f}" in text  # the paper beside ours
    saved = json.loads((out / "reproduce.json").read_text())
    assert saved["protocol"]["seeds"] == [0, 1] and saved["n_unlabeled"] == {
        "table": 51,
        "ablation": 30,
    }
    assert {"cpu", "cpu_cores", "torch_threads", "gpu"} <= set(saved["hardware"])
    assert saved["provenance"]["git_commit"] is None or len(saved["provenance"]["git_commit"]) >= 7


def test_ablation_shares_module_b_so_rec_and_intra_do_not_depend_on_ar(reproduction):
    out, _, logs = reproduction
    results = pd.read_csv(out / "results.csv")
    ae = results[results["backbone"] == "ae"]
    for seed in (0, 1):
        for score in ("rec", "rec_ensemble", "intra"):
            values = ae[(ae["seed"] == seed) & (ae["score"] == score)]["auc"]
            # the ablation's 6 ARs and Table 1's AE run (its own M): one module B
            assert len(values) == 7 and values.nunique() == 1, (seed, score)
        inter = ae[(ae["seed"] == seed) & (ae["score"] == "inter")]["auc"]
        assert inter.nunique() > 1  # module A does change with the AR
    assert sum("reusing the one trained" in line for line in logs) == 2 * 6


def test_seeds_draw_different_du(reproduction):
    out, _, _ = reproduction
    a = json.loads((out / "runs" / "ae-ar0.6-m30-e1-k3-s0" / "config.json").read_text())
    b = json.loads((out / "runs" / "ae-ar0.6-m30-e1-k3-s1" / "config.json").read_text())
    assert len(a["du_ids"]) == len(b["du_ids"]) == 30 and a["du_ids"] != b["du_ids"]


def test_rerun_trains_nothing_and_gives_the_same_table(reproduction, tiny_synthetic):
    out, _, _ = reproduction
    before = pd.read_csv(out / "results.csv")
    logs: list[str] = []
    reproduce(
        tiny_synthetic,
        out,
        "quick",
        seeds=(0, 1),
        epochs=1,
        fanogan_epochs=1,
        n_boot=20,
        progress=False,
        log=logs.append,
    )
    assert not any(line.startswith("training ") for line in logs)
    pd.testing.assert_frame_equal(
        before.drop(columns="seconds"), pd.read_csv(out / "results.csv").drop(columns="seconds")
    )


def test_a_stopped_run_resumes_and_only_it_is_trained(reproduction, tiny_synthetic, tmp_path):
    out, _, _ = reproduction
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    run = copy / "runs" / "aeu-ar0.6-m51-e1-k3-s1"
    for name in ("model.pt", "metrics.json", "scores.csv"):  # as if stopped before the end
        (run / name).unlink()
    logs: list[str] = []
    reproduce(
        tiny_synthetic,
        copy,
        "quick",
        seeds=(0, 1),
        epochs=1,
        fanogan_epochs=1,
        n_boot=20,
        progress=False,
        log=logs.append,
    )
    trained = [line for line in logs if line.startswith("training ")]
    assert len(trained) == 1 and "aeu" in trained[0]
    assert any("resuming it" in line for line in logs)
    assert (run / "metrics.json").is_file()


def test_other_settings_into_the_same_folder_are_refused(reproduction, tiny_synthetic):
    out, _, _ = reproduction
    with pytest.raises(DataError, match=rf"protocol.epochs: 1 -> {PROTOCOLS['quick'].epochs}"):
        reproduce(
            tiny_synthetic,
            out,
            "quick",
            seeds=(0, 1),
            fanogan_epochs=1,
            n_boot=20,
            progress=False,
            log=lambda s: None,
        )


def test_a_folder_whose_runs_differ_in_device_or_precision_is_refused(
    reproduction, tiny_synthetic, tmp_path
):
    out, _, _ = reproduction
    copy = shutil.copytree(out, tmp_path / "out")
    settings = dict(seeds=(0, 1), epochs=1, fanogan_epochs=1, n_boot=20, progress=False)
    # another device or precision than its runs used: refused before anything trains
    with pytest.raises(DataError, match=r"differ in device or precision \(cpu bf16: this call"):
        reproduce(tiny_synthetic, copy, "quick", precision="bf16", **settings, **quiet)
    # one run made on another device (its config says so): its tables would mix them
    one = sorted((copy / "runs").iterdir())[0]
    cfg = json.loads((one / "config.json").read_text())
    (one / "config.json").write_text(json.dumps(dict(cfg, device="cuda")))
    for report_only in (True, False):
        with pytest.raises(DataError, match=rf"cuda fp32: {one.name}"):
            reproduce(tiny_synthetic, copy, "quick", report_only=report_only, **settings, **quiet)


def test_unknown_protocol_is_a_config_error_naming_the_choices(tmp_path):
    # the API once looked the name up before checking it: a bare KeyError
    with pytest.raises(ConfigError, match="unknown protocol 'nope'.*cpu"):
        reproduce(tmp_path / "data", tmp_path / "out", "nope")


def test_results_table_and_summary(reproduction):
    out, record, _ = reproduction
    results = load_results(record["runs"])
    assert list(results.columns[:7]) == [
        "backbone",
        "ar",
        "seed",
        "epochs",
        "k",
        "n_unlabeled",
        "score",
    ]
    # Table 1's runs (M = 51; the ablation's AR-0.6 runs have M = 30)
    summary = summarise(results[results["n_unlabeled"] == 51])
    row = summary[
        (summary["backbone"] == "ae") & (summary["ar"] == 0.6) & (summary["score"] == "inter")
    ].iloc[0]
    aucs = results[
        (results["backbone"] == "ae")
        & (results["ar"] == 0.6)
        & (results["score"] == "inter")
        & (results["n_unlabeled"] == 51)
    ]["auc"]
    assert row["count"] == 2 and row["mean"] == pytest.approx(aucs.mean())
    assert row["std"] == pytest.approx(aucs.std(ddof=1))
    # the table's inter AUC of a run is the one of |mu_A - mu_B| of its trained networks
    run = out / "runs" / "ae-ar0.6-m51-e1-k3-s0"
    labels, inter = inter_from_networks(run)
    tabled = results[(results["run"] == str(run)) & (results["score"] == "inter")]["auc"]
    assert tabled.item() == pytest.approx(roc_auc_score(labels, inter), abs=0.01)
    np.testing.assert_allclose(Run(run).scores()["inter"], inter, rtol=1e-4)
    fan = summarise(results).query("backbone == 'fanogan'")
    assert len(fan) == 1 and np.isnan(fan["ar"].iloc[0])
    scores = Run(record["runs"][0]).scores()
    assert {"id", "label", "rec", "inter", "rec_m1"} <= set(scores.columns)
    assert format_mean_sd(0.81234, 0.0141, 3) == "0.812 ± 0.014"
    assert format_mean_sd(0.81234, float("nan"), 1) == "0.812"


def test_training_cpu_reads_the_recorded_plan():
    assert training_cpu({"cpu": {"workers": 2, "threads": 1}, "torch_threads": 2}) == (
        "2 workers x 1 thread"
    )
    assert training_cpu({"cpu": {"workers": 1, "threads": 2}}) == "1 worker x 2 threads"
    assert training_cpu({"cpu": None, "torch_threads": 4}) == "1 process x 4 threads"
    assert training_cpu({}) is None


def test_unevaluated_run_is_named(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"backbone": "ae"}))
    with pytest.raises(DataError, match=r"no metrics.json.*ddad evaluate"):
        load_results([run])
    with pytest.raises(DataError, match=r"no scores.csv"):
        Run(run).scores()


def test_cli_reproduce(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "o"
    assert (
        main(
            [
                "reproduce",
                "--data",
                str(tiny_synthetic),
                "--out",
                str(out),
                "--protocol",
                "quick",
                "--seeds",
                "3",
                "--epochs",
                "1",
                "--experiments",
                "table1",
                "--n-boot",
                "20",
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "Table 1" in text and "ae-ar0.6-m51-e1-k3-s3" in text  # the paper's M rule
    record = json.loads((out / "reproduce.json").read_text())
    assert record["command"].startswith("ddad reproduce --data")
    assert not (out / "ablation.png").exists()
    assert (
        main(
            [
                "reproduce",
                "--data",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path / "x"),
                "--protocol",
                "quick",
            ]
        )
        == 2
    )
    assert "missing" in capsys.readouterr().err


def test_cli_reproduce_keeps_the_backbones_asked_for(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["reproduce", "--data", str(tiny_synthetic), "--out", str(out), "--protocol", "quick"]
    argv += ["--epochs", "1", "--experiments", "table1", "--n-boot", "0", "--quiet"]
    assert main(argv + ["--backbones", "memae"]) == 0
    assert set(pd.read_csv(out / "results.csv")["backbone"]) == {"memae"}
    text = (out / "results.md").read_text()
    assert "| MemAE |" in text and "| AE |" not in text and "Partial" not in text
    assert json.loads((out / "reproduce.json").read_text())["backbones"] == ["memae"]
    table2 = argv[:-7] + ["--experiments", "table2", "--fanogan-epochs", "1", "--n-boot", "0"]
    assert main(table2 + ["--quiet", "--out", str(tmp_path / "t2"), "--backbones", "fanogan"]) == 0
    text = (tmp_path / "t2" / "results.md").read_text()  # no rows for what was not asked for
    assert "| f-AnoGAN | rec |" in text and "| AE | rec |" not in text and "| AE-U |" not in text
    with pytest.raises(SystemExit):
        main(argv + ["--backbones", "vae"])
    assert "invalid choice: 'vae'" in capsys.readouterr().err


def test_course_settings(monkeypatch, tmp_path):
    monkeypatch.delenv("DDAD_DATA", raising=False)
    monkeypatch.setenv("DDAD_MODE", "quick")
    s = course.settings()
    assert s.mode == "quick" and s.epochs == course.MODES["quick"].epochs
    assert course.settings("full").epochs == 250
    assert course.settings(epochs=3, ars=[0, 1], k=2).ars == (0.0, 1.0)
    monkeypatch.setenv("DDAD_MODE", "fast")
    with pytest.raises(ConfigError, match="DDAD_MODE='fast'"):
        course.settings()
    with pytest.raises(ConfigError, match="not a prepared dataset"):
        course.settings("quick", data=tmp_path)


def test_course_data_is_generated_once_and_runs_are_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("DDAD_CACHE", str(tmp_path / "cache"))
    s = course.settings("quick", epochs=1, ars=[0.6])
    s = type(s)(**{**s.__dict__, "n_normal": 40, "n_test": 10, "n_unlabeled": 20})
    data = course.course_data(s, log=lambda m: None)
    assert data.parent == tmp_path / "cache" / "data"
    stamp = (data / "images.npy").stat().st_mtime_ns
    assert course.course_data(s, log=lambda m: None) == data
    assert (data / "images.npy").stat().st_mtime_ns == stamp
    logs: list[str] = []
    run = course.course_run(s, "ae", progress=False, log=logs.append)
    assert (run / "metrics.json").is_file() and run.parent == course.runs_root(s)
    logs.clear()
    assert course.course_run(s, "ae", progress=False, log=logs.append) == run
    assert logs == []  # loaded, nothing trained or scored
    x, labels, ids, masks = course.test_set(s)
    assert len(x) == len(labels) == len(ids) == 20 and masks is not None


def test_a_stopped_reproduction_resumes(tiny_synthetic, tmp_path):
    out = tmp_path / "o"

    seen: list[str] = []

    def stop_after_first_run(line: str) -> None:
        if line.startswith("\n[1/") and not seen:  # a report taken now says how runs train
            seen.append(json.loads((out / "reproduce.json").read_text()).get("executor"))
        if line.startswith("wrote") and "metrics.json" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reproduce(
            tiny_synthetic,
            out,
            "quick",
            experiments=["table1"],
            seeds=(0,),
            epochs=1,
            n_boot=20,
            progress=False,
            log=stop_after_first_run,
        )
    record = json.loads((out / "reproduce.json").read_text())
    assert record["finished"] is None and record["runs_done"] == 1 and record["runs_planned"] == 3
    assert seen and seen[0].startswith("one run at a time in this process")
    text = (out / "results.md").read_text()  # what finished is tabulated, marked partial
    assert "Partial: 1 of 3 runs" in text and "memae-ar0.6" in text and "| AE |" in text
    logs: list[str] = []
    reproduce(
        tiny_synthetic,
        out,
        "quick",
        experiments=["table1"],
        seeds=(0,),
        epochs=1,
        n_boot=20,
        progress=False,
        report_only=True,
        log=logs.append,
    )
    assert not any(line.startswith("training ") for line in logs)
    with pytest.raises(DataError, match="holds no reproduction"):
        reproduce(tiny_synthetic, tmp_path / "new", "quick", report_only=True, log=lambda s: None)
    assert not (tmp_path / "new").exists()
    logs = []
    reproduce(
        tiny_synthetic,
        out,
        "quick",
        experiments=["table1"],
        seeds=(0,),
        epochs=1,
        n_boot=20,
        progress=False,
        log=logs.append,
    )
    assert sum(line.startswith("training ") for line in logs) == 2  # memae and aeu only
    assert json.loads((out / "reproduce.json").read_text())["finished"]
