"""``ddad reproduce``: the paper's Tables 1 and 2, its AR ablation and its histograms (Fig. 3)
on a prepared dataset, over several seeds, beside the paper's numbers; ``refine`` adds the
journal's refinement (R_intra, R_dual) of the AE and AE-U runs of Table 1.

Every configuration is one cached run (:mod:`ddadlib.runs.grid`), so a reproduction that is
stopped resumes where it stopped, and a finished one is only re-tabulated. A seed sets the
networks' initialisation, the data order and the draw of Du; Dn and the test set are the
dataset's own and the same for every run. Nothing is selected on the test set: every run that
the protocol names is reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ddadlib.data.dataset import PreparedDataset
from ddadlib.detectors import detector_for
from ddadlib.devices import pick_precision
from ddadlib.errors import ConfigError, DataError, TrainingError
from ddadlib.fileio import atomic_write_bytes, atomic_write_json
from ddadlib.paper import (
    BACKBONE_TITLES,
    PAPER,
    PAPER_ARS,
    SCORE_NAMES,
    TABLE1_BACKBONES,
    TABLE2_BASELINES,
    TABLE2_ROWS,
    TABLE_AR,
)
from ddadlib.plots import plot_ar_curve, plot_score_histograms, save_figure
from ddadlib.presets import PRESETS, Preset, ablation_unlabeled, table_unlabeled
from ddadlib.provenance import hardware, provenance
from ddadlib.runs.config import recorded_fingerprint
from ddadlib.runs.evaluate import evaluate_run
from ddadlib.runs.executors import Executor, Outcome, SequentialExecutor, Task, run_tasks
from ddadlib.runs.grid import (
    ensure_run,
    format_mean_sd,
    load_results,
    run_name,
    summarise,
)
from ddadlib.runs.run import Run

Log = Callable[[str], None]

#: The paper's experiments: what a reproduction runs unless told.
PAPER_EXPERIMENTS = ("table1", "table2", "ablation", "histograms")
#: Every experiment: the paper's and ``refine``, the journal's refinement (asked for by name).
EXPERIMENTS = (*PAPER_EXPERIMENTS, "refine")
#: The runs that ``refine`` refines (R_intra and R_dual): these backbones of Table 1 at AR 0.6.
REFINE_BACKBONES = ("ae", "aeu")


#: The presets ``ddad reproduce`` offers (``--protocol``), from :data:`ddadlib.presets.PRESETS`.
PROTOCOLS = {name: PRESETS[name] for name in ("paper", "cpu", "quick")}

#: What a reproduction records of its preset (``reproduce.json``, "protocol"); a folder is
#: continued only with the same values.
PROTOCOL_KEYS = ("name", "epochs", "fanogan_epochs", "k", "seeds", "batch_size")


def unlabeled_sizes(data: str | Path, experiments: Sequence[str] = PAPER_EXPERIMENTS) -> dict:
    """M of each experiment on ``data``: ``table`` (Table 1 and 2, the histograms: the paper's
    rule at AR 0.6, :func:`~ddadlib.presets.table_unlabeled`) and ``ablation`` (one M for
    every AR, :func:`~ddadlib.presets.ablation_unlabeled`; None where the pools cannot meet
    every AR and the ablation is not asked for)."""
    try:
        ablation = ablation_unlabeled(data, PAPER_ARS)
    except DataError:
        if "ablation" in experiments:
            raise
        ablation = None
    return {"table": table_unlabeled(data, TABLE_AR), "ablation": ablation}


def spread(values: Sequence[float]) -> list[float]:
    """``values`` in the order that covers their range soonest: the smallest, the largest, then
    each time the one farthest from those taken (ties: the larger), so that a reproduction
    stopped early has the ablation's two ends and its middle (0, 1, 0.6, 0.8, 0.4, 0.2)."""
    rest = sorted(values)
    if len(rest) < 2:
        return rest
    out = [rest.pop(0), rest.pop()]
    while rest:
        best = max(rest, key=lambda v: (round(min(abs(v - o) for o in out), 9), v))
        rest.remove(best)
        out.append(best)
    return out


