"""The record schema of DESIGN.md as `datasets.Features`.

Every stage declares its output columns with these, so every row (failed ones included) has
the same typed schema. Timed text is a list of structs inside the pipeline; exporters convert
to the published shapes.
"""

from __future__ import annotations

from datasets import Features, List, Value

ERRORS = List({"stage": Value("string"), "error": Value("string")})

SEGMENTS = List({"start": Value("float64"), "end": Value("float64"), "text": Value("string")})

WORDS = List(
    {
        "start": Value("float64"),
        "end": Value("float64"),
        "word": Value("string"),
        "probability": Value("float64"),
    }
)

#: Columns written by ingest (one row per source video).
VIDEO = Features(
    {
        "video_id": Value("string"),
        "video": Value("string"),
        "source": Value("string"),
        "title": Value("string"),
        "category": Value("string"),
        #: the spoken language when the input knows it (a manifest column, download metadata);
        #: ASR uses it instead of detecting, then writes the language it decoded
        "language": Value("string"),
        "errors": ERRORS,
    }
)

#: Columns written by the probe stage.
PROBE = Features(
    {
        "duration": Value("float64"),
        "fps": Value("float64"),
        "width": Value("int32"),
        "height": Value("int32"),
        "has_audio": Value("bool"),
    }
)

#: ASR quality (processors/asr.py): ``asr_score`` 1.0 clean .. 0.0 likely hallucination or
#: empty, ``asr_flags`` the reasons, ``asr_stats`` the numbers behind them.
ASR_QUALITY = Features(
    {
        "asr_score": Value("float64"),
        "asr_flags": List(Value("string")),
        "asr_stats": {
            "avg_logprob": Value("float64"),
            "compression_ratio": Value("float64"),
            "no_speech_prob": Value("float64"),
            "repetition": Value("int32"),
            "speech_seconds": Value("float64"),
        },
    }
)

#: Columns written by ASR (processors/asr.py).
ASR = Features(
    {
        "language": Value("string"),
        "language_probability": Value("float64"),
        "segments": SEGMENTS,
        "words": WORDS,
        **ASR_QUALITY,
    }
)

#: Columns written by language detection (processors/language.py, default column names):
#: the detected language, its score, and the score of the language a filter keeps.
LANGUAGE = Features(
    {
        "language": Value("string"),
        "language_probability": Value("float64"),
        "language_match": Value("float64"),
    }
)

#: Prompt provenance of LLM stages: which prompt (name, version, sha of its text) made a row.
PROMPTS = List({"name": Value("string"), "version": Value("string"), "sha": Value("string")})

#: The temporal view (processors/compress.py): one subtitle line picked by the LLM, its text and
#: window copied from the segments; conclusion/question/answer/wrong written by the LLM.
TEMPORAL = {
    "index": Value("int32"),
    "subtitle": Value("string"),
    "start": Value("float64"),
    "end": Value("float64"),
    "conclusion": Value("string"),
    "question": Value("string"),
    "answer": Value("string"),
    "wrong": List(Value("string")),
}

#: How items were made, per stage (a stage replaces its own entries, keeps the others'):
#: ``compress`` grounding_rounds, ``translate`` chunk / half / line (the level that translated
#: each part), ``qa`` answer_longest_before / answer_longest_after / distractors_rewritten.
GENERATION = List({"stage": Value("string"), "event": Value("string"), "count": Value("int64")})

#: Columns written by information compression (processors/compress.py).
COMPRESS = Features({"summary": Value("string"), "temporal": TEMPORAL, "prompts": PROMPTS})

#: One QA item in the published LoMo shape: options "A: ..".."D: ..", answer a letter, window
#: [start, end] for window tasks (else []), descriptions (VTG).
QUESTION = {
    "question_id": Value("string"),
    "task": Value("string"),
    "question": Value("string"),
    "options": List(Value("string")),
    "answer": Value("string"),
    "window": List(Value("float64")),
    "descriptions": Value("string"),
}
QUESTIONS = List(QUESTION)

#: Columns written by QA generation (processors/qa.py).
QA = Features({"questions": QUESTIONS, "prompts": PROMPTS})

#: Columns written by quality control (processors/aggregate.py).
QC = Features(
    {
        "questions": QUESTIONS,
        "resolution": Value("string"),
        "duration_bucket": Value("string"),
        "qc_pass": Value("float64"),
        "qc_reason": Value("string"),
    }
)

#: Columns written by the download stage (processors/download.py): the local file and the
#: platform's metadata (``duration`` as the platform reports it; probe measures it again).
DOWNLOAD = Features(
    {
        "video": Value("string"),
        "title": Value("string"),
        "category": Value("string"),
        "uploader": Value("string"),
        "duration": Value("float64"),
        "language": Value("string"),
    }
)

#: A clip's timed words (processors/clip.py); exporters turn them into [start, end, word].
CONTENT = List({"start": Value("float64"), "end": Value("float64"), "word": Value("string")})

#: Columns of a clip row (one row per clip after clipping, processors/clip.py). ``previous``
#: (pre-training) or ``preasr`` (SFT) is the transcript before the clip; ``words`` and
#: ``segments`` are rewritten to the clip's own.
CLIP = Features(
    {
        "clip_id": Value("string"),
        "clip_index": Value("int32"),
        "content": CONTENT,
        "previous": Value("string"),
        "preasr": Value("string"),
        "video_start": Value("float64"),
        "video_end": Value("float64"),
        "wps": Value("float64"),
    }
)

#: LiveCC scores and prompt (processors/lm_loss.py, talking_head.py, commentary.py).
LIVECC = Features(
    {
        "lm_loss": Value("float64"),
        "talking_head": Value("float64"),
        "face_share": Value("float64"),
        "speech_share": Value("float64"),
        "commentary": Value("bool"),
        "query": Value("string"),
    }
)


def empty_value(feature):
    """The value a failed row gets for ``feature``: ``[]`` for lists, ``None`` otherwise."""
    if isinstance(feature, List) or isinstance(feature, list):
        return []
    return None


def merge(*parts: Features | dict) -> Features:
    """Union of feature dicts; later parts win (a stage may retype a column it rewrites)."""
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return Features(merged)


#: A circular evaluation's picks per multiple-choice item: ``answer`` the letter (the item's own)
#: that won every rotation of the options ("" when none did), ``rotations`` the letter each
#: rotation picked ("" for no valid reply). The audit's blind step writes ``blind_answers``
#: (question and options alone), its verify step ``verified_answers`` (with the evidence the item
#: was made from); the QA audit (lomo_datasets/audit/checks.py) scores both.
BLIND_ANSWERS = List({"question_id": Value("string"), "answer": Value("string"), "rotations": List(Value("string"))})
VERIFIED_ANSWERS = BLIND_ANSWERS

#: The QA audit's flags of a row's items: one entry per failed check (reason codes in
#: ``lomo_datasets.audit.checks.REASONS``). Flagged items stay in ``questions``.
AUDIT_FLAGS = List({"question_id": Value("string"), "reason": Value("string"), "detail": Value("string")})
