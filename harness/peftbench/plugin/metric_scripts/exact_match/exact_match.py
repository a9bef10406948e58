"""Exact match: the fraction of predicted strings equal to their reference after stripping
surrounding whitespace, optionally ignoring case (peftbench's local copy, so that
``evaluate.load`` works offline; the ``ignore_case`` option as in the hub's ``exact_match``)."""

import datasets
import evaluate

_DESCRIPTION = "Exact match = (predictions equal to their reference) / (predictions), in [0, 1]."
_CITATION = ""
_KWARGS = """
Args:
    predictions (list of str): predicted answers (already extracted by the task).
    references (list of str): reference answers.
    ignore_case (bool): compare case-folded strings; default False.
Returns:
    exact_match (float): fraction of predictions equal to their reference.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, ignore_case=False):
        if len(references) == 0:
            raise ValueError("exact match of an empty set is undefined")

        def normal(text):
            return text.strip().casefold() if ignore_case else text.strip()

        equal = sum(
            int(normal(p) == normal(r)) for p, r in zip(predictions, references, strict=True)
        )
        return {"exact_match": equal / len(references)}