def plan(
    protocol: Preset,
    experiments: Sequence[str] = PAPER_EXPERIMENTS,
    m: dict | None = None,
    backbones: Sequence[str] | None = None,
) -> list[dict]:
    """The runs a reproduction needs, most informative first: Table 1 for every seed, then the
    ARs of the ablation (which reuse module B of Table 1's AE runs; in :func:`spread` order),
    then f-AnoGAN. ``m`` is M of each experiment (:func:`unlabeled_sizes`); runs of the same M
    are planned once. ``backbones`` keeps only those rows of Tables 1 and 2 (and of the refinement); the
    ablation is the AE's whatever they are."""
    unknown = set(experiments) - set(EXPERIMENTS)
    if unknown:
        raise ConfigError(f"unknown experiment(s) {sorted(unknown)}; choose from {EXPERIMENTS}")
    rows = TABLE1_BACKBONES + TABLE2_BASELINES
    if backbones is not None:
        wrong = set(backbones) - set(rows)
        if wrong or not backbones:
            raise ConfigError(
                f"unknown backbone(s) {sorted(wrong)}; choose from {list(rows)}"
                if wrong
                else f"give at least one backbone, from {list(rows)}"
            )
    keep = set(rows if backbones is None else backbones)
    want = set(experiments)
    m = m or {"table": None, "ablation": None}
    specs: list[dict] = []
    if want & {"table1", "table2", "histograms"}:
        specs += [
            dict(backbone=b, ar=TABLE_AR, seed=s, n_unlabeled=m["table"])
            for s in protocol.seeds
            for b in TABLE1_BACKBONES
            if b in keep
        ]
    if "refine" in want:  # the Table 1 runs it refines, where Table 1 does not plan them
        specs += [
            dict(backbone=b, ar=TABLE_AR, seed=s, n_unlabeled=m["table"])
            for s in protocol.seeds
            for b in REFINE_BACKBONES
            if b in keep
            and dict(backbone=b, ar=TABLE_AR, seed=s, n_unlabeled=m["table"]) not in specs
        ]
    if "ablation" in want:
        specs += [
            dict(backbone="ae", ar=ar, seed=s, n_unlabeled=m["ablation"])
            for s in protocol.seeds
            for ar in spread(PAPER_ARS)
            if dict(backbone="ae", ar=ar, seed=s, n_unlabeled=m["ablation"]) not in specs
        ]
    if want & {"table2", "histograms"}:
        specs += [
            dict(backbone=b, ar=None, seed=s, n_unlabeled=None)
            for s in protocol.seeds
            for b in TABLE2_BASELINES
            if b in keep
        ]
    return specs


def _guard(out: Path, record: dict) -> None:
    path = out / "reproduce.json"
    if path.is_file():
        old = json.loads(path.read_text())
        new = json.loads(json.dumps(record))

        def flat(r: dict) -> dict:
            out = {k: r.get(k) for k in ("data_fingerprint", "n_unlabeled")}
            out.update(
                {f"protocol.{k}": v for k, v in (r.get("protocol") or {}).items() if k != "name"}
            )
            return out

        a, b = flat(old), flat(new)
        diff = [f"{k}: {a.get(k)} -> {b[k]}" for k in b if a.get(k) != b[k]]
        if diff:
            raise DataError(
                f"{out}: holds a reproduction with other settings "
                f"({'; '.join(diff)}); choose another --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: folder exists and is not a ddad reproduction; choose a new --out")


