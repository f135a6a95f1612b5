"""SFT with loss masks: chat shards, the mask through the shift, masked loss, two-phase
training with vocabulary growth, chat sampling, and every bad input's error."""

import importlib.util
import json
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import batches
import chat
import sample
import train
from configurator import ConfigError
from conftest import ROOT, SHARED, TINY
from model import GPT, GPTConfig
from utils import DataError

# loaded under its own name: conftest imports data/shakespeare_char/prepare.py as 'prepare'
_spec = importlib.util.spec_from_file_location(
    'chat_prepare', os.path.join(ROOT, 'data', 'chat', 'prepare.py')
)
chat_prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chat_prepare)

# disjoint alphabets make every token's role readable from the token itself
USER, ASSISTANT, SYSTEM = 'abcd', 'wxyz', 'mnop'


def toy_conversations(n=60, seed=0):
    rnd = np.random.default_rng(seed)
    word = lambda abc, k: ''.join(rnd.choice(list(abc), k))  # noqa: E731
    convs = []
    for i in range(n):
        msgs = [{'role': 'system', 'content': word(SYSTEM, 3)}] if i % 3 == 0 else []
        for _ in range(1 + i % 2):  # one or two exchanges
            msgs += [
                {'role': 'user', 'content': word(USER, int(rnd.integers(2, 9)))},
                {'role': 'assistant', 'content': word(ASSISTANT, int(rnd.integers(1, 9)))},
            ]
        convs.append({'messages': msgs})
    return convs


def write_jsonl(path, convs):
    path.write_text(''.join(json.dumps(c) + '\n' for c in convs))
    return str(path)


def prepare(tmp_path, convs=None, name='chat', extra=()):
    src = write_jsonl(tmp_path / f'{name}.jsonl', convs or toy_conversations())
    out = str(tmp_path / name)
    chat_prepare.main(['--input', src, '--out_dir', out, '--val_fraction', '0.25', *extra])
    return out


def expected_mask(tokens, meta):
    """1 where the token is assistant text, or the <|end|> closing an assistant turn."""
    itos, sp = meta['itos'], meta['special']
    is_asst = np.array([itos[int(t)] in ASSISTANT for t in tokens])
    prev_asst = np.concatenate([[False], is_asst[:-1]])
    return is_asst | ((tokens == sp['<|end|>']) & prev_asst)


def test_render_masks_assistant_text_and_its_end_only():
    sp = {s: 100 + k for k, s in enumerate(chat.SPECIALS)}
    msgs = [
        {'role': 'system', 'content': 'S'},
        {'role': 'user', 'content': 'hi'},
        {'role': 'assistant', 'content': 'yo!'},
    ]
    ids, mask = chat.render(msgs, lambda s: [ord(c) for c in s], sp)
    assert ids == [
        100,
        ord('S'),
        103,
        101,
        ord('h'),
        ord('i'),
        103,
        102,
        ord('y'),
        ord('o'),
        ord('!'),
        103,
    ]
    assert mask == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    _, mask_user = chat.render(msgs, lambda s: [ord(c) for c in s], sp, mask_role='user')
    assert mask_user == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert chat.prompt_ids('hi', lambda s: [ord(c) for c in s], sp) == [
        101,
        ord('h'),
        ord('i'),
        103,
        102,
    ]


def test_prepared_mask_never_covers_user_system_or_tags(tmp_path):
    stale = tmp_path / 'chat' / 'train' / 'shard_007.bin'  # from an earlier, larger run
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b'xx')
    out = prepare(tmp_path)
    assert not stale.exists()
    meta = pickle.load(open(os.path.join(out, 'meta.pkl'), 'rb'))
    sp = meta['special']
    for split in ('train', 'val'):
        tok = np.fromfile(os.path.join(out, split, 'shard_000.bin'), dtype=meta['dtype'])
        mask = np.fromfile(os.path.join(out, split, 'shard_000_mask.bin'), dtype=np.uint8)
        assert len(tok) == len(mask) == meta['counts'][split]['tokens']
        np.testing.assert_array_equal(mask.astype(bool), expected_mask(tok, meta))
        tags = np.isin(tok, [sp['<|system|>'], sp['<|user|>'], sp['<|assistant|>']])
        assert not mask[tags].any()
        after_tag = np.flatnonzero(tok == sp['<|assistant|>']) + 1
        assert mask[after_tag].all()  # the mask starts right after the assistant tag
        assert meta['counts'][split]['supervised'] == int(mask.sum())
    assert meta['counts']['train']['conversations'] + meta['counts']['val']['conversations'] == 60


