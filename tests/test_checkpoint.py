"""What a checkpoint is, checked wherever a flag names one (checkpoint.check_kind / check_vocab /
check_init): another vocabulary, a remasker where a denoiser belongs and the reverse, and
nanoGPT's own checkpoints (train on from them, sample from them)."""

import os
import pickle
import sys

import pytest
import torch

import pathstar
import sample
import train
from configurator import ConfigError, run_cli
from conftest import TINY
from model import GPT, GPTConfig
from utils import DataError, vocab_compatible, vocab_mismatch

ONE = ['--max_iters=1', '--eval_interval=100']  # a run that should fail stays short if it does not


def one_line_error(monkeypatch, script, argv):
    """The message a script ends with under run_cli (one line, no traceback)."""
    monkeypatch.setattr(sys, 'argv', [script.__name__ + '.py'] + argv)
    with pytest.raises(SystemExit) as e:
        run_cli(script.main)
    msg = str(e.value.code)
    assert msg.startswith('error: ') and '\n' not in msg
    return msg


@pytest.fixture(scope='module')
def runs(data_root, tmp_path_factory):
    """One-iteration checkpoints on tiny_char: next-token, unmasking, remasking; and a path-star
    one (G(2,5) with N=20 labels: 26 ids, fewer than tiny_char's characters)."""
    root = tmp_path_factory.mktemp('ckpt_runs')
    base = TINY + [f'--data_root={data_root}', '--max_iters=1', '--eval_interval=100']
    out = {}
    for obj in ('next_token', 'unmasking', 'remasking'):
        train.main(base + ['--dataset=tiny_char', f'--objective={obj}', f'--out_dir={root}/{obj}'])
        out[obj] = f'{root}/{obj}/ckpt.pt'
    pathstar.main(
        ['--d=2', '--l=5', '--N=20', '--num_train=200', '--num_val=20']
        + [f'--data_root={data_root}', '--name=ps_d2_l5_n20']
    )
    train.main(
        base
        + ['--dataset=ps_d2_l5_n20', '--objective=pathstar', '--pathstar_eval_rows=4']
        + [f'--out_dir={root}/pathstar']
    )
    out['pathstar'] = f'{root}/pathstar/ckpt.pt'
    return out


# ---- the vocabulary itself, not only its size ----


def test_vocab_mismatch_says_how_two_vocabularies_differ():
    chars = {'vocab_size': 3, 'tokenizer': 'char', 'itos': {0: 'a', 1: 'b', 2: 'c'}}
    grown = {**chars, 'vocab_size': 5, 'itos': {**chars['itos'], 3: 'd', 4: '<|end|>'}}
    grown['special'] = {'<|end|>': 4}
    assert vocab_mismatch(chars, grown) is None  # appended tokens (SFT): fine
    assert (
        vocab_mismatch(chars, grown, exact=True)
        == "id 3 is absent in the checkpoint but 'd' in the data"
    )
    other = {**chars, 'itos': {0: 'a', 1: 'x', 2: 'c'}}
    assert vocab_mismatch(chars, other) == "id 1 is 'b' in the checkpoint but 'x' in the data"
    nanogpt_char = {'vocab_size': 3, 'itos': chars['itos']}  # no 'tokenizer' key: still chars
    assert vocab_mismatch(nanogpt_char, chars, exact=True) is None
    ps = {'vocab_size': 26, 'format': 'incontext', 'N': 20, 'special_tokens': {'PAD': 25}}
    assert vocab_mismatch(ps, chars) == (
        "path-star incontext (N=20) ids in the checkpoint, characters in the data"
    )
    ps50 = {'vocab_size': 56, 'format': 'incontext', 'N': 50, 'special_tokens': {'PAD': 55}}
    assert vocab_mismatch(ps, ps50) == (
        "path-star incontext (N=20) ids in the checkpoint, path-star incontext (N=50) in the data"
    )
    gpt2 = {'vocab_size': 50304, 'tokenizer': 'gpt2'}
    assert not vocab_compatible(chars, gpt2) and vocab_compatible(gpt2, {'vocab_size': 50304})
    # diffusion: [MASK] / WRONG appended to a next-token vocabulary (AR init) is fine; an MLM's
    # [SEP] where the denoiser has WRONG is not; nor is a denoiser's [MASK] as a plain token
    diff = {**chars, 'vocab_size': 5, 'base_vocab_size': 3, 'mask_token_id': 3, 'wrong_token_id': 4}
    assert vocab_mismatch(chars, diff) is None
    mlm = {**chars, 'vocab_size': 5, 'mask_token_id': 3, 'sep_token_id': 4}
    assert vocab_mismatch(mlm, diff) == "id 4 is [SEP] in the checkpoint but WRONG in the data"
    assert vocab_mismatch(diff, chars) == "id 3 is [MASK] in the checkpoint but absent in the data"
    assert vocab_mismatch(diff, {**diff, 'base_vocab_size': 4, 'mask_token_id': 4}) == (
        "a base vocabulary of 3 ids in the checkpoint, 4 in the data"
    )
    assert vocab_mismatch(None, chars) is None  # nothing to compare: sizes only (the caller)


