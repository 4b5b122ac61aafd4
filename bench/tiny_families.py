"""Tiny randomly initialised sentence-transformers models of each architecture family the exporter supports.

Each builder writes a model with its own tokenizer (trained here with the ``tokenizers`` library on the project's
calibration corpus, so no hub access) and the sentence-transformers modules that family's real models ship:
hidden size 64, two layers. :data:`FAMILIES` maps a family name to its builder; the tests and
``docs/models.md`` use the same names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

HIDDEN, LAYERS, HEADS, FFN = 64, 2, 4, 128
VOCAB = 1200
MAX_SEQ = 64


@lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    from exporter.precisions.int8 import calibration_texts

    return tuple(calibration_texts())


def _tokenizer(kind: str, specials: list[str], template: str | None, *, lowercase: bool = False):
    """A fast tokenizer of ``kind`` (wordpiece | unigram | bpe) whose special tokens get ids 0.. in order;
    ``template`` is the single-sentence post-processor (e.g. ``"[CLS] $A [SEP]"``)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=specials[-1] if "[UNK]" not in specials else "[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials)
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=specials, unk_token="<unk>")
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(_corpus()), trainer=trainer)
    if template:
        names = [t for t in template.split() if t != "$A"]
        tok.post_processor = processors.TemplateProcessing(
            single=template, pair=f"{template} $B:1", special_tokens=[(t, tok.token_to_id(t)) for t in names])
    return tok


def _save_tokenizer(tok, directory: Path, **kwargs: Any) -> None:
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=MAX_SEQ, **kwargs).save_pretrained(directory)


def _save_st(base: Path, out: Path, pooling: str | tuple[str, ...], dense: list[tuple[int, Any]] = (),
             normalize: bool = True, dim: int = HIDDEN, **transformer_kwargs: Any) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(base), max_seq_length=MAX_SEQ, **transformer_kwargs)
    modules: list[torch.nn.Module] = [transformer, models.Pooling(dim, pooling_mode=pooling)]
    width = dim * (1 if isinstance(pooling, str) else len(pooling))
    for out_features, activation in dense:
        modules.append(models.Dense(width, out_features, activation_function=activation))
        width = out_features
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def _wordpiece_bert(path: Path, model_cls, config, input_names: list[str], **pooling: Any) -> Path:
    import torch

    torch.manual_seed(0)
    base = path / "hf"
    model_cls(config).save_pretrained(base)
    tok = _tokenizer("wordpiece", ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"], "[CLS] $A [SEP]", lowercase=True)
    _save_tokenizer(tok, base, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
                    mask_token="[MASK]", model_input_names=input_names)
    return _save_st(base, path / "st", **pooling)


def bert(path: Path, **pooling: Any) -> Path:
    """BERT with token type ids (WordPiece)."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=128)
    return _wordpiece_bert(path, BertModel, config, ["input_ids", "token_type_ids", "attention_mask"],
                           **({"pooling": "mean"} | pooling))


def bert_no_types(path: Path) -> Path:
    """BERT whose tokenizer emits no token_type_ids (the model then uses its type-0 row)."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=128)
    return _wordpiece_bert(path, BertModel, config, ["input_ids", "attention_mask"], pooling="cls")


def distilbert(path: Path) -> Path:
    """DistilBERT: no token types at all, its own attention module."""
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                              max_position_embeddings=128)
    return _wordpiece_bert(path, DistilBertModel, config, ["input_ids", "attention_mask"], pooling="mean")


