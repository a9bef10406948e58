"""What a sequence classifier reads: mean pooling of the MiniLMs, against hand-computed values."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from peftbench import MODELS
from peftbench.plugin.model import TransformersModel, model_info
from peftbench.plugin.pooling import pool_by_mean, sentence_transformers_pooling
from peftbench.plugin.task import Head


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


def test_the_classifier_reads_the_masked_mean_through_the_pooler():
    model = tiny_bert()
    pool_by_mean(model)
    ids = torch.tensor([[2, 7, 9, 4], [3, 5, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        states = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model(input_ids=ids, attention_mask=mask).logits
        means = torch.stack([states[0].mean(0), states[1, :2].mean(0)])
        pooler = model.bert.pooler
        expected = model.classifier(torch.tanh(pooler.dense(means)))
    torch.testing.assert_close(logits, expected)


def test_padding_does_not_change_a_mean_pooled_prediction():
    model = tiny_bert()
    pool_by_mean(model)
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([[3, 5]])).logits
        mask = torch.tensor([[1, 1, 0]])
        padded = model(input_ids=torch.tensor([[3, 5, 0]]), attention_mask=mask).logits
    torch.testing.assert_close(padded, alone)


def test_cls_and_mean_differ_and_a_copy_keeps_its_own_mask():
    plain, pooled = tiny_bert(), tiny_bert()
    pool_by_mean(pooled)
    ids = torch.tensor([[2, 7, 9]])
    with torch.no_grad():
        assert not torch.allclose(plain(input_ids=ids).logits, pooled(input_ids=ids).logits)
        twin = copy.deepcopy(pooled)
        assert twin.bert.pooler.forward.__self__ is twin.bert.pooler
        torch.testing.assert_close(twin(input_ids=ids).logits, pooled(input_ids=ids).logits)
    assert list(pooled.state_dict()) == list(plain.state_dict())  # nothing added or renamed


def test_a_longer_mask_is_aligned_on_the_last_positions():
    # Prefix tuning passes a mask over prefix + input positions, and states of the input only.
    from peftbench.plugin.pooling import _masked_mean

    states = torch.arange(6.0).reshape(1, 3, 2)
    mask = torch.tensor([[1, 1, 1, 1, 0]])  # two prefix positions, then the input's 1, 1, 0
    torch.testing.assert_close(_masked_mean(states, mask), torch.tensor([[1.0, 2.0]]))


def test_a_model_without_a_bert_pooler_is_refused():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=8, n_head=2))
    with pytest.raises(ValueError, match="BERT-style pooler"):
        pool_by_mean(model)


def test_the_minilms_pool_as_their_folder_declares():
    source = MODELS.get("minilm-l4")
    assert sentence_transformers_pooling(source.path()) == "mean"
    loaded = source.load(num_labels=2)
    assert loaded.info.pooling == "mean"
    assert MODELS.get("minilm-l4").build_empty(num_labels=2).info.pooling == "mean"
    assert model_info("x", tiny_bert(), head=Head.CAUSAL_LM, pooling="mean").pooling is None


def test_a_folder_without_a_declaration_pools_cls_and_a_bad_one_is_named(tmp_path):
    assert sentence_transformers_pooling(tmp_path) is None
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(
        json.dumps([{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False})
    )
    with pytest.raises(ValueError, match="pooling_mode_max_tokens"):
        sentence_transformers_pooling(tmp_path)
    with pytest.raises(ValueError, match="pooling='max'; valid: cls, mean"):
        TransformersModel("x", pooling="max")