@pytest.mark.parametrize('use_mask', [True, False])
def test_batch_mask_is_shifted_with_the_targets(tmp_path, use_mask):
    out = prepare(tmp_path)
    cfg = {'block_size': 24, 'use_loss_mask': use_mask}
    src = batches.SFT(cfg, out, seed=3)
    b = src.get_batch('train', 16)
    assert torch.equal(b['x'][:, 1:], b['y'][:, :-1])
    if not use_mask:  # trains on every token of the same windows
        assert 'loss_mask' not in b
        return
    want = torch.from_numpy(expected_mask(b['y'].flatten().numpy(), src.meta)).view_as(b['y'])
    # y's first column has no in-window predecessor: its <|end|> role comes from x's last token
    y_end = b['y'][:, 0] == src.meta['special']['<|end|>']
    prev = torch.tensor([src.meta['itos'][int(t)] in ASSISTANT for t in b['x'][:, 0]])
    want[:, 0] = want[:, 0] | (y_end & prev)
    assert torch.equal(b['loss_mask'], want)
    src.observe()  # a training batch, as train.py says
    assert 0 < src.diagnostics()['mask_frac'] < 1
    again = batches.SFT(cfg, out, seed=3).get_batch('train', 16)  # seeded: reproducible
    assert torch.equal(again['x'], b['x']) and torch.equal(again['loss_mask'], b['loss_mask'])


def test_masked_loss_is_cross_entropy_over_assistant_tokens_only(tmp_path):
    out = prepare(tmp_path)
    src = batches.SFT({'block_size': 24, 'use_loss_mask': True}, out, seed=0)
    b = src.get_batch('train', 8)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=24, vocab_size=src.vocab_size, n_layer=2, n_head=2, n_embd=16))
    logits, loss = model(b['x'], b['y'], loss_mask=b['loss_mask'])
    ce = F.cross_entropy(logits.flatten(0, 1), b['y'].flatten(), reduction='none')
    asst = torch.tensor([src.meta['itos'][int(t)] in ASSISTANT for t in b['y'].flatten()])
    ends = b['y'].flatten() == src.meta['special']['<|end|>']
    keep = b['loss_mask'].flatten()
    assert keep[asst].all() and not keep[~(asst | ends)].any()
    assert loss.item() == pytest.approx(ce[keep].mean().item(), rel=1e-5)
    _, plain = model(b['x'], b['y'])
    assert plain.item() == pytest.approx(ce.mean().item(), rel=1e-5)
    assert abs(plain.item() - loss.item()) > 1e-4


def test_micro_batch_without_supervised_tokens_is_not_nan():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=1, n_head=1, n_embd=8))
    x, y = torch.randint(13, (2, 2, 8)), torch.randint(13, (2, 2, 8))
    mask = torch.zeros(2, 2, 8, dtype=torch.bool)
    mask[1, :, 3:] = True  # micro-batch 0 supervises nothing
    norm = mask.sum().float().view(1)  # the whole step's count, as train.py passes it
    losses = [model(x[m], y[m], loss_mask=mask[m], loss_norm=norm)[1] for m in range(2)]
    assert losses[0].item() == 0.0 and torch.isfinite(losses[1])
    _, alone = model(x[0], y[0], loss_mask=mask[0])
    assert alone.item() == 0.0  # its own (zero) normaliser: 0, not NaN
    _, whole = model(x.flatten(0, 1), y.flatten(0, 1), loss_mask=mask.flatten(0, 1))
    assert (losses[0] + losses[1]).item() == pytest.approx(whole.item(), rel=1e-5)


def toy_chat_args(data_root, tmp_path, out_name, extra=()):
    """SFT flags for a chat dataset on top of a tiny_char base, architecture not repeated."""
    return [
        '--device=cpu',
        '--compile=False',
        '--batch_size=16',
        '--eval_iters=2',
        '--warmup_iters=0',
        f'--data_root={tmp_path}',
        '--objective=sft',
        f'--out_dir={tmp_path}/{out_name}',
        *extra,
    ]


