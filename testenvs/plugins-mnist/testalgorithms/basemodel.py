# An Ianvs-style single-task base model: the same interface as the base models of
# KubeEdge-Ianvs's examples (e.g. examples/pcb-aoi/singletask_learning_bench/testalgorithms/
# fpn/basemodel.py): registered with Sedna's ClassFactory, hyperparameters as constructor
# keywords, then train / save / load / predict. Pure numpy: a one-hidden-layer MLP (or softmax
# regression with hidden_size: 0) trained with mini-batch SGD and momentum.

import os

import numpy as np
from sedna.common.class_factory import ClassType, ClassFactory

__all__ = ["BaseModel"]


@ClassFactory.register(ClassType.GENERAL, alias="NumpyMLP")
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
        x = np.asarray(train_data.x, np.float32).reshape(len(train_data.x), -1)
        y = np.asarray(train_data.y, np.int64)
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
        print(f"trained: final loss {loss:.4f}")
        return {"loss": loss}

    def save(self, model_path):
        os.makedirs(model_path, exist_ok=True)
        path = os.path.join(model_path, "numpy_mlp.npz")
        np.savez(path, **self.params)
        return path

    def load(self, model_url, **kwargs):
        with np.load(model_url) as f:
            self.params = {k: f[k] for k in f.files}

    def predict(self, data, **kwargs):
        x = np.asarray(data, np.float32).reshape(len(data), -1)
        _, prob = self._forward(x)
        return prob.argmax(axis=1)
