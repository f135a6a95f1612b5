"""
A large text corpus (OpenWebText / FineWeb style) -> GPT-2 BPE llm.c shards + meta.pkl.

    python data/webtext/prepare.py --input=corpus/ --bpe_dir=../shared/data/gpt2_bpe
    python data/webtext/prepare.py --hf_dataset=HuggingFaceFW/fineweb --hf_name=sample-10BT

Input, --input = files or folders, comma-separated (folders searched recursively, sorted):
  *.txt       one document per file (OpenWebText's layout; a file is read whole);
              --txt_docs=blank_line: documents separated by blank lines, read line by line
              (e.g. tinyshakespeare, one speech each; or one huge file)
  *.jsonl     one JSON object per line, the document in --text_field (a,b: fields joined by
              newlines, e.g. GSM8K's question,answer)
  *.parquet   the --text_field column (FineWeb's files; needs pyarrow)
or --hf_dataset=<name> (streamed with the `datasets` package: online only).

Output in --out_dir (default: this folder): train_000000.bin ... and val_000000.bin ..., llm.c
shards (shards.py: 1024-byte header, uint16 tokens) of --shard_tokens tokens each (the last one
shorter). Every document is [EOT] + its tokens (llm.c's convention: EOT 50256 starts each
document, so it lies between documents); a split's documents in input order. A document goes to
val when a hash of its text falls below --val_fraction: deterministic, independent of the order
and of the other documents (an exact duplicate lands in the split of its first copy).

Tokenization runs in --num_proc worker processes (tiktoken encode_ordinary_batch) on chunks of
documents, streamed: the corpus is never in memory, only one shard buffer per split and the
chunks in flight. Resumable: manifest.json records each finished shard (written atomically) and
where in its split's document stream it ends; a re-run with the same settings skips the
documents before that point without tokenizing them. meta.pkl is written last: the shard list,
tokens per shard and split, and split_max_token (the trainer checks ids from it at start-up).
"""

import argparse
import glob
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import deque

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import utils  # noqa: E402
from configurator import run_cli  # noqa: E402
from shards import write_shard  # noqa: E402
from utils import DataError, atomic_write, gpt2_encoding, script_command  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EOT = 50256  # <|endoftext|>
SUFFIXES = ('.txt', '.jsonl', '.parquet')
# the settings that decide the shards' contents: a resumed run must have the same
CONTENT_KEYS = ('text_field', 'txt_docs', 'val_fraction', 'shard_tokens', 'max_docs')


# --- documents: (text, input bytes it stands for) ------------------------------------------
def input_files(spec):
    """The files of --input (comma-separated files or folders), folders expanded and sorted."""
    files = []
    for item in [s for s in spec.split(',') if s]:
        if os.path.isdir(item):
            found = sorted(
                p
                for p in glob.glob(os.path.join(item, '**', '*'), recursive=True)
                if p.endswith(SUFFIXES) and os.path.isfile(p)
            )
            if not found:
                raise DataError(f"--input={item}: no {'/'.join(SUFFIXES)} files in this folder")
            files += found
        elif os.path.isfile(item):
            if not item.endswith(SUFFIXES):
                raise DataError(f"--input={item}: not a {', '.join(SUFFIXES)} file")
            files.append(item)
        else:
            raise DataError(f"--input={item}: no such file or folder")
    return files


def text_of(obj, fields, where):
    """The document of a JSON object / parquet row: its text fields joined by newlines."""
    parts = []
    for f in fields:
        v = obj.get(f) if isinstance(obj, dict) else None
        if not isinstance(v, str):
            have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise DataError(
                f"{where}: no text field {f!r} (found {have}); pass --text_field=<field>"
            )
        parts.append(v)
    return '\n'.join(parts)


def txt_blocks(path):
    """A .txt file's documents separated by blank lines, read line by line."""
    block, size = [], 0
    with open(path, 'rb') as f:
        for line in f:
            size += len(line)
            if line.strip():
                block.append(line)
            elif block:
                yield b''.join(block).decode('utf-8').rstrip('\n'), size
                block, size = [], 0
    if block:
        yield b''.join(block).decode('utf-8').rstrip('\n'), size