def test_two_phase_keeps_architecture_swaps_training_params_and_chats(data_root, tmp_path):
    base_args = TINY + [
        f'--data_root={data_root}',
        '--dataset=tiny_char',
        '--max_iters=2',
        '--eval_interval=100',
        f'--out_dir={tmp_path}/base',
    ]
    train.main(base_args)
    base_ckpt = torch.load(tmp_path / 'base' / 'ckpt.pt', weights_only=False)
    # one fixed exchange: 'lord' -> 'king', so a tiny model learns the reply and when to stop
    convs = [
        {
            'messages': [
                {'role': 'user', 'content': 'lord'},
                {'role': 'assistant', 'content': 'king'},
            ]
        }
    ] * 40
    convs.append(
        {
            'messages': [
                {'role': 'user', 'content': 'lord'},
                {'role': 'assistant', 'content': 'king#'},
            ]
        }
    )  # '#': not in base
    base_meta = os.path.join(data_root, 'tiny_char', 'meta.pkl')
    with pytest.warns(UserWarning, match="1 characters .* not in the base vocabulary"):
        prepare(tmp_path, convs, 'toy', ['--base_meta', base_meta])
    meta = pickle.load(open(tmp_path / 'toy' / 'meta.pkl', 'rb'))
    V0 = base_ckpt['model_args']['vocab_size']
    assert meta['vocab_size'] == V0 + 1 + 4 and meta['itos'][V0] == '#'
    args = toy_chat_args(
        data_root,
        tmp_path,
        'sft',
        [
            '--dataset=toy',
            f'--init_from={tmp_path}/base/ckpt.pt',
            '--dropout=0.1',
            '--learning_rate=1e-2',
            '--min_lr=1e-3',
            '--max_iters=80',
            '--eval_interval=80',
        ],
    )
    hist = train.main(args)
    assert 'val_assistant' in hist['eval'][-1] and hist['eval'][-1]['val_assistant'] < 0.5
    ckpt = torch.load(tmp_path / 'sft' / 'ckpt.pt', weights_only=False)
    for k in ('n_layer', 'n_head', 'n_embd', 'block_size'):
        assert ckpt['model_args'][k] == base_ckpt['model_args'][k]  # from the base, not defaults
        assert ckpt['config'][k] == base_ckpt['model_args'][k]
    assert ckpt['model_args']['vocab_size'] == meta['vocab_size']
    assert ckpt['config']['use_loss_mask'] is True and ckpt['config']['learning_rate'] == 1e-2
    assert ckpt['model_args']['dropout'] == 0.1 and ckpt['config']['batch_size'] == 16
    # vocabulary growth at init_from: old rows kept, new rows initialised
    cfg = {**train.DEFAULTS, 'init_from': f'{tmp_path}/base/ckpt.pt', 'dropout': 0.2}
    src = batches.SFT({'block_size': 32, 'use_loss_mask': True}, str(tmp_path / 'toy'), 0)
    model = train.build_model(cfg, set(), src)
    w = model.transformer.wte.weight
    assert torch.equal(w[:V0], base_ckpt['model']['transformer.wte.weight'])
    assert w.shape[0] == V0 + 5 and torch.isfinite(w[V0:]).all() and w[V0:].std() > 0
    assert model.transformer.drop.p == 0.2 and model.transformer.h[0].attn.dropout == 0.2
    # chat mode: the reply is rendered from the template and stops at <|end|>
    outs = sample.main(
        [
            f'--out_dir={tmp_path}/sft',
            '--mode=chat',
            '--start=lord',
            '--temperature=0',
            '--num_samples=1',
            '--max_new_tokens=20',
        ]
    )
    assert outs == ['king']
    with pytest.raises(ConfigError, match='--mode=chat needs a checkpoint trained on chat data'):
        sample.main([f'--out_dir={tmp_path}/base', '--mode=chat', '--start=lord'])
    # the same data without the mask still trains, and reports the same val figure
    nomask = train.main(
        args[:-2]
        + [
            '--max_iters=2',
            '--eval_interval=2',
            '--use_loss_mask=False',
            f'--out_dir={tmp_path}/nomask',
        ]
    )
    assert {'val', 'val_assistant', 'val_all'} <= set(nomask['eval'][-1])


def test_reply_cuts_at_end_token():
    meta = {
        'tokenizer': 'char',
        'itos': {0: 'a', 1: 'b', 2: '<|system|>', 3: '<|user|>', 4: '<|assistant|>', 5: '<|end|>'},
        'special': {'<|system|>': 2, '<|user|>': 3, '<|assistant|>': 4, '<|end|>': 5},
    }
    meta['stoi'] = {s: i for i, s in meta['itos'].items()}

    class Stub:
        def generate(self, x, n, temperature, top_k, stop_token):
            assert x[0].tolist() == [3, 0, 1, 5, 4] and stop_token == 5
            return torch.cat([x, torch.tensor([[1, 1, 5, 0]])], 1)

    assert chat.reply(Stub(), meta, 'ab') == 'bb'


