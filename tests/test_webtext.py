"""data/webtext/prepare.py: a large-corpus prepare run gives exactly tiktoken's tokens of the
concatenated documents (EOT between), in llm.c shards, split by documents; resumable."""

import importlib.util
import json
import os
import pickle
import re
import sys
import types

import numpy as np
import pytest

import shards
from conftest import ROOT, SHARED, shakespeare_text
from utils import DataError, gpt2_encoding

BPE = os.path.join(SHARED, 'gpt2_bpe')
pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(BPE, 'vocab.bpe')), reason='no offline GPT-2 BPE files'
)


def load_prepare():
    path = os.path.join(ROOT, 'data', 'webtext', 'prepare.py')
    spec = importlib.util.spec_from_file_location('webtext_prepare', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # worker processes unpickle its functions by this name
    spec.loader.exec_module(module)
    return module


prepare = load_prepare()


def speeches(n):
    """n documents: tinyshakespeare's speeches (blank-line separated), or a stand-in."""
    docs = [d.strip('\n') for d in shakespeare_text(400_000).split('\n\n') if d.strip()]
    return docs[:n]


def write_jsonl(path, docs):
    with open(path, 'w', encoding='utf-8') as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({'id': i, 'text': d}) + '\n')


def split_tokens(out_dir, split):
    meta = pickle.loads(open(os.path.join(out_dir, 'meta.pkl'), 'rb').read())
    parts = [shards.read_shard(os.path.join(out_dir, n)) for n in meta['shards'][split]]
    return meta, np.concatenate(parts) if parts else np.array([], np.uint16)


def expected(docs):
    """tiktoken on the split's documents concatenated, <|endoftext|> before each."""
    enc = gpt2_encoding(BPE)
    text = ''.join('<|endoftext|>' + d for d in docs)
    return np.array(enc.encode(text, allowed_special={'<|endoftext|>'}), dtype=np.uint16)


def run(tmp_path, name, inputs, *extra):
    out = str(tmp_path / name)
    args = [f'--input={inputs}', f'--out_dir={out}', f'--bpe_dir={BPE}', '--val_fraction=0.1']
    prepare.main(args + ['--shard_tokens=2000', '--num_proc=1', '--chunk_chars=3000', *extra])
    return out


def test_tokens_are_tiktokens_of_the_concatenated_documents(tmp_path, capsys):
    docs = speeches(400)
    write_jsonl(tmp_path / 'a.jsonl', docs[:250])
    write_jsonl(tmp_path / 'b.jsonl', docs[250:])
    out = run(tmp_path, 'out', str(tmp_path))  # a folder: a.jsonl then b.jsonl
    progress = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(
        r"400 documents, [\d,]+ tokens, [\d,]+ tokens/s, 100.0% of the input, ETA "
        r"0.0 min",
        progress,
    ), progress
    val = [d for d in docs if prepare.in_val(d, 0.1)]
    train = [d for d in docs if not prepare.in_val(d, 0.1)]
    assert 20 < len(val) < 70  # ~10% of 400
    for split, split_docs in (('train', train), ('val', val)):
        meta, tokens = split_tokens(out, split)
        np.testing.assert_array_equal(tokens, expected(split_docs))
        assert meta['split_docs'][split] == len(split_docs)
        assert meta['split_tokens'][split] == len(tokens) == sum(meta['shard_tokens'][split])
        assert all(n == 2000 for n in meta['shard_tokens'][split][:-1])  # only the last is short
    for s in ('train', 'val'):
        assert meta['split_max_token'][s] == int(split_tokens(out, s)[1].max())
    assert (meta['vocab_size'], meta['tokenizer'], meta['dtype']) == (50304, 'gpt2', 'uint16')
    assert meta['objective'] == 'next_token' and meta['prepare'].startswith('python data/web')
    assert len(meta['shards']['train']) >= 5

    # the same documents as .txt files (one each), a blank-line .txt, in worker processes
    folder = tmp_path / 'txt'
    folder.mkdir()
    for i, d in enumerate(docs[:60]):
        (folder / f'{i:03d}.txt').write_text(d)
    out = run(tmp_path, 'txt_out', str(folder), '--num_proc=2')
    first = [d for d in docs[:60] if not prepare.in_val(d, 0.1)]
    np.testing.assert_array_equal(split_tokens(out, 'train')[1], expected(first))
    (tmp_path / 'all.txt').write_text('\n\n\n'.join(docs[:60]) + '\n')
    out = run(tmp_path, 'blank_out', str(tmp_path / 'all.txt'), '--txt_docs=blank_line')
    assert np.array_equal(
        split_tokens(out, 'val')[1], expected([d for d in docs[:60] if prepare.in_val(d, 0.1)])
    )


def test_parquet_input_gives_the_same_shards(tmp_path):
    pa = pytest.importorskip('pyarrow')
    pq = pytest.importorskip('pyarrow.parquet')
    docs = speeches(120)
    write_jsonl(tmp_path / 'docs.jsonl', docs)
    pq.write_table(pa.table({'text': docs, 'n': list(range(120))}), tmp_path / 'docs.parquet')
    a = run(tmp_path, 'j', str(tmp_path / 'docs.jsonl'))
    b = run(tmp_path, 'p', str(tmp_path / 'docs.parquet'))
    for split in ('train', 'val'):
        np.testing.assert_array_equal(split_tokens(a, split)[1], split_tokens(b, split)[1])
    with pytest.raises(
        DataError, match=r"docs.parquet: no column 'body' \(columns \['text', 'n'\]"
    ):
        run(tmp_path, 'p2', str(tmp_path / 'docs.parquet'), '--text_field=body')


