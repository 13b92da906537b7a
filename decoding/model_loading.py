"""Load a causal LM and its tokenizer for CPU decoding.

A spec names the model: None or "default" and the other names in `decoding.model_registry.REGISTRY` (installed
with `edit model install`), a `.gguf` file, a local Hugging Face folder (with config.json), or a hub id.

A GGUF is de-quantised by transformers on load, which takes a minute or more; so the first load saves
the float weights as a safetensors folder in the cache, keyed by the GGUF's sha256, and later loads
read that folder in seconds. Weights are float32 (CPU); `quantize="float16"` stores every large Linear's
weight (lm_head included) in float16 for fbgemm's product with float32 activations (`cpu_linear.Float16Linear`:
half the bytes a step reads, rounding only the weights); `quantize="int8"` swaps every Linear for a
dynamically quantised one, which is about 3x faster on CPU but changes some greedy picks; `quantize="bfloat16"`
runs the decoder in bfloat16 with a float32 lm_head (`cpu_linear.bfloat16_weights`), and "auto" (what `edit`
loads) is bfloat16 on CPUs with AMX, float16 on other x86 CPUs with AVX2 and F16C (float32 for a single
edit, which would not earn back the packing), float32 elsewhere (`resolve_quantize`).

A LoRA adapter (`edit model train-edit`) is merged into the float weights at load, before any quantization:
the one shipped for a registry model in decoding/adapters/<name>/ by default, another folder on request, or
none (`adapter=False`).
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, get_args

from .adapter import check_folder, merge_adapter, read_card
from .model_registry import REGISTRY, ModelError, converted_dir, file_sha256, gguf_path, is_installed

HEADS_DIR = Path(__file__).parent / "heads"
SHIPPED_HEADS = {"0.5b": "qwen2.5-coder-0.5b-instruct"}  # registry name -> folder under decoding/heads
ADAPTERS_DIR = Path(__file__).parent / "adapters"
SHIPPED_ADAPTERS = {"0.5b": "qwen2.5-coder-0.5b-instruct"}  # registry name -> folder under decoding/adapters
HEADS_FILE = "mtp.safetensors"
DRAFT_VOCAB_FILE = "draft_vocab.safetensors"  # the token ids the shipped heads draft among

Quantize = Literal["auto", "none", "float16", "bfloat16", "int8"]
QUANTIZE_MODES = get_args(Quantize)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_quantize(quantize: str, single_edit: bool = False) -> str:
    """The mode "auto" stands for on this CPU, for a long-lived process or one that makes a `single_edit`
    (`cpu_linear.auto_quantize`); any other mode is itself."""
    from .cpu_linear import auto_quantize

    return auto_quantize(single_edit) if quantize == "auto" else quantize


def load_model(spec: str | None = None, *, quantize: Quantize = "none", threads: int | None = None,
               adapter: bool | str | Path = True):
    """`(model, tokenizer)` for `spec`, in eval mode, float32 (or float16-weight or int8 Linear layers) on CPU,
    with `adapter_folder(spec, adapter)` merged into its weights (True: the shipped one, if any; False: none;
    a folder: that adapter).

    Callers wrap their forward passes in `torch.inference_mode()`.
    """
    import torch

    quantize = checked_quantize(quantize)
    torch.set_num_threads(thread_count(threads))
    folder = adapter_folder(spec, adapter)  # before the load: a bad adapter folder fails at once
    model, tokenizer = load_pretrained(resolve(spec))
    if folder is not None:  # into the float weights, before any quantization rounds them
        merge_adapter(model, folder)
    return quantize_loaded(model, quantize), tokenizer


def checked_quantize(quantize: str) -> str:
    """`quantize` resolved ("auto" for a long-lived process), or ModelError where this CPU or build lacks it."""
    from .cpu_linear import bfloat16_available, float16_available

    if quantize not in QUANTIZE_MODES:
        raise ModelError(f"unknown quantization {quantize!r}; expected one of {', '.join(QUANTIZE_MODES)}")
    quantize = resolve_quantize(quantize)
    if quantize == "float16" and not float16_available():
        raise ModelError("--quantize float16 needs fbgemm's half-precision product, which this torch build "
                         "lacks (x86 builds have it); use none or int8")
    if quantize == "bfloat16" and not bfloat16_available():
        raise ModelError("--quantize bfloat16 needs oneDNN's bfloat16 kernels, which this CPU or torch build "
                         "lacks (x86 CPUs with AVX-512 or AMX have them); use none, float16 or int8")
    return quantize


def quantize_loaded(model, quantize: str):
    """A float32 model (as loaded, or as `load_model` returns it with "none") with its weights in the resolved
    mode `quantize`, in place where the mode allows (int8 makes a copy); returns it in eval mode."""
    from .cpu_linear import bfloat16_weights, float16_weights, quantize_int8, speed_up_small_batches

    if quantize == "int8":
        model = quantize_int8(model)
    elif quantize == "float16":
        float16_weights(model)
    elif quantize == "bfloat16":
        bfloat16_weights(model)
    else:
        speed_up_small_batches(model)
    return model.eval()


def adapter_folder(spec: str | None, adapter: bool | str | Path = True) -> Path | None:
    """The LoRA adapter `load_model` merges into `spec`'s model. False: none. A folder: that one (ModelError when
    it holds no adapter, or its card names other base weights than a registry model's). True: the adapter shipped
    for a registry model in decoding/adapters/<name>/ if its card names this model's sha256, else none."""
    if adapter is False:
        return None
    if adapter is True:
        return shipped_folder(ADAPTERS_DIR, SHIPPED_ADAPTERS, spec)
    folder = check_folder(Path(adapter))
    base = read_card(folder).get("base_sha256")
    if (spec is None or spec in REGISTRY) and base and base != REGISTRY[spec or "default"].sha256:
        raise ModelError(f"the adapter at {folder} was trained on other weights (sha256 {base[:12]}...) than "
                         f"model {spec or 'default'!r}")
    return folder


