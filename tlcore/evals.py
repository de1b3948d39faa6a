"""Rough evaluations of a ``HookedTransformer``, as TransformerLens 2.18's ``evals``.

Quick sanity checks and baselines, not benchmarks: the loss on a paragraph (:func:`sanity_check`),
on repeated random tokens (:func:`induction_loss`, which induction heads drive down), on four text
corpora (:func:`evaluate`), the indirect-object task (:class:`IOIDataset`, :func:`ioi_eval`) and
zero-shot MMLU (:func:`mmlu_eval`).

Differences from TransformerLens, all additions: every data loader takes ``dataset=`` (a
``datasets.Dataset``, a list of texts or a local path, see :func:`tlcore.utils.get_dataset`) so
nothing has to be downloaded; :func:`evaluate` and :func:`mmlu_eval` take the data the same way;
``device=None`` (the default here, ``"cuda"`` in TransformerLens) means the model's own device.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import einops
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from tlcore.utils.attrs import override_or_use_default_value
from tlcore.utils.environment import warn_if_mps
from tlcore.utils.losses import lm_cross_entropy_loss
from tlcore.utils.tokenize import tokenize_and_concatenate

__all__ = [
    "DATASET_LOADERS",
    "DATASET_NAMES",
    "MMLU_ANSWER_LETTERS",
    "MMLU_SUBJECTS",
    "IOIDataset",
    "evaluate",
    "evaluate_on_dataset",
    "induction_loss",
    "ioi_eval",
    "make_code_data_loader",
    "make_mmlu_data_loader",
    "make_owt_data_loader",
    "make_pile_data_loader",
    "make_wiki_data_loader",
    "mmlu_eval",
    "sanity_check",
]

SANITY_TEXT = (
    "Many important transition points in the history of science have been moments when science "
    "'zoomed in.' At these points, we develop a visualization or tool that allows us to see the "
    "world in a new level of detail, and a new field of science develops to study the world "
    "through this lens."
)


def sanity_check(model: Any) -> torch.Tensor:
    """The model's loss on the first paragraph of "Zoom In" (Olah et al.), as TransformerLens.

    Below 5 the model is probably fine; above 7 something is wrong.

    Args:
        model: A ``HookedTransformer`` with a tokenizer.

    Returns:
        The mean next-token loss (a scalar tensor).
    """
    return model(SANITY_TEXT, return_type="loss")


def _texts(dataset: Any, hub_name: str, hub_config: str | None = None) -> Any:
    """The dataset a loader tokenises: the one given, a local path, or the hub's."""
    if dataset is None:
        import datasets

        args = (hub_name, hub_config) if hub_config else (hub_name,)
        return datasets.load_dataset(*args, split="train")
    if isinstance(dataset, str):
        from tlcore.utils.hub import get_dataset

        return get_dataset(dataset)
    return dataset


def _loader(
    texts: Any, tokenizer: Any, batch_size: int, column_name: str = "text"
) -> DataLoader[Any]:
    print(len(texts))
    tokens = tokenize_and_concatenate(texts, tokenizer, column_name=column_name)
    return DataLoader(tokens, batch_size=batch_size, shuffle=True, drop_last=True)


def make_wiki_data_loader(
    tokenizer: Any, batch_size: int = 8, *, dataset: Any = None
) -> DataLoader[Any]:
    """Batches of 1024 tokens from Wikitext-2's train split (``wikitext-2-v1``).

    Args:
        tokenizer: Tokenizes the texts (:func:`tlcore.utils.tokenize_and_concatenate`).
        batch_size: Sequences per batch.
        dataset: Texts to use instead of downloading Wikitext (rows with a ``text`` field, a list
            of strings, or a local path).

    Returns:
        A shuffled loader of ``{"tokens": [batch, 1024]}`` (last partial batch dropped).
    """
    return _loader(_texts(dataset, "wikitext", "wikitext-2-v1"), tokenizer, batch_size)


