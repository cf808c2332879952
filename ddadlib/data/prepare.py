"""Turning a source (synthetic, the bundled Kermany set, a folder, RSNA, VinBigData) into a
prepared dataset.

Decoding runs on all cores, in chunks that are saved as they finish under ``OUT/.partial/``, so
an interrupted run resumes where it stopped; the finished dataset is written last.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ddadlib import __version__
from ddadlib.data import kaggle, kermany
from ddadlib.data.dataset import (
    DATASET_FILES,
    boxes_to_json,
    is_prepared,
    settle_dataset,
    write_dataset,
)
from ddadlib.data.folder import folder_records
from ddadlib.data.imaging import MAX_SIZE, MIN_SIZE, pixel_md5, read_image, resize
from ddadlib.data.records import Box, ImageRecord
from ddadlib.data.splits import (
    check_sizes,
    format_sizes,
    group_images,
    group_names,
    make_split,
    n_abnormal_at,
    split_from_file,
    validate_split,
)
from ddadlib.data.synthetic import ABNORMALITY_KINDS, DEFAULT_SEVERITY, generate_synthetic_counts
from ddadlib.data.synthetic import MIN_SIZE as SYNTHETIC_MIN_SIZE
from ddadlib.errors import DataError
from ddadlib.fileio import atomic_write, atomic_write_json
from ddadlib.paper import PAPER_SIZES
from ddadlib.provenance import provenance

Log = Callable[[str], None]
CHUNK = 256


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to write over a prepared dataset (or files that look like one) without overwrite."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    settle_dataset(out)  # a replacement that a kill interrupted is finished or dropped first
    present = [name for name in DATASET_FILES if (out / name).exists()]
    if present and not overwrite:
        what = "a prepared dataset" if is_prepared(out) else f"dataset files ({', '.join(present)})"
        raise DataError(f"{out}: already holds {what}; choose another --out or pass --overwrite")


def default_sizes(labels: Sequence[int]) -> dict[str, int]:
    """Split sizes for a folder dataset when none are given.

    Test: a quarter of the smaller class, at most 1,000 per class. Dn: half of the normal images
    left after the test set, at most 4,000; the other half and all remaining abnormal images
    form the pools.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)
    n_test = max(1, min(1000, int(counts.min()) // 4))
    n_normal = max(1, min(4000, (int(counts[0]) - n_test) // 2))
    return {"n_normal": n_normal, "n_test": n_test}


def _decode_one(path: Path, size: int) -> tuple[np.ndarray, str, tuple[int, int]]:
    image = read_image(path)
    return resize(image, size), pixel_md5(image), image.shape


def _decode_chunk(paths: list[str], size: int) -> dict[str, np.ndarray]:
    images = np.zeros((len(paths), size, size), dtype=np.uint8)
    md5s, shapes, errors = [], np.zeros((len(paths), 2), dtype=np.int64), []
    for i, p in enumerate(paths):
        try:
            images[i], md5, shapes[i] = _decode_one(Path(p), size)
            md5s.append(md5)
            errors.append("")
        except DataError as exc:
            md5s.append("")
            errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop a long job
            md5s.append("")
            errors.append(f"{p}: {type(exc).__name__}: {exc}")
    return {"images": images, "md5": np.array(md5s), "shape": shapes, "error": np.array(errors)}


def _decode_chunk_star(args: tuple[list[str], int]) -> dict[str, np.ndarray]:
    return _decode_chunk(*args)


def _ignore_sigint() -> None:
    # Ctrl-C reaches every process of the terminal; the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _job_key(records: Sequence[ImageRecord], size: int) -> str:
    h = hashlib.sha256(f"{size}\n".encode())
    for r in records:
        h.update(f"{r.id}\t{r.path}\n".encode())
    return h.hexdigest()


def _files_key(paths: Sequence[str]) -> str:
    """A digest of the files' paths, sizes and modification times: a chunk whose files changed
    after it was decoded is decoded again."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\tmissing\n".encode())
    return h.hexdigest()


def _chunk_done(path: Path, key: str) -> bool:
    """A chunk counts as done when it decoded without errors (failed files are retried) from the
    files as they are now (``key``, see :func:`_files_key`)."""
    if not path.is_file():
        return False
    try:
        with np.load(path) as chunk:
            return str(chunk["key"]) == key and not np.any(chunk["error"] != "")
    except (OSError, ValueError, KeyError):
        return False


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def decode_records(
    records: Sequence[ImageRecord],
    size: int,
    work_dir: Path,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Decode and resize every record's image; resumable through chunk files in ``work_dir``.

    Returns arrays over all records: ``images`` (N, S, S) uint8, ``md5``, ``shape`` (N, 2) of the
    original image, and ``error`` ("" where the image decoded).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    key = _job_key(records, size)
    job = work_dir / "job.json"
    if not job.is_file() or json.loads(job.read_text()).get("key") != key:
        for old in work_dir.glob("chunk_*.npz"):
            old.unlink()
        atomic_write_json(job, {"key": key, "n": len(records), "size": size})
    starts = list(range(0, len(records), CHUNK))

    def chunk_path(start: int) -> Path:
        return work_dir / f"chunk_{start // CHUNK:06d}.npz"

    paths = {s: [str(r.path) for r in records[s : s + CHUNK]] for s in starts}
    file_keys = {s: _files_key(paths[s]) for s in starts}
    todo = [s for s in starts if not _chunk_done(chunk_path(s), file_keys[s])]
    if len(todo) < len(starts):
        print(
            f"resuming: {len(starts) - len(todo)} of {len(starts)} chunks already decoded",
            file=sys.stderr,
        )
    cores = available_cores()
    if workers is not None and workers > cores:
        print(
            f"note: {workers} workers asked for, but {cores} cores are available; "
            f"decoding with {cores}",
            file=sys.stderr,
        )
    workers = max(1, min(workers or cores, cores))

    def save(start: int, result: dict[str, np.ndarray]) -> None:
        atomic_write(
            chunk_path(start), lambda fh: np.savez(fh, key=np.array(file_keys[start]), **result)
        )

    bar = tqdm(
        total=len(records),
        initial=len(records) - sum(min(CHUNK, len(records) - s) for s in todo),
        unit="img",
        desc="decoding",
        # without an explicit disable, tqdm's TQDM_DISABLE environment variable still applies
        **({} if progress else {"disable": True}),
    )
    if workers == 1 or len(todo) <= 1:
        for s in todo:
            save(s, _decode_chunk(paths[s], size))
            bar.update(len(paths[s]))
    else:
        # Not fork: the parent may run threads (numpy, tqdm, a notebook kernel), and forking a
        # threaded process can deadlock the child.
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        pool = mp.get_context(method).Pool(workers, initializer=_ignore_sigint)
        try:
            results = pool.imap(_decode_chunk_star, [(paths[s], size) for s in todo])
            for s, result in zip(todo, results):
                save(s, result)
                bar.update(len(paths[s]))
            pool.close()
        finally:
            # On an interruption, stop the workers at once; chunks saved so far are kept.
            pool.terminate()
            pool.join()
    bar.close()
    keys = ("images", "md5", "shape", "error")
    if not starts:
        return {
            "images": np.zeros((0, size, size), np.uint8),
            "md5": np.array([], str),
            "shape": np.zeros((0, 2), np.int64),
            "error": np.array([], str),
        }
    chunks = []
    for s in starts:
        with np.load(chunk_path(s)) as chunk:
            chunks.append({k: chunk[k] for k in keys})
    return {k: np.concatenate([c[k] for c in chunks]) for k in keys}


def _check_records(records: Sequence[ImageRecord], where: str) -> None:
    if not records:
        raise DataError(f"{where}: no images found")
    seen = set()
    for r in records:
        if r.label not in (0, 1):
            raise DataError(f"{where}: image {r.id!r} has label {r.label!r}, not 0 or 1")
        if r.id in seen:
            raise DataError(f"{where}: image id {r.id!r} appears twice")
        seen.add(r.id)
    counts = np.bincount([r.label for r in records], minlength=2)
    for label, name, role in (
        (0, "normal", "Dn, the normal test images and a pool"),
        (1, "abnormal", "the abnormal test images and a pool"),
    ):
        if counts[label] == 0:
            raise DataError(
                f"{where}: no {name} images (label {label}) among the "
                f"{len(records):,} images; DDAD needs both classes ({name} ones for "
                f"{role})"
            )


def prepare_records(
    records: Sequence[ImageRecord],
    out: str | Path,
    source: str,
    where: str,
    size: int = 64,
    n_normal: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    split_file: str | Path | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    on_error: str = "fail",
    options: dict | None = None,
    progress: bool = True,
    log: Log = print,
) -> Path:
    """Decode ``records`` into a prepared dataset at ``out`` with a Dn / pools / Dt split.

    ``on_error``: ``"fail"`` stops with an error that lists the files that did not decode;
    ``"skip"`` leaves them out, prints them and saves them in ``skipped.csv``. Decoded chunks are
    kept either way, so a rerun does not decode again.
    """
    out = Path(out)
    if on_error not in ("fail", "skip"):
        raise ValueError("on_error must be 'fail' or 'skip'")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} (got {size})")
    check_output(out, overwrite)
    _check_records(records, where)
    if split_file is None and n_normal is not None and n_test is not None:
        check_sizes([r.label for r in records], n_normal, n_test)  # before decoding anything
    work = out / ".partial"
    decoded = decode_records(records, size, work, workers=workers, progress=progress)
    bad = np.flatnonzero(decoded["error"] != "")
    skipped = pd.DataFrame(
        {
            "id": [records[i].id for i in bad],
            "path": [str(records[i].path) for i in bad],
            "error": decoded["error"][bad],
        }
    )
    if len(bad):
        lines = "\n".join(f"  {e}" for e in skipped["error"].head(10))
        more = f"\n  ... and {len(bad) - 10:,} more" if len(bad) > 10 else ""
        if on_error == "fail":
            raise DataError(
                f"{where}: {len(bad):,} of {len(records):,} images could not be "
                f"decoded:\n{lines}{more}\n(fix or remove them, or pass "
                "--on-error skip to leave them out and list them in skipped.csv)"
            )
        log(
            f"warning: skipped {len(bad):,} of {len(records):,} images that could not be decoded "
            f"(listed in {out / 'skipped.csv'}):\n{lines}{more}"
        )
    keep = np.flatnonzero(decoded["error"] == "")
    kept = [records[i] for i in keep]
    if not kept:
        raise DataError(f"{where}: none of the {len(records):,} images could be decoded")
    shapes = decoded["shape"][keep]
    manifest = pd.DataFrame(
        {
            "id": [r.id for r in kept],
            "label": [r.label for r in kept],
            "patient_id": [r.patient_id or "" for r in kept],
            "finding": [r.finding for r in kept],
            "md5": decoded["md5"][keep],
            "orig_height": shapes[:, 0],
            "orig_width": shapes[:, 1],
            "boxes": [
                boxes_to_json(b.scaled(size / w, size / h) for b in r.boxes)
                for r, (h, w) in zip(kept, shapes)
            ],
        }
    )
    return _split_and_write(
        out,
        decoded["images"][keep],
        manifest,
        source=source,
        where=where,
        n_normal=n_normal,
        n_test=n_test,
        seed=seed,
        split_file=split_file,
        options=options,
        skipped=skipped,
        log=log,
        cleanup=work,
    )


def _split_and_write(
    out: Path,
    images: np.ndarray,
    manifest: pd.DataFrame,
    source: str,
    where: str,
    n_normal: int | None,
    n_test: int | None,
    seed: int,
    split_file: str | Path | None,
    options: dict | None,
    log: Log,
    masks: np.ndarray | None = None,
    skipped: pd.DataFrame | None = None,
    cleanup: Path | None = None,
    about: dict | None = None,
) -> Path:
    ids = manifest["id"].tolist()
    labels = manifest["label"].to_numpy()
    groups = group_images(manifest["patient_id"].tolist(), manifest["md5"].tolist())
    n_groups = len(set(groups.tolist()))
    if split_file is not None:
        split = split_from_file(split_file, ids)
        sizes_note = f"split from {split_file}"
    else:
        chosen = default_sizes(labels)
        n_normal = chosen["n_normal"] if n_normal is None else n_normal
        n_test = chosen["n_test"] if n_test is None else n_test
        split = make_split(ids, labels, n_normal=n_normal, n_test=n_test, seed=seed, groups=groups)
        sizes_note = f"split sampled with seed {seed}"
    names = group_names(manifest["patient_id"].tolist(), manifest["md5"].tolist(), groups)
    validate_split(split, ids, labels, groups, where=str(split_file or where), names=names)
    n_mixed = len(set(groups[labels == 0].tolist()) & set(groups[labels == 1].tolist()))
    if n_mixed:
        log(
            f"{where}: {n_mixed:,} patient/duplicate groups hold both normal and abnormal "
            "images; each lies whole in the test set or in the pools, never in Dn"
        )
    counts = np.bincount(labels, minlength=2)
    info = {
        "source": source,
        "where": where,
        "seed": seed,
        "options": {
            **(options or {}),
            "n_normal": n_normal,
            "n_test": n_test,
            "split_file": str(split_file) if split_file else None,
        },
        "counts": {"normal": int(counts[0]), "abnormal": int(counts[1])},
        "n_groups": n_groups,
        "n_skipped": 0 if skipped is None else int(len(skipped)),
        **({"data": about} if about else {}),
        "ddadlib_version": __version__,
        "provenance": provenance(),
    }
    write_dataset(out, images, manifest, split, info, masks=masks, skipped=skipped)
    if cleanup is not None:
        shutil.rmtree(cleanup, ignore_errors=True)
    log(
        f"{out}: {len(images):,} images ({counts[0]:,} normal, {counts[1]:,} abnormal) of "
        f"{images.shape[1]}x{images.shape[1]} in {n_groups:,} patient/duplicate groups; "
        f"{sizes_note}"
    )
    log(f"  {format_sizes(split)}")
    return out


def prepare_folder(
    root: str | Path,
    out: str | Path,
    labels: str | Path | None = None,
    patient_regex: str | None = None,
    normal_names: Sequence[str] = (),
    abnormal_names: Sequence[str] = (),
    log: Log = print,
    **kwargs,
) -> Path:
    """Prepare a folder dataset (see :func:`ddadlib.data.folder.folder_records`)."""

    records, how = folder_records(
        root,
        labels,
        patient_regex=patient_regex,
        normal_names=normal_names,
        abnormal_names=abnormal_names,
    )
    log(f"{root}: {len(records):,} images; {how}")
    if not any(r.patient_id for r in records):
        log(
            f"warning: {root}: no patient ids, so one patient's images may land in both "
            "training and test; give them with --patient-regex (from the file names) or a "
            "patient_id column in labels.csv"
        )
    return prepare_records(
        records,
        out,
        source="folder",
        where=str(root),
        log=log,
        options={
            "root": str(root),
            "labels": str(labels) if labels else None,
            "patient_regex": patient_regex,
            "normal_names": list(normal_names),
            "abnormal_names": list(abnormal_names),
            "size": kwargs.get("size", 64),
        },
        **kwargs,
    )


def prepare_kaggle(
    kind: str, root: str | Path, out: str | Path, log: Log = print, **kwargs
) -> Path:
    """Prepare the RSNA Pneumonia (``kind="rsna"``) or VinBigData (``"vinbigdata"``) download."""

    readers = {"rsna": kaggle.rsna_records, "vinbigdata": kaggle.vinbigdata_records}
    records = readers[kind](Path(root))
    counts = np.bincount([r.label for r in records], minlength=2)
    log(f"{root}: {len(records):,} images ({counts[0]:,} normal, {counts[1]:,} abnormal)")
    for name, value in PAPER_SIZES[kind].items():
        if kwargs.get(name) is None:
            kwargs[name] = value
    kwargs.setdefault("on_error", "skip")
    return prepare_records(
        records,
        out,
        source=kind,
        where=str(root),
        log=log,
        options={"root": str(root), "size": kwargs.get("size", 64)},
        **kwargs,
    )


#: Default split of the bundled chest X-rays (1,341 normal, 1,350 pneumonia): the pools keep 500
#: normal and 1,050 abnormal images, so M = 500 can be drawn at every AR from 0 to 1.
KERMANY_DEFAULTS = {"n_normal": 541, "n_test": 300}


def prepare_kermany(
    out: str | Path,
    size: int = 64,
    n_normal: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    log: Log = print,
) -> Path:
    """Prepare the bundled real chest X-rays (Kermany et al., CC BY 4.0; see
    :mod:`ddadlib.data.kermany`) as a dataset: no path, no network.

    Defaults: Dn 541 normal images and 300 + 300 test images, patients kept together; the rest
    form the pools (500 normal, 1,050 pneumonia). ``size`` may shrink the 64-pixel images.
    """

    out = Path(out)
    if not 8 <= size <= kermany.BUNDLE_SIZE:
        raise DataError(
            f"kermany: --size must be between 8 and {kermany.BUNDLE_SIZE}, the "
            f"size of the bundled images (got {size})"
        )
    check_output(out, overwrite)
    images, frame = kermany.load_bundle()
    if size != kermany.BUNDLE_SIZE:
        images = np.stack([resize(im, size) for im in images])
    manifest = frame.assign(
        md5=[pixel_md5(im) for im in images],
        orig_height=kermany.BUNDLE_SIZE,
        orig_width=kermany.BUNDLE_SIZE,
        boxes="[]",
    )
    about = {
        "name": "Kermany chest X-rays (pediatric, Guangzhou), bundled with ddadlib",
        "licence": kermany.LICENCE,
        "credit": kermany.CREDIT,
        "modifications": kermany.MODIFICATIONS,
        "bundle": kermany.BUNDLE.name,
        "bundle_sha256": kermany.bundle_sha256(),
    }
    return _split_and_write(
        out,
        images,
        manifest,
        source="kermany",
        where="kermany",
        n_normal=KERMANY_DEFAULTS["n_normal"] if n_normal is None else n_normal,
        n_test=KERMANY_DEFAULTS["n_test"] if n_test is None else n_test,
        seed=seed,
        split_file=None,
        options={"size": size},
        log=log,
        about=about,
    )


#: Default sizes of the built-in synthetic set.
SYNTHETIC_DEFAULTS = {"n_normal": 1000, "n_test": 250, "n_unlabeled": 1000}


def prepare_synthetic(
    out: str | Path,
    size: int = 64,
    n_normal: int | None = None,
    n_test: int | None = None,
    n_unlabeled: int | None = None,
    ar: float | None = None,
    seed: int = 0,
    overwrite: bool = False,
    log: Log = print,
    kinds: Sequence[str] | None = None,
    severity: tuple[float, float] | None = None,
) -> Path:
    """Generate the built-in synthetic chest X-ray set as a prepared dataset (with masks).

    Dn holds ``n_normal`` images and the test set ``n_test`` per class. Without ``ar`` the pools
    hold ``n_unlabeled`` normal and ``n_unlabeled`` abnormal images, so that Du of that size can
    be drawn later at any AR from 0 to 1; with ``ar`` they hold exactly one Du at that AR.
    Images, their order and the split all follow from ``seed``.
    """

    out = Path(out)
    n_normal = SYNTHETIC_DEFAULTS["n_normal"] if n_normal is None else n_normal
    n_test = SYNTHETIC_DEFAULTS["n_test"] if n_test is None else n_test
    m = SYNTHETIC_DEFAULTS["n_unlabeled"] if n_unlabeled is None else n_unlabeled
    if min(n_normal, n_test) < 1 or m < 0:
        raise DataError(
            f"synthetic: --n-normal and --n-test must be at least 1 and "
            f"--n-unlabeled at least 0 (got {n_normal}, {n_test}, {m})"
        )
    if ar is not None and not 0.0 <= ar <= 1.0:
        raise DataError(f"synthetic: --ar must be between 0 and 1 (got {ar})")
    if not SYNTHETIC_MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(
            f"synthetic: --size must be between {SYNTHETIC_MIN_SIZE} and {MAX_SIZE} (got {size})"
        )
    check_output(out, overwrite)
    pool_abnormal = m if ar is None else n_abnormal_at(m, ar)
    pool_normal = m if ar is None else m - pool_abnormal

    kinds = tuple(kinds) if kinds is not None else ABNORMALITY_KINDS
    severity = tuple(severity) if severity is not None else DEFAULT_SEVERITY
    try:
        data = generate_synthetic_counts(
            n_normal + n_test + pool_normal,
            n_test + pool_abnormal,
            size=size,
            seed=seed,
            kinds=kinds,
            severity=severity,
        )
    except ValueError as exc:
        raise DataError(f"synthetic: {exc}") from None
    # Shuffle so that an image's position (and id) says nothing about its label.
    order = np.random.default_rng([seed, 1]).permutation(len(data.labels))
    images, masks, labels = data.images[order], data.masks[order], data.labels[order]
    kinds = [data.kinds[i] for i in order]
    manifest = pd.DataFrame(
        {
            "id": [f"syn-{i:06d}" for i in range(len(order))],
            "label": labels,
            "patient_id": "",
            "finding": kinds,
            "md5": [pixel_md5(im) for im in images],
            "orig_height": size,
            "orig_width": size,
            "boxes": [boxes_to_json(_mask_boxes(mk, kind)) for mk, kind in zip(masks, kinds)],
            "severity": np.round(data.severity[order], 4),
        }
    )
    options = {
        "n_unlabeled": m,
        "ar": ar,
        "size": size,
        "kinds": list(kinds),
        "severity": list(severity),
        "pools": {"normal": pool_normal, "abnormal": pool_abnormal},
    }
    return _split_and_write(
        out,
        images,
        manifest,
        source="synthetic",
        where="synthetic",
        n_normal=n_normal,
        n_test=n_test,
        seed=seed,
        split_file=None,
        options=options,
        log=log,
        masks=masks,
    )


def _mask_boxes(mask: np.ndarray, label: str) -> list:
    if not mask.any():
        return []
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [
        Box(
            float(cols[0]),
            float(rows[0]),
            float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1),
            label,
        )
    ]