def test_chatterbot_and_gpt2_preparation(tmp_path):
    yml = tmp_path / 'cb'
    yml.mkdir()
    (yml / 'x.yml').write_text(
        "categories:\n- x\nconversations:\n"
        + ''.join(f"- - Hello {i}\n  - Hi there {i}\n  - How are you\n" for i in range(10))
    )
    meta = chat_prepare.main(['--chatterbot', str(yml), '--out_dir', str(tmp_path / 'cbo')])
    assert (
        meta['counts']['train']['conversations'] == 9
        and meta['counts']['val']['conversations'] == 1
    )
    shown = chat.show(str(tmp_path / 'cbo'), 'val', 3, plain=True)
    k = shown[0].split('Hello ')[1][0]  # which conversation went to val
    assert shown == [
        f'<|user|>Hello {k}<|end|><|assistant|>[[Hi there {k}<|end|>]]',
        '<|user|>How are you<|end|>',
    ]  # the third turn is the user's again
    bpe = os.path.join(SHARED, 'gpt2_bpe')
    if not os.path.exists(os.path.join(bpe, 'vocab.bpe')):
        pytest.skip('no offline GPT-2 BPE files')
    meta = chat_prepare.main(
        [
            '--chatterbot',
            str(yml),
            '--out_dir',
            str(tmp_path / 'g2'),
            '--tokenizer',
            'gpt2',
            '--bpe_dir',
            bpe,
        ]
    )
    assert meta['vocab_size'] == 50257 + 4 and meta['special']['<|end|>'] == 50260
    enc, dec, sp = chat.text_codec(meta)
    ids, _ = chat.render([{'role': 'user', 'content': 'Hello'}], enc, sp)
    assert dec(ids) == '<|user|>Hello<|end|>'


def test_bad_inputs_are_clear_errors(tmp_path, data_root):
    out = prepare(tmp_path)
    cfg = {'block_size': 24, 'use_loss_mask': True}
    mask_path = os.path.join(out, 'train', 'shard_000_mask.bin')
    good = open(mask_path, 'rb').read()
    os.remove(mask_path)
    with pytest.raises(DataError, match='shard_000.bin has no mask shard shard_000_mask.bin'):
        batches.SFT(cfg, out, 0)
    open(mask_path, 'wb').write(good[:-5])
    with pytest.raises(DataError, match='shard_000_mask.bin has .* entries but .* tokens'):
        batches.SFT(cfg, out, 0)
    open(mask_path, 'wb').write(bytes(len(good)))
    with pytest.raises(DataError, match='no supervised token at all'):
        batches.SFT(cfg, out, 0)
    open(mask_path, 'wb').write(good)
    batches.SFT(cfg, out, 0)  # restored: loads
    with pytest.raises(DataError, match='too few for --block_size=100000'):
        batches.SFT({**cfg, 'block_size': 100000}, out, 0)
    with pytest.raises(DataError, match='no chat special tokens'):
        batches.SFT(cfg, os.path.join(data_root, 'tiny_char'), 0)
    # at preparation: a role that never occurs, an implausible density, a bad line
    with pytest.raises(DataError, match='no supervised token at all'):
        prepare(
            tmp_path,
            [
                {
                    'messages': [
                        {'role': 'user', 'content': 'ab'},
                        {'role': 'assistant', 'content': 'wx'},
                    ]
                }
            ]
            * 4,
            'nosys',
            ['--mask_role', 'system'],
        )
    with pytest.warns(UserWarning, match=r'implausible mask density 0\.9[89]'):
        prepare(
            tmp_path,
            [
                {
                    'messages': [
                        {'role': 'user', 'content': ''},
                        {'role': 'assistant', 'content': 'w' * 300},
                    ]
                }
            ]
            * 4,
            'dense',
        )
    (tmp_path / 'bad.jsonl').write_text('{"messages": [{"role": "bot", "content": "x"}]}\n')
    with pytest.raises(DataError, match=r'bad.jsonl:1: each message needs a role'):
        chat_prepare.main(
            ['--input', str(tmp_path / 'bad.jsonl'), '--out_dir', str(tmp_path / 'b')]
        )
    (tmp_path / 'bad.jsonl').write_text('{"text": "x"}\n')
    with pytest.raises(DataError, match=r'bad.jsonl:1: not a {"messages"'):
        chat_prepare.main(
            ['--input', str(tmp_path / 'bad.jsonl'), '--out_dir', str(tmp_path / 'b')]
        )
    with pytest.raises(DataError, match='already has'):  # an SFT meta is not a base vocabulary
        prepare(tmp_path, name='again', extra=['--base_meta', os.path.join(out, 'meta.pkl')])
