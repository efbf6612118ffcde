"""Unpickling an MMSA file without holding its big arrays in memory.

MOSEI's train audio alone is 2.4 GB of float32. The standard unpickler reads each array's bytes into one
bytes object and builds the array from it, so importing the file needs several GiB at once. This
unpickler — the standard library's pure-Python one with the byte-string opcodes replaced — reads a large
payload only to hash and count it (the caller's reader does both), and leaves a :class:`Payload` (where
the bytes lie in the file) on the stack instead. When numpy's reconstruction of an array receives one
(the BUILD after ``_reconstruct`` in protocols 3–4, ``_frombuffer`` in protocol 5), the array becomes a
:class:`LazyArray`: its shape and dtype known, its rows read from the file when sliced. ``dmpf prepare``
then holds one block of rows at a time.

What this module does not decide is which globals a pickle may name: the subclass's ``find_class``
does (:mod:`dmpf_cli.data.mmsa`), and nothing here widens it. Every other opcode is the standard one.
Read into memory as before: protocol 2's bytes (spelled as latin-1 text for ``_codecs.encode``), bytes
inside a frame (Python writes frames of about 64 KiB and puts larger payloads outside them), payloads
under :data:`LARGE`, and Fortran-ordered arrays (their rows are not contiguous in the file). A length
that runs past the end of the file is refused before anything is allocated.

A :class:`LazyArray` reads the file again later; it refuses to when the file is no longer the one that
was hashed (another inode, size or modification time), so what is written is what was hashed.
"""

from __future__ import annotations

import functools
import io
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from struct import unpack
from typing import Any, BinaryIO, Callable

import numpy as np

from .prepared import DataError

LARGE = 1 << 20  # byte payloads at least this long outside a frame stay in the file
_BLOCK = 1 << 22  # bytes read at a time while passing over a payload


class PickleTruncated(EOFError):
    """A length in the pickle runs past the end of the file."""


@dataclass(frozen=True)
class Payload:
    """A byte string of the pickle left in the file: ``length`` bytes from ``offset``."""

    offset: int
    length: int


@dataclass(frozen=True)
class ArraySource:
    """The pickle file as it was when it was read, for reading array bytes again."""

    path: Path
    identity: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns

    @classmethod
    def of(cls, path: Path, st: os.stat_result) -> ArraySource:
        return cls(Path(path), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))

    @property
    def size(self) -> int:
        return self.identity[2]

    def read(self, offset: int, length: int) -> bytearray:
        changed = DataError(f"{self.path}: the file changed while it was being imported; run dmpf prepare again")
        buffer = bytearray(length)
        try:
            with open(self.path, "rb", buffering=0) as f:
                st = os.fstat(f.fileno())
                if ArraySource.of(self.path, st).identity != self.identity:
                    raise changed
                f.seek(offset)
                view, done = memoryview(buffer), 0
                while done < length:
                    n = f.readinto(view[done:])
                    if not n:
                        raise changed
                    done += n
        except FileNotFoundError:
            raise changed from None
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        return buffer


