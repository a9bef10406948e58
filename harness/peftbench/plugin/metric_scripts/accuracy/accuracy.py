"""Accuracy: the fraction of predictions equal to the reference label (peftbench's local copy,
so that ``evaluate.load`` works offline)."""

import datasets
import evaluate

_DESCRIPTION = "Accuracy = (number of correct predictions) / (number of predictions), in [0, 1]."
_CITATION = ""
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
Returns:
    accuracy (float): fraction of correct predictions.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("accuracy of an empty set is undefined")
        correct = sum(int(p == r) for p, r in zip(predictions, references, strict=True))
        return {"accuracy": correct / len(references)}
