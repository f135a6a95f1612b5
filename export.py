"""
A causal checkpoint -> a Hugging Face transformers GPT2LMHeadModel folder.

    python export.py --ckpt=out-webtext/ckpt.pt --out=hf-model [--bpe_dir=../shared/data/gpt2_bpe]

Writes model.safetensors and config.json (transformers' GPT2LMHeadModel.from_pretrained reads
them; so does lm-evaluation-harness with --model hf --model_args pretrained=hf-model) and, for
a GPT-2 BPE vocabulary, the tokenizer: vocab.json + merges.txt (GPT-2's encoder.json and
vocab.bpe, from --bpe_dir, the dataset's recorded bpe_dir or tiktoken's cache) and
tokenizer_config.json (chat role tags as added special tokens). A character vocabulary has no
HF tokenizer: its table is written to nanomask_vocab.json instead, and the line says so.

What GPT2LMHeadModel cannot represent is refused in one line: a bidirectional model (MLM,
diffusion). What it can: bias=False (zero biases: the same function), an untied head
(tie_word_embeddings=false), extra multi-token heads (dropped: head 1, the next-token head, is
exported; the line says so). See pretrained.to_hf.
"""

import json
import os
import sys
import tempfile

import pretrained
from checkpoint import load
from configurator import ConfigError, exit_if_help, load_config, run_cli
from utils import _GPT2_CACHE_NAMES, DataError, atomic_write, vocab_kind

DEFAULTS = dict(ckpt='', out='', bpe_dir='')
HELP = dict(
    ckpt='the checkpoint file or out_dir to export (a causal model)',
    out='the folder to write (model.safetensors, config.json, tokenizer files)',
    bpe_dir="folder with GPT-2's vocab.bpe + encoder.json ('': the dataset's, or tiktoken's cache)",
)
USAGE = 'usage: python export.py --ckpt=<checkpoint> --out=<folder> [--bpe_dir=<folder>]'


TOKENIZER_FILES = ('vocab.json', 'merges.txt', 'tokenizer_config.json', 'nanomask_vocab.json')


def write_bytes(path, data):
    with open(path, 'wb') as f:
        f.write(data)


def gpt2_files(cfg, meta):
    """(encoder.json, vocab.bpe) paths: --bpe_dir, the meta's bpe_dir, or tiktoken's cache."""
    places = [(d, 'encoder.json', 'vocab.bpe') for d in (cfg['bpe_dir'], meta.get('bpe_dir')) if d]
    caches = [  # tiktoken's cache (utils.gpt2_encoding's with --bpe_dir, or tiktoken's default)
        os.environ.get('TIKTOKEN_CACHE_DIR'),
        os.environ.get('DATA_GYM_CACHE_DIR'),
        os.path.join(tempfile.gettempdir(), 'nanomask_tiktoken'),
        os.path.join(tempfile.gettempdir(), 'data-gym-cache'),
    ]
    names = _GPT2_CACHE_NAMES['encoder.json'], _GPT2_CACHE_NAMES['vocab.bpe']
    places += [(d, *names) for d in caches if d]
    for d, enc, bpe in places:
        paths = os.path.join(d, enc), os.path.join(d, bpe)
        if all(os.path.isfile(p) for p in paths):
            return paths
    raise DataError(
        "--bpe_dir: GPT-2's encoder.json and vocab.bpe not found (looked in "
        f"{', '.join(d for d, _, _ in places)}) for the tokenizer files: pass --bpe_dir=<folder "
        "with them>, e.g. ../shared/data/gpt2_bpe"
    )


