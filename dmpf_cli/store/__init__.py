"""One run directory and the directories of many runs: every on-disk format of a run, read and written here."""
