"""OpenFace 2's per-frame CSV (``FeatureExtraction``'s output), read and checked against its documented columns.

A CSV starts with ``frame, face_id, timestamp, confidence, success`` and then the features that were asked for
(OpenFace writes ", " between the names). CH-SIMS's visual features are the 709 columns of a run with gaze, head
pose, 2-D and 3-D landmarks, PDM parameters and action units, in the CSV's order (:data:`SIMS_COLUMNS`): 288
gaze-related, 6 pose, 340 landmark, 40 PDM and 35 AU columns.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np

from .audio import MediaError

LEADING = ("frame", "face_id", "timestamp", "confidence", "success")
_AU_R = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45")
_AU_C = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "28", "45")


def _sims_columns() -> tuple[str, ...]:
    gaze = ["gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z", "gaze_angle_x", "gaze_angle_y"]
    gaze += [f"eye_lmk_{a}_{i}" for a in ("x", "y") for i in range(56)]
    gaze += [f"eye_lmk_{a}_{i}" for a in ("X", "Y", "Z") for i in range(56)]
    pose = ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    landmarks = [f"{a}_{i}" for a in ("x", "y") for i in range(68)] + [f"{a}_{i}" for a in ("X", "Y", "Z") for i in range(68)]
    pdm = ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    aus = [f"AU{n}_r" for n in _AU_R] + [f"AU{n}_c" for n in _AU_C]
    return tuple(gaze + pose + landmarks + pdm + aus)


SIMS_COLUMNS = _sims_columns()  # 709: 288 gaze-related, 6 pose, 340 landmarks, 40 PDM, 35 AUs


def read_openface(path: Path, columns: tuple[str, ...] = SIMS_COLUMNS) -> np.ndarray:
    """(frames, len(columns)) float32: ``columns`` of the OpenFace CSV ``path``, every frame, in the CSV's order.

    One-line :class:`MediaError`s: no such file; not an OpenFace CSV (its first columns); columns missing (the first
    few named, with how many); a row that is short or not numeric; no frames; no frame where a face was found
    (``success`` 0 throughout)."""
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise MediaError(f"{path}: cannot read the OpenFace CSV ({exc.strerror or exc})") from None
    with handle:
        reader = csv.reader(handle, skipinitialspace=True)
        header = [name.strip() for name in next(reader, [])]
        if tuple(header[: len(LEADING)]) != LEADING:
            raise MediaError(f"{path}: not an OpenFace CSV (expected its first columns {', '.join(LEADING)}, got "
                             f"{', '.join(header[:5]) or 'nothing'})")
        where = {name: i for i, name in enumerate(header)}
        missing = [c for c in columns if c not in where]
        if missing:
            raise MediaError(f"{path}: {len(missing)} of the {len(columns)} OpenFace columns the recipe needs are "
                             f"missing ({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''}): run "
                             "FeatureExtraction with gaze, pose, 2-D and 3-D landmarks, PDM parameters and AUs")
        index = [where[c] for c in columns]
        success = where["success"]
        body = handle.read()
    table = _table(body, len(header))
    if table is not None:  # the common case: numpy parses every row at once
        frames, found = table[:, index], int(np.count_nonzero(table[:, success] > 0))
    else:  # anything else (quoted fields, short rows, words): row by row, which names the line at fault
        frames, found = _rows(path, csv.reader(io.StringIO(body, newline=""), skipinitialspace=True), len(header),
                              index, success)
    if not len(frames):
        raise MediaError(f"{path}: no frames")
    if not found:
        raise MediaError(f"{path}: no face was detected in any of its {len(frames)} frames (success 0 throughout)")
    return np.asarray(frames, dtype=np.float32)


def _table(body: str, width: int) -> np.ndarray | None:
    """Every row of a CSV body without quotes as one (rows, ``width``) float64 array, each number parsed as
    ``float`` parses it; None where numpy refuses it (or the rows are not ``width`` wide), for :func:`_rows` to find
    the row at fault. What numpy accepts, ``float`` accepts too, so the fast way never lets a bad file through."""
    if '"' in body:
        return None
    try:
        with warnings.catch_warnings():  # an empty body: numpy warns, the caller says "no frames"
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(io.StringIO(body, newline=""), delimiter=",", comments=None, dtype=np.float64,
                               ndmin=2)
    except ValueError:
        return None
    return table if table.shape[1] == width else None


def _rows(path: Path, reader, width: int, index: list[int], success: int) -> tuple[list[list[float]], int]:
    """The ``index`` columns of every row, and how many rows found a face, row by row; a row that is short or not
    numeric is a :class:`MediaError` naming its line."""
    rows, found = [], 0
    for number, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != width:
            raise MediaError(f"{path}:{number}: {len(row)} values, the header has {width} columns")
        try:
            rows.append([float(row[i]) for i in index])
            found += float(row[success]) > 0
        except ValueError:
            raise MediaError(f"{path}:{number}: a value that is not a number") from None
    return rows, found
