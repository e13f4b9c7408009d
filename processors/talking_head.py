"""Talking-head scores (LiveCC A3 and B5): clips where a person faces the camera and talks
make poor commentary data, so they are scored and filtered out.

Two scorers, both writing ``talking_head`` (higher = more talking head); a ``Filter`` with
``high=threshold`` keeps the rows below it:

- ``TalkingHeadVLM`` (A3): ``num_frames`` evenly spaced low-resolution frames (8 at 320x180 by
  default) and the seed's question go to a Qwen2-VL-style model through transformers; the score
  is the probability of "Yes" at the first generated position. The "Yes" token id is looked up
  from the model's tokenizer. Inputs are built without ``Qwen2VLProcessor`` (it needs torchvision
  in transformers 5.x): the image processor gives pixel values and grids, the tokenizer's chat
  template gives the prompt, each image placeholder is expanded to the image's token count
  (``grid_thw.prod() // merge_size**2``) and ``mm_token_type_ids`` marks the image tokens. The
  same code serves a tiny random test model and Qwen2-VL-2B-Instruct.
- ``TalkingHeadFace`` (a lighter stand-in for B5's active-speaker detection): the share of
  sampled frames that show a large frontal face (OpenCV Haar cascade), optionally multiplied by
  the share of the clip covered by speech (the ASR words).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Features

from lomo_datasets.core import features as F
from lomo_datasets.media import decode as media
from lomo_datasets.models.zoo import is_embedded, resolve_model
from lomo_datasets.core.bounds import setting
from lomo_datasets.core.stage import SettingError, Stage, torch_dtype

logger = logging.getLogger(__name__)

QUESTION = (
    "Here are {n} evenly sampled frames from a YouTube video. "
    "Are there someone always showing their faces and talking? Answer Yes or No."
)
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"


def clip_range(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """The time range a row covers: the clip's ``video_start``/``video_end`` when set."""
    start, end = row.get("video_start"), row.get("video_end")
    if start is not None and end is not None and end > start:
        return float(start), float(end)
    return None, None


# --------------------------------------------------------------------------------------------
# Vision-language yes/no
# --------------------------------------------------------------------------------------------


@dataclass
class VisionModel:
    model: Any
    tokenizer: Any
    image_processor: Any
    yes_id: int
    image_token_id: int
    merge_size: int


