"""Importing MMSA pickles whose big arrays stay in the file (dmpf_cli.data.pickle_stream): the same prepared
output for every pickle protocol, lengths checked against the file, and the restricted unpickler as strict."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct

import numpy as np
import pytest
from test_data import _OsPayload, _Payload, mmsa_layout, run_prepare, write_pickle

from dmpf_cli.data import mmsa
from dmpf_cli.data.mmsa import DataError, UnsafePickleError
from dmpf_cli.data.pickle_stream import LARGE, LazyArray

from conftest import one_line

PROTOCOLS = [2, 3, 4, 5]


def large_layout() -> dict:
    """The MMSA layout with every audio array over LARGE bytes, NaN/±inf in them, and the unusual layouts a pickle
    can hold: a float64 array, a Fortran-ordered one and a strided view."""
    data = mmsa_layout(La=1300, Lv=9)
    train, valid, test = data["train"], data["valid"], data["test"]
    train["audio"][0, 0, :5] = -np.inf
    train["audio"][3, 7, 2] = np.nan
    valid["audio"][1, 2, 3] = np.inf
    test["audio"] = test["audio"].astype(np.float64)  # read and converted block by block
    rng = np.random.default_rng(1)
    train["vision"] = np.asfortranarray(rng.normal(size=(7, 1100, 35)).astype(np.float32))
    train["vision"][6, 1099, 34] = -np.inf
    train["vision_lengths"] = [1100] * 7
    wide = rng.normal(size=(4, 18, 35)).astype(np.float32)
    test["vision"] = wide[:, ::2]  # not contiguous: pickled as a C-ordered copy
    assert train["audio"].nbytes >= LARGE and valid["audio"].nbytes >= LARGE and test["audio"].nbytes >= LARGE
    return data


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_protocol_gives_the_same_prepared_files(tmp_path, protocol):
    data = large_layout()
    source = tmp_path / "big.pkl"
    source.write_bytes(pickle.dumps(data, protocol=protocol))
    run_prepare(source, tmp_path / "out")
    out = tmp_path / "out"
    for name, split in data.items():
        for key in ("audio", "vision"):  # exactly what np.save writes for the cleaned float32 array
            cleaned = np.nan_to_num(np.ascontiguousarray(split[key], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            assert (out / name / f"{key}.npy").read_bytes() == npy_bytes(cleaned), (name, key)
    # and every file the same whatever the protocol: the reference is protocol 4 read whole (all in memory)
    small = tmp_path / "reference"
    small.mkdir()
    reference = write_pickle(small, data)
    run_prepare(reference, tmp_path / "ref")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "ref") for p in (tmp_path / "ref").rglob("*") if p.is_file())
    for path in files:
        if path.name != "manifest.json":
            assert (out / path).read_bytes() == (tmp_path / "ref" / path).read_bytes(), path
    manifest, expected = (json.loads((d / "manifest.json").read_text()) for d in (out, tmp_path / "ref"))
    for m in (manifest, expected):
        del m["created"], m["source"]
    assert manifest == expected
    assert expected["splits"]["train"]["replaced_nonfinite"] == {"audio": 6, "vision": 1}
    assert expected["splits"]["valid"]["replaced_nonfinite"] == {"audio": 1, "vision": 0}


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_large_arrays_stay_in_the_file_until_sliced(tmp_path, protocol):
    data = large_layout()
    data["train"]["same_audio"] = data["train"]["audio"]  # a second reference to one array
    source = tmp_path / "big.pkl"
    source.write_bytes(pickle.dumps(data, protocol=protocol))
    back, sha256 = mmsa.load_pickle(source)
    assert sha256 == mmsa.sha256_file(source)
    audio = back["train"]["audio"]
    assert isinstance(audio, LazyArray) and back["train"]["same_audio"] is audio
    assert audio.shape == (7, 1300, 74) and audio.dtype == np.float32 and len(audio) == 7
    np.testing.assert_array_equal(audio[2:5], data["train"]["audio"][2:5])
    np.testing.assert_array_equal(np.asarray(audio), data["train"]["audio"])
    assert np.asarray(audio, dtype=np.float64).dtype == np.float64 and list(audio)[6].shape == (1300, 74)
    assert isinstance(back["test"]["audio"], LazyArray) and back["test"]["audio"].dtype == np.float64
    assert isinstance(back["train"]["vision"], np.ndarray)  # Fortran order: read whole, as before
    np.testing.assert_array_equal(back["train"]["vision"], data["train"]["vision"])
    assert isinstance(back["train"]["audio_lengths"], np.ndarray)  # small arrays as before


def test_a_source_changed_after_reading_is_refused(tmp_path):
    source = tmp_path / "big.pkl"
    source.write_bytes(pickle.dumps(large_layout(), protocol=4))
    back, _ = mmsa.load_pickle(source)
    replacement = tmp_path / "new.pkl"
    replacement.write_bytes(pickle.dumps(large_layout(), protocol=4))
    os.replace(replacement, source)
    with pytest.raises(DataError, match="changed while it was being imported") as info:
        back["train"]["audio"][0:2]
    assert str(source) in one_line(info)


def _opcodes(*parts: bytes) -> bytes:
    return b"".join(parts)


@pytest.mark.parametrize("body, what", [
    (_opcodes(b"\x80\x04", pickle.BINBYTES8, struct.pack("<Q", 1 << 60)), "BINBYTES8"),
    (_opcodes(b"\x80\x05", pickle.BYTEARRAY8, struct.pack("<Q", 1 << 40)), "BYTEARRAY8"),
    (_opcodes(b"\x80\x04", pickle.BINUNICODE8, struct.pack("<Q", 1 << 62)), "BINUNICODE8"),
    (_opcodes(b"\x80\x03", pickle.BINBYTES, struct.pack("<I", 0xFFFFFFF0)), "BINBYTES"),
    (_opcodes(b"\x80\x04", pickle.FRAME, struct.pack("<Q", 1 << 50)), "FRAME"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_absurd_lengths_are_one_line_errors(tmp_path, body, what):
    source = tmp_path / "absurd.pkl"
    source.write_bytes(body + b"\0" * 64)
    with pytest.raises(DataError) as info:
        run_prepare(source, tmp_path / "out")
    message = one_line(info)
    assert message.startswith(f"{source}: the file ends too early") and f"{what} at byte" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_truncated_payload_is_a_one_line_error(tmp_path, protocol):
    source = tmp_path / "big.pkl"
    whole = pickle.dumps(large_layout(), protocol=protocol)
    source.write_bytes(whole[: len(whole) // 3])  # inside train's audio, the first large array
    with pytest.raises(DataError) as info:
        run_prepare(source, tmp_path / "out")
    message = one_line(info)
    assert "the file ends too early" in message or "not a readable pickle" in message
    if protocol >= 3:  # the length is checked before anything is read (protocol 2's bytes are text)
        assert "claims" in message


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("payload", [_Payload, _OsPayload])
def test_hostile_pickle_after_large_arrays_is_refused(tmp_path, protocol, payload):
    target = tmp_path / "created-by-pickle"
    data = large_layout()
    data["test"]["extra"] = payload(target)  # after every large array has been passed over
    source = tmp_path / "big.pkl"
    source.write_bytes(pickle.dumps(data, protocol=protocol))
    with pytest.raises(UnsafePickleError) as info:
        run_prepare(source, tmp_path / "out")
    assert "refused to load" in one_line(info)
    assert not target.exists() and not (tmp_path / "out").exists()
