"""The media library: a researcher's own clips turned into feature arrays (issue: own clips).

Audio is decoded from any container with PyAV (the FFmpeg libraries inside its wheel) and resampled as librosa
resamples; OpenFace 2's per-frame CSVs are read and checked against its documented columns; transcripts come from
``.txt``, ``.srt`` or a ``label.csv`` column. Like the model and data libraries it imports neither of them, nor the
application above it.
"""
