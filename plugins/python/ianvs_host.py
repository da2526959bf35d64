"""ianvs plug-in host, protocol version 1 (docs/plugins.md).

ianvs runs ``python ianvs_host.py <user file>`` as a child process and talks to it over
stdin/stdout with length-prefixed frames. The host imports the user's file *unchanged*: an
Ianvs module or metric file that starts with
``from sedna.common.class_factory import ClassType, ClassFactory`` works whether or not Sedna
is installed (when it is not, a compatible ``sedna`` package is provided by this file).

Standard library and numpy only. Everything the user's code prints goes to stderr (which
ianvs keeps in the case folder): stdout carries the protocol and nothing else.
"""

import importlib.util
import inspect
import io
import json
import mmap
import os
import struct
import sys
import threading
import time
import traceback
import types

PROTOCOL = 1
HOST_FILE = os.path.abspath(__file__)

# ---------------------------------------------------------------------------------------------
# The sedna shim: only installed when the real package cannot be imported.
# ---------------------------------------------------------------------------------------------

_CLASS_FACTORY_SRC = '''
"""A compatible subset of sedna.common.class_factory (provided by the ianvs plug-in host)."""
from inspect import isfunction, isclass


class ClassType:
    """Const class saved defined class type."""
    GENERAL = 'general'
    HEM = 'hard_example_mining'
    FL_AGG = 'aggregation'
    MTL = 'multi_task_learening'
    UTD = 'unseen_task_detect'
    OF = 'optical_flow'
    ALGORITHM = 'algorithm'
    DATASET = 'data_process'
    CALLBACK = 'post_process_callback'
    UTP = 'unseen_task_processing'
    KM = 'knowledge_management'
    STP = 'seen_task_processing'


class ClassFactory(object):
    """Registry of classes and functions by (type, alias), as Sedna's."""

    __registry__ = {}

    @classmethod
    def register(cls, type_name=ClassType.GENERAL, alias=None):
        def wrapper(t_cls):
            return cls.register_cls(t_cls, type_name, alias)
        return wrapper

    @classmethod
    def register_cls(cls, t_cls, type_name=ClassType.GENERAL, alias=None):
        t_cls_name = alias if alias is not None else t_cls.__name__
        group = cls.__registry__.setdefault(type_name, {})
        group[t_cls_name] = t_cls
        return t_cls

    @classmethod
    def register_from_package(cls, package, type_name=ClassType.GENERAL):
        for _name in dir(package):
            if _name.startswith("_"):
                continue
            _cls = getattr(package, _name)
            if not isclass(_cls) and not isfunction(_cls):
                continue
            cls.register_cls(_cls, type_name)

    @classmethod
    def is_exists(cls, type_name, cls_name=None):
        if cls_name is None:
            return type_name in cls.__registry__
        return type_name in cls.__registry__ and cls_name in cls.__registry__.get(type_name)

    @classmethod
    def get_cls(cls, type_name, t_cls_name=None):
        if t_cls_name is None or not cls.is_exists(type_name, t_cls_name):
            raise ValueError(
                f"can't find class type {type_name} class name {t_cls_name} in class registry")
        return cls.__registry__.get(type_name).get(t_cls_name)
'''

_DATASOURCES_SRC = '''
"""A compatible subset of sedna.datasources (provided by the ianvs plug-in host)."""


class BaseDataSource:
    """An object with ``x`` (features) and ``y`` (labels), as Sedna and Ianvs pass data."""

    def __init__(self, data_type="train", func=None):
        self.data_type = data_type
        self.process_func = func if callable(func) else None
        self.x = None
        self.y = None

    def num_examples(self) -> int:
        return len(self.x)

    def __len__(self):
        return self.num_examples()

    def is_test_data(self):
        return self.data_type == "test"

    def save(self, output=""):
        raise NotImplementedError("not available in the ianvs plug-in host")


class TxtDataParse(BaseDataSource):
    def __init__(self, data_type="train", func=None):
        super().__init__(data_type=data_type, func=func)

    def parse(self, *args, **kwargs):
        raise NotImplementedError("ianvs loads the data; the plug-in receives it already parsed")


class CSVDataParse(TxtDataParse):
    pass


class IndexDataParse(TxtDataParse):
    pass


class JSONDataParse(TxtDataParse):
    pass


class JsonlDataParse(TxtDataParse):
    pass


class JSONMetaDataParse(TxtDataParse):
    pass
'''