def shipped_folder(root: Path, shipped: dict[str, str], spec: str | None) -> Path | None:
    """The folder under `root` shipped for registry model `spec` (heads or an adapter), if there is one and its
    card.json names the registry's sha256 of the model (files trained on other weights are never used)."""
    model = REGISTRY.get(spec or "default")
    if model is None or model.name not in shipped:
        return None
    folder = root / shipped[model.name]
    return folder if read_card(folder).get("base_sha256") == model.sha256 else None


def load_tokenizer(spec: str | None = None):
    """The tokenizer of `spec` alone (for a model served elsewhere: the prompt is built here)."""
    from transformers import AutoTokenizer

    source = resolve(spec)
    try:
        with no_transformers_progress_bars():
            return AutoTokenizer.from_pretrained(source)
    except OSError as error:
        raise ModelError(f"could not load the tokenizer of {source!r}: {error}") from None


def thread_count(threads: int | None = None) -> int:
    """Threads for torch: `threads`, else `$EDIT_THREADS`, else min(2, cores)."""
    if threads is None and os.environ.get("EDIT_THREADS"):
        value = os.environ["EDIT_THREADS"]
        if not value.isdigit():
            raise ModelError(f"EDIT_THREADS must be a positive whole number, not {value!r}")
        threads = int(value)
    if threads is None:
        threads = min(2, os.cpu_count() or 1)
    if threads < 1:
        raise ModelError(f"the thread count must be at least 1, not {threads}")
    return threads


