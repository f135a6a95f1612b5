"""Every 124M recipe (config/gpt2_124m_*.py) runs, shrunk to a tiny model on CPU, on a tiny
dataset in its format; the recipes from GPT-2 weights start from a tiny GPT-2 folder made here
(pretrained.to_hf), so the configs cannot rot."""

import glob
import json
import os
import pickle

import numpy as np
import pytest
import torch
from test_sft import chat_prepare

import checkpoint
import pretrained
import shards
import train
from conftest import ROOT, SHARED
from model import GPT, GPTConfig

BPE = os.path.join(SHARED, 'gpt2_bpe')
SHRINK = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=2']
SHRINK += ['--max_iters=2', '--device=cpu', '--compile=False', '--eval_iters=1']
SHRINK += ['--log_interval=1', '--gradient_accumulation_steps=2']  # 40 micro-batches: slow here
RECIPES = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, 'config', 'gpt2_124m_*.py'))
    if not p.endswith('_common.py')
)


@pytest.fixture(scope='module')
def recipe_data(tmp_path_factory):
    """data_root with 'webtext' (llm.c shards of GPT-2-like ids, two train shards, newline
    198 every ~10 tokens) and 'chat_gsm8k_gpt2' (50 GSM8K chats in GPT-2 BPE, when ../shared
    has them)."""
    root = tmp_path_factory.mktemp('recipes')
    rng = np.random.default_rng(0)
    web = root / 'webtext'
    web.mkdir()
    names = {'train': ['train_000000.bin', 'train_000001.bin'], 'val': ['val_000000.bin']}
    for name in names['train'] + names['val']:
        a = rng.integers(0, 50257, 3000)
        a[rng.random(3000) < 0.1] = 198
        shards.write_shard(str(web / name), a)
    meta = {'vocab_size': 50304, 'tokenizer': 'gpt2', 'dtype': 'uint16', 'shards': names}
    (web / 'meta.pkl').write_bytes(pickle.dumps({**meta, 'objective': 'next_token'}))
    gsm8k = os.path.join(SHARED, 'gsm8k')
    if os.path.exists(os.path.join(BPE, 'vocab.bpe')) and os.path.isdir(gsm8k):
        chat_prepare.main(
            [f'--gsm8k={gsm8k}', '--tokenizer=gpt2', f'--bpe_dir={BPE}', '--max_conversations=50']
            + [f'--out_dir={root}/chat_gsm8k_gpt2']
        )
    return root


def test_there_is_a_recipe_per_objective():
    objectives = set()
    for path in RECIPES:
        cfg, _ = train.load_config(train.DEFAULTS, [os.path.join(ROOT, path)])
        objectives.add(cfg['objective'])
        assert cfg['batch_size'] * cfg['block_size'] * cfg['gradient_accumulation_steps'] in (
            491_520,  # nanoGPT's ~0.5M tokens per step
            65_536,  # SFT: a small data set
        ), path
    assert objectives == {'next_token', 'sft', 'mlm', 'unmasking', 'remasking', 'hybrid'}


def tiny_gpt2(folder):
    """A GPT-2 folder as Hugging Face lays it out (pretrained.to_hf), 1 x 32, block 32, GPT-2's
    vocabulary and GELU: what --init_from=gpt2 reads, tiny."""
    save_file = pytest.importorskip('safetensors.torch').save_file
    torch.manual_seed(0)
    shape = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=50257)
    tiny = GPT(GPTConfig(**shape, bias=True, gelu_approximate='tanh'))
    tensors, config = pretrained.to_hf(
        {'model': tiny.state_dict(), 'model_args': vars(tiny.config)}
    )
    folder.mkdir()
    save_file(tensors, str(folder / 'model.safetensors'))
    (folder / 'config.json').write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize('path', RECIPES)
def test_recipe_runs_shrunk_on_cpu(path, recipe_data, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # a recipe execs config/gpt2_124m_common.py by a relative path
    cfg, _ = train.load_config(train.DEFAULTS, [path])
    args = [path, *SHRINK, f'--data_root={recipe_data}', f'--out_dir={tmp_path}/out']
    if cfg['init_from'] != 'scratch':
        args.append(f'--init_from={tiny_gpt2(tmp_path / "gpt2")}')
    if cfg['objective'] == 'sft' and not (recipe_data / cfg['dataset']).exists():
        pytest.skip('no offline GPT-2 BPE / GSM8K in ../shared/data')
    history = train.main(args)
    assert len(history['train']) == 2 and np.isfinite(history['eval'][-1]['val'])
    saved = checkpoint.load(os.path.join(tmp_path, 'out'))
    assert saved['objective'] == cfg['objective']
    if cfg['init_from'] != 'scratch':  # started from the GPT-2 folder: its biases and GELU
        assert saved['model_args']['bias'] and saved['model_args']['gelu_approximate'] == 'tanh'
