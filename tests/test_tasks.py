"""Checkable tasks (tasks.py): generated rows pass their checker, hand-made wrong answers do
not, train and val are disjoint, and decoding + scoring run end to end; the sampler's ReMDM-cap
schedule, pre-committed canvases and exact NFE counts for every strategy (diffusion.py)."""

import importlib.util
import os

import numpy as np
import pytest
import torch

import diffusion
import pathstar
import tasks
import train
from configurator import ConfigError
from conftest import ROOT, TINY
from utils import DataError, load_meta


@pytest.fixture(scope='module')
def sudoku():
    return tasks.make_sudoku(40, 'naked', 300, 60, seed=3, quiet=True)


def test_naesat_rows_pass_and_a_flipped_observation_fails():
    train, val, meta = tasks.make_naesat(25, 75, 2000, 300, seed=1, triple_seed=4)
    triples = np.asarray(meta['triples'])
    assert (
        triples.shape == (75, 3)
        and (np.sort(triples, 1)[:, 1:] != np.sort(triples, 1)[:, :-1]).all()
    )
    assert np.array_equal(triples, tasks.naesat_triples(25, 75, 4))  # fixed by triple_seed alone
    assert tasks.naesat_accuracy(train, meta).min() == 1.0
    assert tasks.naesat_accuracy(val, meta).min() == 1.0
    wrong = val.copy()
    wrong[:, 25 + 7] ^= 1  # one observation flipped in every row
    assert tasks.naesat_accuracy(wrong, meta) == pytest.approx(np.full(300, 74 / 75))
    lat = val[:, :25].copy()  # latents changed, observations kept: checked against the latents
    lat[:, triples[0]] = 1
    assert (tasks.naesat_accuracy(np.concatenate([lat, val[:, 25:]], 1), meta) < 1).any()
    # all-ones observations score ~3/4 (the paper's naive baseline)
    ones = np.concatenate([val[:, :25], np.ones_like(val[:, 25:])], 1)
    assert 0.7 < tasks.naesat_accuracy(ones, meta).mean() < 0.8
    assert meta['val_disjoint']
    assert not np.isin(tasks.keys_of(val[:, :25]), tasks.keys_of(train[:, :25])).any()
    assert (meta['answer_start'], meta['answer_len'], meta['row_len']) == (0, 100, 100)
    assert not tasks.make_naesat(10, 20, 2000, 10)[2]['val_disjoint']  # 1,024 latents only


def test_sudoku_rows_are_unique_valid_and_of_their_tier(sudoku):
    train, val, meta = sudoku
    assert train.shape == (300, 162) and val.shape == (60, 162)
    for rows in (train, val):
        assert tasks.sudoku_valid(rows, rows[:, 81:]).all()
        assert ((rows[:, :81] > 0).sum(1) == 40).all()
        assert np.array_equal(tasks.propagate(rows[:, :81], hidden=False), rows[:, 81:])
    assert all(tasks.count_solutions(p) == 1 for p in val[:10, :81])
    assert not np.isin(tasks.keys_of(val[:, 81:]), tasks.keys_of(train[:, 81:])).any()
    assert len(np.unique(tasks.keys_of(train[:, 81:]))) == len(train)
    assert (meta['answer_start'], meta['answer_len'], meta['row_len']) == (81, 81, 162)
    hidden, _, _ = tasks.make_sudoku(30, 'hidden', 20, 5, seed=0, quiet=True)
    assert (tasks.propagate(hidden[:, :81], hidden=True) == hidden[:, 81:]).all()
    assert not (tasks.propagate(hidden[:, :81], hidden=False) > 0).all(1).any()


def test_sudoku_checker_rejects_hand_made_wrong_answers(sudoku):
    rows = sudoku[1][:20]
    sol = rows[:, 81:].copy()
    swapped = sol.copy()  # two cells of row 0 exchanged: row still 1-9, columns broken
    swapped[:, [0, 1]] = swapped[:, [1, 0]]
    relabel = np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])[sol]  # a valid grid, givens broken
    assert tasks.sudoku_valid(np.zeros_like(rows), relabel).all()
    blank = sol.copy()
    blank[:, 5] = 0
    for wrong in (swapped, relabel, blank):
        assert not tasks.sudoku_valid(rows, wrong).any()
    assert tasks.count_solutions(np.zeros(81, int)) == 2  # limit 2: many solutions
    bad = sol[0].copy()
    bad[1] = bad[0]  # a duplicate in row 0
    assert tasks.count_solutions(bad) == 0


