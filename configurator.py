"""
nanoGPT-style configuration, as a function that returns a dict instead of exec-ing into globals.

    python train.py config/train_shakespeare_char.py --batch_size=32 --compile=False

Arguments without `--` are config files (Python files of plain assignments); `--key=value`
overrides follow in order. Every key must already exist in the script's defaults, and the
value must have the default's type (an int is accepted for a float; None defaults accept
anything). Mistakes are errors that name the argument and the closest valid keys.
"""

import argparse
import ast
import difflib
import os
import sys
import traceback

import torch

from utils import DataError


class ConfigError(ValueError):
    """A bad flag or config file; the message names it and the fix."""


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string, e.g. --device=cpu


def _check(key, value, defaults, where):
    if key not in defaults:
        close = difflib.get_close_matches(key, list(defaults), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"{where}: unknown config key '{key}'.{hint}")
    default = defaults[key]
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, type(default)):
        return value
    raise ConfigError(
        f"{where}: '{key}' must be of type {type(default).__name__} "
        f"(default {default!r}), got {value!r} ({type(value).__name__})"
    )


def _exec_config_file(path):
    """The names a config file assigns. A syntax error, or an exception while it runs, is a
    ConfigError naming the file and line (not a traceback)."""
    try:
        with open(path, encoding='utf-8') as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"config file '{path}' cannot be read ({e}); pass a Python file"
        ) from None
    try:
        code = compile(source, path, 'exec')
    except SyntaxError as e:
        raise ConfigError(
            f"config file '{path}', line {e.lineno}: syntax error ({e.msg}); config files "
            f"are Python assignments like batch_size = 32"
        ) from None
    namespace = {}
    try:
        exec(code, {}, namespace)
    except Exception as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        line = f", line {frames[-1].lineno}" if frames else ''
        what = ' '.join(str(e).split())  # one line
        raise ConfigError(
            f"config file '{path}'{line} raised {type(e).__name__}: {what}; fix that line"
        ) from None
    return namespace


def load_config(defaults, argv):
    """defaults: dict of key -> default value. argv: e.g. sys.argv[1:].
    Returns (config dict, set of keys set explicitly by files or flags)."""
    config, explicit = dict(defaults), set()
    for arg in argv:
        if not arg.startswith('--'):
            if not os.path.isfile(arg):
                raise ConfigError(
                    f"config file '{arg}' not found (expected a path like "
                    f"config/train_shakespeare_char.py, or a --key=value flag)"
                )
            namespace = _exec_config_file(arg)
            for key, value in namespace.items():
                if key.startswith('_') or callable(value) or type(value).__name__ == 'module':
                    continue
                config[key] = _check(key, value, defaults, f"config file '{arg}'")
                explicit.add(key)
        else:
            if '=' not in arg:
                raise ConfigError(f"flag '{arg}' must be of the form --key=value")
            key, text = arg[2:].split('=', 1)
            value = _parse_value(text)
            if isinstance(defaults.get(key), str) and not isinstance(value, str):
                value = text  # --start=42 on a string key means the text '42'
            config[key] = _check(key, value, defaults, f"flag '{arg}'")
            explicit.add(key)
    return config, explicit


def check_device_keys(cfg):
    """cfg['device'] and cfg['dtype'] (train.py, sample.py): a ConfigError naming the flag unless
    the device exists on this machine and the dtype is one of utils.DTYPES or 'auto'."""

    def bad(key, why):
        raise ConfigError(f"--{key}={cfg[key]}: {why}")

    if cfg['dtype'] not in ('auto', 'float32', 'bfloat16', 'float16'):
        bad('dtype', "choose auto, float32, bfloat16 or float16")
    if cfg['device'] == 'auto':
        return
    try:
        dev = torch.device(cfg['device'])
    except RuntimeError:
        bad('device', "not a device; use auto, cpu, cuda or cuda:<index>")
    if dev.type == 'cuda' and not torch.cuda.is_available():
        bad('device', "CUDA is not available on this machine; use --device=cpu (or auto)")
    if dev.type == 'cuda' and (dev.index or 0) >= torch.cuda.device_count():
        bad('device', f"this machine has {torch.cuda.device_count()} CUDA device(s)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the scripts that use it: a bad flag is a ConfigError (one line under
    run_cli) instead of argparse's usage text and exit status 2."""

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def flag_keys(argv):
    """The keys that --key=value flags of argv set (config files' keys are not among them)."""
    return {a[2:].split('=', 1)[0] for a in argv if a.startswith('--') and '=' in a}


def run_cli(main):
    """Run a script's main(); bad input (DataError, ConfigError) exits with its message and
    status 1 instead of a traceback, Ctrl-C (KeyboardInterrupt) with status 130. A main that
    returns an int returns an exit status (bench/gpu_check.py: 1 if a check failed)."""
    try:
        code = main()
    except (ConfigError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        raise SystemExit(130) from None
    if isinstance(code, int) and not isinstance(code, bool) and code:
        raise SystemExit(code)


HELP_FLAGS = ('-h', '--help')


def _shown(value):
    """A default as it would be typed after --key=."""
    if isinstance(value, str) and (value == '' or any(c.isspace() for c in value)):
        return repr(value)
    return str(value)


def format_help(usage, defaults, groups):
    """The text of --help: `usage`, then per group (title, {key: one-line meaning}) each key as
    --key=default and its meaning. Keys of `defaults` no group names are listed last, so the
    help never hides a key (tests require every key to have a meaning)."""
    lines = [usage]
    undocumented = {k: '' for k in defaults if not any(k in helps for _, helps in groups)}
    for title, helps in list(groups) + ([('undocumented', undocumented)] if undocumented else []):
        lines += ['', f'{title}:']
        for key, text in helps.items():
            flag = f'  --{key}={_shown(defaults[key])}'
            pad = 34 if len(flag) < 34 else len(flag) + 2
            lines.append(f'{flag:<{pad}}{text}'.rstrip())
    return '\n'.join(lines)


def exit_if_help(argv, usage, defaults, groups):
    """-h / --help anywhere in argv: print format_help(...) and exit 0."""
    if any(a in HELP_FLAGS for a in argv):
        print(format_help(usage, defaults, groups))
        raise SystemExit(0)