def reproduce(
    data: str | Path,
    out: str | Path,
    protocol: str | Preset = "cpu",
    *,
    experiments: Sequence[str] = PAPER_EXPERIMENTS,
    seeds: Sequence[int] | None = None,
    epochs: int | None = None,
    fanogan_epochs: int | None = None,
    backbones: Sequence[str] | None = None,
    device: str | None = "auto",
    precision: str | None = "auto",
    n_boot: int = 1000,
    progress: bool = True,
    command: str | None = None,
    report_only: bool = False,
    executor: Executor | None = None,
    log: Log = print,
) -> dict:
    """Run (or resume) the paper's experiments on ``data`` into ``out`` and write
    ``results.csv``, ``results.md``, ``reproduce.json`` and the figures. Returns the record.

    When stopped (an exception, Ctrl-C), the runs finished so far are tabulated, marked as
    partial. ``report_only`` trains nothing: it tabulates the finished runs (e.g. while another
    process is still training them). ``executor`` (:mod:`ddadlib.runs.executors`): where the runs
    train, by default one after the other here. A run that fails is reported with its error and
    the others go on; at the end a :class:`TrainingError` names the failed runs (the record,
    with ``failed``, and the tables are written first). ``backbones``: only these rows of
    Tables 1 and 2 (:func:`plan`)."""
    if isinstance(protocol, str) and protocol not in PROTOCOLS:  # the API checks it too
        raise ConfigError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
    proto = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    changes: dict[str, Any] = {}
    if seeds is not None:
        changes["seeds"] = tuple(int(s) for s in seeds)
    if epochs is not None:
        changes["epochs"] = int(epochs)
    if fanogan_epochs is not None:
        changes["fanogan_epochs"] = int(fanogan_epochs)
    if changes:
        proto = replace(
            proto,
            name=f"{proto.name} (changed: {', '.join(f'{k}={v}' for k, v in changes.items())})",
            **changes,
        )
    if len(proto.seeds) < 1:
        raise ConfigError("give at least one seed")
    out = Path(out)
    ds = PreparedDataset.load(data, mmap=True)
    m = unlabeled_sizes(data, experiments)
    earlier = out / "reproduce.json"
    fingerprint = recorded_fingerprint(
        ds, json.loads(earlier.read_text()).get("data_fingerprint") if earlier.is_file() else None
    )
    record: dict[str, Any] = {
        "data": str(Path(data).resolve()),
        "data_fingerprint": fingerprint,
        "protocol": {k: v for k, v in asdict(proto).items() if k in PROTOCOL_KEYS},
        "n_unlabeled": m,
        "experiments": list(experiments),
        "backbones": None if backbones is None else list(backbones),
        "command": command,
    }
    _guard(out, record)
    if report_only:
        if not (out / "reproduce.json").is_file():
            raise DataError(f"{out}: holds no reproduction to report on")
        # keep the command that trains
        earlier_record = json.loads((out / "reproduce.json").read_text())
        record["command"] = earlier_record.get("command")
        record["executor"] = earlier_record.get("executor")
    executor = executor or SequentialExecutor()
    if not report_only:  # recorded now, so that a report taken mid-way says how runs train
        record["executor"] = executor.describe()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "reproduce.json").is_file():  # so that a stopped reproduction can resume
        atomic_write_json(out / "reproduce.json", dict(record, finished=None))
    specs = plan(proto, experiments, m, backbones)
    log(
        f"reproducing {', '.join(experiments)} on {data}: protocol {proto.describe()}; "
        f"M = {_m_text(m)}; {len(specs)} runs (finished ones are reused)"
    )
    wanted = None
    if not report_only:
        dev = executor.device(device)
        wanted = (dev.type, pick_precision(precision, dev))
        device = str(dev)
    _check_one_device(out, wanted)
    planned: list[Path] = []
    settings_of: list[dict] = []  # each planned run's settings, for the refinement
    tasks: list[Task] = []
    for spec in specs:
        ddad = detector_for(spec["backbone"]).uses_unlabeled
        ep = proto.epochs if ddad else proto.fanogan_epochs
        name = run_name(
            spec["backbone"], spec["ar"], spec["seed"], ep, proto.k, spec["n_unlabeled"]
        )
        planned.append(out / "runs" / name)
        settings = dict(spec, ar=spec["ar"] if ddad else 0.0, epochs=ep)
        settings_of.append(settings)
        tasks.append(
            Task(
                name,
                ensure_run,
                dict(
                    root=(out / "runs").resolve(),  # the same folder for a worker elsewhere
                    data=Path(data).resolve(),
                    **settings,
                    **proto.training(),
                    device=device,
                    precision=precision,
                    n_boot=n_boot,
                    progress=progress,
                    **executor.task_cpu,
                ),
                # the runs that differ only in AR and M share module B: the first trains it
                group=(spec["backbone"], spec["seed"], ep) if ddad else None,
            )
        )
    record["runs_planned"] = len(planned)
    failed: dict[str, str] = {}
    n = len(tasks)

    def started(i: int, task: Task) -> None:
        log(
            f"\n[{i + 1}/{n}] {task.name}"
            if executor.live
            else f"[{i + 1}/{n}] {task.name}: started"
        )

    def ended(i: int, task: Task, outcome: Outcome) -> None:
        if outcome.ok:
            if not executor.live:
                log(f"[{i + 1}/{n}] {task.name}: done")
            return
        failed[task.name] = outcome.error
        log(f"[{i + 1}/{n}] {task.name}: failed: {outcome.error}")
        if outcome.details:
            log(outcome.details.rstrip())

    if not report_only:
        log(f"runs: {executor.describe()}")
    t0 = time.perf_counter()
    try:
        run_tasks(executor, [] if report_only else tasks, log=log, on_start=started, on_done=ended)
        if "refine" in experiments and not report_only:
            _refine(list(zip(planned, settings_of)), proto, device, n_boot, progress, log)
    finally:  # also when stopped: tabulate what has finished, saying what is missing
        record["wall_seconds_this_call"] = round(time.perf_counter() - t0, 1)
        record["failed"] = failed
        _tabulate(out, planned, record, experiments, log)
    if failed:
        raise TrainingError(
            f"{len(failed)} of {n} runs failed ({'; '.join(f'{k}: {v}' for k, v in failed.items())}); "
            f"the others are tabulated in {out / 'results.md'}; fix the cause and run the same "
            "command again (finished runs are reused)"
        )
    return record


