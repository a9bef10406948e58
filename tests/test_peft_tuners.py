"""Every tuner of the installed peft is a method, ``peft:<tuner>``: named from ``PeftType``
without importing peft, its hyperparameters its config dataclass's fields, peft's own checks
run at plan time, the tuners no run can serve refused with the reason, and a few trained and
rebuilt from their artifact on minilm-l2."""

from __future__ import annotations

import copy
import csv
import dataclasses
import subprocess
import sys
from importlib.metadata import version

import pytest
import torch

from peftbench import METHODS, MODELS, TASKS
from peftbench.methods import peft_tuners
from peftbench.methods.peft_tuners import NORM_LAYERS, NOT_HYPERPARAMETERS, TRIALS, tuner_names
from peftbench.planning.spec import resolve_hparams
from peftbench.plugin.errors import SpecError
from peftbench.plugin.method import is_head, unfreeze_head
from peftbench.plugin.model import model_info


def test_every_peft_type_is_a_method():
    from peft import PeftType

    expected = {f"peft:{t.value.lower()}" for t in PeftType}
    assert set(tuner_names()) == expected
    assert expected <= set(METHODS.names())
    assert METHODS.get("peft:oft").peft_type == "OFT"


def test_the_names_are_listed_without_importing_peft():
    code = (
        "import sys\n"
        "from peftbench import METHODS\n"
        "names = [n for n, m in METHODS if n.startswith('peft:') and m.description]\n"
        "print(len(names), [m for m in ('peft', 'torch') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    count, imported = result.stdout.split(" ", 1)
    assert int(count) == len(tuner_names()) > 40 and imported.strip() == "[]"


def test_hyperparameters_are_the_config_fields_with_peft_defaults_and_meanings():
    from peft import LoraConfig

    declared = METHODS.get("peft:lora").hyperparameters
    for field in dataclasses.fields(LoraConfig):
        if field.name in (*NOT_HYPERPARAMETERS, "target_modules") or field.name not in declared:
            continue  # target_modules: peftbench's syntax (auto, all-linear, names), its help
        assert declared[field.name].help == " ".join(field.metadata["help"].split()), field.name
    assert declared["r"].default == LoraConfig().r and declared["r"].type_name == "int"
    assert declared["lora_alpha"].default == LoraConfig().lora_alpha
    assert declared["bias"].choices == ("none", "all", "lora_only")  # its Literal annotation
    assert declared["layers_to_transform"].type_name == "json"  # list[int] | int | None
    assert declared["lr"].default == peft_tuners.LR  # peftbench's own
    assert "loftq_config" not in declared  # a nested configuration object
    assert not set(NOT_HYPERPARAMETERS) & set(declared)
    assert "all-linear" in declared["target_modules"].help


def test_peft_config_checks_run_at_plan_time_naming_the_value():
    with pytest.raises(SpecError) as error:
        resolve_hparams("peft:oft", {"r": 4})  # with the default oft_block_size: both set
    assert "r=4" in str(error.value) and "OFTConfig refuses it" in str(error.value)
    with pytest.raises(SpecError, match="bias='some'; valid: none, all, lora_only"):
        resolve_hparams("peft:lora", {"bias": "some"})
    with pytest.raises(SpecError, match="num_B=1: peft's LilyConfig refuses it"):
        resolve_hparams("peft:lily", {"num_B": 1})
    assert resolve_hparams("peft:oft", {"r": 4, "oft_block_size": 0})["r"] == 4


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("peft:xlora", "LoRA adapters trained beforehand"),
        ("peft:poly", "task id"),
        ("peft:multitask_prompt_tuning", "task id"),
        ("peft:cpt", "input_type_mask"),
    ],
)
def test_tuners_a_run_cannot_serve_are_refused_at_plan_time(name, fragment):
    with pytest.raises(SpecError, match=fragment):
        resolve_hparams(name, {})


def test_model_dependent_refusals_say_why(minilm):
    _, info, _ = minilm
    bert = METHODS.get("peft:adaption_prompt").unsupported_reason(info)
    assert "not 'bert'" in bert and "llama" in bert
    assert "decoder-only" in METHODS.get("peft:shadow").unsupported_reason(info)
    llama = dataclasses.replace(info, model_type="llama", head="causal-lm")
    assert METHODS.get("peft:adaption_prompt").unsupported_reason(llama) is None
    assert METHODS.get("peft:shadow").unsupported_reason(llama) is None


