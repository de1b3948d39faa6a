"""TransformerLens's zero-shot MMLU evaluation (``make_mmlu_data_loader``, ``mmlu_eval``).

Re-exported by :mod:`tlcore.evals`, where TransformerLens has them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

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
    device = next(model.parameters()).device
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