def _refine(
    planned: list[tuple[Path, dict]],
    proto: Preset,
    device: str | None,
    n_boot: int,
    progress: bool,
    log: Log,
) -> None:
    """R_intra and R_dual (``ddad refine``, the preset's ``refine_epochs``) of the Table 1 runs
    of :data:`REFINE_BACKBONES` at AR 0.6, each evaluated again with the refined scores."""
    from ddadlib.runs.refine import refine_run

    chosen = [
        run
        for run, spec in planned
        if spec["backbone"] in REFINE_BACKBONES and spec["ar"] == TABLE_AR and Run(run).is_finished
    ]
    for i, run in enumerate(chosen, 1):
        log(f"\n[refine {i}/{len(chosen)}] {run.name}")
        for inputs in ("intra", "dual"):
            refine_run(
                run, inputs, epochs=proto.refine_epochs, device=device, progress=progress, log=log
            )
        evaluate_run(run, n_boot=n_boot, figures=False, device=device, log=log)


def _check_one_device(out: Path, wanted: tuple[str, str] | None) -> None:
    """Refuse a reproduction whose runs (those in ``out/runs`` and, unless None, the ones this
    call would train on ``wanted``, a device and a precision) differ in device or precision:
    its tables compare runs, and the device and the precision change the numbers."""
    seen: dict[tuple[str, str], list[str]] = {}
    if wanted is not None:
        seen[wanted] = ["this call"]
    folder = out / "runs"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        run = Run(path)
        try:
            cfg = run.config if run.has_config else None
        except DataError:  # a damaged run fails on its own, reported with its error
            continue
        if cfg is not None:
            seen.setdefault((cfg.device, cfg.precision), []).append(path.name)
    if len(seen) > 1:
        parts = "; ".join(
            f"{dev} {prec}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for (dev, prec), names in seen.items()
        )
        raise DataError(
            f"{out}: its runs would differ in device or precision ({parts}); a reproduction "
            "compares runs of one device and precision: pass --device and --precision as its "
            "runs used, or choose another --out"
        )