def test_target_modules_auto_is_peft_default_or_the_layers_the_tuner_adapts(minilm):
    build, info, _ = minilm
    model = build()
    lora = METHODS.get("peft:lora")  # peft maps bert to query and value
    assert {n.rsplit(".", 1)[-1] for n in lora.targets(None, model, info)} == {"query", "value"}
    osf = METHODS.get("peft:osf")  # peft has no bert entry for OSF: every linear layer
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(osf.targets(None, model, info)) == {n for n in linears if not is_head(n, info)}
    ln = METHODS.get("peft:ln_tuning")  # nor for LN tuning: every LayerNorm, none linear
    norms = {n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert set(ln.targets(None, model, info)) == norms and len(norms) == 1 + 2 * 2
    with pytest.raises(ValueError, match="match no module"):  # the help text is no module name
        ln.targets([NORM_LAYERS], model, info)


def test_ln_tuning_on_bert_trains_its_layer_norms_only():
    """LN tuning's closed form on minilm-l6: the embeddings' LayerNorm and two per layer, each a
    weight and a bias of the hidden width (a copy peft trains in place of the original)."""
    from peftbench.planning.counting import count_model_method

    counts = count_model_method("minilm-l6", "peft:ln_tuning")
    assert counts["trainable_method"] == (1 + 6 * 2) * 2 * 384


@pytest.fixture(scope="module")
def minilm():
    loaded = MODELS.get("minilm-l2").load(num_labels=2)
    rows = TASKS.get("docstring-match").load()["train"].select(range(8)).to_dict()
    batch = MODELS.get("minilm-l2").tokenizer()(
        rows["name"], rows["text"], truncation=True, max_length=32, padding=True,
        return_tensors="pt",
    )  # fmt: skip
    batch["labels"] = torch.tensor(rows["label"])
    return (lambda: copy.deepcopy(loaded.model)), model_info("minilm-l2", loaded.model), batch


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["peft:loha", "peft:oft", "peft:prompt_tuning", "peft:cartridge", "peft:vera"]
)
def test_a_tuner_trains_and_its_artifact_rebuilds_the_model(name, minilm):
    """Its own parameters train (the loss falls over 10 steps) and its artifact, loaded into a
    freshly adapted model (prompt tuners: PromptMethod's, the prompt as the model uses it),
    gives the trained logits."""
    build, info, batch = minilm
    method = METHODS.get(name)
    hp = resolve_hparams(name, {"lr": 1e-2})
    torch.manual_seed(0)
    model = method.apply(build(), hp, info).eval()
    unfreeze_head(model, info, method)
    trainable = [p for n, p in model.named_parameters() if p.requires_grad]
    assert any(not method.is_head(n, info) for n, p in model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(trainable, lr=hp["lr"])
    with torch.no_grad():
        first = model(**batch).loss.item()
    for step in range(1, 11):
        model(**batch).loss.backward()
        optimizer.step()
        method.on_step(model, step)
        optimizer.zero_grad()
    with torch.no_grad():
        trained = model(**batch)
    assert trained.loss.item() < first
    tensors = {k: v.detach().clone() for k, v in method.artifact(model, info).items()}
    torch.manual_seed(1)
    fresh = method.apply(build(), hp, info).eval()
    head = {n: p for n, p in model.named_parameters() if method.is_head(n, info)}
    with torch.no_grad():
        for n, p in fresh.named_parameters():
            if n in head:
                p.copy_(head[n])
    method.load_artifact(fresh, tensors, info)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits, trained.logits, rtol=1e-4, atol=1e-5)


def test_the_trials_cover_every_tuner_of_the_installed_peft():
    """methods/peft_tuners.csv (benchmarks/peft_tuner_trials.py) holds a run of every tuner on
    the classifier and the causal LM with this peft; after an upgrade, run the trials again."""
    with TRIALS.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["method"], r["head"]) for r in rows} == {
        (name, head) for name in tuner_names() for head in ("classifier", "causal LM")
    }
    assert {r["peft_version"] for r in rows} == {version("peft")}
    assert {r["status"] for r in rows} <= {"ok", "refused", "unsupported", "failed", "diverged"}
    tried = METHODS.get("peft:lora").tried
    assert tried == {"minilm-l2 (classifier)": "ok, merges", "tiny-llama (causal LM)": "ok, merges"}
