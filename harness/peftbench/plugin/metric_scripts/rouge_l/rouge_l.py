"""ROUGE-L: the F-measure of the longest common subsequence of a prediction's and its
reference's tokens (Lin, 2004), computed by Google's ``rouge_score`` package (its default
tokenizer: lower case, non-alphanumerics split, no stemming) and averaged over examples.
peftbench's local module, so that ``evaluate.load`` works offline; the mean is exact, where the
hub's ``rouge`` reports a bootstrap estimate."""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = "ROUGE-L F-measure per example (rouge_score), averaged over examples, in [0, 1]."
_CITATION = "Lin, C.-Y. (2004). ROUGE: A Package for Automatic Evaluation of Summaries."
_KWARGS = """
Args:
    predictions (list of str): generated texts.
    references (list of str): reference texts.
Returns:
    rouge_l (float): mean ROUGE-L F-measure (0 where either text has no tokens).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("ROUGE-L of an empty set is undefined")
        scorer = rouge_scorer.RougeScorer(["rougeL"])
        scores = [
            scorer.score(r, p)["rougeL"].fmeasure
            for p, r in zip(predictions, references, strict=True)
        ]
        return {"rouge_l": sum(scores) / len(scores)}