def _m_text(m: dict | int) -> str:
    if not isinstance(m, dict):  # recorded before the experiments had their own M
        return f"{m} at every AR"
    text = f"{m['table']} (Table 1, AR {TABLE_AR:g})"
    if m.get("ablation") is not None:
        text += f", {m['ablation']} (ablation, every AR)"
    return text


def _tabulate(
    out: Path, planned: list[Path], record: dict, experiments: Sequence[str], log: Log
) -> None:
    done = [run for run in planned if Run(run).is_evaluated]
    record.update(
        runs_done=len(done),
        missing=[r.name for r in planned if r not in done],
        runs=[str(r) for r in done],
        hardware=hardware(),
        provenance=provenance(),
        finished=(
            datetime.now(timezone.utc).isoformat(timespec="seconds")
            if len(done) == len(planned)
            else None
        ),
    )
    atomic_write_json(out / "reproduce.json", record)
    if not done:
        log(f"{out}: no run has finished yet; nothing to tabulate")
        return
    results = load_results(done)
    record["train_seconds_all_runs"] = round(
        float(results.drop_duplicates("run")["seconds"].fillna(0).sum()), 1
    )
    atomic_write_bytes(out / "results.csv", results.to_csv(index=False).encode())
    if "histograms" in experiments:
        _histograms(_experiment(results, record, "table"), out / "histograms.png")
    ablation = _experiment(results, record, "ablation")
    if "ablation" in experiments and ablation[ablation["backbone"] == "ae"]["ar"].nunique() > 1:
        _ablation_figure(ablation, out / "ablation.png")
    atomic_write_bytes(out / "results.md", report(results, record).encode())
    atomic_write_json(out / "reproduce.json", record)
    log(
        f"\n{report(results, record, brief=True)}\nwrote {out / 'results.md'}, "
        f"{out / 'results.csv'} and the figures"
    )


def _experiment(results: pd.DataFrame, record: dict, which: str) -> pd.DataFrame:
    """The rows of ``results`` that belong to experiment ``which`` ("table": Tables 1 and 2,
    f-AnoGAN included; "ablation": the AE at every AR), told apart by their M."""
    m = record["n_unlabeled"]
    m = m.get(which) if isinstance(m, dict) else m
    if which == "table":
        keep = results["backbone"].isin(TABLE2_BASELINES) | (
            (results["ar"] == TABLE_AR) & (results["n_unlabeled"] == m)
        )
    else:
        keep = (results["backbone"] == "ae") & (results["n_unlabeled"] == m)
    return results[keep]


def _histograms(results: pd.DataFrame, path: Path) -> None:
    seed = int(results["seed"].min())
    chosen = results[
        (results["seed"] == seed) & (results["ar"].isna() | (results["ar"] == TABLE_AR))
    ]
    scores, metrics, labels = {}, {}, None
    for backbone in TABLE1_BACKBONES + TABLE2_BASELINES:
        part = chosen[chosen["backbone"] == backbone]
        if part.empty:
            continue
        run = Run(part["run"].iloc[0])
        table = run.scores()
        arrays, run_metrics = run.score_arrays(table), run.metrics()
        labels = table["label"].to_numpy()
        for name in ("rec", "intra", "inter"):
            if name not in arrays:
                continue
            key = f"{BACKBONE_TITLES[backbone]}: {name}"
            scores[key] = arrays[name]
            metrics[key] = run_metrics[name]
    fig = plot_score_histograms(
        scores,
        labels,
        metrics,
        ncols=3,
        title=f"Score histograms, AR {TABLE_AR}, seed {seed} (test set)",
    )
    save_figure(fig, path)