def test_init_from_a_pathstar_checkpoint_on_character_data_is_refused(runs, tiny_args, monkeypatch):
    """26 path-star ids < 65 characters: the size alone would let the vocabulary 'grow'."""
    ps = runs['pathstar']
    want = (
        f"error: --init_from={ps} has a different vocabulary than dataset 'tiny_char': "
        f"path-star incontext (N=20) ids in the checkpoint, characters in dataset 'tiny_char'"
    )
    msg = one_line_error(monkeypatch, train, tiny_args + ONE + [f'--init_from={ps}'])
    assert msg.startswith(want)


def test_init_from_a_checkpoint_of_other_characters_is_refused(runs, tiny_args, tmp_path):
    ck = torch.load(runs['next_token'], weights_only=False)
    ck['meta']['itos'] = {**ck['meta']['itos'], 0: '\x00'}
    torch.save(ck, tmp_path / 'other.pt')
    with pytest.raises(
        DataError, match=r"^--init_from=.*other\.pt has a different vocabulary .*id 0"
    ):
        train.main(tiny_args + ONE + [f'--init_from={tmp_path}/other.pt'])


# ---- a remasker where a denoiser belongs, and the reverse ----


@pytest.mark.parametrize('flag', ['--ckpt', '--out_dir'])
def test_diffusion_sampling_from_a_remasker_names_the_flag(runs, monkeypatch, flag):
    rm = runs['remasking']
    value = rm if flag == '--ckpt' else os.path.dirname(rm)
    msg = one_line_error(monkeypatch, sample, [f'{flag}={value}', '--mode=diffusion'])
    assert msg.startswith(
        f"error: {flag}={rm} is not an unmasking or hybrid checkpoint: it is a remasker "
        f"(objective 'remasking', bidirectional)"
    )


def test_a_denoiser_given_as_remasker_is_refused(runs, monkeypatch):
    un = runs['unmasking']
    args = [f'--ckpt={un}', '--mode=diffusion', '--steps=4', '--length=8', '--remask=learned']
    msg = one_line_error(monkeypatch, sample, args + [f'--remasker_ckpt={un}'])
    assert msg.startswith(
        f"error: --remasker_ckpt={un} is not a remasking checkpoint: it is a masked-diffusion "
        f"denoiser (objective 'unmasking', bidirectional)"
    )
    assert sample.main(args + [f'--remasker_ckpt={runs["remasking"]}'])  # the right one samples


@pytest.mark.parametrize(
    'flag, extra, need',
    [
        ('--remasking_denoiser', ['--objective=remasking'], 'an unmasking checkpoint'),
        (
            '--hybrid_denoiser',
            ['--objective=hybrid', '--hybrid_wrong_source=self'],
            'an unmasking or hybrid checkpoint',
        ),
    ],
)
def test_a_remasker_given_as_frozen_denoiser_is_refused(
    runs, tiny_args, monkeypatch, flag, extra, need
):
    rm = runs['remasking']
    msg = one_line_error(monkeypatch, train, tiny_args + ONE + extra + [f'{flag}={rm}'])
    assert msg.startswith(f"error: {flag}={rm} is not {need}: it is a remasker")


def test_a_frozen_denoiser_of_other_data_is_refused(runs, tiny_args, tmp_path):
    ck = torch.load(runs['unmasking'], weights_only=False)
    ck['meta']['itos'] = {**ck['meta']['itos'], 1: '\x00'}
    torch.save(ck, tmp_path / 'other.pt')
    with pytest.raises(DataError, match=r"^--remasking_denoiser=.* different vocabulary .*id 1"):
        train.main(
            tiny_args + ONE + ['--objective=remasking', f'--remasking_denoiser={tmp_path}/other.pt']
        )


def test_init_from_what_a_second_phase_may_start_from(runs, tiny_args, monkeypatch):
    rm, nt = runs['remasking'], runs['next_token']
    msg = one_line_error(
        monkeypatch, train, tiny_args + ONE + ['--objective=unmasking', f'--init_from={rm}']
    )
    assert msg.startswith(
        f"error: --init_from={rm} is a remasker (objective 'remasking', bidirectional): "
        f"--objective=unmasking cannot start from it"
    )
    # the documented AR init of a denoiser (config/diffusion_char_arinit.py) is fine
    h = train.main(tiny_args + ONE + ['--objective=unmasking', f'--init_from={nt}'])
    assert len(h['train']) == 1
    # resume continues the checkpoint's own objective
    with pytest.raises(
        ConfigError, match=r"^--init_from=resume: .* resume with --objective=next_token"
    ):
        train.main(
            tiny_args
            + ONE
            + ['--objective=unmasking', '--init_from=resume', f'--out_dir={os.path.dirname(nt)}']
        )