def file_documents(path, fields, txt_docs):
    if path.endswith('.txt'):
        if txt_docs == 'blank_line':
            yield from txt_blocks(path)
        else:
            with open(path, encoding='utf-8') as f:
                yield f.read(), os.path.getsize(path)
    elif path.endswith('.jsonl'):
        with open(path, 'rb') as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not a JSON line ({e.msg})") from None
                yield text_of(obj, fields, f"{path}:{n}"), len(line)
    else:
        try:
            import pyarrow.parquet as pq  # optional: only for .parquet input
        except ImportError:
            raise DataError(
                f"--input={path}: .parquet needs pyarrow: pip install pyarrow==26.0.1"
            ) from None
        pf = pq.ParquetFile(path)
        missing = [f for f in fields if f not in pf.schema_arrow.names]
        if missing:
            raise DataError(
                f"{path}: no column {missing[0]!r} (columns {pf.schema_arrow.names}); "
                f"pass --text_field=<column>"
            )
        per_row = os.path.getsize(path) / max(pf.metadata.num_rows, 1)
        for batch in pf.iter_batches(batch_size=1024, columns=fields):
            for row in batch.to_pylist():
                yield text_of(row, fields, path), per_row


def hf_documents(args, fields):
    try:
        import datasets  # optional, online: only for --hf_dataset
    except ImportError:
        raise DataError(
            "--hf_dataset needs the `datasets` package (pip install datasets), and the network; "
            "offline, download the dataset's files and pass --input=<folder of .parquet/.jsonl>"
        ) from None
    try:
        ds = datasets.load_dataset(
            args.hf_dataset, args.hf_name or None, split=args.hf_split, streaming=True
        )
        for i, row in enumerate(ds):
            yield text_of(row, fields, f"{args.hf_dataset} row {i}"), 0
    except DataError:
        raise
    except Exception as e:  # offline, unknown name: one line
        raise DataError(
            f"--hf_dataset={args.hf_dataset}: cannot be streamed ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}); offline, download its files and pass "
            f"--input=<folder>"
        ) from None


def documents(args, files):
    fields = [f for f in args.text_field.split(',') if f]
    if args.hf_dataset:
        yield from hf_documents(args, fields)
        return
    for path in files:
        for text, size in file_documents(path, fields, args.txt_docs):
            if text.strip():
                yield text, size


def in_val(text, val_fraction):
    """Does this document go to val? A hash of its text below val_fraction (see the docstring)."""
    h = hashlib.blake2b(text.encode('utf-8', 'surrogatepass'), digest_size=8).digest()
    return int.from_bytes(h, 'little') < val_fraction * 2**64


# --- tokenization in worker processes ------------------------------------------------------
_enc = None


def init_worker(bpe_dir):
    global _enc
    _enc = gpt2_encoding(bpe_dir)


def encode_chunk(texts):
    """Documents -> (all their tokens, [EOT] + ids each, concatenated uint16; lengths)."""
    ids = _enc.encode_ordinary_batch(texts, num_threads=1)
    lengths = np.array([len(t) + 1 for t in ids], dtype=np.int64)
    out = np.empty(int(lengths.sum()), dtype=np.uint16)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for s, t in zip(starts, ids):
        out[s] = EOT
        out[s + 1 : s + 1 + len(t)] = t
    return out, lengths


# --- shards of one split -------------------------------------------------------------------
class SplitWriter:
    """One split's shard buffer. Document k of the split (counted over every document that
    went to the split, skipped or not) is add()ed as its tokens; a full buffer becomes the
    next shard, recorded (on_shard) with where it ends: document end_doc, token end_offset."""

    def __init__(self, out_dir, split, shard_tokens, done, on_shard):
        self.out_dir, self.split, self.on_shard = out_dir, split, on_shard
        self.buf = np.empty(shard_tokens, dtype=np.uint16)
        self.fill, self.shards = 0, list(done)
        last = done[-1] if done else {'end_doc': 0, 'end_offset': 0}
        self.resume = (last['end_doc'], last['end_offset'])
        self.docs = 0  # documents of this split seen so far

    def needs(self, k):
        """Are any tokens of document k still to be written?"""
        return k >= self.resume[0]

    def add(self, k, tokens):
        if k == self.resume[0]:
            tokens = tokens[self.resume[1] :]  # the part before is in the last finished shard
        pos = 0
        while pos < len(tokens):
            take = min(len(self.buf) - self.fill, len(tokens) - pos)
            self.buf[self.fill : self.fill + take] = tokens[pos : pos + take]
            self.fill, pos = self.fill + take, pos + take
            if self.fill == len(self.buf):
                self.flush(k, pos + (self.resume[1] if k == self.resume[0] else 0))

    def flush(self, end_doc, end_offset):
        if not self.fill:
            return
        name = f'{self.split}_{len(self.shards):06d}.bin'
        data = self.buf[: self.fill]
        write_shard(os.path.join(self.out_dir, name), data)
        self.shards.append(
            {
                'name': name,
                'tokens': int(self.fill),
                'max_token_id': int(data.max()),
                'end_doc': int(end_doc),
                'end_offset': int(end_offset),
            }
        )
        self.fill = 0
        self.on_shard()