def test_path_checker_on_generated_rows_and_wrong_paths():
    _, val, meta = pathstar.make_incontext(3, 5, 50, 100, 200, seed=2, quiet=True)
    a, L = meta['answer_start'], meta['answer_len']
    ans = val[:, a : a + L]
    assert tasks.path_valid(val, ans, meta).all()
    assert not tasks.path_valid(val, ans[:, ::-1], meta).any()  # reversed
    other = np.roll(val, 1, axis=0)[:, a : a + L]  # another graph's path
    assert tasks.path_valid(val, other, meta).mean() < 0.05
    skip = ans.copy()
    skip[:, 2] = skip[:, 3]  # a node repeated: no such edge
    assert not tasks.path_valid(val, skip, meta).any()
    arm = tasks.wrong_arm(val, meta)  # s, then another arm: a valid path to another leaf
    other_goal = val.copy()
    other_goal[:, 3 * 3 * 4 + 1] = arm[:, -1]
    assert tasks.path_valid(other_goal, np.concatenate([ans[:, :1], arm], 1), meta).all()
    assert not (arm[:, :, None] == ans[:, None, :]).any()  # no node of the true path


class Oracle(torch.nn.Module):
    """A stand-in denoiser whose logits put all mass on `rows` (n, L) (batch in row order)."""

    def __init__(self, rows, n_out):
        super().__init__()
        self.rows, self.n_out, self.calls = torch.as_tensor(rows, dtype=torch.long), n_out, 0

    def forward(self, x, attention_mask=None):
        self.calls += 1
        return 20.0 * torch.nn.functional.one_hot(self.rows[: len(x)], self.n_out).float(), None


def masked_meta(meta):
    V = meta['vocab_size']
    return {**meta, 'base_vocab_size': V, 'mask_token_id': V, 'wrong_token_id': V + 1}


@pytest.mark.parametrize('order', diffusion.ORDERS)
def test_decode_and_score_end_to_end(sudoku, order):
    _, val, meta = sudoku
    meta = masked_meta(meta)
    out, info = tasks.decode(Oracle(val, 12), val, meta, 27, order=order, temperature=0)
    assert info['nfe'] == 27 and np.array_equal(out.numpy(), val)
    assert tasks.score(val, out.numpy(), meta).tolist() == [1.0] * len(val)
    wrong = out.numpy().copy()
    wrong[:, [81, 82]] = wrong[:, [82, 81]]
    assert tasks.score(val, wrong, meta).sum() == 0
    _, nval, nmeta = tasks.make_naesat(10, 30, 100, 40)
    nmeta = masked_meta(nmeta)
    rep = tasks.task_report(Oracle(nval, 4), nval, nmeta, 40)
    assert rep == {'val_naesat_random': 1.0, 'val_naesat_margin': 1.0}


def test_tasks_cli_writes_a_dataset_and_refuses_bad_flags(tmp_path):
    out = tasks.main(
        [
            '--task=sudoku',
            '--givens=45',
            '--num_train=40',
            '--num_val=10',
            f'--data_root={tmp_path}',
        ]
    )
    meta = load_meta(out)
    assert meta['objective'] == 'unmasking' and meta['task'] == 'sudoku'
    assert meta['prepare'].startswith('python tasks.py --task=sudoku --givens=45')
    rows = np.fromfile(f'{out}/val.bin', dtype=meta['dtype']).reshape(-1, 162)
    assert tasks.sudoku_valid(rows, rows[:, 81:]).all()
    with pytest.raises(DataError, match='--givens=10'):
        tasks.main(['--task=sudoku', '--givens=10', f'--data_root={tmp_path}'])


# ---------------------------------------------------------------- sampler: schedules and NFE
class Counter(torch.nn.Module):
    """Random logits over n_out ids; counts its forward passes."""

    def __init__(self, n_out, wrong=None):
        super().__init__()
        self.n_out, self.wrong, self.calls = n_out, wrong, 0

    def forward(self, x, attention_mask=None):
        self.calls += 1
        g = torch.Generator().manual_seed(self.calls)
        lg = torch.randn(*x.shape, self.n_out, generator=g)
        if self.wrong is not None:
            lg[..., self.wrong] = 3.0 * torch.randn(x.shape, generator=g)
        return lg, None


@pytest.mark.parametrize('schedule', diffusion.REMASK_SCHEDULES)
@pytest.mark.parametrize('remask', diffusion.REMASKS)
@pytest.mark.parametrize('order', diffusion.ORDERS)
def test_every_strategy_counts_its_forward_passes(order, remask, schedule):
    L, base, mask, wrong = 20, 5, 5, 6
    den = Counter(7, wrong)
    rem = Counter(7, wrong) if remask == 'learned' else None
    out, info = diffusion.diffusion_sample(
        den,
        torch.full((3, L), mask),
        8,
        mask,
        base,
        order=order,
        remask=remask,
        remasker=rem,
        wrong_id=wrong,
        remask_ratio=0.5,
        remask_schedule=schedule,
        remask_threshold=0.0,
    )
    calls = den.calls + (rem.calls if rem else 0)
    assert info['nfe'] == calls == (2 * 8 - 1 if remask == 'learned' else 8)
    assert not (out == mask).any()


