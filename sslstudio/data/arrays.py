"""Row subsets of large image arrays that copy nothing until rows are asked for.

A train / hold-out split of decoded images written as ``arrays[train_idx]`` copies the selected
rows at once, which for a memory-mapped decode cache can mean reading the whole dataset into RAM.
:class:`IndexedImages` keeps the base array and the row positions instead, and reads only the rows
each indexing asks for::

    train = IndexedImages(images.arrays, train_idx)
    batch = train[np.array([5, 0, 17])]      # reads 3 rows of the base
    len(train), train.shape, train.dtype     # like an array
    np.asarray(train)                        # all the rows, as one array (materialised)
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["IndexedImages"]


class IndexedImages:
    """A lazy view of the rows ``index`` of ``base`` (an array or a :class:`numpy.memmap`).

    Indexing follows numpy on the materialised array ``np.asarray(base)[index]``: an integer gives
    one row, a slice, an integer array (any shape), a list of integers or a boolean mask gives an
    array of rows, and a tuple applies its first element to the rows and the rest to each row.
    Only the rows asked for are read from ``base``; from a memory map (or any base that is not an
    ordinary in-memory array) they are read in increasing order (sequential disk access) and put
    back in the order asked for. What comes back is always a plain :class:`numpy.ndarray`: a single
    row of an in-memory base is a view (as in numpy), everything else a new, writable array (so a
    row of a read-only memory map can go to ``torch.from_numpy`` without a warning).

    Args:
        base: Array-like with ``shape``, ``dtype`` and numpy indexing of its first axis. An
            :class:`IndexedImages` base is flattened (its base is used, the indices composed).
        index: Row positions into ``base`` (1-D integers; negative values count from the end; a
            boolean mask of ``len(base)`` selects its True rows). Repeats are allowed.

    Raises:
        IndexError: A position is out of range.
        TypeError: ``index`` is not integer or boolean.
    """

    def __init__(self, base: Any, index: Any):
        rows = _positions(index, len(base))
        if isinstance(base, IndexedImages):
            rows = base.index[rows]
            base = base.base
        self.base = base
        self.index = rows
        self.index.setflags(write=False)

    # -- array-like attributes -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self),) + tuple(self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __repr__(self) -> str:
        kind = type(self.base).__name__
        return (f"IndexedImages({len(self):,} of {len(self.base):,} rows of a {kind}, "
                f"shape={self.shape}, dtype={self.dtype})")

    # -- indexing ----------------------------------------------------------------------------------
    def subset(self, index: Any) -> "IndexedImages":
        """A lazy view of some of these rows (``index`` into this view), reading nothing."""
        return IndexedImages(self, index)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            if not key:
                return self.__array__()
            first, rest = key[0], key[1:]
            if first is Ellipsis:
                return self.__array__()[key]
            rows = self[first]
            if _is_integer(first):
                return rows[rest]
            return rows[(slice(None),) + rest]
        if _is_integer(key):
            n = len(self)
            i = operator.index(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for {n} rows")
            return self._row(int(self.index[i]))
        if isinstance(key, slice):
            return self._gather(self.index[key])
        if key is Ellipsis:
            return self.__array__()
        rows = _positions(key, len(self), allow_nd=True)
        picked = self.index[rows.reshape(-1)]
        return self._gather(picked).reshape(rows.shape + self.shape[1:])

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of the base (positions into the base) as a new array."""
        n = len(rows)
        if n == 0:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        first, last = int(rows[0]), int(rows[-1])
        if last - first == n - 1 and (n == 1 or bool(np.all(np.diff(rows) == 1))):
            return np.array(self.base[first : last + 1])  # one contiguous block: a plain read
        if isinstance(self.base, np.ndarray) and not isinstance(self.base, np.memmap):
            return self.base[rows]  # in RAM: numpy's gather is best
        # a memory map (or another array-like, such as a file-backed dataset): read in increasing order
        order = np.argsort(rows, kind="stable")
        out = np.empty((n,) + self.shape[1:], dtype=self.dtype)
        out[order] = self.base[rows[order]]
        return out

    def _row(self, j: int) -> np.ndarray:
        """Row ``j`` of the base: a view of an in-memory array, a fresh writable copy of anything else."""
        row = self.base[j]
        if isinstance(self.base, np.ndarray) and not isinstance(self.base, np.memmap):
            return row
        return np.array(row)

    def __iter__(self) -> Iterator[np.ndarray]:
        for j in self.index:
            yield self._row(int(j))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy is False:
            raise ValueError("the rows of an IndexedImages view are always copied into a new array")
        out = self._gather(self.index)
        return out if dtype is None else out.astype(dtype, copy=False)


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _positions(index: Any, length: int, allow_nd: bool = False) -> np.ndarray:
    """Row positions as ``intp``, negatives resolved, checked against ``length``; masks become positions."""
    rows = np.asarray(index)
    if rows.dtype == np.bool_:
        if rows.shape != (length,):
            raise IndexError(f"a boolean index must have shape ({length},), not {rows.shape}")
        return np.flatnonzero(rows)
    if rows.size == 0:
        rows = rows.astype(np.intp)
    if rows.dtype.kind not in "iu":
        raise TypeError(f"rows must be chosen with integers or a boolean mask, not {rows.dtype}")
    if rows.ndim != 1 and not allow_nd:
        raise IndexError(f"the row index must be 1-D, not of shape {rows.shape}")
    rows = rows.astype(np.intp, copy=True)
    if rows.size:
        low, high = int(rows.min()), int(rows.max())
        if low < -length or high >= length:
            bad = low if low < -length else high
            raise IndexError(f"index {bad} is out of bounds for {length} rows")
        if low < 0:
            rows[rows < 0] += length
    return rows
