"""Runs testalgorithms/basemodel.py the way KubeEdge-Ianvs's single-task paradigm does
(core/testcasecontroller/algorithm/paradigm/singletask_learning): construct with the case's
hyperparameters, train(train_dataset), save, load, predict(test_dataset.x), then the metric
file's accuracy(y, y_pred) -- in plain Python, on the split ianvs uses (every 5th row of
datasets/mnist/mnist_5k.csv.gz is a test row, pixels / 255). Prints the accuracy, which must
equal the numpy-mlp-plugin case's accuracy in `ianvs run -f testenvs/plugins-mnist/benchmark.yaml`.

Needs Sedna installed, or run it through the ianvs host's shim:
    python3 testenvs/plugins-mnist/scripts/run_like_ianvs.py
(it installs the same shim the plug-in host uses when Sedna is absent).
"""

import gzip
import importlib.util
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


host = load(os.path.join(ROOT, "plugins", "python", "ianvs_host.py"), "ianvs_host")
host._install_sedna_shim()
model_mod = load(os.path.join(HERE, "..", "testalgorithms", "basemodel.py"), "basemodel")
metric_mod = load(os.path.join(HERE, "..", "testenv", "accuracy.py"), "accuracy_metric")

with gzip.open(os.path.join(ROOT, "datasets", "mnist", "mnist_5k.csv.gz"), "rt") as f:
    rows = np.loadtxt(f, delimiter=",", dtype=np.float32)
x, y = rows[:, :-1] / np.float32(255), rows[:, -1].astype(np.int64)
test = np.arange(len(x)) % 5 == 4


class Data:
    def __init__(self, x, y):
        self.x, self.y = x, y


job = model_mod.BaseModel(hidden_size=64, learning_rate=0.05, epochs=5)
job.train(Data(x[~test], y[~test]))
with tempfile.TemporaryDirectory() as d:
    job.load(job.save(d))
pred = job.predict(x[test])
print(f"accuracy {metric_mod.accuracy(y[test], pred):.4f}")