def test_an_interrupted_run_resumes_without_redoing_finished_shards(tmp_path, monkeypatch):
    docs = speeches(400)
    write_jsonl(tmp_path / 'docs.jsonl', docs)
    whole = run(tmp_path, 'whole', str(tmp_path / 'docs.jsonl'))

    written, encoded = [], []
    real_write, real_encode = prepare.write_shard, prepare.encode_chunk

    def crash_after_4(path, tokens):
        if len(written) == 4:
            raise KeyboardInterrupt  # killed while writing the fifth shard
        written.append(os.path.basename(path))
        real_write(path, tokens)

    monkeypatch.setattr(prepare, 'write_shard', crash_after_4)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, 'cut', str(tmp_path / 'docs.jsonl'))
    out = str(tmp_path / 'cut')
    assert not os.path.exists(os.path.join(out, 'meta.pkl'))
    first = list(written)
    stamps = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in first}

    written.clear()
    monkeypatch.setattr(prepare, 'write_shard', lambda p, t: (written.append(p), real_write(p, t)))
    monkeypatch.setattr(prepare, 'encode_chunk', lambda t: (encoded.extend(t), real_encode(t))[1])
    run(tmp_path, 'cut', str(tmp_path / 'docs.jsonl'))
    assert not set(first) & {os.path.basename(p) for p in written}  # finished shards kept
    assert all(os.stat(os.path.join(out, n)).st_mtime_ns == stamps[n] for n in first)
    assert len(encoded) < 0.8 * len(docs)  # their documents were not tokenized again
    for split in ('train', 'val'):
        np.testing.assert_array_equal(split_tokens(out, split)[1], split_tokens(whole, split)[1])
    # a finished run is not redone; other settings in the same folder are an error
    written.clear()
    run(tmp_path, 'cut', str(tmp_path / 'docs.jsonl'))
    assert written == []
    with pytest.raises(DataError, match=r"other settings \(shard_tokens differ\)"):
        run(tmp_path, 'cut', str(tmp_path / 'docs.jsonl'), '--shard_tokens=5000')


@pytest.mark.parametrize(
    'args, pattern',
    [
        (['--input=nowhere'], r"--input=nowhere: no such file or folder"),
        ([], r"pass one of --input"),
        (['--input={d}/docs.jsonl', '--text_field=body'], r"docs.jsonl:1: no text field 'body'"),
        (['--input={d}/docs.jsonl', '--val_fraction=1.5'], r"--val_fraction=1.5: must be in"),
    ],
)
def test_bad_inputs_are_one_line(tmp_path, args, pattern):
    write_jsonl(tmp_path / 'docs.jsonl', speeches(5))
    args = [a.replace('{d}', str(tmp_path)) for a in args]
    with pytest.raises(DataError, match=pattern) as e:
        prepare.main(args + [f'--out_dir={tmp_path}/o', f'--bpe_dir={BPE}'])
    assert '\n' not in str(e.value)


def test_a_streamed_hf_dataset_is_read_like_local_files(tmp_path, monkeypatch):
    """--hf_dataset goes through datasets.load_dataset(..., streaming=True) (a stand-in module
    here: tests never touch the network) and gives the shards the same documents as .jsonl give."""
    docs = speeches(80)
    calls = []

    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter({'text': d, 'id': i} for i, d in enumerate(docs))

    monkeypatch.setitem(sys.modules, 'datasets', types.SimpleNamespace(load_dataset=load_dataset))
    hf = str(tmp_path / 'hf')
    prepare.main(
        ['--hf_dataset=HuggingFaceFW/fineweb', '--hf_name=sample-10BT', f'--out_dir={hf}']
        + [f'--bpe_dir={BPE}', '--val_fraction=0.1', '--num_proc=1']
    )
    assert calls == [('HuggingFaceFW/fineweb', 'sample-10BT', 'train', True)]
    write_jsonl(tmp_path / 'docs.jsonl', docs)
    local = run(tmp_path, 'local', str(tmp_path / 'docs.jsonl'), '--shard_tokens=100000000')
    for split in ('train', 'val'):
        np.testing.assert_array_equal(split_tokens(hf, split)[1], split_tokens(local, split)[1])

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setitem(sys.modules, 'datasets', types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError, match=r"cannot be streamed \(ConnectionError: Couldn't reach"):
        prepare.main(['--hf_dataset=x/y', f'--out_dir={tmp_path}/o', f'--bpe_dir={BPE}'])
    monkeypatch.setitem(sys.modules, 'datasets', None)  # not installed
    with pytest.raises(DataError, match=r"--hf_dataset needs the `datasets` package"):
        prepare.main(['--hf_dataset=x/y', f'--out_dir={tmp_path}/o', f'--bpe_dir={BPE}'])