_CONFIG_SRC = '''
"""A compatible subset of sedna.common.config (provided by the ianvs plug-in host)."""
import os


class BaseConfig:
    """Sedna's job configuration, read from the environment."""
    data_path_prefix = os.getenv("DATA_PATH_PREFIX", "/home/data")
    model_url = os.getenv("MODEL_URL")
    model_name = os.getenv("MODEL_NAME")
    log_level = os.getenv("LOG_LEVEL", "INFO")


class Context:
    """Parameters by name: Sedna reads them from the environment, as here."""
    parameters = os.environ

    @classmethod
    def get_parameters(cls, param, default=None):
        value = cls.parameters.get(param) or cls.parameters.get(str(param).upper())
        return value if value else default

    @classmethod
    def get_algorithm_from_api(cls, algorithm, **param):
        return {"method": cls.get_parameters(f"{algorithm}_NAME"), "param": param}
'''

_LOG_SRC = '''
"""A compatible subset of sedna.common.log / core.common.log (ianvs plug-in host): to stderr."""
import logging
import sys


class Logger:
    def __init__(self, level="INFO"):
        self.logger = logging.getLogger("sedna")
        if not self.logger.handlers:
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s]: %(message)s"))
            self.logger.addHandler(h)
        self.logger.setLevel(level)


LOGGER = Logger().logger
'''

_FILE_OPS_SRC = '''
"""A local-files subset of sedna.common.file_ops (ianvs plug-in host): no S3, GCS or HTTP."""
import os
import pickle
import shutil


class FileOps:
    _LOCAL_PREFIX = "file://"

    @classmethod
    def make_dir(cls, *args):
        os.makedirs(os.path.join(*args), exist_ok=True)

    @classmethod
    def clean_folder(cls, target, clean=True):
        for path in target if isinstance(target, (list, tuple)) else [target]:
            if clean and os.path.isdir(path):
                shutil.rmtree(path)
            os.makedirs(path, exist_ok=True)

    @classmethod
    def delete(cls, path):
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    @classmethod
    def make_base_dir(cls, *args):
        base = os.path.dirname(os.path.join(*args))
        if base:
            os.makedirs(base, exist_ok=True)

    @classmethod
    def join_path(cls, *args):
        return os.path.join(*[str(a) for a in args])

    @classmethod
    def remove_path_prefix(cls, org_str, prefix):
        return org_str[len(prefix):] if org_str.startswith(prefix) else org_str

    @classmethod
    def dump_pickle(cls, obj, filename):
        cls.make_base_dir(filename)
        with open(filename, "wb") as f:
            pickle.dump(obj, f)

    @classmethod
    def load_pickle(cls, filename):
        with open(filename, "rb") as f:
            return pickle.load(f)

    @classmethod
    def copy_folder(cls, src, dst):
        shutil.copytree(src, dst, dirs_exist_ok=True)

    @classmethod
    def copy_file(cls, src, dst):
        cls.make_base_dir(dst)
        shutil.copy(src, dst)

    @classmethod
    def dump(cls, obj, dst=None):
        cls.dump_pickle(obj, dst)
        return dst

    @classmethod
    def load(cls, src):
        return cls.load_pickle(cls.download(src))

    @classmethod
    def is_remote(cls, src):
        return "://" in str(src) and not str(src).startswith(cls._LOCAL_PREFIX)

    @classmethod
    def is_local(cls, src):
        return not cls.is_remote(src)

    @classmethod
    def _local(cls, src):
        if cls.is_remote(src):
            raise ValueError(f"{src}: remote files are not available in the ianvs plug-in host")
        return cls.remove_path_prefix(str(src), cls._LOCAL_PREFIX)

    @classmethod
    def download(cls, src, dst=None, unzip=False):
        src = cls._local(src)
        if dst is None or os.path.abspath(dst) == os.path.abspath(src):
            return src
        if os.path.isdir(src):
            cls.copy_folder(src, dst)
        else:
            cls.copy_file(src, dst)
        return dst

    @classmethod
    def upload(cls, src, dst, tar=False, clean=True):
        dst = cls._local(dst)
        if os.path.abspath(dst) != os.path.abspath(src):
            if os.path.isdir(src):
                cls.copy_folder(src, dst)
            else:
                cls.copy_file(src, dst)
            if clean:
                cls.delete(src)
        return dst

    @classmethod
    def exists(cls, folder):
        return os.path.exists(cls._local(folder))
'''