def _roberta_like(path: Path, config_cls, model_cls, kind: str, pooling: str, **extra: Any) -> Path:
    """RoBERTa-family layout: <s>=0 <pad>=1 </s>=2 <unk>=3, positions offset by padding_idx + 1."""
    import torch

    torch.manual_seed(0)
    base = path / "hf"
    config = config_cls(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=MAX_SEQ + 2 + 64, pad_token_id=1,
                        bos_token_id=0, eos_token_id=2, **extra)
    model_cls(config).save_pretrained(base)
    tok = _tokenizer(kind, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>")
    _save_tokenizer(tok, base, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                    mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                    model_input_names=["input_ids", "attention_mask"])
    return _save_st(base, path / "st", pooling)


def xlm_roberta(path: Path) -> Path:
    """XLM-RoBERTa (bge-m3, multilingual-e5): sentencepiece-style Unigram tokenizer, CLS pooling like bge-m3."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    return _roberta_like(path, XLMRobertaConfig, XLMRobertaModel, "unigram", "cls", type_vocab_size=1)


def mpnet(path: Path) -> Path:
    """MPNet (all-mpnet-base-v2): relative attention bias, mean pooling."""
    from transformers import MPNetConfig, MPNetModel

    return _roberta_like(path, MPNetConfig, MPNetModel, "wordpiece", "mean")


def modernbert(path: Path) -> Path:
    """ModernBERT (gte-modernbert): rotary, alternating local/global attention, no token types; BPE tokenizer."""
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(0)
    base = path / "hf"
    config = ModernBertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                              num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=512,
                              global_attn_every_n_layers=2, local_attention=16, pad_token_id=0,
                              cls_token_id=1, sep_token_id=2, bos_token_id=1, eos_token_id=2)
    ModernBertModel(config).save_pretrained(base)
    tok = _tokenizer("bpe", ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[CLS] $A [SEP]")
    _save_tokenizer(tok, base, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
                    mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"])
    return _save_st(base, path / "st", "mean")


def qwen3(path: Path) -> Path:
    """Qwen3-Embedding layout: causal decoder, last-token pooling, LEFT padding, <|endoftext|> appended."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    base = path / "hf"
    config = Qwen3Config(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         num_key_value_heads=2, head_dim=16, intermediate_size=FFN, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=0, pad_token_id=0)
    Qwen3Model(config).save_pretrained(base)
    tok = _tokenizer("bpe", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "$A <|endoftext|>")
    _save_tokenizer(tok, base, eos_token="<|endoftext|>", pad_token="<|endoftext|>", padding_side="left",
                    model_input_names=["input_ids", "attention_mask"])
    return _save_st(base, path / "st", "lasttoken")


def gemma3(path: Path) -> Path:
    """EmbeddingGemma layout: Gemma 3 with bidirectional attention, mean pooling, two Dense layers, Normalize."""
    import torch
    from transformers import Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(0)
    base = path / "hf"
    config = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                              num_attention_heads=HEADS, num_key_value_heads=1, head_dim=16, intermediate_size=FFN,
                              max_position_embeddings=512, sliding_window=8, query_pre_attn_scalar=16,
                              layer_types=["sliding_attention", "full_attention"],
                              use_bidirectional_attention=True, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    Gemma3TextModel(config).save_pretrained(base)
    tok = _tokenizer("unigram", ["<pad>", "<eos>", "<bos>", "<unk>"], "<bos> $A <eos>")
    _save_tokenizer(tok, base, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
                    model_input_names=["input_ids", "attention_mask"])
    return _save_st(base, path / "st", "mean", dense=[(128, torch.nn.Identity()), (HIDDEN, torch.nn.Identity())])


def t5(path: Path) -> Path:
    """sentence-t5 / gtr-t5 layout: the T5 encoder alone (relative position buckets), mean pooling, a Dense layer."""
    import torch
    from transformers import T5Config, T5Model

    torch.manual_seed(0)
    base = path / "hf"
    config = T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=16, d_ff=FFN, num_layers=LAYERS, num_heads=HEADS,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5Model(config).save_pretrained(base)  # a full encoder-decoder checkpoint, as on the hub
    tok = _tokenizer("unigram", ["<pad>", "</s>", "<unk>"], "$A </s>")
    _save_tokenizer(tok, base, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                    model_input_names=["input_ids", "attention_mask"])
    return _save_st(base, path / "st", "mean", dense=[(HIDDEN, torch.nn.Identity())])


FAMILIES: dict[str, Callable[[Path], Path]] = {
    "bert": bert, "bert-no-token-types": bert_no_types, "distilbert": distilbert, "xlm-roberta": xlm_roberta,
    "mpnet": mpnet, "modernbert": modernbert, "qwen3": qwen3, "gemma3": gemma3, "t5": t5,
}
