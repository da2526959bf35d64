# An Ianvs-style single-task base model that reads its samples by path, as the image base
# models of KubeEdge-Ianvs's examples do (e.g. examples/cityscapes/singletask_learning_bench/
# semantic-segmentation/testalgorithms/rfnet/basemodel.py opens `Image.open(img_path)` for
# each path of `data`): Ianvs passes an index file's samples as Sedna's TxtDataParse leaves
# them, `train_data.x` a numpy array of absolute image paths and `train_data.y` the label
# field of each line, also made absolute by Ianvs (`/.../data/7`), hence `basename`.
#
# Pillow opens the PNG files; the model is the numpy MLP of testenvs/plugins-mnist (one hidden
# layer, mini-batch SGD with momentum), so the two scenarios can be compared.

import os

import numpy as np
from PIL import Image
from sedna.common.class_factory import ClassType, ClassFactory

__all__ = ["BaseModel"]


def read_images(paths):
    """[n, height * width] float32 pixels in [0, 1], one greyscale image per path."""
    return np.stack([
        np.asarray(Image.open(p).convert("L"), np.float32).reshape(-1) / np.float32(255)
        for p in paths
    ])


def class_ids(labels):
    """Ianvs's label fields as class ids: `7` or `/abs/index/folder/7` -> 7."""
    return np.array([int(os.path.basename(str(v))) for v in labels], np.int64)


@ClassFactory.register(ClassType.GENERAL, alias="PillowMLP")
class BaseModel:
    def __init__(self, **kwargs):
        self.hidden_size = int(kwargs.get("hidden_size", 64))
        self.learning_rate = float(kwargs.get("learning_rate", 0.1))
        self.epochs = int(kwargs.get("epochs", 5))
        self.batch_size = int(kwargs.get("batch_size", 64))
        self.momentum = float(kwargs.get("momentum", 0.9))
        self.seed = int(kwargs.get("seed", 42))
        self.num_classes = int(kwargs.get("num_classes", 10))
        self.params = None

    def _init(self, dim):
        rng = np.random.default_rng(self.seed)
        k, h = self.num_classes, self.hidden_size
        if h > 0:
            self.params = {
                "w1": (rng.standard_normal((dim, h)) * np.sqrt(2.0 / dim)).astype(np.float32),
                "b1": np.zeros(h, np.float32),
                "w2": (rng.standard_normal((h, k)) * np.sqrt(1.0 / h)).astype(np.float32),
                "b2": np.zeros(k, np.float32),
            }
        else:
            self.params = {"w2": np.zeros((dim, k), np.float32), "b2": np.zeros(k, np.float32)}

    def _forward(self, x):
        p = self.params
        hidden = None
        if "w1" in p:
            hidden = np.maximum(x @ p["w1"] + p["b1"], 0.0)
            logits = hidden @ p["w2"] + p["b2"]
        else:
            logits = x @ p["w2"] + p["b2"]
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return hidden, e / e.sum(axis=1, keepdims=True)

    def train(self, train_data, valid_data=None, **kwargs):
        if train_data is None or train_data.x is None or train_data.y is None:
            raise Exception("Train data is None.")
        x = read_images(train_data.x)
        y = class_ids(train_data.y)
        self._init(x.shape[1])
        rng = np.random.default_rng(self.seed + 1)
        velocity = {k: np.zeros_like(v) for k, v in self.params.items()}
        loss = float("nan")
        for _ in range(self.epochs):
            order = rng.permutation(len(x))
            total = 0.0
            for start in range(0, len(x), self.batch_size):
                idx = order[start:start + self.batch_size]
                xb, yb = x[idx], y[idx]
                hidden, prob = self._forward(xb)
                total += float(-np.log(prob[np.arange(len(yb)), yb] + 1e-12).sum())
                g = prob
                g[np.arange(len(yb)), yb] -= 1.0
                g /= len(yb)
                grads = {}
                if hidden is not None:
                    grads["w2"] = hidden.T @ g
                    grads["b2"] = g.sum(axis=0)
                    gh = (g @ self.params["w2"].T) * (hidden > 0)
                    grads["w1"] = xb.T @ gh
                    grads["b1"] = gh.sum(axis=0)
                else:
                    grads["w2"] = xb.T @ g
                    grads["b2"] = g.sum(axis=0)
                for k, gk in grads.items():
                    velocity[k] = self.momentum * velocity[k] - self.learning_rate * gk
                    self.params[k] += velocity[k]
            loss = total / len(x)
        print(f"trained on {len(x)} images: final loss {loss:.4f}")
        return {"loss": loss}

    def save(self, model_path):
        os.makedirs(model_path, exist_ok=True)
        path = os.path.join(model_path, "pillow_mlp.npz")
        np.savez(path, **self.params)
        return path

    def load(self, model_url, **kwargs):
        with np.load(model_url) as f:
            self.params = {k: f[k] for k in f.files}

    def predict(self, data, **kwargs):
        if data is None:
            raise Exception("Predict data is None")
        if isinstance(data, str):
            # Joint inference passes one sample (its path); the class probabilities go to
            # the hard-example miner (Sedna's filters read them).
            _, prob = self._forward(read_images([data]))
            return prob[0]
        _, prob = self._forward(read_images(data))
        return prob.argmax(axis=1)
