"""configurator.load_config: files, overrides, type checks, unknown keys."""

import pytest

from configurator import ConfigError, load_config

DEFAULTS = dict(
    batch_size=12,
    learning_rate=6e-4,
    compile=True,
    device='cuda',
    dataset='x',
    future_head_weights=None,
    betas=(0.9, 0.95),
)


def test_overrides_apply_in_order_and_are_typed(tmp_path):
    f = tmp_path / 'c.py'
    f.write_text("batch_size = 32\nimport math\nlearning_rate = 1e-3 * math.sqrt(4)\n")
    cfg, explicit = load_config(
        DEFAULTS,
        [str(f), '--batch_size=64', '--compile=False', '--device=cpu', '--learning_rate=1'],
    )
    assert cfg['batch_size'] == 64 and cfg['compile'] is False and cfg['device'] == 'cpu'
    assert cfg['learning_rate'] == 1.0 and isinstance(cfg['learning_rate'], float)
    assert explicit == {'batch_size', 'learning_rate', 'compile', 'device'}
    assert DEFAULTS['batch_size'] == 12  # defaults untouched


def test_strings_and_none_defaults():
    cfg, _ = load_config(DEFAULTS, ['--dataset=123', '--future_head_weights=[1.0, 0.5]'])
    assert cfg['dataset'] == '123'
    assert cfg['future_head_weights'] == [1.0, 0.5]


@pytest.mark.parametrize(
    'arg, words',
    [
        ('--batch_size=1.5', ["'batch_size'", 'int']),
        ('--compile=1', ["'compile'", 'bool']),
        ('--learning_rate=fast', ["'learning_rate'", 'float']),
        ('--betas=0.9', ["'betas'", 'tuple']),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(arg, words):
    with pytest.raises(ConfigError) as e:
        load_config(DEFAULTS, [arg])
    assert all(w in str(e.value) for w in words) and arg in str(e.value)


def test_unknown_key_names_the_closest_keys(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown config key 'batchsize'.*Did you mean: batch_size"
    ):
        load_config(DEFAULTS, ['--batchsize=3'])
    f = tmp_path / 'c.py'
    f.write_text("learning_rat = 0.1\n")
    with pytest.raises(ConfigError, match=r"c.py'.*learning_rat.*learning_rate"):
        load_config(DEFAULTS, [str(f)])


def test_missing_file_and_malformed_flag():
    with pytest.raises(ConfigError, match="config file 'nope.py' not found"):
        load_config(DEFAULTS, ['nope.py'])
    with pytest.raises(ConfigError, match='--key=value'):
        load_config(DEFAULTS, ['--compile'])
