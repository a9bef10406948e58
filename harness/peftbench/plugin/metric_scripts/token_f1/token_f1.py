"""Token F1: the SQuAD bag-of-tokens F1 between a predicted and a reference string, averaged
over examples (Rajpurkar et al., 2016; the normalisation of the official SQuAD v1.1 evaluation
script: lower case, punctuation and the articles a/an/the removed, whitespace collapsed).
peftbench's local module, so that ``evaluate.load`` works offline."""

import re
import string
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = (
    "Token F1 = 2PR / (P + R) over the normalised tokens each prediction shares with its "
    "reference, averaged over examples, in [0, 1]; 1 where both normalise to no tokens."
)
_CITATION = "Rajpurkar, P. et al. (2016). SQuAD: 100,000+ Questions for Machine Comprehension."
_KWARGS = """
Args:
    predictions (list of str): predicted answers.
    references (list of str): reference answers.
Returns:
    token_f1 (float): mean token F1.
"""
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalized_tokens(text):
    """SQuAD v1.1's ``normalize_answer``, split into tokens."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def token_f1(prediction, reference):
    """One example's F1 (SQuAD v2's convention where either side has no tokens)."""
    predicted, expected = normalized_tokens(prediction), normalized_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class TokenF1(evaluate.Metric):
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
            raise ValueError("token F1 of an empty set is undefined")
        scores = [token_f1(p, r) for p, r in zip(predictions, references, strict=True)]
        return {"token_f1": sum(scores) / len(scores)}
