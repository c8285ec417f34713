"""Unpickling files the user did not make: only data comes out, never code.

A pickle is a program: its ``GLOBAL`` opcodes name any importable callable (``os.system``,
``builtins.exec``) and ``REDUCE`` calls it while the file loads. SMPL ``.pkl`` files, 3DPW / EMDB
sequence pickles, 4D-Humans shards' ``data.pyd`` and npz files with object arrays are all downloaded
from many places, so every reader of them goes through :class:`RestrictedUnpickler`. It resolves a
global only from a fixed table of what those formats hold:

- numpy arrays, dtypes and scalars (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``, ``_frombuffer``);
- plain containers and scalars (``set``, ``frozenset``, ``complex``, ``slice``, ``bytearray``,
  ``OrderedDict``; lists, dicts, tuples, strings and numbers need no global), ``copyreg._reconstructor``
  (how Python-2 pickles rebuild objects, for the classes of this table only), ``_codecs.encode``
  (how Python 3 writes bytes at protocol <= 2);
- scipy sparse matrices (SMPL's ``J_regressor``): the classes themselves, which unpickle by setting
  their attributes;
- any ``chumpy`` class (SMPL's arrays): :class:`ChumpyStandIn`, which only keeps the pickled state.

Anything else stops the load before it is called: :class:`UnsafePickleError` names the file and the
class (``error: <file>: refused to unpickle 'posix.system' ...``). No module is imported by name.

Use :func:`load_pickle` for a file or bytes and :func:`load_npz_object_array` for an npz member that
holds Python objects (string ``imgname`` arrays): npz files are otherwise read with
``allow_pickle=False``. Checkpoints are not read here: ``torch.load(weights_only=True)`` is torch's own
restricted unpickler.
"""

from __future__ import annotations

import _codecs
import collections
import copyreg
import io
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from mega.errors import UserError


class UnsafePickleError(UserError, ValueError):
    """A pickle names a callable or class that data files of this kind never hold; nothing was executed."""


class ChumpyStandIn:
    """Takes the place of any ``chumpy`` class while unpickling; keeps the pickled state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_array(self) -> np.ndarray:
        """The array a chumpy ``Ch`` holds (its ``x`` attribute)."""
        state = self.state
        if isinstance(state, dict):
            if "x" in state:
                return np.asarray(state["x"])
            arrays = [v for v in state.values() if isinstance(v, np.ndarray)]
            if len(arrays) == 1:
                return arrays[0]
        raise ValueError("a chumpy object in the file holds no single array")


def _numpy_core(module: str) -> Any:
    """numpy 2 keeps the pickle helpers in ``numpy._core``; numpy 1 in ``numpy.core``."""
    core = getattr(np, "_core", None) or np.core
    return getattr(core, module)


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {}
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    for name in dir(getattr(np, "dtypes", None)):  # numpy 2 dtype classes (numpy.dtypes.Float64DType ...)
        if name.endswith("DType"):
            table[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    for builtins in ("builtins", "__builtin__"):  # __builtin__: Python-2 pickles
        for cls in (
            set,
            frozenset,
            complex,
            slice,
            bytearray,
            object,
            list,
            dict,
            tuple,
            str,
            bytes,
            int,
            float,
            bool,
        ):
            table[(builtins, cls.__name__)] = cls
    for name in ("copyreg", "copy_reg"):
        table[(name, "_reconstructor")] = copyreg._reconstructor
    table[("_codecs", "encode")] = _codecs.encode
    table[("collections", "OrderedDict")] = collections.OrderedDict
    try:
        import scipy.sparse as sparse  # noqa: PLC0415 (a dependency; imported only when a pickle is read)
    except ImportError:  # pragma: no cover
        sparse = None
    if sparse is not None:
        for fmt in ("csc", "csr", "coo", "dok", "lil", "bsr", "dia"):
            for kind in ("matrix", "array"):
                cls = getattr(sparse, f"{fmt}_{kind}", None)
                if cls is None:
                    continue
                for module in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
                    table[(module, cls.__name__)] = cls
    return table


_ALLOWED: dict[tuple[str, str], Any] | None = None


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose globals come only from the table in the module docstring.

    Args:
        file: a binary file object positioned at the pickle.
        name: the file (or ``file: member``) for messages.
        encoding: how Python-2 ``str`` is decoded (``latin1`` keeps numpy buffers intact).
    """

    def __init__(self, file: IO[bytes], name: str, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyStandIn
        if _ALLOWED is None:
            _ALLOWED = _allowed()
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"{self.name}: refused to unpickle '{module}.{name}': data files of this kind hold only numpy "
                "arrays, plain containers, scipy sparse matrices and chumpy arrays, so this file may have "
                "been crafted to run code. Nothing in it was executed; get the file again from its official source"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.name}: refused a persistent id in the pickle ({str(pid)[:40]!r})")


def load_pickle(source: str | Path | bytes, name: str | None = None, encoding: str = "latin1") -> Any:
    """Unpickle a file (or bytes) through :class:`RestrictedUnpickler`.

    Args:
        source: a path, or the pickle's bytes.
        name: label for messages (default: the path; give one for bytes).
        encoding: for Python-2 strings.

    Returns:
        The unpickled data.

    Raises:
        UnsafePickleError: the pickle names something outside the table (before calling it).
        OSError, EOFError, pickle.UnpicklingError, ValueError, ...: as ``pickle.load`` for a damaged file;
            callers turn these into their format's "corrupt file" error.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return RestrictedUnpickler(io.BytesIO(source), name or "<bytes>", encoding).load()
    with open(source, "rb") as fh:
        return RestrictedUnpickler(fh, name or str(source), encoding).load()


def load_npz_object_array(path: str | Path, key: str) -> np.ndarray:
    """Read npz member ``key`` whose dtype is ``object`` (``np.load`` refuses it without ``allow_pickle``).

    The ``.npy`` header is read by numpy; the pickled payload through :class:`RestrictedUnpickler`.

    Returns:
        The array, checked against the header's shape.

    Raises:
        UnsafePickleError: the payload names a refused class.
        ValueError, zipfile.BadZipFile, EOFError, pickle.UnpicklingError: a damaged file.
    """
    fmt = np.lib.format
    label = f"{path}: key '{key}'"
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fp:
        version = fmt.read_magic(fp)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = header(fp)
        if not dtype.hasobject:
            raise ValueError(f"{label} is not an object array ({dtype})")
        array = RestrictedUnpickler(fp, label, encoding="latin1").load()
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        got = array.shape if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{label} holds {got}, but its header says shape {tuple(shape)}")
    return array