# ---- nanoGPT checkpoints ----


def nanogpt_checkpoint(path, vocab_size, dataset, mask_buffer=False):
    """A checkpoint as nanoGPT's train.py writes it (bias=True, no meta, no objective)."""
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=True, vocab_size=vocab_size)
    torch.manual_seed(3)
    model = GPT(GPTConfig(**args, dropout=0.0))
    state = model.state_dict()
    if mask_buffer:  # nanoGPT without flash attention: the causal mask as a buffer
        for i in range(2):
            state[f'transformer.h.{i}.attn.bias'] = torch.ones(32, 32).tril().view(1, 1, 32, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.save(
        {
            'model': {f'_orig_mod.{k}': v for k, v in state.items()},  # saved under compile
            'optimizer': optimizer.state_dict(),
            'model_args': {**args, 'dropout': 0.0},
            'iter_num': 500,
            'best_val_loss': torch.tensor(1.5),
            'config': {'dataset': dataset, 'batch_size': 12, 'learning_rate': 1e-3},
        },
        path,
    )
    return model


def tiny_vocab(data_root):
    with open(os.path.join(data_root, 'tiny_char', 'meta.pkl'), 'rb') as f:
        return pickle.load(f)['vocab_size']


def test_training_continues_from_a_nanogpt_checkpoint(data_root, tiny_args, tmp_path):
    nano = tmp_path / 'nanogpt.pt'
    want = nanogpt_checkpoint(nano, tiny_vocab(data_root), 'tiny_char', mask_buffer=True)
    cfg = {**train.DEFAULTS, 'data_root': data_root, 'init_from': str(nano), 'block_size': 32}
    ck = train.read_init_checkpoint(cfg, set())
    assert cfg['bias'] is True and cfg['n_embd'] == 32  # the architecture came from it
    src = type('S', (), {'vocab_size': want.config.vocab_size, 'causal': True, 'meta': None})()
    got = train.build_model(cfg, set(), src, ck)
    for k, v in want.state_dict().items():
        assert torch.equal(got.state_dict()[k], v), k
    h = train.main(tiny_args + [f'--init_from={nano}', '--max_iters=2', '--eval_interval=100'])
    assert len(h['train']) == 2
    saved = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=False)
    assert saved['objective'] == 'next_token' and saved['model_args']['bias'] is True


def test_sample_decodes_a_nanogpt_checkpoint_with_its_datasets_meta(
    data_root, tmp_path, monkeypatch
):
    nano = tmp_path / 'nanogpt.pt'
    nanogpt_checkpoint(nano, tiny_vocab(data_root), 'tiny_char')
    monkeypatch.chdir(tmp_path)
    os.symlink(data_root, tmp_path / 'data')  # data/tiny_char/meta.pkl, as nanoGPT reads it
    outs = sample.main(
        [f'--ckpt={nano}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=7']
    )
    assert outs[0].startswith('ROMEO:') and len(outs[0]) == 6 + 7  # one character per token
    # a meta.pkl of another size is not its vocabulary
    nanogpt_checkpoint(nano, tiny_vocab(data_root) + 1, 'tiny_char')
    msg = one_line_error(monkeypatch, sample, [f'--ckpt={nano}'])
    assert msg.startswith(f"error: --ckpt={nano} is a nanoGPT checkpoint with vocab_size")


def test_nanogpt_checkpoint_without_meta_offline_is_one_line(tmp_path, monkeypatch):
    """No data/<dataset>/meta.pkl: GPT-2 BPE, which offline without tiktoken's cache is an
    error that says so (no download is attempted: the fetch is replaced by a failing one)."""
    import requests
    import tiktoken
    import tiktoken.load
    import tiktoken.registry

    def offline(url):
        raise requests.ConnectionError(f'offline: {url}')

    monkeypatch.setattr(tiktoken.load, 'read_file', offline)
    monkeypatch.setattr(tiktoken.registry, 'ENCODINGS', {})  # nothing built in this process
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', str(tmp_path / 'empty_cache'))
    monkeypatch.chdir(tmp_path)
    nano = tmp_path / 'nanogpt.pt'
    nanogpt_checkpoint(nano, 50304, 'openwebtext')
    msg = one_line_error(monkeypatch, sample, [f'--ckpt={nano}', '--max_new_tokens=2'])
    assert msg == (
        f"error: --ckpt={nano} has no vocabulary of its own (a nanoGPT checkpoint; "
        f"{os.path.join('data', 'openwebtext', 'meta.pkl')} not found), so it is read as GPT-2 "
        f"BPE: GPT-2 BPE is not available here (ConnectionError: tiktoken needs its files, "
        f"downloaded once or cached): pass --bpe_dir=<a folder with GPT-2's vocab.bpe and "
        f"encoder.json>"
    )