# --- the run ------------------------------------------------------------------------------
def source_fingerprint(args, files):
    if args.hf_dataset:
        return {'hf': [args.hf_dataset, args.hf_name, args.hf_split]}
    return {'files': [[os.path.abspath(p), os.path.getsize(p)] for p in files]}


def read_manifest(path, settings):
    """The finished shards of an earlier run with the same settings ({} if there is none)."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(
            f"{path} is unreadable ({e}); delete it (and the shards) to start over"
        ) from None
    if manifest.get('settings') != settings:
        differ = sorted(
            k
            for k in set(settings) | set(manifest.get('settings') or {})
            if (manifest.get('settings') or {}).get(k) != settings.get(k)
        )
        raise DataError(
            f"{path}: the shards there come from a run with other settings ({', '.join(differ)} "
            f"differ): use another --out_dir, or delete its shards and manifest.json"
        )
    return manifest


def chunks(docs, chunk_chars, max_docs):
    """Documents grouped into lists of about chunk_chars characters (what one worker task
    encodes), as (texts, sizes)."""
    texts, sizes, chars, n = [], [], 0, 0
    for text, size in docs:
        if max_docs and n >= max_docs:
            break
        texts.append(text)
        sizes.append(size)
        chars, n = chars + len(text), n + 1
        if chars >= chunk_chars:
            yield texts, sizes
            texts, sizes, chars = [], [], 0
    if texts:
        yield texts, sizes


class Progress:
    """A line with tokens, tokens/s and the ETA (from the share of the input read), every 2 s."""

    def __init__(self, total_bytes):
        self.total, self.t0, self.last = total_bytes, time.time(), 0.0
        self.tokens, self.bytes, self.docs = 0, 0, 0

    def update(self, tokens, nbytes, docs, force=False):
        self.tokens, self.bytes, self.docs = (
            self.tokens + tokens,
            self.bytes + nbytes,
            self.docs + docs,
        )
        now = time.time()
        if not force and now - self.last < 2.0:
            return
        self.last, dt = now, max(now - self.t0, 1e-9)
        line = f"{self.docs:,} documents, {self.tokens:,} tokens, {self.tokens / dt:,.0f} tokens/s"
        if self.total:
            frac = min(self.bytes / self.total, 1.0)
            eta = dt * (1 - frac) / max(frac, 1e-9)
            line += f", {100 * frac:.1f}% of the input, ETA {eta / 60:.1f} min"
        print(line, file=sys.stderr, end='\r' if sys.stderr.isatty() else '\n', flush=True)

    def rate(self):
        return self.tokens / max(time.time() - self.t0, 1e-9)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--input', default='', help='files or folders, comma-separated')
    p.add_argument('--hf_dataset', default='', help='a Hugging Face dataset name (online)')
    p.add_argument('--hf_name', default='', help='its configuration, e.g. sample-10BT')
    p.add_argument('--hf_split', default='train')
    p.add_argument('--text_field', default='text', help='JSON field / parquet column (a,b: both)')
    p.add_argument('--txt_docs', choices=('file', 'blank_line'), default='file')
    p.add_argument('--out_dir', default=HERE)
    p.add_argument('--bpe_dir', default=None, help='GPT-2 vocab.bpe + encoder.json (offline)')
    p.add_argument('--val_fraction', type=float, default=0.005)
    p.add_argument('--shard_tokens', type=int, default=100_000_000)
    p.add_argument('--num_proc', type=int, default=os.cpu_count() or 1)
    p.add_argument('--chunk_chars', type=int, default=1 << 20, help='characters per worker task')
    p.add_argument('--max_docs', type=int, default=0, help='stop after this many; 0 = all')
    args = p.parse_args(argv)
    if bool(args.input) == bool(args.hf_dataset):
        raise DataError("pass one of --input=<files or folders> or --hf_dataset=<name>")
    if not 0.0 <= args.val_fraction < 1.0:
        raise DataError(f"--val_fraction={args.val_fraction}: must be in [0, 1)")
    if not 0 < args.shard_tokens < 2**31:
        raise DataError(f"--shard_tokens={args.shard_tokens}: must be in [1, 2**31) (llm.c)")
    if args.num_proc < 1 or args.chunk_chars < 1 or args.max_docs < 0:
        raise DataError("--num_proc and --chunk_chars must be >= 1, --max_docs >= 0")
    files = input_files(args.input) if args.input else []
    gpt2_encoding(args.bpe_dir)  # fails here, in one line, if the BPE is not available
    os.makedirs(args.out_dir, exist_ok=True)
    settings = {**{k: getattr(args, k) for k in CONTENT_KEYS}, **source_fingerprint(args, files)}
    manifest_path = os.path.join(args.out_dir, 'manifest.json')
    manifest = read_manifest(manifest_path, settings)
    done = manifest.get('shards', {})

    def save_manifest(complete=False):
        state = {
            'settings': settings,
            'shards': {s: w.shards for s, w in writers.items()},
            'complete': complete,
            'split_docs': {s: w.docs for s, w in writers.items()} if complete else None,
        }

        def write(tmp):
            with open(tmp, 'w', encoding='utf-8') as f:
                json.dump(state, f, indent=1)

        atomic_write(manifest_path, write)

    writers = {
        s: SplitWriter(args.out_dir, s, args.shard_tokens, done.get(s, []), save_manifest)
        for s in ('train', 'val')
    }
    if manifest.get('complete'):
        for s, w in writers.items():
            w.docs = manifest['split_docs'][s]
        print(f"{args.out_dir}: already prepared (manifest.json); writing meta.pkl")
    else:
        skipped = sum(len(w.shards) for w in writers.values())
        if skipped:
            print(f"resuming: {skipped} finished shards kept, their documents are skipped")
        run(args, files, writers, save_manifest)
    write_meta(args, p, writers)


def run(args, files, writers, save_manifest):
    total = sum(os.path.getsize(f) for f in files) or None
    progress = Progress(total)
    pool = None
    if args.num_proc > 1:
        pool = multiprocessing.Pool(args.num_proc, init_worker, (args.bpe_dir,))
    else:
        init_worker(args.bpe_dir)
    in_flight = deque()  # (async result or tokens, [(writer, k)], input bytes)

    def drain(limit):
        while len(in_flight) > limit:
            result, targets, nbytes = in_flight.popleft()
            tokens, lengths = result.get() if pool else result
            ends = np.cumsum(lengths)
            for (w, k), end, n in zip(targets, ends, lengths):
                w.add(k, tokens[end - n : end])
            progress.update(int(lengths.sum()), nbytes, len(targets))

    try:
        for texts, sizes in chunks(documents(args, files), args.chunk_chars, args.max_docs):
            todo, targets, nbytes = [], [], 0
            for text, size in zip(texts, sizes):
                w = writers['val' if in_val(text, args.val_fraction) else 'train']
                k, w.docs = w.docs, w.docs + 1
                if w.needs(k):  # documents of finished shards are not tokenized again
                    todo.append(text)
                    targets.append((w, k))
                nbytes += size
            if not todo:
                progress.update(0, nbytes, 0)
                continue
            if pool:
                in_flight.append((pool.apply_async(encode_chunk, (todo,)), targets, nbytes))
            else:
                in_flight.append((encode_chunk(todo), targets, nbytes))
            drain(2 * args.num_proc)
        drain(0)
    finally:
        if pool:
            pool.terminate()
    progress.update(0, 0, 0, force=True)
    for w in writers.values():  # the last, shorter shards; then the run is complete
        w.on_shard = lambda: None
        w.flush(w.docs, 0)
    save_manifest(complete=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)  # end the progress line
    print(f"tokenized at {progress.rate():,.0f} tokens/s with {args.num_proc} processes")


def write_meta(args, parser, writers):
    for s, w in writers.items():
        if not w.shards and (s == 'train' or args.val_fraction > 0):
            raise DataError(
                f"no document went to {s} ({sum(x.docs for x in writers.values())} documents, "
                f"--val_fraction={args.val_fraction}): add input or change --val_fraction"
            )
    shards = {s: [r['name'] for r in w.shards] for s, w in writers.items()}
    counts = {s: [r['tokens'] for r in w.shards] for s, w in writers.items()}
    meta = {
        'vocab_size': 50304,  # GPT-2's 50257 padded to a multiple of 64 (nanoGPT)
        'tokenizer': 'gpt2',
        'dtype': 'uint16',
        'eot_token': EOT,
        'objective': 'next_token',
        'shard_format': 'llm.c',  # shards.py
        'shards': shards,
        'shard_tokens': counts,
        'split_tokens': {s: sum(c) for s, c in counts.items()},
        'split_docs': {s: w.docs for s, w in writers.items()},
        'split_max_token': {  # the largest id of each split: checked at start-up, no scan
            s: max((r['max_token_id'] for r in w.shards), default=-1) for s, w in writers.items()
        },
        'prepare': script_command('data/webtext/prepare.py', parser, args),
    }
    if args.bpe_dir:
        meta['bpe_dir'] = os.path.abspath(args.bpe_dir)
    utils.write_meta(os.path.join(args.out_dir, 'meta.pkl'), meta)
    print(
        ', '.join(
            f"{s}: {meta['split_docs'][s]:,} documents, {meta['split_tokens'][s]:,} tokens in "
            f"{len(shards[s])} shards"
            for s in shards
        )
        + f" -> {args.out_dir}"
    )


if __name__ == '__main__':
    run_cli(main)
