"""No code runs from a data file: crafted pickles of every user-supplied format are refused before they run.

Each crafted file would create a marker file when unpickled with plain ``pickle`` (checked first, so the
payload is known to be live); the project's reader refuses it with one line naming the file and the
class, and the marker is never created. Legitimate files of each format load (here and in the readers'
own tests: test_body_smpl, test_benchmark_readers, test_image_data).
"""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
from fixtures_untrusted import CRAFTED, Payload, read_with_project_reader

from mega.errors import format_user_error, is_user_error
from mega.safe_pickle import UnsafePickleError, load_npz_object_array, load_pickle


def _naive_load(kind, path):
    """What the readers did before: plain unpickling (the control that proves the payload is live)."""
    if kind == "shard data.pyd":
        with tarfile.open(path) as tar:
            pickle.loads(tar.extractfile("sample0000.data.pyd").read())
    elif kind == "npz object array":
        with np.load(path, allow_pickle=True) as f:
            f["imgname"]
    else:
        pickle.loads(path.read_bytes(), encoding="latin1")


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_crafted_file_is_refused_before_it_runs(kind, tmp_path):
    control = tmp_path / "control_marker"
    _naive_load(kind, CRAFTED[kind](tmp_path / "control", control))
    assert control.exists()  # the payload works on a naive reader

    marker = tmp_path / "marker"
    path = CRAFTED[kind](tmp_path / "data", marker)
    with pytest.raises(UnsafePickleError) as err:
        read_with_project_reader(kind, path)
    assert not marker.exists()
    message = format_user_error(err.value)
    assert is_user_error(err.value) and "\n" not in message
    assert str(path) in message and "refused to unpickle 'posix.system'" in message
    assert "Nothing in it was executed" in message


def test_allowed_content_round_trips():
    import collections

    import scipy.sparse

    data = {
        "f64": np.arange(6.0).reshape(2, 3),
        "u32": np.arange(3, dtype=np.uint32),
        "scalar": np.float32(2.5),
        "fortran": np.asfortranarray(np.ones((3, 2))),
        "strings": np.array(["a", "bc"], dtype=object),
        "sparse": scipy.sparse.csc_matrix(np.eye(3)),
        "set": {1, 2},
        "od": collections.OrderedDict(a=1),
        "nested": [(1, "x", b"y", None, 2.0 + 1j)],
    }
    for protocol in (2, 4, 5):
        out = load_pickle(pickle.dumps(data, protocol=protocol), name="mem")
        for k in ("f64", "u32", "fortran", "strings"):
            assert out[k].dtype == data[k].dtype and np.array_equal(out[k], data[k])
        assert out["scalar"] == data["scalar"] and out["set"] == {1, 2} and out["od"] == {"a": 1}
        assert (out["sparse"] != data["sparse"]).nnz == 0 and out["nested"] == data["nested"]


@pytest.mark.parametrize("payload", ["eval", "getattr", "system"])
def test_refused_globals_name_the_class(payload):
    import builtins
    import os

    fn = {"eval": builtins.eval, "getattr": builtins.getattr, "system": os.system}[payload]

    class Evil:
        def __reduce__(self):
            return (fn, ("0",) if payload != "getattr" else (1, "real"))

    with pytest.raises(
        UnsafePickleError, match=rf"^label: refused to unpickle '(builtins|posix)\.{payload}'"
    ):
        load_pickle(pickle.dumps([Evil()]), name="label")


def test_object_array_npz_loads_and_string_npz_needs_no_pickle(tmp_path):
    from fixtures_images import write_npz_dataset

    from mega.data.images.npz import read_image_npz

    write_npz_dataset(tmp_path, n=3)
    plain = read_image_npz(tmp_path / "ours.npz")
    with np.load(tmp_path / "ours.npz") as f:
        keys = {k: f[k] for k in f.files}
    keys["imgname"] = keys["imgname"].astype(object)  # SPIN-style object array of str
    np.savez(tmp_path / "obj.npz", **keys)
    assert list(load_npz_object_array(tmp_path / "obj.npz", "imgname")) == list(plain["imgname"])
    with_objects = read_image_npz(tmp_path / "obj.npz")
    assert list(with_objects["imgname"]) == list(plain["imgname"])
    assert np.array_equal(with_objects["pose"], plain["pose"])


def test_shard_bytes_stay_data(tmp_path):
    """A data.pyd that holds only data still loads through the restricted path (bytes source)."""
    person = {"center": np.zeros(2), "extra_info": {"k": np.int64(3)}}
    assert load_pickle(pickle.dumps([person]), name="x")[0]["extra_info"]["k"] == 3
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w"):
        pass
    with pytest.raises(UnsafePickleError):
        load_pickle(pickle.dumps(Payload(tmp_path / "m")), name="x")
    assert not (tmp_path / "m").exists()
