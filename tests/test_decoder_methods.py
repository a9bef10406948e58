"""Every method on the decoders' language-model heads (tiny-llama, tiny-gpt2) applies or says
precisely why it cannot (training them: tests/test_methods.py); MAM and UniPELT's deep prefix
changes a decoder's output, ``generate`` runs with it (cached steps equal a full forward,
left-padded batches equal one prompt at a time), and their parameter counts match closed
forms."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from peftbench import METHODS, MODELS
from peftbench.planning.counting import adapt
from peftbench.planning.spec import resolve_hparams, resolve_spec
from peftbench.plugin.model import LoadedModel
from peftbench.plugin.quantize import BITS, quantize_linears
from peftbench.plugin.task import Head
from peftbench.run.runner import execute

STEPS = 3
PROMPTS = ["def load(path): read a json", "the os module", "sort a list of numbers in place"]
UNSUPPORTED = {("bitfit", "tiny-llama"): "tiny-llama has no bias terms"}
"""The only method × decoder cells that do not run, and the reason each gives."""


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2"])
def decoder(request: pytest.FixtureRequest) -> tuple[str, LoadedModel]:
    return request.param, MODELS.get(request.param).load(num_labels=2, head=Head.CAUSAL_LM)


def batch(name: str, padding_side: str = "right") -> dict[str, torch.Tensor]:
    tokenizer = MODELS.get(name).tokenizer()
    tokenizer.padding_side = padding_side
    encoded = tokenizer(PROMPTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    return dict(encoded)


def adapted(method_name: str, loaded: LoadedModel, **overrides: str) -> torch.nn.Module:
    method = METHODS.get(method_name)
    hp = resolve_hparams(method_name, {"steps": str(STEPS), **overrides})
    model = copy.deepcopy(loaded.model)
    if hp["precision"] in BITS:
        quantize_linears(model, loaded.info, BITS[hp["precision"]])
    torch.manual_seed(0)
    return adapt(model, method, hp, loaded.info)[0]


def test_every_method_applies_or_says_why(decoder):
    """Which methods refuse the registered decoders, and why. That every method trains on a
    decoder's language-model head: tests/test_methods.py, test_causal_lm_applies_or_says_why."""
    name, loaded = decoder
    own = [m for m in METHODS.names() if not m.startswith("peft:")]  # peft's: test_peft_tuners
    reasons = {m: METHODS.get(m).unsupported_reason(loaded.info) for m in own}
    refused = {(m, name): reason for m, reason in reasons.items() if reason is not None}
    assert refused == {key: r for key, r in UNSUPPORTED.items() if key[1] == name}