class LazyArray:
    """A C-ordered array whose bytes are still in the pickle file.

    ``shape``, ``dtype``, ``ndim`` and ``len()`` are known; ``array[start:stop]`` reads those leading
    rows; anything else (``np.asarray``, iteration, other indexing) reads the whole array, as the plain
    unpickler would have.
    """

    def __init__(self, source: ArraySource, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.source, self.offset, self.shape, self.dtype = source, offset, shape, dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (isinstance(key, slice) and self.shape and key.step in (None, 1)):
            return np.asarray(self)[key]
        start, stop, _ = key.indices(self.shape[0])
        rows = max(stop - start, 0)
        row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        data = self.source.read(self.offset + start * row_bytes, rows * row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape((rows, *self.shape[1:]))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.shape:
            array = self[:]
        else:
            array = np.frombuffer(self.source.read(self.offset, self.dtype.itemsize), dtype=self.dtype).reshape(())
        return array if dtype is None else array.astype(dtype, copy=False)

    def __iter__(self) -> Any:
        return iter(np.asarray(self))

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, at byte {self.offset} of {self.source.path})"


def _array(source: ArraySource, payload: Payload, shape: Any, dtype: Any, fortran: bool) -> LazyArray | np.ndarray:
    """The array numpy would build from ``payload``: lazy when its rows lie in order in the file."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(shape, tuple) or not all(
        type(d) is int and d >= 0 for d in shape
    ):
        raise pickle.UnpicklingError(f"an array's shape {shape!r} or dtype {dtype!r} is not understood")
    if math.prod(shape) * dtype.itemsize != payload.length:
        raise pickle.UnpicklingError(f"an array of shape {shape} and dtype {dtype} cannot hold {payload.length} bytes")
    if fortran and len(shape) > 1:
        data = source.read(payload.offset, payload.length)
        return np.frombuffer(data, dtype=dtype).reshape(shape, order="F")
    return LazyArray(source, payload.offset, shape, dtype)


class StreamingUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, leaving large byte strings in ``source`` (see the module docstring).

    ``file`` is read sequentially and must report its position (``tell``) in ``source``'s file.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, source: ArraySource):
        super().__init__(file)
        self._file, self._source = file, source
        self._block = memoryview(bytearray(_BLOCK))

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        if name == "_frombuffer" and module in ("numpy.core.numeric", "numpy._core.numeric"):
            return functools.partial(self._frombuffer, found)
        return found

    def _frombuffer(self, numpy_frombuffer: Callable[..., Any], buf: Any, dtype: Any, shape: Any, order: Any) -> Any:
        if isinstance(buf, Payload):
            return _array(self._source, buf, shape, dtype, order == "F")
        return numpy_frombuffer(buf, dtype, shape, order)

    # -- lengths, checked against the file ---------------------------------------------------------

    def _in_frame(self) -> bool:
        """Whether the next byte comes from the current (in-memory) frame."""
        frame = self._unframer.current_frame
        if frame is None:
            return False
        here = frame.tell()
        end = frame.seek(0, io.SEEK_END)
        frame.seek(here)
        if here < end:
            return True
        self._unframer.current_frame = None
        return False

    def _length(self, fmt: str, what: str) -> int:
        n = unpack(fmt, self.read(8 if fmt == "<Q" else 4))[0]
        if not self._in_frame():
            at = self._file.tell()
            if n > self._source.size - at:
                raise PickleTruncated(f"{what} at byte {at:,} claims {n:,} bytes, the file has "
                                      f"{self._source.size - at:,} left")
        return n

    def _bytes(self, n: int) -> bytes | Payload:
        if n < LARGE or self._in_frame():
            return self.read(n)
        offset = self._file.tell()
        left = n
        while left:  # through the caller's reader, which hashes and counts what passes
            got = self._file.readinto(self._block[:min(left, _BLOCK)])
            if not got:
                raise PickleTruncated(f"a byte string at byte {offset:,} ends {left:,} bytes early")
            left -= got
        return Payload(offset, n)

    def load_binbytes(self) -> None:
        self.append(self._bytes(self._length("<I", "BINBYTES")))
    dispatch[pickle.BINBYTES[0]] = load_binbytes

    def load_binbytes8(self) -> None:
        self.append(self._bytes(self._length("<Q", "BINBYTES8")))
    dispatch[pickle.BINBYTES8[0]] = load_binbytes8

    def load_bytearray8(self) -> None:
        data = self._bytes(self._length("<Q", "BYTEARRAY8"))
        self.append(data if isinstance(data, Payload) else bytearray(data))
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def load_binunicode(self) -> None:
        self.append(str(self.read(self._length("<I", "BINUNICODE")), "utf-8", "surrogatepass"))
    dispatch[pickle.BINUNICODE[0]] = load_binunicode

    def load_binunicode8(self) -> None:
        self.append(str(self.read(self._length("<Q", "BINUNICODE8")), "utf-8", "surrogatepass"))
    dispatch[pickle.BINUNICODE8[0]] = load_binunicode8

    def load_frame(self) -> None:
        self._unframer.load_frame(self._length("<Q", "FRAME"))
    dispatch[pickle.FRAME[0]] = load_frame

    def load_build(self) -> None:
        """An ndarray whose state holds a :class:`Payload` becomes the array :func:`_array` makes."""
        state, inst = self.stack[-1], self.stack[-2]
        if not (type(inst) is np.ndarray and isinstance(state, tuple) and state and isinstance(state[-1], Payload)):
            return pickle._Unpickler.load_build(self)
        if len(state) not in (4, 5):  # ([version,] shape, dtype, is_fortran, data), as ndarray.__setstate__ takes
            raise pickle.UnpicklingError("an array's state is not (version, shape, dtype, is_fortran, data)")
        shape, dtype, fortran, payload = state[-4:]
        array = _array(self._source, payload, shape, dtype, bool(fortran))
        self.stack.pop()
        self.stack[-1] = array
        for key, value in self.memo.items():  # later references to the array get it too
            if value is inst:
                self.memo[key] = array
    dispatch[pickle.BUILD[0]] = load_build
