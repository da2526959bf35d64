# An Ianvs metric file for index-file data, written the way KubeEdge-Ianvs's examples read
# labels (examples/imagenet/multiedge_inference_bench/testenv/accuracy.py:
# `int(y_true[i].split('/')[-1])`): Ianvs passes `test_dataset.y`, the label field of each
# index line, made absolute like the paths (`/.../data/7`) when the index holds relative paths.

import numpy as np
from sedna.common.class_factory import ClassType, ClassFactory

__all__ = ["accuracy"]


@ClassFactory.register(ClassType.GENERAL, alias="accuracy")
def accuracy(y_true, y_pred, **kwargs):
    y_true_ = np.array([int(str(y).split('/')[-1]) for y in y_true])
    y_pred_ = np.asarray(y_pred).astype(int)
    return float(np.mean(y_true_ == y_pred_))
