"""The one exception family the CLI turns into a one-line ``error: …`` and exit code 2."""


class DmpfError(Exception):
    """A user-facing problem (bad input, unknown name, missing file): never shown as a traceback."""


def did_you_mean(word: str, known, n: int = 2, cutoff: float = 0.5) -> str:
    """``"did you mean 'a' or 'b'? "`` for the entries of ``known`` close to ``word``; ``""`` when none is."""
    import difflib

    close = difflib.get_close_matches(word, list(known), n=n, cutoff=cutoff)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def one_line(text: object) -> str:
    """``text`` (an exception's message, say) with every run of whitespace, newlines included, one space."""
    return " ".join(str(text).split())
