# An Ianvs metric file, as KubeEdge-Ianvs's examples write them (e.g.
# examples/imagenet/multiedge_inference_bench/testenv/accuracy.py): a function registered with
# Sedna's ClassFactory under the name the test environment lists.

import numpy as np
from sedna.common.class_factory import ClassType, ClassFactory

__all__ = ["accuracy"]


@ClassFactory.register(ClassType.GENERAL, alias="accuracy")
def accuracy(y_true, y_pred, **kwargs):
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    return float(np.mean(y_true == y_pred))