_UTILS_SRC = '''
"""A compatible subset of sedna.common.utils (provided by the ianvs plug-in host)."""
import socket


def get_host_ip():
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
'''



def _install_sedna_shim():
    """Provides what Ianvs example modules import from Sedna (and Ianvs's ``core.common.log``)
    when it is absent: ``sedna.common.{class_factory, config, log, file_ops, utils}``,
    ``sedna.datasources``."""
    try:
        if importlib.util.find_spec("sedna") is not None:
            return "installed"
    except (ImportError, ValueError):
        pass

    def module(name, src=None, package=False):
        m = types.ModuleType(name)
        m.__file__ = f"<ianvs plug-in host: {name}>"
        if package:
            m.__path__ = []
        if src is not None:
            exec(compile(src, m.__file__, "exec"), m.__dict__)
        sys.modules[name] = m
        return m

    sedna = module("sedna", package=True)
    common = module("sedna.common", package=True)
    sedna.common = common
    for name, src in [("class_factory", _CLASS_FACTORY_SRC), ("config", _CONFIG_SRC),
                      ("log", _LOG_SRC), ("file_ops", _FILE_OPS_SRC), ("utils", _UTILS_SRC)]:
        setattr(common, name, module(f"sedna.common.{name}", src))
    sedna.datasources = module("sedna.datasources", _DATASOURCES_SRC, package=True)
    # Ianvs's own `core.common.log` (LOGGER), when Ianvs's core is not importable either.
    try:
        has_core = importlib.util.find_spec("core") is not None
    except (ImportError, ValueError):
        has_core = False
    if not has_core:
        core = module("core", package=True)
        core.common = module("core.common", package=True)
        core.common.log = module("core.common.log", _LOG_SRC)
    return "shim"


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------

_DTYPES = {"f32": "<f4", "f64": "<f8", "i64": "<i8", "i32": "<i4", "u8": "u1", "bool": "?"}


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_np = None


def _numpy():
    global _np
    if _np is None:
        import numpy
        _np = numpy
    return _np


def _read(f, n):
    """Exactly ``n`` bytes (a buffered read of a pipe returns fewer only at its end)."""
    b = f.read(n)
    if len(b) != n:
        raise EOFError
    return b


