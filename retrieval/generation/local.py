"""Answers from a causal language model on this machine, through transformers.

The model loads from a local directory (Hugging Face layout, or a GGUF file in it that
transformers dequantises, which needs the ``gguf`` and ``accelerate`` packages); nothing is
downloaded. It loads once, on first use or :meth:`LocalBackend.warm_up`, and answers one
question at a time: a lock is held for each generation, as a model's forward pass gains nothing
from concurrent callers on a CPU. Decoding is greedy unless a request asks for a temperature.

transformers and torch are imported on first load (about 6 s), not with this module.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from retrieval.errors import GenerationUnavailableError
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    Delta,
    GenerationOptions,
    Passage,
    StreamEvent,
)
from retrieval.generation.extractive import ABSTAIN_TEXT, DEFAULT_MIN_SCORE, abstain
from retrieval.generation.prompt import (
    AnswerParser,
    Prompt,
    grounded_prompt,
    parse_answer,
)


class LocalBackend:
    """A :class:`~retrieval.generation.base.GenerationBackend` running a local model.

    Args:
        model_path: The model's directory.
        gguf_file: A GGUF file in that directory to load instead of its safetensors.
        max_new_tokens: The most tokens an answer may take.
        context_window: Prompt and answer together, in ``cl100k_base`` tokens; keep it below
            the model's own window by the margin its tokenizer needs (SmolLM2's: about 14 %).
            On a CPU the prompt's length is the cost: ~3 s per 1,000 tokens for SmolLM2-135M.
        min_score: With no passage scoring this much, abstain without running the model; None
            when the evidence gate (retrieval.generation.evidence) has already decided.
        device: Where the model runs (``cpu``, ``cuda``, ``cuda:1``).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        gguf_file: str | None = None,
        max_new_tokens: int = 256,
        context_window: int = 2048,
        min_score: float | None = DEFAULT_MIN_SCORE,
        device: str = "cpu",
    ) -> None:
        if max_new_tokens < 1 or context_window <= max_new_tokens:
            raise ValueError(
                f"need 0 < max_new_tokens < context_window, got {max_new_tokens} "
                f"and {context_window}"
            )
        self._path = Path(model_path)
        self._gguf_file = gguf_file
        self._max_new_tokens = max_new_tokens
        self._context_window = context_window
        self._min_score = min_score
        self._device = device
        self._lock = threading.Lock()
        # Any: transformers' auto classes resolve to a concrete model and tokenizer at run time.
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def name(self) -> str:
        """``local:<gguf file>``, or ``local:<directory name>`` for a safetensors model."""
        return f"local:{self._gguf_file or self._path.name}"

    def warm_up(self) -> None:
        """Load the model now rather than on the first question.

        Raises:
            GenerationUnavailableError: the model could not be loaded.
        """
        with self._lock:
            self._load()

    def generate(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Answer:
        """Answer from the best passages that fit the context, citing them, or abstain.

        Abstains without running the model when no passage reaches ``min_score``, or none fits.
        Waits while another question is being answered. ``options.max_tokens`` lowers
        ``max_new_tokens``; a positive ``options.temperature`` samples at that temperature.

        Raises:
            GenerationUnavailableError: the model could not be loaded or failed to run.
        """
        prompt = self._prompt(question, passages)
        if prompt is None:
            return abstain()
        with self._lock:
            self._load()
            inputs = self._encode(prompt)
            try:
                output = self._model.generate(**inputs, **self._decoding(options))
            except (RuntimeError, ValueError) as exc:
                raise self._unavailable("failed to generate", exc) from exc
            prompt_tokens = int(inputs["input_ids"].shape[1])
            generated = output[0, prompt_tokens:]
            text = self._tokenizer.decode(generated, skip_special_tokens=True)
        return parse_answer(
            text,
            prompt.passages,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(generated),
        )

    def stream(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[StreamEvent]:
        """:meth:`generate`, piece by piece: the model runs in a thread, feeding a streamer.

        A caller that stops early stops the model at its next token.

        Raises:
            GenerationUnavailableError: as :meth:`generate`, before the first delta or between
                two.
        """
        prompt = self._prompt(question, passages)
        if prompt is None:
            yield Delta(ABSTAIN_TEXT)
            yield abstain()
            return
        run = _StreamedRun(self, prompt, options)
        parser = AnswerParser(prompt.passages)
        try:
            for piece in run.pieces():
                if shown := parser.feed(piece):
                    yield Delta(shown)
        finally:
            run.stop()
        rest, answer = parser.finish(
            prompt_tokens=run.prompt_tokens, completion_tokens=run.completion_tokens
        )
        if rest:
            yield Delta(rest)
        yield answer

    def _prompt(self, question: str, passages: Sequence[Passage]) -> Prompt | None:
        return grounded_prompt(
            question,
            passages,
            min_score=self._min_score,
            context_window=self._context_window,
            max_output_tokens=self._max_new_tokens,
        )

    def _load(self) -> None:
        """Load tokenizer and model once; the caller holds the lock."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(
                self._path, gguf_file=self._gguf_file, local_files_only=True
            )
            # float32: a GGUF is dequantised anyway, and half precision is slow on a CPU.
            model = AutoModelForCausalLM.from_pretrained(
                self._path,
                gguf_file=self._gguf_file,
                dtype=torch.float32,
                local_files_only=True,
            )
        except (OSError, ValueError, ImportError) as exc:
            raise self._unavailable(f"cannot load {self._path}", exc) from exc
        self._tokenizer = tokenizer
        loaded: Any = model  # Any: mypy misreads the decorator on PreTrainedModel.to
        self._model = loaded.to(self._device).eval()

    def _encode(self, prompt: Prompt) -> dict[str, Any]:
        # Any: tensors, as the model's generate takes them.
        encoded = self._tokenizer.apply_chat_template(
            prompt.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return {key: value.to(self._device) for key, value in encoded.items()}

    def _decoding(self, options: GenerationOptions) -> dict[str, Any]:
        # Greedy unless the request asks for a positive temperature, then plain temperature
        # sampling (OpenAI's, with top_p 1). Sampling settings a model's generation_config may
        # carry are cleared: greedy decoding would warn that it ignores them, and the request's
        # temperature alone should shape a sample.
        sample = bool(options.temperature)
        return {
            "max_new_tokens": options.cap(self._max_new_tokens),
            "do_sample": sample,
            "temperature": options.temperature if sample else None,
            "top_p": None,
            "top_k": None,
            "pad_token_id": self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        }

    def _unavailable(self, what: str, exc: BaseException) -> GenerationUnavailableError:
        return GenerationUnavailableError(
            f"{self.name} {what}: {type(exc).__name__}: {exc}", backend=self.name
        )


class _StreamedRun:
    """One generation in a thread, read through transformers' ``TextIteratorStreamer``."""

    def __init__(self, backend: LocalBackend, prompt: Prompt, options: GenerationOptions) -> None:
        self._backend = backend
        self._prompt = prompt
        self._options = options
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._streamer: Any = None  # a TextIteratorStreamer, created once the model is loaded
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def pieces(self) -> Iterator[str]:
        """The answer's text as it is generated.

        Raises:
            GenerationUnavailableError: loading or generating failed.
        """
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="local-generation", daemon=True
        )
        self._thread.start()
        started.wait()  # the streamer exists, or the error that prevented it
        if self._streamer is not None:
            yield from self._streamer
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop the model at its next token (when the caller stops early) and wait for it."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self, started: threading.Event) -> None:
        backend = self._backend
        try:
            # The lock is held by this thread for the whole generation; the reader waits on
            # the streamer, so a second question queues here.
            with backend._lock:
                try:
                    backend._load()
                    from transformers import StoppingCriteriaList, TextIteratorStreamer

                    inputs = backend._encode(self._prompt)
                    self._streamer = TextIteratorStreamer(
                        backend._tokenizer, skip_prompt=True, skip_special_tokens=True
                    )
                finally:
                    started.set()
                self.prompt_tokens = int(inputs["input_ids"].shape[1])
                try:
                    output = backend._model.generate(
                        **inputs,
                        **backend._decoding(self._options),
                        streamer=self._streamer,
                        stopping_criteria=StoppingCriteriaList([_stop_on(self._stopped)]),
                    )
                except (RuntimeError, ValueError) as exc:
                    raise backend._unavailable("failed to generate", exc) from exc
                self.completion_tokens = int(output.shape[1]) - self.prompt_tokens
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._error = exc
            if self._streamer is not None:
                self._streamer.end()  # the reader waits on the streamer: wake it


def _stop_on(event: threading.Event) -> Any:
    """A transformers ``StoppingCriteria`` that ends generation once ``event`` is set."""
    import torch
    from transformers import StoppingCriteria

    class _StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return _StopOnEvent()
