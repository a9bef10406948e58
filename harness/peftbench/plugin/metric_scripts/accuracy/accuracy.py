"""Accuracy: the fraction of predictions equal to the reference label (peftbench's local module,
so that ``evaluate.load`` works offline). Computed by :func:`peftbench.plugin.metrics.accuracy_of`,
the definition the report's bootstrap also uses."""

import datasets
import evaluate

from peftbench.plugin.metrics import accuracy_of, confusion_matrix

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
        return {"accuracy": float(accuracy_of(confusion_matrix(predictions, references)))}