def resolve(spec: str | None) -> str:
    """The folder or hub id to hand to `from_pretrained`, converting a GGUF first if needed."""
    if spec is None or spec in REGISTRY:
        model = REGISTRY[spec or "default"]
        if not is_installed(model):
            raise ModelError(f"model {model.name!r} ({model.description}) is not installed; "
                             f"run `edit model install {model.name}`")
        return str(ensure_converted(gguf_path(model), model.sha256))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"no GGUF file at {path}")
        return str(ensure_converted(path, file_sha256(path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json, so it is not a Hugging Face model folder")
        return str(path)
    if path.exists():
        raise ModelError(f"{path} is neither a .gguf file nor a model folder")
    if HUB_ID.fullmatch(spec) and not spec.startswith("."):
        return spec
    raise ModelError(f"unknown model {spec!r}: expected one of {', '.join(REGISTRY)}, a .gguf file, "
                     f"a model folder with config.json, or a Hugging Face hub id (owner/name)")


def load_pretrained(source: str):
    """`(model, tokenizer)` from a folder or hub id, float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with no_transformers_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except OSError as error:  # what transformers raises for missing files and unreachable hubs
        where = "folder" if Path(source).is_dir() else "hub id (needs internet)"
        raise ModelError(f"could not load the model {source!r} as a {where}: {error}\n"
                         f"Offline, use `edit model install default` or a local folder or .gguf file."
                         ) from None
    return model, tokenizer


@contextmanager
def no_transformers_progress_bars():
    """Silence transformers' tqdm bars for a load that takes seconds and happens on every run."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def ensure_converted(gguf: Path, sha256: str) -> Path:
    """The safetensors folder for the GGUF whose sha256 is given, converting it the first time."""
    folder = converted_dir(sha256)
    if not folder.is_dir():
        convert_gguf(gguf, folder)
    return folder


def convert_gguf(gguf: Path, folder: Path) -> None:
    """De-quantise `gguf` with transformers and save model and tokenizer to `folder` as safetensors.

    Written to a sibling `.partial` folder and renamed, so `folder` exists only when complete.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # transformers shows its progress bars here: this is the slow step
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError) as error:  # unreadable file, unsupported architecture
        raise ModelError(f"could not read the GGUF file {gguf}: {error}") from None
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        save_dequantized(model, tokenizer, partial)
        if folder.is_dir():  # converted meanwhile by another process
            shutil.rmtree(partial)
        else:
            os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def save_dequantized(model, tokenizer, folder: Path) -> None:
    """Save a GGUF-loaded (already float) model as a plain one.

    transformers refuses `save_pretrained` while the model carries its GGUF quantizer, although the
    weights are plain floats by then; dropping the quantizer and the config's `quantization_config`
    makes it a plain model, which `save_pretrained` stores with tied weights handled.
    """
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def load_default_heads(spec: str | None, model):
    """The MTP heads that go with `spec`'s model, or None where there are none.

    Registry models: the heads shipped in decoding/heads/<name>/ (trained by `edit model train-mtp`),
    if their card names this model's sha256. A local model folder: the native MTP tensors in its
    safetensors files (Qwen3.5 `mtp.*`, DeepSeek, MiMo layouts), if any. GGUF files, hub ids and int8
    models (whose lm_head the heads cannot share): None. Float16-weight models share their lm_head.
    """
    import torch

    from .mtp import MTPError, detect_layout, load_mtp_heads

    from .cpu_linear import Float16Linear

    head = model.get_output_embeddings()
    if not (isinstance(head, Float16Linear) or isinstance(getattr(head, "weight", None), torch.Tensor)):
        return None
    if spec is None or spec in REGISTRY:
        folder = shipped_folder(HEADS_DIR, SHIPPED_HEADS, spec)
        return load_heads_file(folder, model) if folder is not None else None
    path = Path(spec).expanduser()
    if not path.is_dir():
        return None
    try:
        detect_layout(safetensors_names(path))
    except MTPError:  # the folder holds no MTP tensors
        return None
    return load_mtp_heads(path, model)


def load_drafting_heads(spec: str | None, model, path: Path | None = None, int8: bool = True):
    """The MTP heads to draft with: those saved at `path` (`load_heads_file`), else `spec`'s own
    (`load_default_heads`, None where there are none); in int8 (`MTPHeads.quantize_drafting`) unless
    `int8=False`, since a draft's precision changes the speed, never the output."""
    heads = load_heads_file(path, model) if path is not None else load_default_heads(spec, model)
    return heads.quantize_drafting() if heads is not None and int8 else heads


def load_heads_file(path: Path, model):
    """Heads saved by `edit model train-mtp`: its mtp.safetensors (or a folder holding it) and, next to
    it, the draft vocabulary they were trained on, if there is one."""
    from safetensors.torch import load_file

    from .mtp import load_mtp_heads

    path = Path(path)
    file = path / HEADS_FILE if path.is_dir() else path
    heads = load_mtp_heads(file, model)
    if (file.parent / DRAFT_VOCAB_FILE).is_file():
        heads.restrict_draft_vocab(load_file(str(file.parent / DRAFT_VOCAB_FILE))["token_ids"])
    return heads


def safetensors_names(folder: Path) -> list[str]:
    """Tensor names of every .safetensors file in `folder` (headers only)."""
    from safetensors import safe_open

    names = []
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            names.extend(handle.keys())
    return names
