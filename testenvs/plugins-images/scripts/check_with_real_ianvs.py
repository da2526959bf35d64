"""Optional check against the real thing: loads this scenario's index files with
KubeEdge-Ianvs's own `core.testenvmanager.dataset.dataset.Dataset` and Sedna's own
`TxtDataParse` (from a Sedna wheel, e.g. Ianvs's examples/resources/third_party/
sedna-0.6.0.1-py3-none-any.whl), runs basemodel.py and accuracy.py on them the way Ianvs's
single-task paradigm does, and, given the JSON a dump plug-in wrote under ianvs, checks that
ianvs passed the very same `.x` / `.y` arrays.

    python3 check_with_real_ianvs.py IANVS_CHECKOUT SEDNA_WHEEL [IANVS_RS_DUMP.json]

Packages Ianvs and Sedna import but this path never uses (pandas, joblib, colorlog, ...) are
stubbed, so only numpy and Pillow are needed. Run from the repository root, after
make_images.py.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
import types
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
STUBS = ("pandas", "joblib", "colorlog", "minio", "fastapi", "uvicorn", "pydantic", "starlette",
         "websockets", "requests", "tenacity", "tqdm", "setuptools", "sklearn", "cryptography",
         "prettytable", "matplotlib", "onnx")


class _Stub(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in STUBS:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _Stub(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def main():
    ianvs_root, wheel = sys.argv[1], sys.argv[2]
    dump = sys.argv[3] if len(sys.argv) > 3 else None
    site = tempfile.mkdtemp()
    zipfile.ZipFile(wheel).extractall(site)
    sys.meta_path.insert(0, _Finder())
    sys.path[:0] = [site, ianvs_root]
    from core.testenvmanager.dataset.dataset import Dataset

    rel = os.path.relpath(os.path.join(HERE, "..", "data"))
    ds = Dataset({"train_index": os.path.join(rel, "train_index.txt"),
                  "test_index": os.path.join(rel, "test_index.txt")})
    ds.process_dataset()
    train = ds.load_data(ds.train_url, "train")
    test = ds.load_data(ds.test_url, "inference")
    evald = ds.load_data(ds.test_url, data_type="eval overall", label=ds.label)
    print(type(train).__name__, train.x.dtype, train.x[0], train.y[0])
    model = load(os.path.join(HERE, "..", "testalgorithms", "basemodel.py"), "basemodel")
    metric = load(os.path.join(HERE, "..", "testenv", "accuracy.py"), "accuracy_metric")
    for hidden in (64, 0):
        job = model.BaseModel(hidden_size=hidden, learning_rate=0.05, epochs=5)
        job.train(train)
        with tempfile.TemporaryDirectory() as d:
            job.load(job.save(d))
        print(f"hidden_size {hidden} accuracy {metric.accuracy(evald.y, job.predict(test.x))}")
    if dump:
        with open(dump) as f:
            rs = json.load(f)
        same = (rs["train_x"] == train.x.tolist() and rs["train_y"] == train.y.tolist()
                and rs["test_x"] == test.x.tolist())
        print("ianvs passed the same arrays:", same)
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