def _ablation_figure(results: pd.DataFrame, path: Path) -> None:
    ae = results[(results["backbone"] == "ae") & results["ar"].notna()]
    fig = plot_ar_curve(
        ae,
        scores=("inter", "intra", "rec"),
        reference=PAPER["ablation"],
        reference_ars=PAPER["ablation_ars"],
    )
    save_figure(fig, path)


def _paper(backbone: str, score: str) -> str:
    vals = PAPER["table"].get(backbone, {}).get(score)
    return f"{vals[0]:.3f}" if vals else "-"


def _refine_report(table: pd.DataFrame, cell: Callable) -> list[str]:
    """The refinement's table (AE and AE-U at AR 0.6): the AUCs of rec, intra, inter, R_intra
    and R_dual and, where the test set has masks, their AUPROs (mean ± sd over seeds)."""
    scores = ("rec", "intra", "inter", "r_intra", "r_dual")
    refined = table[table["score"].isin(("r_intra", "r_dual"))]
    backbones = [b for b in REFINE_BACKBONES if b in set(refined["backbone"])]
    if not backbones:
        return []
    lines = [
        f"**Refinement (DDAD-ASR)** (AUC, AR {TABLE_AR}; ours only, the MICCAI paper has no "
        "refinement; R_intra and R_dual: ASR-Net of its last epoch, trained on Dn with "
        "synthetic anomalies)",
        "",
        "| backbone | " + " | ".join(scores) + " |",
        "|---|" + "---|" * len(scores),
    ]
    for b in backbones:
        lines.append(f"| {BACKBONE_TITLES[b]} | " + " | ".join(cell(b, s) for s in scores) + " |")
    pixel = {}  # (backbone, score) -> the AUPROs of its runs, where the test set has masks
    for run in refined["run"].unique():
        backbone = table.loc[table["run"] == run, "backbone"].iloc[0]
        for s, m in Run(run).metrics().items():
            if "aupro" in m:
                pixel.setdefault((backbone, s), []).append(m["aupro"])
    if pixel:
        lines += [
            "",
            f"AUPRO (per-region overlap up to FPR 0.3, normalised; AR {TABLE_AR}):",
            "",
            "| backbone | " + " | ".join(scores) + " |",
            "|---|" + "---|" * len(scores),
        ]
        for b in backbones:
            cells = []
            for s in scores:
                v = pixel.get((b, s), [])
                sd = float(pd.Series(v).std()) if len(v) > 1 else float("nan")
                cells.append(format_mean_sd(float(sum(v) / len(v)), sd, len(v)) if v else "-")
            lines.append(f"| {BACKBONE_TITLES[b]} | " + " | ".join(cells) + " |")
    return lines + [""]