def tokenizer_files(cfg, ckpt):
    """{name: bytes} of the tokenizer files, and a line saying what was written."""
    meta, kind = ckpt['meta'] or {}, vocab_kind(ckpt['meta'])
    if kind == 'characters':
        itos = {int(i): s for i, s in meta['itos'].items()}
        vocab = {'tokenizer': 'char', 'vocab_size': meta['vocab_size'], 'itos': itos}
        return {'nanomask_vocab.json': json.dumps(vocab, ensure_ascii=False).encode()}, (
            "character vocabulary: no Hugging Face tokenizer (GPT-2's is BPE); the id -> "
            "character table is in nanomask_vocab.json"
        )
    if kind not in ('GPT-2 BPE', None):
        return {}, f"{kind} vocabulary: no tokenizer written"
    encoder, merges = gpt2_files(cfg, meta)
    special = {int(i): name for name, i in (meta.get('special') or {}).items()}
    eot = '<|endoftext|>'
    tok_config = {
        'tokenizer_class': 'GPT2Tokenizer',
        'model_max_length': ckpt['model_args']['block_size'],
        'bos_token': eot,
        'eos_token': eot,
        'unk_token': eot,
        'add_prefix_space': False,
        'added_tokens_decoder': {
            str(i): {
                'content': name,
                'special': True,
                'lstrip': False,
                'rstrip': False,
                'normalized': False,
                'single_word': False,
            }
            for i, name in sorted(special.items())
        },
    }
    files = {'tokenizer_config.json': json.dumps(tok_config, indent=1).encode()}
    for name, path in (('vocab.json', encoder), ('merges.txt', merges)):
        with open(path, 'rb') as f:
            files[name] = f.read()
    extra = f" + {len(special)} chat special tokens" if special else ''
    return files, f"GPT-2 BPE tokenizer (vocab.json, merges.txt{extra})"


def export(cfg):
    """Write the folder; returns the lines printed."""
    try:
        from safetensors.torch import save_file  # optional: only export needs it
    except ImportError:
        raise DataError(f"export.py needs safetensors: {pretrained.SAFETENSORS_PIP}") from None
    ckpt = load(cfg['ckpt'], flag='--ckpt')
    pretrained.check_exportable(ckpt)
    files, tok_line = tokenizer_files(cfg, ckpt)
    gpt2 = vocab_kind(ckpt['meta']) in ('GPT-2 BPE', None)
    tensors, config = pretrained.to_hf(ckpt, bos_eos=50256 if gpt2 else None)
    files['config.json'] = json.dumps(config, indent=1).encode()
    os.makedirs(cfg['out'], exist_ok=True)
    atomic_write(
        os.path.join(cfg['out'], 'model.safetensors'),
        lambda tmp: save_file(tensors, tmp, metadata={'format': 'pt'}),
    )
    for name, data in files.items():
        atomic_write(os.path.join(cfg['out'], name), lambda tmp, d=data: write_bytes(tmp, d))
    for name in set(TOKENIZER_FILES) - set(files):  # an earlier export's: not this vocabulary
        if os.path.exists(os.path.join(cfg['out'], name)):
            os.remove(os.path.join(cfg['out'], name))
    lines = [
        f"wrote {cfg['out']}: GPT2LMHeadModel ({config['n_layer']} layers, "
        f"{config['n_embd']} wide, vocab {config['vocab_size']}), {tok_line}"
    ]
    args = ckpt['model_args']
    if args.get('n_future', 1) > 1:
        lines.append(
            f"the checkpoint has {args['n_future']} heads: head 1 (next token) exported, "
            f"the {args['n_future'] - 1} multi-token heads dropped"
        )
    if not args.get('bias', True):
        lines.append("bias=False: zero biases written (the same function)")
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    exit_if_help(argv, USAGE, DEFAULTS, [('export', HELP)])
    cfg, _ = load_config(DEFAULTS, argv)
    for key in ('ckpt', 'out'):
        if not cfg[key]:
            raise ConfigError(f"--{key} is required: {USAGE}")
    if os.path.isfile(cfg['out']):
        raise ConfigError(f"--out={cfg['out']} is a file; pass a folder")
    for line in export(cfg):
        print(line)


if __name__ == '__main__':
    run_cli(main)
