"""The media library on real media made here (tests/media_clips.py): audio decoded from WAV and mp4 as librosa
loads it, CH-SIMS's audio features equal librosa's own functions with the recipe's parameters, OpenFace CSVs and
transcripts read and checked; every bad input is one line naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from media_clips import SENTENCES, mux, openface_csv, speak

from dmpf_cli.errors import DmpfError

librosa = pytest.importorskip("librosa")
pytest.importorskip("av")


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return speak(SENTENCES[0], tmp_path_factory.mktemp("media") / "spoken.wav")


@pytest.mark.slow  # espeak-ng, PyAV, librosa (its first call compiles with numba)
@pytest.mark.parametrize("sr", [22050, 16000, 44100])
def test_a_wav_loads_exactly_as_librosa_loads_it(wav, sr):
    from dmpf_cli.media.audio import load_audio

    ours = load_audio(wav, sr)
    theirs, _ = librosa.load(wav, sr=sr)
    assert ours.dtype == np.float32 and np.array_equal(ours, theirs)


@pytest.mark.slow  # espeak-ng, PyAV, librosa (its first call compiles with numba)
def test_the_audio_track_of_an_mp4_is_the_spoken_sentence(wav, tmp_path):
    from dmpf_cli.media.audio import decode_audio, load_audio

    reference, _ = librosa.load(wav, sr=22050)
    for stereo in (False, True):
        clip = mux(tmp_path / f"clip-{stereo}.mp4", wav, stereo=stereo)
        audio = load_audio(clip, 22050)
        assert len(reference) <= len(audio) <= len(reference) + 3 * 1024  # AAC's priming and padding frames
        scale = 0.75 if stereo else 1.0  # the mean of a channel and its half
        lag = int(np.argmax(np.correlate(audio[:4096 + 2048], reference[:4096], mode="valid")))
        aligned = audio[lag:lag + len(reference)]
        assert np.corrcoef(aligned, reference[: len(aligned)])[0, 1] > 0.99
        assert np.std(aligned) == pytest.approx(scale * np.std(reference[: len(aligned)]), rel=0.05)
        assert decode_audio(clip)[1] == 22050


@pytest.mark.slow  # espeak-ng, PyAV, librosa (its first call compiles with numba)
def test_bad_media_is_one_line(wav, tmp_path):
    from dmpf_cli.media.audio import decode_audio

    def refused(path, fragment):
        with pytest.raises(DmpfError) as exc:
            decode_audio(path)
        message = str(exc.value)
        assert "\n" not in message and message.startswith(str(path)) and fragment in message, message

    refused(mux(tmp_path / "silent.mp4", None, seconds=1.0), "no audio track")
    (tmp_path / "empty.mp4").write_bytes(b"")
    refused(tmp_path / "empty.mp4", "not a readable media file")
    clip = mux(tmp_path / "whole.mp4", wav).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(clip[: len(clip) // 3])
    refused(tmp_path / "truncated.mp4", "")  # an mp4 cut short loses its index (at the end): unreadable or damaged
    refused(tmp_path / "missing.wav", "no such file")
    (tmp_path / "notes.txt").write_text("not media")
    refused(tmp_path / "notes.txt", "not a readable media file")


@pytest.mark.slow  # espeak-ng, PyAV, librosa (its first call compiles with numba)
def test_sims_audio_features_are_librosas_with_the_recipes_parameters(wav):
    from dmpf_cli.media.audio import load_audio
    from dmpf_cli.media.features import sims_audio

    y = load_audio(wav, 22050)
    features = sims_audio(y)
    mfcc = librosa.feature.mfcc(y=y, sr=22050, n_mfcc=20, htk=True, n_fft=512, hop_length=128)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=512, hop_length=128)
    chroma = librosa.feature.chroma_cqt(y=y, sr=22050, hop_length=128)
    assert features.shape == (mfcc.shape[1], 33) == (1 + len(y) // 128, 33)
    np.testing.assert_array_equal(features[:, :20], mfcc.T.astype(np.float32))
    np.testing.assert_array_equal(features[:, 20], zcr[0].astype(np.float32))
    np.testing.assert_array_equal(features[:, 21:], chroma.T.astype(np.float32))


@pytest.mark.slow  # espeak-ng, PyAV, librosa (its first call compiles with numba)
def test_opensmile_audio_features_are_egemaps_low_level_descriptors(wav):
    opensmile = pytest.importorskip("opensmile")
    from dmpf_cli.media.audio import load_audio
    from dmpf_cli.media.features import opensmile_audio

    y = load_audio(wav, 16000)
    ours = opensmile_audio(y)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    assert ours.shape == (len(smile.process_signal(y, 16000)), 25)  # 25 descriptors per 10 ms
    assert ours.shape[0] == pytest.approx(len(y) / 160, abs=5)


def test_openface_csv_columns_in_the_csvs_order(tmp_path):
    from dmpf_cli.media.openface import SIMS_COLUMNS, read_openface

    assert len(SIMS_COLUMNS) == 709
    groups = [c for c in SIMS_COLUMNS if c.startswith(("gaze", "eye_lmk"))], [c for c in SIMS_COLUMNS if c.startswith("pose")]
    assert (len(groups[0]), len(groups[1])) == (288, 6)
    assert sum(c.startswith("p_") for c in SIMS_COLUMNS) == 40 and sum(c.startswith("AU") for c in SIMS_COLUMNS) == 35
    values = openface_csv(tmp_path / "clip.csv", frames=9)
    features = read_openface(tmp_path / "clip.csv")
    assert features.shape == (9, 709) and np.array_equal(features, values)  # the extra column is left out


def test_bad_openface_csvs_are_one_line(tmp_path):
    from dmpf_cli.media.openface import SIMS_COLUMNS, read_openface

    def refused(path, fragment):
        with pytest.raises(DmpfError) as exc:
            read_openface(path)
        assert "\n" not in str(exc.value) and str(path) in str(exc.value) and fragment in str(exc.value), str(exc.value)

    openface_csv(tmp_path / "no-au.csv", columns=[c for c in SIMS_COLUMNS if not c.startswith("AU")])
    refused(tmp_path / "no-au.csv", "35 of the 709 OpenFace columns the recipe needs are missing (AU01_r, AU02_r")
    openface_csv(tmp_path / "noface.csv", faces=False)
    refused(tmp_path / "noface.csv", "no face was detected in any of its 12 frames")
    (tmp_path / "other.csv").write_text("a,b,c\n1,2,3\n")
    refused(tmp_path / "other.csv", "not an OpenFace CSV")
    openface_csv(tmp_path / "short.csv", frames=3)
    lines = (tmp_path / "short.csv").read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join([*lines[:2], lines[2][:100]]) + "\n")
    refused(tmp_path / "short.csv", "short.csv:3:")
    refused(tmp_path / "missing.csv", "cannot read the OpenFace CSV")


def test_transcripts(tmp_path):
    from dmpf_cli.media.transcripts import read_label_csv, read_transcript

    (tmp_path / "a.txt").write_text("  I liked it.\nA lot.  \n")
    assert read_transcript(tmp_path / "a.txt") == "I liked it. A lot."
    (tmp_path / "a.srt").write_text("1\n00:00:00,000 --> 00:00:01,500\n<i>I liked</i> it.\n\n2\n"
                                    "00:00:01,600 --> 00:00:03,000\n{\\an8}A lot.\n")
    assert read_transcript(tmp_path / "a.srt") == "I liked it. A lot."
    (tmp_path / "empty.txt").write_text(" \n")
    with pytest.raises(DmpfError, match="the transcript is empty"):
        read_transcript(tmp_path / "empty.txt")
    (tmp_path / "label.csv").write_text("video_id,clip_id,text,label,mode\nv1,0001,I liked it.,0.8,train\n")
    assert read_label_csv(tmp_path / "label.csv") == [
        {"video_id": "v1", "clip_id": "0001", "text": "I liked it.", "label": "0.8", "mode": "train"}]
    (tmp_path / "bad.csv").write_text("video_id,clip_id,label\nv1,1,0.5\n")
    with pytest.raises(DmpfError, match=r"missing column\(s\) text, mode"):
        read_label_csv(tmp_path / "bad.csv")


def test_clip_features_round_trip_and_damage(tmp_path):
    from dmpf_cli.media.clipfile import ClipFeatures, load_clip, save_clip

    clip = ClipFeatures("I liked it.", np.arange(66, dtype=np.float32).reshape(2, 33), None, "sims", "1", "v1/0001.mp4")
    save_clip(tmp_path / "v1" / "0001.npz", clip)
    back = load_clip(tmp_path / "v1" / "0001.npz")
    assert (back.text, back.recipe, back.recipe_version, back.source, back.vision) == ("I liked it.", "sims", "1",
                                                                                     "v1/0001.mp4", None)
    assert np.array_equal(back.audio, clip.audio)
    assert [p.name for p in (tmp_path / "v1").iterdir()] == ["0001.npz"]  # no temporary left
    (tmp_path / "torn.npz").write_bytes((tmp_path / "v1" / "0001.npz").read_bytes()[:50])
    with pytest.raises(DmpfError, match="torn.npz: not a readable clip features file"):
        load_clip(tmp_path / "torn.npz")
    np.savez(tmp_path / "other.npz", audio=np.ones((2, 2)))
    with pytest.raises(DmpfError, match="other.npz: not a dmpf clip features file"):
        load_clip(tmp_path / "other.npz")
