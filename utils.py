"""Small helpers shared by the scripts: atomic writes, dataset metadata, the GPT-2 tokenizer."""
import os
import pickle
import shutil
import tempfile

import numpy as np


class DataError(ValueError):
    """Bad input on disk; the message names the file and the fix."""


def atomic_write(path, write_fn):
    """write_fn(tmp_path) writes the file; it then replaces `path` in one rename, so a crash
    mid-write leaves the previous file (or nothing) under the final name."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_array(path, arr):
    atomic_write(path, lambda tmp: arr.tofile(tmp))


def write_pickle(path, obj):
    def write(tmp):
        with open(tmp, 'wb') as f:
            pickle.dump(obj, f)
    atomic_write(path, write)


def write_dataset_dir(final_dir, files):
    """Write a dataset's files (name -> ndarray, or any object to pickle) into final_dir.
    All are written to a hidden temp folder first and only then renamed into place, meta.pkl
    last: an interrupted run leaves no partial file under a final name. Other files in
    final_dir (e.g. prepare.py) are left alone."""
    os.makedirs(final_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=final_dir, prefix='.partial.')
    try:
        for name, obj in files.items():
            p = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            if isinstance(obj, np.ndarray):
                obj.tofile(p)
            else:
                with open(p, 'wb') as f:
                    pickle.dump(obj, f)
        for name in sorted(files, key=lambda n: n.endswith('meta.pkl')):
            dst = os.path.join(final_dir, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(os.path.join(tmp, name), dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 65536 else np.uint32


def load_meta(data_dir, required=True):
    path = os.path.join(data_dir, 'meta.pkl')
    if not os.path.exists(path):
        if required:
            raise DataError(f"{path} not found: run the dataset's prepare.py (or pathstar.py) first")
        return None
    try:
        with open(path, 'rb') as f:
            meta = pickle.load(f)
    except Exception as e:
        raise DataError(f"{path} is corrupt ({type(e).__name__}: {e}); delete it and re-run the "
                        f"dataset's prepare.py") from None
    if not isinstance(meta, dict) or 'vocab_size' not in meta:
        raise DataError(f"{path} has no 'vocab_size'; re-run the dataset's prepare.py")
    return meta


# --- GPT-2 BPE through tiktoken, offline when the two GPT-2 files are on disk -------------
# tiktoken caches downloads under sha1(url); putting the files there makes it work offline.
_GPT2_CACHE_NAMES = {'vocab.bpe': '6d1cbeee0f20b3d9449abfede4726ed8212e3aee',
                     'encoder.json': '6c7ea1a7e38e3a7f062df639a5b80947f075ffe6'}


def gpt2_encoding(bpe_dir=None):
    """tiktoken's GPT-2 encoding. bpe_dir: a folder with vocab.bpe + encoder.json to load
    offline; otherwise tiktoken downloads them (or uses its cache)."""
    if bpe_dir:
        for name in _GPT2_CACHE_NAMES:
            if not os.path.exists(os.path.join(bpe_dir, name)):
                raise DataError(f"--bpe_dir={bpe_dir}: {name} not found there (need vocab.bpe "
                                f"and encoder.json from GPT-2)")
        cache = os.environ.setdefault('TIKTOKEN_CACHE_DIR',
                                      os.path.join(tempfile.gettempdir(), 'nanomask_tiktoken'))
        os.makedirs(cache, exist_ok=True)
        for name, sha in _GPT2_CACHE_NAMES.items():
            dst = os.path.join(cache, sha)
            if not os.path.exists(dst):
                shutil.copyfile(os.path.join(bpe_dir, name), dst)
    import tiktoken
    return tiktoken.get_encoding('gpt2')


def vocab_compatible(old_meta, new_meta):
    """Can a model trained on old_meta's vocabulary read new_meta's ids? The new vocabulary
    may only append tokens (e.g. SFT role tags) to the old one."""
    if not old_meta or not new_meta:
        return True
    if old_meta.get('tokenizer') and new_meta.get('tokenizer') and \
            old_meta['tokenizer'] != new_meta['tokenizer']:
        return False
    old_itos, new_itos = old_meta.get('itos'), new_meta.get('itos')
    if old_itos is not None and new_itos is not None:
        return all(new_itos.get(i) == s for i, s in old_itos.items())
    return True


def run_cli(main):
    """Run a script's main(); bad input (DataError, ConfigError) exits with its message and
    status 1 instead of a traceback."""
    from configurator import ConfigError
    try:
        main()
    except (ConfigError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
