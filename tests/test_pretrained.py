"""GPT-2 weights in (pretrained.py: --init_from=gpt2 / a HF folder) and out (export.py), checked
against transformers' own GPT2LMHeadModel on tiny randomly initialised models made here."""

import json
import os

import numpy as np
import pytest
import torch
from test_shards import make_dataset

import checkpoint
import export
import pretrained
import sample
import train
from configurator import ConfigError
from conftest import SHARED
from model import GPT, GPTConfig
from utils import DataError, gpt2_encoding

transformers = pytest.importorskip('transformers')
pytest.importorskip('safetensors')
BPE = os.path.join(SHARED, 'gpt2_bpe')


def scramble(model):
    """Large random weights (matrices at std 0.5, not 0.02; norm gains 1 +- 0.2) so that the
    activations reach where a wrong GELU or a missing transpose shows in the logits."""
    with torch.no_grad():
        for p in model.parameters():  # a tied matrix is one parameter: drawn once
            p.normal_(0.0, 0.5) if p.dim() == 2 else p.normal_(0.0, 0.2)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.add_(1.0)
    return model.eval()


def hf_model(seed=0, **over):
    """A tiny random GPT2LMHeadModel."""
    torch.manual_seed(seed)
    cfg = {**dict(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=101), **over}
    cfg.setdefault('bos_token_id', 0)
    cfg.setdefault('eos_token_id', 0)
    return scramble(transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)))


def ids(vocab, seed=1):
    return torch.randint(vocab, (3, 32), generator=torch.Generator().manual_seed(seed))


def hf_logits(model, x):
    with torch.no_grad():
        return model(x).logits


@pytest.mark.parametrize(
    'over',
    [{}, {'tie_word_embeddings': False}, {'activation_function': 'gelu'}],
    ids=['gpt2', 'untied', 'erf-gelu'],
)
def test_hf_gpt2_loads_with_the_same_logits(tmp_path, over):
    hf = hf_model(**over)
    hf.save_pretrained(tmp_path / 'hf')
    ours, ckpt = pretrained.load_model(str(tmp_path / 'hf'), flag='--init_from')
    x = ids(101)
    with torch.no_grad():
        got = ours(x)[0]
    want = hf_logits(hf, x)
    assert want.abs().mean() > 1.0  # logits far from 0: a small relative error would show
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert ckpt['model_args']['tie_embeddings'] == over.get('tie_word_embeddings', True)
    assert ckpt['meta']['tokenizer'] == 'gpt2' and checkpoint.objective_of(ckpt) == 'next_token'
    # the GELU matters at this scale: the other one is off by far more than the tolerance
    other = 'none' if ckpt['model_args']['gelu_approximate'] == 'tanh' else 'tanh'
    wrong = checkpoint.build(ckpt, gelu_approximate=other).eval()
    with torch.no_grad():
        assert (wrong(x)[0] - want).abs().max() > 1e-3  # 10x the tolerance


def our_checkpoint(path, meta, seed=0, **over):
    torch.manual_seed(seed)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=meta['vocab_size'])
    model = scramble(GPT(GPTConfig(**{**args, **over})))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    objective = 'next_token' if model.config.causal else 'unmasking'
    checkpoint.save(str(path), model, opt, {'objective': objective}, meta, 10, 1.0)
    return model.eval()


GPT2 = {'vocab_size': 50304, 'tokenizer': 'gpt2', 'dtype': 'uint16', 'bpe_dir': BPE}


@pytest.mark.parametrize(
    'over',
    [
        {'gelu_approximate': 'tanh'},
        {'bias': False, 'tie_embeddings': False, 'n_future': 2},
    ],
    ids=['gpt2-like', 'bias-free-untied-2-heads'],
)
def test_export_gives_hf_the_same_logits_and_loads_back(tmp_path, capsys, over):
    if not os.path.exists(os.path.join(BPE, 'vocab.bpe')):
        pytest.skip('no offline GPT-2 BPE files')
    ours = our_checkpoint(tmp_path / 'ckpt.pt', GPT2, **over)
    export.main([f'--ckpt={tmp_path}/ckpt.pt', f'--out={tmp_path}/hf'])
    out = capsys.readouterr().out
    assert 'GPT-2 BPE tokenizer (vocab.json, merges.txt)' in out
    if over.get('n_future'):
        assert 'head 1 (next token) exported, the 1 multi-token heads dropped' in out
        assert 'zero biases' in out
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'hf').eval()
    x = ids(50257)
    with torch.no_grad():
        want = ours(x)[0]
    assert want.abs().mean() > 1.0
    torch.testing.assert_close(hf_logits(hf, x), want, atol=1e-4, rtol=0)
    back, _ = pretrained.load_model(str(tmp_path / 'hf'))  # and in again
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], want, atol=1e-4, rtol=0)
    # the tokenizer is GPT-2's
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')
    text = "Hello world, it's a test.\n\nTwo  spaces"
    enc = gpt2_encoding(BPE)
    assert tok(text)['input_ids'] == enc.encode_ordinary(text)
    assert tok.eos_token_id == 50256