def report(results: pd.DataFrame, record: dict, brief: bool = False) -> str:
    """The reproduction's tables in Markdown: ours (mean ± sd over seeds) beside the paper's
    RSNA numbers."""
    proto = record["protocol"]
    table = _experiment(results, record, "table")
    at = summarise(table) if not table.empty else table.assign(score=None)

    def cell(backbone: str, score: str, table: pd.DataFrame = at) -> str:
        row = table[(table["backbone"] == backbone) & (table["score"] == score)]
        if row.empty:
            return "-"
        r = row.iloc[0]
        return format_mean_sd(r["mean"], r["std"], int(r["count"]))

    lines = []
    if record.get("runs_done", 0) < record.get("runs_planned", 0):
        lines += [
            f"**Partial: {record['runs_done']} of {record['runs_planned']} runs have "
            f"finished** (missing: {', '.join(record['missing'])}); means are over the "
            "seeds that finished.",
            "",
        ]
    if record.get("failed"):
        lines += ["**Failed runs** (run the same command again to retry them):", ""]
        lines += [f"- `{name}`: {error}" for name, error in record["failed"].items()]
        lines.append("")
    lines += [
        f"Protocol `{proto['name']}`: {proto['epochs']} epochs, f-AnoGAN "
        f"{proto['fanogan_epochs']}, K = {proto['k']}, M = {_m_text(record['n_unlabeled'])}, seeds "
        f"{', '.join(map(str, proto['seeds']))} (mean ± sd over the seeds; a cell without ± has "
        "one); paper: RSNA, "
        "250 epochs, M = 4,000, one run.",
        "",
    ]
    backbones = [b for b in TABLE1_BACKBONES if b in set(table["backbone"])]
    if backbones:
        lines += [
            f"**Table 1** (AUC, AR {TABLE_AR}; ours / paper RSNA)",
            "",
            "| backbone | rec | rec (ensemble) | intra | inter |",
            "|---|---|---|---|---|",
        ]
        for b in backbones:
            lines.append(
                f"| {BACKBONE_TITLES[b]} | "
                + " | ".join(f"{cell(b, s)} / {_paper(b, s)}" for s in SCORE_NAMES)
                + " |"
            )
        lines.append("")
    if set(TABLE2_BASELINES) & set(table["backbone"]) and not brief:
        lines += [
            f"**Table 2** (AUC, AR {TABLE_AR}; ours / paper RSNA)",
            "",
            "| method | score | AUC |",
            "|---|---|---|",
        ]
        asked = record.get("backbones")
        for b in [b for b in TABLE2_ROWS if asked is None or b in asked]:
            lines.append(f"| {BACKBONE_TITLES[b]} | rec | {cell(b, 'rec')} / {_paper(b, 'rec')} |")
        for b in backbones:
            lines.append(
                f"| DDAD ({BACKBONE_TITLES[b]}) | intra / inter | "
                f"{cell(b, 'intra')} / {_paper(b, 'intra')}; "
                f"{cell(b, 'inter')} / {_paper(b, 'inter')} |"
            )
        lines.append("")
    lines += _refine_report(table, cell)
    rows = _experiment(results, record, "ablation")
    ablation = summarise(rows) if not rows.empty else rows
    if ablation["ar"].nunique() > 1:
        lines += [
            "**AR ablation** (AE; AUC, ours / paper RSNA)",
            "",
            "| AR | inter | intra | rec |",
            "|---|---|---|---|",
        ]
        for ar in sorted(ablation["ar"].unique()):
            ref = {
                s: dict(zip(PAPER["ablation_ars"], v)).get(round(float(ar), 1))
                for s, v in PAPER["ablation"].items()
            }
            row = [
                f"{cell('ae', s, ablation[ablation['ar'] == ar])} / "
                + (f"{ref[s]:.3f}" if ref.get(s) is not None else "-")
                for s in ("inter", "intra", "rec")
            ]
            lines.append(f"| {ar:g} | " + " | ".join(row) + " |")
        lines.append("")
    if not brief:
        hw = record["hardware"]
        runs = results.drop_duplicates("run")
        cpu = sorted(set(runs["training_cpu"].dropna()))
        lines += [
            f"Runs: {len(runs)}; training time of all runs "
            f"{record['train_seconds_all_runs'] / 3600:.2f} h on {hw['cpu']} "
            f"({hw['cpu_cores']} cores; each run's networks trained in "
            f"{', '.join(cpu) or '?'}"
            + (f"; GPU {hw['gpu']}" if hw.get("gpu") else "; no GPU")
            + ").",
            f"Runs trained by: {record.get('executor') or 'not recorded'}.",
            f"Command: `{record.get('command') or 'ddad reproduce'}`; ddadlib commit "
            f"{record['provenance'].get('git_commit')}.",
        ]
    return "\n".join(lines) + "\n"