def test_remdm_cap_schedule():
    L, mask = 12, 5
    den = Counter(5)
    # eta = 1: after step 0 of 4 (3 committed, 6 after the next step), sigma = min(1, 6 / 3) = 1
    _, info = diffusion.diffusion_sample(
        den,
        torch.full((4, L), mask),
        4,
        mask,
        5,
        remask='random',
        remask_ratio=1.0,
        remask_schedule='cap',
    )
    assert info['remasked'][0].tolist() == [3] * 4
    # the step before the last: (1 - alpha_s) = 0, nothing goes back, so the last step fills
    assert info['remasked'][-1].tolist() == [0] * 4
    # eta caps sigma: step 3 of 16 on 64 positions, 16 committed: sigma = min(0.1, 44 / 16)
    _, info = diffusion.diffusion_sample(
        den,
        torch.full((2000, 64), mask),
        16,
        mask,
        5,
        remask='random',
        remask_ratio=0.1,
        remask_schedule='cap',
        gen=torch.Generator().manual_seed(0),
    )
    assert info['remasked'][3].double().mean().item() == pytest.approx(0.1 * 16, abs=0.1)


def test_precommitted_free_positions_can_be_revised():
    """free: a committed (non-[MASK]) free position is not prompt: remasking may send it back."""
    L, mask = 6, 5

    class Prefers(torch.nn.Module):  # always proposes token 1; says position 0 is WRONG
        def forward(self, x, attention_mask=None):
            lg = torch.zeros(*x.shape, 7)
            lg[..., 1] = 10.0
            lg[:, 0, 6] = 20.0 * (x[:, 0] != mask)  # WRONG at 0 whenever 0 holds a token
            return lg, None

    canvas = torch.full((2, L), mask)
    canvas[:, 0] = 3  # pre-committed, wrong
    free = torch.ones(2, L, dtype=torch.bool)
    for remask, fixed in (('none', True), ('self', False)):
        out, info = diffusion.diffusion_sample(
            Prefers(),
            canvas,
            4,
            mask,
            5,
            order='confidence',
            remask=remask,
            wrong_id=6,
            remask_ratio=1.0,
            free=free,
        )
        assert (out[:, 0] == 3).all() == fixed  # self remasking sent it back and redrew it
    out, _ = diffusion.diffusion_sample(Prefers(), canvas, 4, mask, 5, remask='self', wrong_id=6)
    assert (out[:, 0] == 3).all()  # without free, position 0 is prompt: never revised


# ---------------------------------------------------------------- configs and bench scripts
TASK_CONFIGS = (
    'diffusion_naesat_n10_p110',
    'diffusion_naesat_n25_p275',
    'diffusion_sudoku',
    'hybrid_naesat_n10_p110',
    'remask_naesat_n10_p110',
)


@pytest.mark.parametrize('name', TASK_CONFIGS)
def test_task_configs_load_and_name_the_dataset_their_data_line_makes(name):
    from configurator import load_config

    path = os.path.join(ROOT, 'config', f'{name}.py')
    cfg, _ = load_config(train.DEFAULTS, [path])
    assert cfg['objective'] in ('unmasking', 'hybrid', 'remasking')
    text = open(path).read()
    if '# Data: python tasks.py' in text:
        flags = text.split('# Data: python tasks.py')[1].split('\n')[0].split()
        assert cfg['dataset'] == tasks.default_name(tasks.arg_parser().parse_args(flags))


