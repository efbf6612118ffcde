"""Per-frame audio features of the published recipes, computed from samples (:mod:`dmpf_cli.media.audio` decodes).

``sims_audio``: CH-SIMS's acoustic features, as its authors published the recipe (MMSA-FET issue #2): the clip at
22,050 Hz, then per frame of ``hop_length`` 128 samples MFCC (20 coefficients, HTK mel scale, ``n_fft`` 512),
the zero-crossing rate (``frame_length`` 512) and the chroma CQT (12 bins), concatenated in that order: 33 columns.

``opensmile_audio``: openSMILE's eGeMAPS v02 low-level descriptors (25 per frame of 10 ms) at 16 kHz, the audio
choice of CH-SIMS v2's published configuration.
"""

from __future__ import annotations

import numpy as np

from .audio import need

SIMS_RATE, SIMS_HOP = 22050, 128
OPENSMILE_RATE = 16000


def sims_audio(y: np.ndarray, sr: int = SIMS_RATE) -> np.ndarray:
    """(frames, 33) float32: MFCC 20 (htk, n_fft 512), zero-crossing rate (frame_length 512), chroma CQT 12, all with
    hop_length 128, of mono samples ``y`` at ``sr`` (22,050 Hz in the recipe)."""
    import warnings

    librosa = need("librosa")

    with warnings.catch_warnings():  # n_fft 512 leaves some of the 128 mel filters empty: the recipe's own property
        warnings.simplefilter("ignore", UserWarning)
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, htk=True, n_fft=512, hop_length=SIMS_HOP)
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=512, hop_length=SIMS_HOP)
        chroma = librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=SIMS_HOP)
    frames = min(mfcc.shape[1], zcr.shape[1], chroma.shape[1])
    return np.concatenate([mfcc[:, :frames], zcr[:, :frames], chroma[:, :frames]]).T.astype(np.float32)


def opensmile_audio(y: np.ndarray, sr: int = OPENSMILE_RATE) -> np.ndarray:
    """(frames, 25) float32: openSMILE's eGeMAPSv02 low-level descriptors of mono samples ``y`` at ``sr``."""
    opensmile = need("opensmile", "opensmile")
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    return smile.process_signal(y, sr).to_numpy(dtype=np.float32)