def test_export_refuses_or_says_what_it_cannot_represent(tmp_path, capsys):
    our_checkpoint(tmp_path / 'bi.pt', GPT2, causal=False)
    with pytest.raises(ConfigError, match=r"bidirectional\).*GPT2LMHeadModel is causal"):
        export.main([f'--ckpt={tmp_path}/bi.pt', f'--out={tmp_path}/x'])
    our_checkpoint(tmp_path / 'rope.pt', GPT2, pos_emb='rope')
    with pytest.raises(ConfigError, match=r"pos_emb='rope': GPT2LMHeadModel has learned positions"):
        export.main([f'--ckpt={tmp_path}/rope.pt', f'--out={tmp_path}/x'])
    itos = {i: c for i, c in enumerate('\n abcdefgh')}
    chars = {'vocab_size': 10, 'itos': itos, 'stoi': {c: i for i, c in itos.items()}}
    ours = our_checkpoint(tmp_path / 'char.pt', chars)
    (tmp_path / 'char').mkdir()
    (tmp_path / 'char' / 'vocab.json').write_text('{}')  # an earlier export's tokenizer
    export.main([f'--ckpt={tmp_path}/char.pt', f'--out={tmp_path}/char'])
    assert 'character vocabulary: no Hugging Face tokenizer' in capsys.readouterr().out
    assert not os.path.exists(tmp_path / 'char' / 'vocab.json')  # removed: not this vocabulary
    table = json.loads((tmp_path / 'char' / 'nanomask_vocab.json').read_text())['itos']
    assert table == {str(i): c for i, c in itos.items()}
    back, ckpt = pretrained.load_model(str(tmp_path / 'char'))
    assert ckpt['meta']['itos'] == itos  # the vocabulary comes back too
    x = ids(10)
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], ours(x)[0], atol=1e-4, rtol=0)


def test_missing_weights_say_where_they_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))
    monkeypatch.delenv('HF_HUB_CACHE', raising=False)
    with pytest.raises(DataError) as e:
        pretrained.load_any('gpt2-medium', '--init_from')
    msg = str(e.value)
    assert f"{tmp_path}/hf_home/hub/models--gpt2-medium/snapshots/*" in msg
    assert '`huggingface-cli download gpt2-medium config.json model.safetensors`' in msg
    assert '\n' not in msg
    # a cache snapshot is found; a folder with only the pickle is refused
    snap = tmp_path / 'hf_home' / 'hub' / 'models--gpt2' / 'snapshots' / 'abc'
    hf_model().save_pretrained(snap)
    assert pretrained.load_any('gpt2', '--init_from')['path'] == str(snap)
    os.rename(snap / 'model.safetensors', snap / 'pytorch_model.bin')
    with pytest.raises(
        DataError, match=r"no model.safetensors \(it has pytorch_model.bin: a pickle"
    ):
        pretrained.load_any(str(snap), '--init_from')


def test_train_and_sample_start_from_a_hf_folder(tmp_path, data_root, capsys):
    """--init_from=<HF folder> trains like a checkpoint: its architecture and GPT-2 BPE vocab
    (grown to the data's 50304), its GELU; sample.py --ckpt=<folder> samples from it."""
    hf_model(n_layer=1, vocab_size=50257).save_pretrained(tmp_path / 'hf')
    rng = np.random.default_rng(0)
    make_dataset(
        tmp_path / 'web', {s: [rng.integers(0, 50257, 3000)] for s in ('train', 'val')}, {}
    )
    args = ['--device=cpu', '--compile=False', '--batch_size=2', '--eval_iters=1', '--max_iters=2']
    args += [f'--init_from={tmp_path}/hf', f'--out_dir={tmp_path}/o', '--warmup_iters=0']
    history = train.main(args + [f'--data_root={tmp_path}', '--dataset=web'])
    assert len(history['train']) == 2
    saved = checkpoint.load(str(tmp_path / 'o'))['model_args']
    assert (saved['n_layer'], saved['n_embd'], saved['block_size']) == (1, 32, 32)
    assert saved['vocab_size'] == 50304 and saved['gelu_approximate'] == 'tanh'
    with pytest.raises(DataError, match=r"different vocabulary than dataset 'tiny_char': GPT-2"):
        train.main(args + [f'--data_root={data_root}', '--dataset=tiny_char'])
    if os.path.exists(os.path.join(BPE, 'vocab.bpe')):
        outs = sample.main(
            [f'--ckpt={tmp_path}/hf', '--start=Hello', '--num_samples=1', '--max_new_tokens=5']
            + [f'--bpe_dir={BPE}']
        )
        assert outs[0].startswith('Hello')


def test_exported_chat_model_tokenizes_its_role_tags(tmp_path, capsys):
    """An SFT checkpoint (GPT-2 BPE + data/chat/prepare.py's role tags): the HF tokenizer maps
    each tag to the id the model was trained with."""
    if not os.path.exists(os.path.join(BPE, 'vocab.bpe')):
        pytest.skip('no offline GPT-2 BPE files')
    tags = ['<|system|>', '<|user|>', '<|assistant|>', '<|end|>']
    meta = {**GPT2, 'vocab_size': 50261, 'special': {t: 50257 + i for i, t in enumerate(tags)}}
    our_checkpoint(tmp_path / 'sft.pt', meta, n_layer=1)
    export.main([f'--ckpt={tmp_path}/sft.pt', f'--out={tmp_path}/hf'])
    assert '+ 4 chat special tokens' in capsys.readouterr().out
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')
    ids = gpt2_encoding(BPE).encode_ordinary('Hi there')
    assert tok('<|user|>Hi there<|end|>')['input_ids'] == [50258, *ids, 50260]