def make_owt_data_loader(
    tokenizer: Any, batch_size: int = 8, *, dataset: Any = None
) -> DataLoader[Any]:
    """Batches from OpenWebText's first 10k texts (``stas/openwebtext-10k``), GPT-2's corpus.

    Args:
        tokenizer: Tokenizes the texts.
        batch_size: Sequences per batch.
        dataset: Texts to use instead of the download.

    Returns:
        A shuffled loader of ``{"tokens": [batch, 1024]}``.
    """
    return _loader(_texts(dataset, "stas/openwebtext-10k"), tokenizer, batch_size)


def make_pile_data_loader(
    tokenizer: Any, batch_size: int = 8, *, dataset: Any = None
) -> DataLoader[Any]:
    """Batches from the Pile's first 10k texts (``NeelNanda/pile-10k``).

    Args:
        tokenizer: Tokenizes the texts.
        batch_size: Sequences per batch.
        dataset: Texts to use instead of the download.

    Returns:
        A shuffled loader of ``{"tokens": [batch, 1024]}``.
    """
    return _loader(_texts(dataset, "NeelNanda/pile-10k"), tokenizer, batch_size)


def make_code_data_loader(
    tokenizer: Any, batch_size: int = 8, *, dataset: Any = None
) -> DataLoader[Any]:
    """Batches of Python code (``codeparrot/codeparrot-valid-v2-near-dedup``, column ``content``).

    Args:
        tokenizer: Tokenizes the texts.
        batch_size: Sequences per batch.
        dataset: Rows with a ``content`` field (or a list of strings) to use instead.

    Returns:
        A shuffled loader of ``{"tokens": [batch, 1024]}``.
    """
    texts = _texts(dataset, "codeparrot/codeparrot-valid-v2-near-dedup")
    if isinstance(texts, list) and texts and isinstance(texts[0], str):
        texts = [{"content": t} for t in texts]
    return _loader(texts, tokenizer, batch_size, column_name="content")


DATASET_NAMES = ["wiki", "owt", "pile", "code"]
DATASET_LOADERS: list[Callable[..., DataLoader[Any]]] = [
    make_wiki_data_loader,
    make_owt_data_loader,
    make_pile_data_loader,
    make_code_data_loader,
]

MMLU_SUBJECTS = [
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations",
    "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
]  # fmt: skip
"""The 57 MMLU subjects (``cais/mmlu`` configurations)."""

MMLU_ANSWER_LETTERS = ["A", "B", "C", "D"]


