"""Runs testalgorithms/basemodel.py and testenv/accuracy.py the way KubeEdge-Ianvs does, on
the index files of this scenario, in plain Python: the index files go through Ianvs's own
`Dataset._process_txt_index_file` and Sedna's `TxtDataParse.parse` (both copied below from
their sources, Apache-2.0, KubeEdge Authors), then the single-task flow
(core/testcasecontroller/algorithm/paradigm/singletask_learning): construct, train(train
dataset), save, load, predict(test_dataset.x), accuracy(test_dataset.y, result).

Prints the first train sample and label as Ianvs passes them and the accuracy, which must
equal the case's accuracy in `ianvs run -f testenvs/plugins-images/benchmark.yaml`. Run
scripts/make_images.py first. Needs Sedna, or uses the ianvs host's shim when it is absent:
    python3 testenvs/plugins-images/scripts/run_like_ianvs.py [HIDDEN_SIZE]
"""

import importlib.util
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
DATA = os.path.join(HERE, "..", "data")


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ianvs/core/testenvmanager/dataset/dataset.py, Dataset._process_txt_index_file (verbatim).
def _process_txt_index_file(file_url):
    flag = False
    new_file = file_url
    with open(file_url, "r", encoding="utf-8") as file:
        lines = file.readlines()
        for line in lines:
            if not os.path.isabs(line.split(" ")[0]):
                flag = True
                break
    if flag:
        root = os.path.dirname(file_url)
        tmp_file = os.path.join(tempfile.mkdtemp(), "index.txt")
        with open(tmp_file, "w", encoding="utf-8") as file:
            for line in lines:
                line = line.strip()
                words = line.split(" ")
                length = len(words)
                words[-1] = words[-1] + "\n"
                for i in range(length):
                    file.writelines(
                        f"{os.path.abspath(os.path.join(root, words[i]))}"
                    )
                    if i < length - 1:
                        file.writelines(" ")
        new_file = tmp_file
    return new_file


# sedna/lib/sedna/datasources/__init__.py, TxtDataParse.parse without a process_func.
class TxtDataParse:
    def __init__(self, data_type):
        self.data_type = data_type
        self.x = self.y = None

    @property
    def is_test_data(self):
        return self.data_type == "test"

    def parse(self, *args, **kwargs):
        x_data = []
        y_data = []
        use_raw = kwargs.get("use_raw")
        for f in args:
            if not (f and os.path.exists(f)):
                continue
            with open(f) as fin:
                res = [line.strip().split() for line in fin.readlines()]
            for tup in res:
                if not len(tup):
                    continue
                if use_raw:
                    x_data.append(tup)
                else:
                    x_data.append(tup[0])
                    if not self.is_test_data:
                        if len(tup) > 1:
                            y_data.append(tup[1])
                        else:
                            y_data.append(0)
        self.x = np.array(x_data)
        self.y = np.array(y_data)


def load_data(index, data_type):
    data = TxtDataParse(data_type)
    data.parse(_process_txt_index_file(index))
    return data


def main():
    hidden = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    host = load(os.path.join(ROOT, "plugins", "python", "ianvs_host.py"), "ianvs_host")
    host._install_sedna_shim()
    model_mod = load(os.path.join(HERE, "..", "testalgorithms", "basemodel.py"), "basemodel")
    metric_mod = load(os.path.join(HERE, "..", "testenv", "accuracy.py"), "accuracy_metric")
    # Ianvs's paths are the YAML's as written, relative to where Ianvs runs.
    train = load_data(os.path.relpath(os.path.join(DATA, "train_index.txt")), "train")
    test = load_data(os.path.relpath(os.path.join(DATA, "test_index.txt")), "inference")
    print("x[0]", train.x[0])
    print("y[0]", train.y[0])
    job = model_mod.BaseModel(hidden_size=hidden, learning_rate=0.05, epochs=5)
    job.train(train)
    with tempfile.TemporaryDirectory() as d:
        job.load(job.save(d))
    y_pred = job.predict(test.x)
    metric_data = load_data(os.path.relpath(os.path.join(DATA, "test_index.txt")), "eval overall")
    print(f"accuracy {metric_mod.accuracy(metric_data.y, y_pred)}")


if __name__ == "__main__":
    main()