def load_vision_model(name: str, device: str, dtype: str = "auto") -> VisionModel:
    """A Qwen2-VL-style model, its tokenizer and image processor from a hub id or folder."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLImageProcessorPil

    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype(device, dtype))
    model.to(device)
    model.eval()
    yes = tokenizer.encode("Yes", add_special_tokens=False)
    if not yes:
        raise SettingError(f"talking_head.model={name!r}: its tokenizer has no token for 'Yes'")
    if len(yes) > 1:
        logger.warning("'Yes' is %d tokens for %s; scoring its first token", len(yes), name)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise SettingError(f"talking_head.model={name!r}: its tokenizer has no {IMAGE_PAD} token (not a Qwen2-VL model?)")
    return VisionModel(model, tokenizer, image_processor, yes[0], image_token_id, int(image_processor.merge_size))


def build_inputs(vm: VisionModel, frames_per_row: list[list[np.ndarray]], question: str) -> dict[str, Any]:
    """Model inputs for a batch of rows, each a list of RGB frames (H x W x 3 uint8)."""
    import torch
    from PIL import Image

    texts, images = [], []
    for frames in frames_per_row:
        placeholders = (VISION_START + IMAGE_PAD + VISION_END) * len(frames)
        messages = [{"role": "user", "content": placeholders + question.format(n=len(frames))}]
        texts.append(vm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        images.extend(Image.fromarray(f) for f in frames)
    vision = vm.image_processor(images=images, return_tensors="pt")
    grid = vision["image_grid_thw"]
    counts = (grid.prod(dim=-1) // (vm.merge_size**2)).tolist()
    expanded, k = [], 0
    for text in texts:
        pieces = text.split(IMAGE_PAD)
        out = pieces[0]
        for piece in pieces[1:]:
            out += IMAGE_PAD * int(counts[k]) + piece
            k += 1
        expanded.append(out)
    if k != len(counts):
        raise ValueError(f"{k} image placeholders for {len(counts)} images")
    encoded = vm.tokenizer(expanded, padding=True, return_tensors="pt", add_special_tokens=False)
    mm_types = (encoded["input_ids"] == vm.image_token_id).to(torch.int32)
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "mm_token_type_ids": mm_types,
        "pixel_values": vision["pixel_values"],
        "image_grid_thw": grid,
    }


def yes_probabilities(vm: VisionModel, frames_per_row: list[list[np.ndarray]], question: str = QUESTION) -> list[float]:
    """P("Yes") at the first generated position, one per row (left padding: the last
    position of every row is its next token)."""
    import torch

    inputs = build_inputs(vm, frames_per_row, question)
    device = next(vm.model.parameters()).device
    dtype = next(vm.model.parameters()).dtype
    inputs = {k: v.to(device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    with torch.inference_mode():
        logits = vm.model(**inputs).logits[:, -1].float()
    return logits.softmax(dim=-1)[:, vm.yes_id].tolist()


# --------------------------------------------------------------------------------------------
# Face-based score
# --------------------------------------------------------------------------------------------

_CASCADES: dict[str, Any] = {}


def face_cascade(name: str = "haarcascade_frontalface_default.xml"):
    """An OpenCV Haar cascade from the files that ship with opencv-python (cv2.data)."""
    import cv2

    if name not in _CASCADES:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        if cascade.empty():
            raise SettingError(f"OpenCV cannot load the Haar cascade {name!r} from {cv2.data.haarcascades}")
        _CASCADES[name] = cascade
    return _CASCADES[name]


def has_large_face(frame: np.ndarray, min_face_ratio: float, cascade=None, max_width: int = 640) -> bool:
    """Whether ``frame`` (RGB) shows a frontal face at least ``min_face_ratio`` of its height."""
    import cv2

    cascade = cascade or face_cascade()
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if gray.shape[1] > max_width:  # detection cost grows with pixels; faces we want are large
        scale = max_width / gray.shape[1]
        gray = cv2.resize(gray, (max_width, max(1, int(round(gray.shape[0] * scale)))), interpolation=cv2.INTER_AREA)
    side = max(16, int(min_face_ratio * gray.shape[0]))
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    return len(faces) > 0


def speech_share(words: list[dict[str, Any]] | None, start: float, end: float) -> float:
    """Share of ``[start, end]`` covered by words (overlaps merged)."""
    if end <= start or not words:
        return 0.0
    spans = sorted((max(start, w["start"]), min(end, w["end"])) for w in words if w["end"] > start and w["start"] < end)
    covered, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                covered += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        covered += cur_e - cur_s
    return min(1.0, covered / (end - start))


# --------------------------------------------------------------------------------------------
# The stage: one dataclass, the method a setting
# --------------------------------------------------------------------------------------------

_COMMON = ("device", "method", "num_frames")
_OWN = {
    "vlm": ("model", "width", "height", "batch_size", "question", "dtype", "cpu_threads"),
    "face": ("min_face_ratio", "use_speech"),
}


@dataclass
class TalkingHead(Stage):
    """Writes ``talking_head`` by ``method``: ``"vlm"`` = P("Yes") of a vision-language model
    asked whether someone is always showing their face and talking (the seed: Qwen2-VL-2B-Instruct,
    8 frames at low resolution); ``"face"`` = the share of ``num_frames`` frames with a face at
    least ``min_face_ratio`` of the frame height (``face_share``), times the share of the clip
    covered by ASR words (``speech_share``, ``None`` without words) when ``use_speech``.

    No vision-language model ships in a package, so ``--embedded`` selects ``face``.
    ``method`` picks the class that runs, through the contract's variant registry:
    ``TalkingHead.create(method="face")`` (what recipes call) is a ``TalkingHeadFace``, ``"vlm"``
    a ``TalkingHeadVLM``: the same settings, with that method's default; each lists only its
    method's settings.
    A setting of the other method (a recipe default such as ``use_speech``) is ignored.
    """

    name = "talking_head"
    version = "1"
    variant_setting = "method"  # "vlm": TalkingHeadVLM, "face": TalkingHeadFace (registered below)
    reads = ("video",)  # and video_start, video_end, words, content, duration when present
    start_method = "spawn"
    rows_per_batch = 8
    embedded_setting = "method"
    embedded_model = "face"

    method: str = "vlm"
    num_frames: int = 8
    #: vlm: hub id or local folder of a Qwen2-VL-style model.
    model: str = "Qwen/Qwen2-VL-2B-Instruct"
    width: int = setting(320, 1, 16_384, "pixels")
    height: int = setting(180, 1, 16_384, "pixels")
    batch_size: int = 8
    question: str = QUESTION
    #: vlm: "auto" (``stage.auto_precision``), "float32", "bfloat16" or "float16".
    dtype: str = "auto"
    #: vlm: torch CPU threads per model call (fixed: the scores depend on it).
    cpu_threads: int = 1
    #: face: smallest face height as a share of the frame height.
    min_face_ratio: float = setting(0.2, 0, 1, "a share of the frame height", low_open=True)
    use_speech: bool = False

    def settings(self) -> dict[str, Any]:
        own = _COMMON + _OWN.get(self.method, ())
        return {k: v for k, v in super().settings().items() if k in own}

    def validate(self) -> None:
        if TalkingHead.variant_class({"method": self.method}) is not type(self):  # an unknown method is refused there
            raise SettingError(
                f"talking_head.method={self.method!r} runs {TalkingHead.variant_class({'method': self.method}).__name__}: "
                f"build it with TalkingHead.create(method={self.method!r}) (recipes do)"
            )
        ignored = sorted(k for k, f in _field_defaults().items() if k not in _COMMON + _OWN[self.method] and getattr(self, k) != f)
        if ignored:  # a recipe default for the other method does not apply
            logger.info("talking_head.method=%s ignores settings %s", self.method, ignored)

    def features(self) -> Features:
        if self.method == "face":
            return Features({k: F.LIVECC[k] for k in ("talking_head", "face_share", "speech_share")})
        return Features({"talking_head": F.LIVECC["talking_head"]})


def _field_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(TalkingHead)}


@TalkingHead.variant("vlm")
@dataclass
class TalkingHeadVLM(TalkingHead):
    """``TalkingHead`` with ``method="vlm"`` (the A3 scorer)."""

    requires = {"torch": "vision", "transformers": "vision", "PIL": "vision"}

    method: str = "vlm"

    def validate(self) -> None:
        super().validate()
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise SettingError(f"talking_head.dtype={self.dtype!r}: use auto, float32, bfloat16 or float16")
        if not isinstance(self.model, str) or not self.model:
            raise SettingError("talking_head.model: give a hub id or a local Qwen2-VL folder")
        if is_embedded(self.model):
            raise SettingError(
                f"talking_head.model={self.model!r}: no vision-language model ships in a package; "
                "use a hub id/folder, or the face-based scorer (talking_head.method=face)"
            )
        if "{n}" not in self.question and "Yes" not in self.question:
            raise SettingError("talking_head.question should ask for a Yes/No answer")

    def model_key(self) -> tuple:
        return (self.model, self.dtype)

    def model_library(self) -> str:
        return "torch"

    def load_model(self, device: str) -> VisionModel:
        return load_vision_model(self.model, device, self.dtype)

    @property
    def vision(self) -> VisionModel:
        return self.loaded_model

    def frames(self, row: dict[str, Any]) -> list[np.ndarray]:
        start, end = clip_range(row)
        return media.sample_frames(row["video"], self.num_frames, (self.width, self.height), start, end)

    def prepare(self, row: dict[str, Any]) -> list[np.ndarray]:
        return self.frames(row)

    def run_batch(self, items: list[list[np.ndarray]]) -> list[float]:
        probs: list[float] = []
        for b in range(0, len(items), self.batch_size):
            probs.extend(yes_probabilities(self.vision, items[b : b + self.batch_size], self.question))
        return probs

    def finish(self, row: dict[str, Any], prob: float) -> dict[str, Any]:
        return {"talking_head": float(prob)}


@TalkingHead.variant("face")
@dataclass
class TalkingHeadFace(TalkingHead):
    """``TalkingHead`` with ``method="face"`` (a lighter stand-in for B5's active-speaker
    detection); rows are scored one by one (no batched model)."""

    requires = {"cv2": "vision"}
    start_method = None

    method: str = "face"

    def validate(self) -> None:
        super().validate()
        face_cascade()  # a broken OpenCV install fails here, not per row

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:
        start, end = clip_range(row)
        frames = media.sample_frames(row["video"], self.num_frames, None, start, end)
        faces = sum(has_large_face(f, self.min_face_ratio) for f in frames)
        face = faces / len(frames)
        words = row.get("content") or row.get("words") or []
        if start is None:
            start, end = 0.0, float(row.get("duration") or media.probe(row["video"], verify=False).duration)
        speech = speech_share(words, start, end) if words else None
        score = face * (speech or 0.0) if self.use_speech else face
        return {"talking_head": score, "face_share": face, "speech_share": speech}



__all__ = [
    "TalkingHead",
    "TalkingHeadVLM",
    "TalkingHeadFace",
    "VisionModel",
    "load_vision_model",
    "build_inputs",
    "yes_probabilities",
    "has_large_face",
    "speech_share",
    "face_cascade",
]
