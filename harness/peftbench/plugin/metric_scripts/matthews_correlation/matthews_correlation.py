"""Matthews correlation coefficient (Matthews, 1975) for binary or multi-class labels
(peftbench's local module, so that ``evaluate.load`` works offline). Chance level is 0. Computed
by :func:`peftbench.plugin.metrics.matthews_of` (sklearn's ``matthews_corrcoef`` formula), the
definition the report's bootstrap also uses."""

import datasets
import evaluate

from peftbench.plugin.metrics import confusion_matrix, matthews_of

_DESCRIPTION = "Matthews correlation coefficient in [-1, 1]; 0 for a constant or random predictor."
_CITATION = "Matthews, B. W. (1975). Biochimica et Biophysica Acta 405(2), 442-451."
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
Returns:
    matthews_correlation (float)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MatthewsCorrelation(evaluate.Metric):
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
        matrix = confusion_matrix(predictions, references)
        return {"matthews_correlation": float(matthews_of(matrix))}