def bench(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'bench', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_run(data_root, dataset, objective, out, *extra):
    train.main(
        TINY
        + [
            f'--data_root={data_root}',
            f'--dataset={dataset}',
            f'--objective={objective}',
            f'--out_dir={out}',
            '--max_iters=2',
            '--eval_interval=2',
            *(['--diffusion_eval_rows=8'] if objective == 'unmasking' else []),  # only it reads it
            '--block_size=64',
            *extra,
        ]
    )
    return os.path.join(out, 'ckpt.pt')


def test_bench_scripts_run_every_strategy_at_its_nfe(tmp_path):
    root = str(tmp_path)
    tasks.main(
        [
            '--task=naesat',
            '--N=6',
            '--P=18',
            '--num_train=200',
            '--num_val=40',
            f'--data_root={root}',
        ]
    )
    den = tiny_run(root, 'naesat_n6_p18', 'unmasking', tmp_path / 'den')
    rem = tiny_run(root, 'naesat_n6_p18', 'remasking', tmp_path / 'rem', f'--init_from={den}')
    hyb = tiny_run(root, 'naesat_n6_p18', 'hybrid', tmp_path / 'hyb')
    ev = bench('tasks_eval')
    res = ev.main(
        [
            f'--denoiser={den},{den}',
            f'--hybrid={hyb}',
            f'--remaskers=u:{rem}',
            '--num_eval=16',
            '--nfe=L/4,5',
            '--orders=random,margin',
        ]
    )
    assert {r['budget'] for r in res} == {6, 5}
    for r in res:
        learned = r['remask'] == 'learned'
        assert r['nfe'] == (2 * r['steps'] - 1 if learned else r['steps']) <= r['budget']
        assert len(r['seeds']) == (1 if r['strategy'].startswith('hybrid') else 2)
        assert r['kind'] == ('hybrid' if r['strategy'].startswith('hybrid') else 'denoiser')
        assert r['kind'] == 'denoiser' or r['paper'] == ''  # no paper figure beside a hybrid
        assert 0.0 <= r['mean'] <= 1.0
    part = ['--num_eval=16', '--nfe=5', '--orders=margin', '--remasks=none']
    for i, seed_ckpt in enumerate((den, hyb)):  # one part per "seed" (a hybrid is a denoiser too)
        ev.main([f'--denoiser={seed_ckpt}', f'--json={tmp_path}/p{i}.json'] + part)
    (both,) = ev.main([f'--combine={tmp_path}/p0.json,{tmp_path}/p1.json'])
    assert len(both['seeds']) == 2 and both['mean'] == pytest.approx(np.mean(both['seeds']))
    (again,) = ev.main([f'--combine={tmp_path}/p0.json,{tmp_path}/p0.json'])
    assert again['seeds'] == both['seeds'][:1]  # one checkpoint decoded twice is one seed
    ev.main([f'--denoiser={den}', f'--json={tmp_path}/p2.json', '--nfe=4'] + part[:1] + part[2:])
    mixed = ev.main([f'--combine={tmp_path}/p0.json,{tmp_path}/p2.json'])  # a cell per budget
    assert sorted(r['budget'] for r in mixed) == [4, 5]
    (tmp_path / 'bad.json').write_text('{"not": "a part"}')
    for name, says in (('none.json', 'cannot read'), ('bad.json', 'is not a --json file')):
        with pytest.raises(ConfigError, match=says):
            ev.main([f'--combine={tmp_path}/p0.json,{tmp_path}/{name}'])
    labels = {r['strategy'] for r in res}
    assert 'hybrid: top-prob-margin, remask self' in labels
    assert 'random (vanilla), learned remask (u)' in labels
    pathstar.main(
        [
            '--mode=incontext',
            '--d=2',
            '--l=5',
            '--N=20',
            '--num_train=200',
            '--num_val=40',
            f'--data_root={root}',
        ]
    )
    ph = tiny_run(root, 'incontext_pathstar_d2_l5_n20', 'hybrid', tmp_path / 'ph')
    out = bench('pathstar_revision').main([f'--hybrid={ph}', '--num_eval=40'])
    assert out['forced_none'] == 0.0 and out['fixed_none'] == 0.0  # the wrong node stays
    assert 0.0 <= out['flagged'] <= 1.0
    assert {f'flag_{w}_a{k}' for w in ('arm', 'uniform') for k in (1, 2, 3)} <= out.keys()


def test_revision_gains_compare_each_remasking_row_with_the_best_plain_row_at_its_budget():
    ev = bench('tasks_eval')

    def row(strategy, remask, budget, mean, se):
        return dict(strategy=strategy, remask=remask, budget=budget, mean=mean, se=se)

    results = [
        row('vanilla', 'none', 50, 0.80, 0.004),
        row('margin', 'none', 50, 0.90, 0.003),
        row('margin+random', 'random', 50, 0.92, 0.004),
        row('hybrid self', 'self', 50, 0.85, 0.003),
        row('margin+random', 'random', 30, 0.70, 0.01),  # no plain row at 30: no comparison
    ]
    lines = [x for x in ev.revision_gains(results) if x]
    assert lines == [
        'NFE 50: margin+random vs margin: +2.0 points (+4.0 s.e.)',
        'NFE 50: hybrid self vs margin: -5.0 points (-11.8 s.e.)',
    ]
    assert ev.revision_gains(results[:2]) == []


def test_top_prob_and_margin_orders_coincide_on_two_values():
    """With 2 values margin = 2 p_max - 1, a monotone function of top-prob: same order, same
    samples (so NAE-SAT tables show one of them)."""
    outs = [  # a fresh Counter each: the same logits pass by pass
        diffusion.diffusion_sample(Counter(4), torch.full((8, 30), 2), 10, 2, 2, order=o)[0]
        for o in ('confidence', 'margin', 'random')
    ]
    assert not torch.equal(outs[0], outs[2])
    assert torch.equal(outs[0], outs[1])