def _read_into(f, n):
    """Exactly ``n`` bytes into one new buffer (no concatenation, no extra copy)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            raise EOFError
        got += k
    return buf


# Tensors from this many bytes on go through the shared region when ianvs offers one; offsets
# in it are multiples of _ALIGN (docs/plugins.md, "Shared memory").
_SHM_MIN = 16 << 10
_ALIGN = 64


def _align(x):
    return -(-x // _ALIGN) * _ALIGN


class Shm:
    """The shared region ianvs gives this child (descriptor IANVS_SHM_FD, a memfd). A tensor
    in it reaches the user as a numpy view of the mapping: no copy, no pickling. ianvs owns the
    bytes below the ``shm_free`` offset of its message; replies are written from there on,
    growing the file (never shrinking it) when they do not fit."""

    def __init__(self, fd):
        os.fstat(fd)  # raises if ianvs did not pass it
        os.set_inheritable(fd, False)  # the user's own subprocesses do not get it
        self.fd = fd
        self.mm = None
        self.size = 0

    def _map(self, need, grow=False):
        size = os.fstat(self.fd).st_size
        if size < need:
            if not grow:
                raise ValueError(f"tensor at byte {need} of a shared region of {size} bytes")
            size = -(-max(need, 2 * size, 1 << 20) // 65536) * 65536
            os.ftruncate(self.fd, size)
        # A new mapping; arrays still viewing the old one keep it alive until they go.
        self.mm = mmap.mmap(self.fd, size)
        self.size = size

    def view(self, off, dtype, shape):
        np = _numpy()
        dt = np.dtype(dtype)
        count = 1
        for d in shape:
            count *= d
        if count == 0:
            return np.empty(shape, dtype=dt)
        end = off + count * dt.itemsize
        if end > self.size:
            self._map(end)
        return np.frombuffer(self.mm, dtype=dt, count=count, offset=off).reshape(shape)

    def put(self, off, a):
        end = off + a.nbytes
        if end > self.size:
            self._map(end, grow=True)
        self.mm[off:end] = memoryview(a.reshape(-1)).cast("B")


def read_frame(f, shm=None):
    # One buffered read per variable-length part and the length that follows it.
    (hlen,) = _U32.unpack(_read(f, 4))
    b = _read(f, hlen + 4)
    header = json.loads(b[:hlen])
    (n,) = _U32.unpack_from(b, hlen)
    tensors = []
    for _ in range(n):
        (mlen,) = _U32.unpack(_read(f, 4))
        b = _read(f, mlen + 8)
        meta = json.loads(b[:mlen])
        (blen,) = _U64.unpack_from(b, mlen)
        off = meta.get("shm")
        if off is not None:
            if shm is None:
                raise ValueError("a tensor in shared memory, but none was negotiated")
            # A writable view of the region, as Ianvs hands its arrays to user code.
            tensors.append(shm.view(off, _DTYPES[meta["dtype"]], meta["shape"]))
            continue
        # A writable array over the received bytes (user code may modify its input).
        raw = _read_into(f, blen)
        arr = _numpy().frombuffer(raw, dtype=_DTYPES[meta["dtype"]]).reshape(meta["shape"])
        tensors.append(arr)
    return header, tensors


def _to_wire(arr):
    """A numpy array as (dtype name, contiguous little-endian array)."""
    import numpy as np
    a = np.asarray(arr)
    kind = a.dtype.kind
    if kind == "b":
        return "u8", np.ascontiguousarray(a, dtype="u1")
    if kind in "iu":
        return "i64", np.ascontiguousarray(a, dtype="<i8")
    if kind == "f":
        if a.dtype.itemsize <= 4:
            return "f32", np.ascontiguousarray(a, dtype="<f4")
        return "f64", np.ascontiguousarray(a, dtype="<f8")
    raise TypeError(f"cannot send an array of dtype {a.dtype} (expected numbers)")


def write_frame(f, header, tensors=(), shm=None, free=None):
    """One frame; with ``shm`` and ``free`` (the ``shm_free`` offset of ianvs's message),
    tensors of at least _SHM_MIN bytes are written to the region from ``free`` on."""
    # Converted first: a TypeError leaves nothing half-written.
    wire = [_to_wire(t) for t in tensors]
    hb = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    f.write(_U32.pack(len(hb)) + hb + _U32.pack(len(wire)))
    for dtype, a in wire:
        shape = ",".join(str(d) for d in a.shape)
        if shm is not None and free is not None and a.nbytes >= _SHM_MIN:
            off = _align(free)
            shm.put(off, a)
            free = off + a.nbytes
            mb = ('{"dtype":"%s","shape":[%s],"shm":%d}' % (dtype, shape, off)).encode()
            f.write(_U32.pack(len(mb)) + mb + _U64.pack(0))
            continue
        mb = ('{"dtype":"%s","shape":[%s]}' % (dtype, shape)).encode()
        f.write(_U32.pack(len(mb)) + mb + _U64.pack(a.nbytes))
        f.write(memoryview(a.reshape(-1)).cast("B") if a.nbytes else b"")
    f.flush()


# ---------------------------------------------------------------------------------------------
# Errors: the user's part of the traceback
# ---------------------------------------------------------------------------------------------


def _error(exc, kind="raised", **extra):
    frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if fr.filename != HOST_FILE]
    tb = "".join(traceback.format_list(frames[-8:]))
    tb += "".join(traceback.format_exception_only(type(exc), exc))
    err = {"kind": kind, "type": type(exc).__name__, "message": str(exc), "traceback": tb}
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        err["kind"] = "import"
        err["missing"] = exc.name.split(".")[0]
    if frames:
        err["file"] = frames[-1].filename
        err["line"] = frames[-1].lineno
    err.update(extra)
    return {"ok": False, "error": err}


class PluginError(Exception):
    def __init__(self, kind, message, **extra):
        super().__init__(message)
        self.kind = kind
        self.extra = extra


# ---------------------------------------------------------------------------------------------
# The host
# ---------------------------------------------------------------------------------------------


class Data:
    """What Ianvs passes to ``train``: an object with ``x`` and ``y``."""

    def __init__(self, x, y=None, data_type="train"):
        self.x = x
        self.y = y
        self.data_type = data_type

    def num_examples(self):
        return len(self.x)

    def __len__(self):
        return len(self.x)


def _index_data(x, y, data_type):
    """Index-file samples as Sedna's ``TxtDataParse.parse`` leaves them: ``x`` and ``y`` numpy
    arrays of strings (Ianvs has already made the paths absolute). An instance of
    ``sedna.datasources.TxtDataParse`` (Sedna's or the shim's) when one can be built."""
    import numpy as np
    try:
        from sedna.datasources import TxtDataParse
        data = TxtDataParse(data_type=data_type)
    except Exception:  # noqa: BLE001 - any Sedna without it: a plain object with .x and .y
        data = Data(None, None, data_type)
    data.x = np.array(x)
    data.y = np.array(y)
    return data


def _registry():
    cf = sys.modules.get("sedna.common.class_factory")
    if cf is None:
        return {}
    return {k: sorted(v) for k, v in cf.ClassFactory.__registry__.items()}


def _check_params(target, params):
    """Names in ``params`` that ``target``'s signature does not accept (empty if it takes **kw)."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return [], []
    ps = list(sig.parameters.values())
    if any(p.kind == p.VAR_KEYWORD for p in ps):
        return [], [p.name for p in ps if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    names = [p.name for p in ps if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [k for k in params if k not in names], names


class Host:
    def __init__(self, path):
        self.path = path
        self.obj = None
        self.kind = None
        self.alias = None

    def load(self):
        # The file's folder first, so its own packages win over the shim's.
        d = os.path.dirname(os.path.abspath(self.path))
        if d not in sys.path:
            sys.path.insert(0, d)
        self.sedna = _install_sedna_shim()
        name = "ianvs_plugin_" + os.path.splitext(os.path.basename(self.path))[0]
        spec = importlib.util.spec_from_file_location(name, self.path)
        if spec is None:
            raise PluginError("load", f"cannot import {self.path}: not a Python file")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)

    def init(self, kind, alias, params, check_only):
        reg = _registry()
        group = reg.get(kind, [])
        if alias not in group:
            raise PluginError(
                "alias",
                f"the file registers no {kind} named \"{alias}\"",
                registered=reg,
            )
        cf = sys.modules["sedna.common.class_factory"].ClassFactory
        target = cf.get_cls(kind, alias)
        unknown, accepted = _check_params(target, params)
        if unknown:
            raise PluginError(
                "params",
                f"{target.__name__} does not accept the hyperparameter(s) {', '.join(unknown)}",
                unknown=unknown,
                accepted=accepted,
            )
        self.kind, self.alias = kind, alias
        methods = [m for m in ("train", "predict", "save", "load", "__call__")
                   if callable(getattr(target, m, None))]
        if check_only:
            return {"methods": methods, "function": inspect.isfunction(target)}, []
        if inspect.isfunction(target):
            self.obj = target  # a metric: called as target(y_true, y_pred)
        else:
            self.obj = target(**params)
        return {"methods": methods, "function": inspect.isfunction(target)}, []

    def call(self, method, args, tensors):
        import numpy as np
        obj = self.obj
        if obj is None:
            raise PluginError("protocol", "call before init")
        if method == "train":
            if "x" in args:
                # Index-file samples as Ianvs passes them: Sedna's TxtDataParse arrays.
                data = _index_data(args["x"], args["y"], "train")
            else:
                x, y = tensors
                data = Data(x, y, "train")
            res = obj.train(data, **args.get("kwargs", {}))
            return _jsonable(res), []
        if method == "predict":
            # Ianvs calls predict(test_dataset.x): numbers, or the index file's paths; its
            # joint inference calls predict(one sample) ("one": the answer gets a batch axis).
            x = np.array(args["x"]) if "x" in args else tensors[0]
            if args.get("one"):
                res = _as_array(obj.predict(x[0], **args.get("kwargs", {})), "predict")
                return None, [res[None]]
            res = obj.predict(x, **args.get("kwargs", {}))
            return None, [_as_array(res, "predict")]
        if method == "save":
            return _jsonable(obj.save(args["model_path"])), []
        if method == "load":
            return _jsonable(obj.load(args["model_url"])), []
        if method == "hem":
            # Sedna filters take one sample's inference result (a list of class scores).
            (probs,) = tensors
            out = np.zeros(len(probs), dtype="u1")
            for i, row in enumerate(probs):
                v = obj(row.tolist())
                if not isinstance(v, (bool, np.bool_)):
                    raise PluginError(
                        "type",
                        f"the hard-example miner returned {type(v).__name__} ({v!r}); "
                        "__call__(infer_result) must return True or False")
                out[i] = bool(v)
            return None, [out]
        if method == "metric":
            if "y_true" in args:
                # Index-file data: Ianvs's test_dataset.y, the label text of each sample.
                y_true, (y_pred,) = np.array(args["y_true"]), tensors
            else:
                y_true, y_pred = tensors
            v = obj(y_true, y_pred)
            try:
                # A NaN or infinity is sent as text (JSON has no such numbers); ianvs reports it.
                return _jsonable(float(v)), []
            except (TypeError, ValueError):
                raise PluginError(
                    "type",
                    f"the metric returned {type(v).__name__} ({v!r}); it must return a number")
        raise PluginError("protocol", f"unknown method {method!r}")


def _jsonable(v):
    """``v`` if it is strict JSON (no NaN or infinity, which JSON cannot carry), else its repr."""
    if v is None or v is True or v is False or type(v) is str or type(v) is int:
        return v
    try:
        json.dumps(v, allow_nan=False)
        return v
    except (TypeError, ValueError):
        return repr(v)


def _as_array(res, what):
    import numpy as np
    try:
        a = np.asarray(res)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the plug-in's type error
        raise PluginError("type", f"{what} returned {type(res).__name__}, not an array: {e}")
    if a.dtype.kind not in "biuf":
        raise PluginError(
            "type",
            f"{what} returned {type(res).__name__} of dtype {a.dtype}; expected numbers "
            "(n class labels, or an [n, classes] array of scores)")
    return a


def _watch_parent():
    """Exits when ianvs is gone (its children must never outlive it)."""
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: ianvs_host.py <plug-in file>\n")
        return 2
    # The protocol owns the original stdin/stdout; the user's prints go to stderr.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    sys.stdout = sys.stderr
    threading.Thread(target=_watch_parent, daemon=True).start()

    shm = None
    fd = os.environ.pop("IANVS_SHM_FD", None)
    if fd is not None:
        try:
            shm = Shm(int(fd))
        except (ValueError, OSError) as e:
            sys.stderr.write(f"ianvs plug-in host: no shared memory (IANVS_SHM_FD={fd}: {e})\n")
    host = Host(sys.argv[1])
    try:
        # numpy is imported before the handshake so that no call pays for it (the protocol
        # overhead of the first call would otherwise include the import).
        import numpy  # noqa: F401
        host.load()
        hello = {"op": "hello", "protocol": PROTOCOL, "ok": True, "language": "python",
                 "sedna": host.sedna, "kinds": _registry()}
        if shm is not None:
            hello["shm"] = 1
    except BaseException as e:  # noqa: BLE001 - import errors of any kind are reported
        hello = {"op": "hello", "protocol": PROTOCOL, **_error(e, "load")}
    write_frame(proto_out, hello)
    if not hello["ok"]:
        return 1
    while True:
        try:
            header, tensors = read_frame(proto_in, shm)
        except EOFError:
            return 0
        op = header.get("op")
        if op == "bye":
            return 0
        try:
            t0 = time.perf_counter()
            if op == "init":
                result, out = host.init(header["kind"], header["alias"],
                                        header.get("params", {}), header.get("check_only", False))
            elif op == "call":
                result, out = host.call(header["method"], header.get("args", {}), tensors)
            else:
                raise PluginError("protocol", f"unknown op {op!r}")
            compute_s = time.perf_counter() - t0
            if result is None:
                # The common answer (predict), formatted without the JSON encoder.
                reply = ('{"ok":true,"compute_s":%r,"result":null}' % compute_s).encode()
            else:
                reply = {"ok": True, "compute_s": compute_s, "result": _jsonable(result)}
        except PluginError as e:
            reply = {"ok": False, "error": {"kind": e.kind, "type": "PluginError",
                                            "message": str(e), "traceback": "", **e.extra}}
            out = []
        except BaseException as e:  # noqa: BLE001 - the user's exception fails the call only
            reply = _error(e)
            out = []
        try:
            write_frame(proto_out, reply, out, shm, header.get("shm_free"))
        except TypeError as e:
            write_frame(proto_out, _error(e, "type"))


if __name__ == "__main__":
    sys.exit(main())
