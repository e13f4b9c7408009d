"""Device choice per model library: a CPU-only torch beside a CUDA CTranslate2 (a common pip
install on a GPU machine) must still put CTranslate2 models on the GPUs, and torch models on
the CPU."""

from __future__ import annotations

import sys
import types

import pytest

from lomo_datasets.core import stage as S
from lomo_datasets.llm.stage import LLMStage
from lomo_datasets.processors.asr import Transcribe
from lomo_datasets.processors.lm_loss import LMLoss


@pytest.fixture
def cpu_torch_cuda_ct2(monkeypatch):
    """torch sees no GPU, CTranslate2 sees two (the machine, not the code under test)."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    fake = types.ModuleType("ctranslate2")
    fake.get_cuda_device_count = lambda: 2
    monkeypatch.setitem(sys.modules, "ctranslate2", fake)
    monkeypatch.setattr(S.importlib.util, "find_spec", lambda name, *a: object())


def test_counts_are_per_library(cpu_torch_cuda_ct2):
    assert S.cuda_device_count("torch") == 0
    assert S.cuda_device_count("ctranslate2") == 2
    assert S.cuda_device_count() == 2


def test_each_stage_gets_its_librarys_gpus(cpu_torch_cuda_ct2):
    assert S.resolve_device(1, None, "ctranslate2") == "cuda:1"
    assert S.resolve_device(3, None, "ctranslate2") == "cuda:1"
    assert S.resolve_device(1, None, "torch") == "cpu"
    assert S.resolve_device(1, "cpu", "ctranslate2") == "cpu"  # an explicit device wins
    assert Transcribe(model="embedded:whisper-tiny.en").model_library() == "ctranslate2"
    assert LMLoss(model="embedded:smollm2-135m").model_library() == "torch"


def test_llm_stages_follow_their_backend():
    from lomo_datasets.processors.qa import GenerateQA

    assert issubclass(GenerateQA, LLMStage)
    assert GenerateQA(backend="ctranslate2").model_library() == "ctranslate2"
    assert GenerateQA(backend="transformers").model_library() == "torch"
    assert GenerateQA(backend="openai", base_url="http://127.0.0.1:1/v1", model="m").model_library() is None


def test_stages_whose_model_is_not_on_this_machine_hold_no_gpu():
    """A Ray actor asks for a GPU for a model stage whose device is not cpu: a language detector
    on the CPU and an LLM behind a server must not take one."""
    from lomo_datasets.processors.commentary import MakePrompt
    from lomo_datasets.processors.language import DetectLanguage

    assert DetectLanguage().device == "cpu" and DetectLanguage(backend="transformers").device == "auto"
    remote = MakePrompt(backend="openai", base_url="http://127.0.0.1:9/v1", model="served")
    assert remote.model_is_remote and remote.device == "cpu"
    assert MakePrompt(model="embedded:smollm2-135m").device == "auto"