def make_mmlu_data_loader(
    subjects: str | list[str] | None = None,
    split: str = "test",
    num_samples: int | None = None,
    *,
    dataset: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """MMLU questions as dicts, from ``cais/mmlu`` or from local rows.

    Args:
        subjects: One subject, several, or None for all 57.
        split: ``"test"``, ``"validation"`` or ``"dev"``.
        num_samples: At most this many questions per subject.
        dataset: Subject → rows with ``question``, ``choices`` (4 strings) and ``answer`` (0-3),
            used instead of downloading.

    Returns:
        ``{"question", "choices", "answer", "subject"}`` dicts.

    Raises:
        ValueError: For an unknown subject.
    """
    if subjects is None:
        wanted = MMLU_SUBJECTS
    elif isinstance(subjects, str):
        wanted = [subjects]
    else:
        wanted = list(subjects)
    invalid = set(wanted) - set(MMLU_SUBJECTS)
    if invalid:
        raise ValueError(
            f"Invalid subject(s): {invalid}. Valid subjects: {', '.join(sorted(MMLU_SUBJECTS))}"
        )
    out = []
    for subject in wanted:
        try:
            if dataset is not None:
                rows: Any = dataset.get(subject, [])
            else:
                import datasets

                rows = datasets.load_dataset("cais/mmlu", subject, split=split)
            n = len(rows) if num_samples is None else min(num_samples, len(rows))
            for i in range(n):
                row = rows[i]
                out.append(
                    {
                        "question": row["question"],
                        "choices": row["choices"],
                        "answer": row["answer"],
                        "subject": subject,
                    }
                )
        except Exception as exc:  # noqa: BLE001 - as TransformerLens: skip a subject that fails
            print(f"Warning: Could not load subject '{subject}': {exc}")
    print(f"Loaded {len(out)} MMLU examples from {len(wanted)} subject(s)")
    return out


def _model_device(model: Any, device: Any) -> Any:
    return device if device is not None else next(model.parameters()).device


@torch.inference_mode()
def evaluate_on_dataset(
    model: Any, data_loader: Any, truncate: int = 100, device: Any = None
) -> float:
    """Mean loss over the first ``truncate + 1`` batches of a loader of ``{"tokens": ...}``.

    Args:
        model: The model.
        data_loader: Yields ``{"tokens": [batch, pos]}``.
        truncate: Stop after this many batches (plus one, as TransformerLens counts).
        device: Where to run (default: the model's device).

    Returns:
        The mean of the per-batch losses.
    """
    device = _model_device(model, device)
    warn_if_mps(device)
    running_loss, total = 0.0, 0
    for batch in tqdm(data_loader, desc="evaluating"):
        running_loss += model(batch["tokens"].to(device), return_type="loss").mean().item()
        total += 1
        if total > truncate:
            break
    return running_loss / total


@torch.inference_mode()
def induction_loss(
    model: Any,
    tokenizer: Any = None,
    batch_size: int = 4,
    subseq_len: int = 384,
    prepend_bos: bool | None = None,
    device: Any = None,
) -> torch.Tensor:
    """Loss on the second copy of random token sequences repeated twice.

    A model with induction heads predicts the repeat, so this is far below its loss on the first
    copy. Tokens are drawn uniformly from ids 100-19999 (TransformerLens's range, clipped to the
    vocabulary) from torch's global generator; with ``prepend_bos`` (default
    ``model.cfg.default_prepend_bos``) the first token is replaced by BOS.

    Args:
        model: The model.
        tokenizer: Gives BOS (default: ``model.tokenizer``).
        batch_size: Sequences.
        subseq_len: Length of the random sequence (the input is twice as long).
        prepend_bos: Override the model's default.
        device: Where to run (default: the model's device).

    Returns:
        The mean loss over positions ``subseq_len + 1`` onwards (the repeat).
    """
    device = _model_device(model, device)
    warn_if_mps(device)
    high = min(20000, model.cfg.d_vocab)
    low = min(100, high // 2)
    first_half = torch.randint(low, high, (batch_size, subseq_len)).to(device)
    repeated = einops.repeat(first_half, "b p -> b (2 p)")
    if override_or_use_default_value(model.cfg.default_prepend_bos, override=prepend_bos):
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        repeated[:, 0] = tokenizer.bos_token_id
    logits = model(repeated, return_type="logits")
    per_token = lm_cross_entropy_loss(logits, repeated, per_token=True)
    return per_token[:, subseq_len + 1 :].mean()


@torch.inference_mode()
def evaluate(
    model: Any,
    truncate: int = 100,
    batch_size: int = 8,
    tokenizer: Any = None,
    *,
    datasets: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Loss on Wikitext, OpenWebText, the Pile and code (``{name}_loss`` per corpus).

    Args:
        model: The model.
        truncate: Batches per corpus (see :func:`evaluate_on_dataset`).
        batch_size: Sequences per batch.
        tokenizer: Default ``model.tokenizer``.
        datasets: Corpus name (``wiki``, ``owt``, ``pile``, ``code``) → local texts; the corpora
            named here are used instead of downloads, and only they are evaluated.

    Returns:
        ``{"wiki_loss": ..., ...}``.
    """
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    losses = {}
    for name, make_loader in zip(DATASET_NAMES, DATASET_LOADERS):
        if datasets is not None and name not in datasets:
            continue
        local = datasets[name] if datasets is not None else None
        loader = make_loader(tokenizer=tokenizer, batch_size=batch_size, dataset=local)
        loss = evaluate_on_dataset(model, loader, truncate=truncate)
        print(f"{name}: {loss}")
        losses[f"{name}_loss"] = loss
    return losses


class IOIDataset(Dataset[dict[str, torch.Tensor]]):
    """Indirect object identification prompts (Wang et al. 2022, arXiv 2211.00593).

    Each sample fills a template such as "[A] and [B] went to the [LOCATION] ... [B] gave the
    [OBJECT] to" with two names; the indirect object (``IO``, the answer) is [A], the subject
    (``S``) is [B]. As in TransformerLens, :meth:`get_sample` reseeds Python's ``random`` with 42
    each time, so every sample of one dataset uses the same template, nouns and names (with
    ``symmetric`` the names also appear swapped).

    Args:
        tokenizer: Encodes prompts and answers (``tokenizer.encode``).
        templates: Templates with ``[A]``, ``[B]`` and noun slots.
        names: Names to draw A and B from.
        nouns: Slot name → fillers.
        num_samples: Number of samples.
        symmetric: Add each prompt with A and B swapped.
        prepend_bos: Put BOS in front of each prompt.
    """

    def __init__(
        self,
        tokenizer: Any,
        templates: list[str] | None = None,
        names: list[str] | None = None,
        nouns: dict[str, list[str]] | None = None,
        num_samples: int = 1000,
        symmetric: bool = False,
        prepend_bos: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.prepend_bos = prepend_bos
        self.templates = templates if templates is not None else self.get_default_templates()
        self.names = names if names is not None else self.get_default_names()
        self.nouns = nouns if nouns is not None else self.get_default_nouns()
        self.samples: list[dict[str, str]] = []
        for _ in range(num_samples // 2 if symmetric else num_samples):
            self.samples.extend(self.get_sample(symmetric=symmetric))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        sample = self.samples[idx]
        prompt = self.tokenizer.encode(sample["text"])
        if self.prepend_bos:
            prompt = [self.tokenizer.bos_token_id] + prompt
        return {
            "prompt": torch.LongTensor(prompt),
            "IO": torch.LongTensor(self.tokenizer.encode(sample["IO"])),
            "S": torch.LongTensor(self.tokenizer.encode(sample["S"])),
        }

    def get_sample(self, symmetric: bool = False) -> list[dict[str, str]]:
        """One filled template (two with ``symmetric``): ``{"text", "IO", "S"}``, names spaced.

        Args:
            symmetric: Also return the prompt with the names swapped.

        Returns:
            The samples; ``text`` ends before the answer, ``IO``/``S`` start with a space.
        """
        random.seed(42)
        template: str = random.choice(self.templates)
        for noun_type, noun_list in self.nouns.items():
            template = template.replace(f"[{noun_type}]", random.choice(noun_list))
        names = random.sample(self.names, 2)
        sample = template.replace("[A]", names[0]).replace("[B]", names[1])
        samples = [{"text": sample, "IO": " " + names[0], "S": " " + names[1]}]
        if symmetric:
            swapped = template.replace("[A]", names[1]).replace("[B]", names[0])
            samples.append({"text": swapped, "IO": " " + names[1], "S": " " + names[0]})
        return samples

    @staticmethod
    def get_default_names() -> list[str]:
        """TransformerLens's default names."""
        return ["John", "Mary"]

    @staticmethod
    def get_default_templates() -> list[str]:
        """TransformerLens's default templates (the answer [A] ends each one)."""
        return [
            "[A] and [B] went to the [LOCATION] to buy [OBJECT]. [B] handed the [OBJECT] to [A]",
            "Then, [B] and [A] went to the [LOCATION]. [B] gave the [OBJECT] to [A]",
        ]

    @staticmethod
    def get_default_nouns() -> dict[str, list[str]]:
        """TransformerLens's default fillers per slot."""
        return {"LOCATION": ["store", "market"], "OBJECT": ["milk", "eggs", "bread"]}


@torch.inference_mode()
def ioi_eval(
    model: Any,
    dataset: Any = None,
    batch_size: int = 8,
    num_samples: int = 1000,
    tokenizer: Any = None,
    symmetric: bool = False,
) -> dict[str, float]:
    """Logit difference (IO minus S) and accuracy on indirect object identification.

    Prompts are right-padded with id 0 and run without an attention mask (as TransformerLens; with
    causal attention the padding never reaches the scored position). The score is taken at the
    first token where the IO and S answers differ.

    Args:
        model: The model.
        dataset: Yields ``{"prompt", "IO", "S"}`` token tensors (default: an :class:`IOIDataset`).
        batch_size: Prompts per forward pass.
        num_samples: Size of the default dataset.
        tokenizer: Default ``model.tokenizer``.
        symmetric: For the default dataset.

    Returns:
        ``{"Logit Difference": mean, "Accuracy": fraction with a positive difference}``.
    """
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    if dataset is None:
        dataset = IOIDataset(tokenizer, num_samples=num_samples, symmetric=symmetric)

    def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        prompts = [s["prompt"] for s in samples]
        return {
            "prompt": torch.nn.utils.rnn.pad_sequence(prompts, batch_first=True),
            "IO": [s["IO"] for s in samples],
            "S": [s["S"] for s in samples],
            "prompt_length": [p.shape[0] for p in prompts],
        }

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate)
    total_correct, total_logit_diff = 0, 0.0
    for batch in tqdm(loader, desc="IOI"):
        batch_logits = model(batch["prompt"], return_type="logits")
        for i in range(batch_logits.shape[0]):
            io, s = batch["IO"][i], batch["S"][i]
            prefix_length = batch["prompt_length"][i] - io.shape[0]
            min_len = min(io.shape[0], s.shape[0])
            io, s = io[:min_len], s[:min_len]
            start_idx = torch.where(io != s)[0][0]
            logits = batch_logits[i, prefix_length + start_idx - 1]
            logit_diff = logits[io[start_idx]] - logits[s[start_idx]]
            total_correct += int((logit_diff > 0).item())
            total_logit_diff += logit_diff.item()
    return {
        "Logit Difference": total_logit_diff / len(dataset),
        "Accuracy": total_correct / len(dataset),
    }


@torch.inference_mode()
def mmlu_eval(
    model: Any,
    tokenizer: Any = None,
    subjects: str | list[str] | None = None,
    split: str = "test",
    num_samples: int | None = None,
    *,
    dataset: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Zero-shot MMLU: compare the log-probabilities of the letters A-D after the question.

    The prompt lists the question and its four choices and ends with ``Answer:``; the prediction
    is the letter (`` A`` if that is one token, else ``A``) with the highest log-probability.

    Args:
        model: The model.
        tokenizer: Default ``model.tokenizer``.
        subjects: See :func:`make_mmlu_data_loader`.
        split: See :func:`make_mmlu_data_loader`.
        num_samples: Questions per subject.
        dataset: Local rows per subject (see :func:`make_mmlu_data_loader`).

    Returns:
        ``{"accuracy", "num_correct", "num_total", "subject_scores"}``.

    Raises:
        ValueError: If no question loaded.
    """
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    data = make_mmlu_data_loader(subjects, split, num_samples, dataset=dataset)
    if not data:
        raise ValueError("No MMLU data loaded. Check your subjects parameter.")
    letter_ids = []
    for letter in MMLU_ANSWER_LETTERS:
        ids = tokenizer.encode(" " + letter, add_special_tokens=False)
        if len(ids) != 1:
            ids = tokenizer.encode(letter, add_special_tokens=False)
        letter_ids.append(ids[0])
    device = _model_device(model, None)
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    for example in tqdm(data, desc="Evaluating MMLU"):
        subject = example["subject"]
        prompt = f"Question: {example['question']}\nChoices:\n"
        for idx, choice in enumerate(example["choices"]):
            prompt += f"{chr(65 + idx)}. {choice}\n"
        prompt += "Answer:"
        tokens = tokenizer.encode(prompt, return_tensors="pt").to(device)
        log_probs = torch.log_softmax(model(tokens, return_type="logits")[0, -1], dim=-1)
        predicted = int(torch.stack([log_probs[i] for i in letter_ids]).argmax().item())
        correct[subject] = correct.get(subject, 0) + int(predicted == example["answer"])
        total[subject] = total.get(subject, 0) + 1
    num_correct, num_total = sum(correct.values()), sum(total.values())
    return {
        "accuracy": num_correct / num_total,
        "num_correct": num_correct,
        "num_total": num_total,
        "subject_scores": {s: correct[s] / total[s] for s in total},
    }