def with_random_zero_inits(model: torch.nn.Module) -> torch.nn.Module:
    """Give the modules that start at zero (adapter up-projections, LoRA B) random values, so
    that every part of the method acts on the output."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("method_name", ["mam", "unipelt"])
def test_prefix_changes_the_output_and_generation_is_consistent(method_name, decoder):
    name, loaded = decoder
    model = with_random_zero_inits(adapted(method_name, loaded))
    base = copy.deepcopy(loaded.model).eval()
    inputs = batch(name)
    with torch.no_grad():
        logits = model(**inputs).logits
        assert not torch.allclose(logits, base(**inputs).logits, atol=1e-3)
        model.deep_prefix.load_materialized(torch.zeros_like(model.deep_prefix.materialize()))
        assert not torch.allclose(logits, model(**inputs).logits, atol=1e-3)  # the prefix acts
    model = with_random_zero_inits(adapted(method_name, loaded))
    left = batch(name, "left")
    new = 4
    pad = MODELS.get(name).tokenizer().pad_token_id
    with torch.no_grad():
        out = model.generate(
            **left, max_new_tokens=new, do_sample=False, pad_token_id=pad, min_new_tokens=new,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
        steps = torch.stack(out.logits, dim=1)  # (batch, new, vocab)
        for i in range(len(PROMPTS)):
            real = left["attention_mask"][i].bool()
            prompt = left["input_ids"][i, real][None]
            alone = model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                min_new_tokens=new, do_sample=False, pad_token_id=pad, output_logits=True,
                return_dict_in_generate=True,
            )  # fmt: skip
            assert alone.sequences[0, -new:].tolist() == out.sequences[i, -new:].tolist()
            torch.testing.assert_close(torch.stack(alone.logits, 1)[0], steps[i])
            # The cached steps equal one uncached forward over the whole sequence.
            full = model(input_ids=alone.sequences, use_cache=False).logits[0, -new - 1 : -1]
            torch.testing.assert_close(full, steps[i], atol=1e-4, rtol=1e-4)


def prefix_mlp(length: int, dim: int, hidden: int, layers: int, width: int) -> int:
    """Li & Liang's MLP: l embeddings of width d, d → h → 2·L·w (w: the keys' width)."""
    return length * dim + dim * hidden + hidden + hidden * 2 * layers * width + 2 * layers * width


def bottleneck(dim: int, size: int) -> int:
    return 2 * dim * size + size + dim


# tiny-llama: 2 layers, d=384, 6 query heads of 64, 2 key/value heads (w=128), no biases.
# tiny-gpt2: 2 layers, d=384, 6 heads of 64 (w=384), fused query/key/value c_attn (384 → 1152).
LLAMA_D, LLAMA_W, GPT2_D = 384, 128, 384
GATE = 385  # d + 1
CLOSED_FORMS = {
    ("mam", "tiny-llama"): (
        prefix_mlp(30, LLAMA_D, 512, 2, LLAMA_W) + 2 * bottleneck(LLAMA_D, 512),
        2 * 2 * 30 * LLAMA_W + 2 * bottleneck(LLAMA_D, 512),
    ),
    ("mam", "tiny-gpt2"): (
        prefix_mlp(30, GPT2_D, 512, 2, GPT2_D) + 2 * bottleneck(GPT2_D, 512),
        2 * 2 * 30 * GPT2_D + 2 * bottleneck(GPT2_D, 512),
    ),
    # per layer: prefix gate; gated LoRA r=8 on q_proj (384→384) and v_proj (384→128); gated
    # adapter of width 384/16=24.
    ("unipelt", "tiny-llama"): (
        prefix_mlp(10, LLAMA_D, 512, 2, LLAMA_W)
        + 2 * (GATE + 8 * (384 + 384) + GATE + 8 * (384 + 128) + GATE + bottleneck(384, 24) + GATE),
        2 * 2 * 10 * LLAMA_W
        + 2 * (GATE + 8 * (384 + 384) + GATE + 8 * (384 + 128) + GATE + bottleneck(384, 24) + GATE),
    ),
    ("unipelt", "tiny-gpt2"): (
        prefix_mlp(10, GPT2_D, 512, 2, GPT2_D)
        + 2 * (GATE + 8 * (384 + 1152) + GATE + bottleneck(384, 24) + GATE),
        2 * 2 * 10 * GPT2_D + 2 * (GATE + 8 * (384 + 1152) + GATE + bottleneck(384, 24) + GATE),
    ),
}


@pytest.mark.parametrize("method_name", ["mam", "unipelt"])
def test_parameter_counts_match_closed_forms(method_name, decoder):
    name, loaded = decoder
    method = METHODS.get(method_name)
    model = adapted(method_name, loaded)
    trainable, stored = CLOSED_FORMS[method_name, name]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    tensors = method.artifact(model, loaded.info)
    assert sum(t.numel() for t in tensors.values()) == stored
    rebuilt = adapted(method_name, loaded)
    method.load_artifact(rebuilt, tensors, loaded.info)
    model.eval(), rebuilt.eval()  # GPT-2's dropout off
    inputs = batch(name)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(**inputs).logits, model(**inputs).logits)


def test_unipelt_names_valid_lora_targets(decoder):
    name, loaded = decoder
    with pytest.raises(ValueError, match=r"lora_targets='query'.*valid: "):
        adapted("unipelt", loaded, lora_targets="query")


@pytest.mark.slow
def test_unipelt_run_on_the_causal_lm_task(tmp_path, tokenized):
    overrides = {"steps": "2", "max_eval_examples": "4", "forgetting_texts": "4"}
    spec = resolve_spec("tiny-llama", "unipelt", "docstring-match-lm", 0, overrides)
    record = execute(
        spec, tmp_path / "r", tokenized_dir=tokenized(spec), threads=1, lock_dir=tmp_path / "l"
    )
    assert record["status"]["code"] == "ok", record["status"]
    assert all(math.isfinite(loss) for loss in record["training"]["losses"])
