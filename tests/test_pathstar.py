"""pathstar.py datasets, the pathstar batch source (PAUSE/PAD masking) and path accuracy."""

import os
import pickle

import numpy as np
import pytest
import torch

import batches
import pathstar
import train
from conftest import TINY
from utils import DataError, normalise_meta, write_rows


def write(root, name, train_rows, val_rows, meta):
    write_rows(os.path.join(root, name), train_rows, val_rows, meta)
    return name


def source(root, name, **over):
    cfg = {
        **train.DEFAULTS,
        'data_root': str(root),
        'dataset': name,
        'objective': 'pathstar',
        'block_size': 64,
        **over,
    }
    return batches.make_source(cfg, seed=0)


def parse_incontext(row, meta):
    """Row -> (edges list, s, g, path) using only the documented layout."""
    N, a, L = meta['N'], meta['answer_start'], meta['answer_len']
    pre = row[: meta['prefix_len']]
    if meta['query_first']:
        s, g, sl, body, eq = pre[0], pre[1], pre[2], pre[3:-1], pre[-1]
    else:
        body, sl, s, g, eq = pre[:-4], pre[-4], pre[-3], pre[-2], pre[-1]
    assert sl == N + 2 and eq == N + 1
    assert (row[meta['prefix_len'] : a] == N + 4).all()  # the PAUSE tokens
    trip = np.append(body, N).reshape(-1, 3)
    assert (trip[:, 2] == N).all()
    path = row[a : a + L][::-1] if meta['reverse'] else row[a : a + L]
    return [tuple(e) for e in trip[:, :2]], s, g, path


@pytest.mark.parametrize(
    'opts', [dict(), dict(reverse=True, pauses=2), dict(grouped=True, query_first=True)]
)
def test_incontext_graphs_are_valid_path_stars(opts):
    d, l, N = 3, 4, 20
    tr, va, meta = pathstar.make_incontext(d, l, N, 300, 50, seed=1, quiet=True, **opts)
    assert tr.shape == (300, 3 * d * (l - 1) + 3 + opts.get('pauses', 0) + l) and va.shape[0] == 50
    assert meta['row_len'] == tr.shape[1] and tr.max() < meta['vocab_size']
    for row in np.concatenate([tr, va]):
        edges, s, g, path = parse_incontext(row, meta)
        assert len(edges) == d * (l - 1)
        nodes = {x for e in edges for x in e}
        assert len(nodes) == d * (l - 1) + 1 and max(nodes) < N  # all nodes distinct labels
        out_deg = {x: sum(u == x for u, _ in edges) for x in nodes}
        in_deg = {x: sum(v == x for _, v in edges) for x in nodes}
        assert out_deg[s] == d and in_deg[s] == 0
        assert all(out_deg[x] <= 1 and in_deg[x] == 1 for x in nodes - {s})
        assert path[0] == s and path[-1] == g and len(path) == l
        assert all((int(u), int(v)) in edges for u, v in zip(path[:-1], path[1:]))
        succ = dict(edges[i] for i in range(len(edges)) if edges[i][0] != s)
        ends = []
        for u, v in edges:  # walk every arm to its leaf: exactly one reaches g
            if u == s:
                while v in succ:
                    v = succ[v]
                ends.append(v)
        assert len(ends) == d and ends.count(g) == 1
    if opts.get('grouped'):  # grouped: the first edge of each arm leaves s, every l-1 edges
        edges, s, _, _ = parse_incontext(tr[0], meta)
        assert [u == s for u, _ in edges] == ([True] + [False] * (l - 2)) * d


def test_no_train_val_duplicates_and_impossible_val_is_an_error():
    # G(2, 3, N=5) has only 120 distinct (graph, query)s: train repeats them, val must not
    tr, va, meta = pathstar.make_incontext(2, 3, 5, 60, 30, seed=0, quiet=True)

    def keys(rows):  # (s, g, set of edges): independent of the edge order
        return {(s, g, frozenset(e)) for e, s, g, _ in (parse_incontext(r, meta) for r in rows)}

    assert len(keys(tr)) < 60  # train itself repeats graphs: the check below is not vacuous
    assert not keys(tr) & keys(va) and len(keys(va)) > 10
    with pytest.raises(DataError, match='too few distinct graphs .* raise --N'):
        pathstar.make_incontext(2, 3, 5, 3000, 30, seed=0, quiet=True)


def test_same_seed_same_bytes_and_cli_names(tmp_path):
    for sub in ('a', 'b', 'c'):
        seed = '1' if sub == 'c' else '0'
        for mode in ('incontext', 'inweights'):
            pathstar.main(
                [
                    f'--mode={mode}',
                    '--d=4',
                    '--l=4',
                    '--num_train=500',
                    '--num_val=20',
                    f'--data_root={tmp_path}/{sub}',
                    f'--seed={seed}',
                    '--pauses=1',
                ]
            )
    names = sorted(os.listdir(tmp_path / 'a'))
    assert names == ['incontext_pathstar_d4_l4_n50_p1', 'inweights_pathstar_d4_l4_p1']
    for n in names:
        for f in ('train.bin', 'val.bin', 'meta.pkl'):
            assert (tmp_path / 'a' / n / f).read_bytes() == (tmp_path / 'b' / n / f).read_bytes()
    n1 = 'incontext_pathstar_d4_l4_n50_p1_s1'
    assert (tmp_path / 'a' / names[0] / 'train.bin').read_bytes() != (
        tmp_path / 'c' / n1 / 'train.bin'
    ).read_bytes()


def test_inweights_heldout_leaves_never_train_paths():
    d, l = 8, 4
    for directions in (False, True):
        tr, va, meta = pathstar.make_inweights(d, l, pauses=1, directions=directions, seed=3)
        PATH, EDGE = meta['special_tokens']['PATH'], meta['special_tokens']['EDGE']
        held = set(meta['heldout_leaves'])
        assert len(held) == 2 and len(va) == 2 and set(va[:, 1]) == held
        paths = tr[tr[:, 0] == PATH]
        assert not held & set(paths[:, 1]) and set(paths[:, 1]) | held == set(va[:, 1]) | set(
            paths[:, 1]
        )
        assert len(set(paths[:, 1])) == d - 2  # every train leaf has path examples
        assert (paths[:, 2] == meta['special_tokens']['PAUSE']).all() and (
            paths[:, 3] == meta['root']
        ).all()
        assert (paths[:, 1] == paths[:, -1]).all()  # [PATH] leaf ... leaf
        edges = tr[tr[:, 0] == EDGE]
        assert len(edges) == 2 * d * (l - 1)  # every edge, both directions
        assert len(paths) == meta['path_repeat'] * (d - 2) and meta['path_repeat'] == 8
        e = edges[:, [1, 3]] if directions else edges[:, [1, 2]]
        fwd = {(int(u), int(v)) for u, v in e}
        assert all((v, u) in fwd for u, v in fwd)
        for p in np.concatenate([paths, va]):  # paths follow edges from the root
            nodes = p[3:]
            assert all((int(u), int(v)) in fwd for u, v in zip(nodes[:-1], nodes[1:]))
        if directions:
            assert set(edges[:, 2]) == {meta['special_tokens']['>'], meta['special_tokens']['<']}
            assert (edges[:, 4:] == meta['special_tokens']['PAD']).all()


def test_bad_parameters_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match='--N=5 is too small .* --N >= 9'):
        pathstar.make_incontext(2, 5, 5, 10, 10)
    with pytest.raises(DataError, match='need d >= 1'):
        pathstar.make_incontext(0, 5, 50, 10, 10)
    with pytest.raises(DataError, match='--pauses=-1'):
        pathstar.make_inweights(4, 5, pauses=-1)
    with pytest.raises(DataError, match='at least one train and one held-out leaf'):
        pathstar.make_inweights(1, 5)
    with pytest.raises(DataError, match='in-context options'):
        pathstar.main(['--mode=inweights', '--reverse', f'--data_root={tmp_path}'])
    name = write(tmp_path, 'g', *pathstar.make_incontext(2, 3, 10, 20, 5, quiet=True))
    with pytest.raises(
        DataError, match='--block_size=8 is too small .*rows of 18 tokens.*--block_size=17'
    ):
        source(tmp_path, name, block_size=8)
    with pytest.raises(DataError, match="pathstar_loss_on=some: use 'answer' or 'all'"):
        source(tmp_path, name, pathstar_loss_on='some')
    iw = write(tmp_path, 'iw', *pathstar.make_inweights(4, 3))
    with pytest.raises(DataError, match='teacherless needs an in-context dataset'):
        source(tmp_path, iw, pathstar_teacherless=True)


def test_meta_styles_and_pause_pad_never_supervised(tmp_path):
    ic = write(tmp_path, 'ic', *pathstar.make_incontext(2, 4, 12, 40, 8, pauses=3, quiet=True))
    iw = write(tmp_path, 'iw', *pathstar.make_inweights(4, 4, pauses=2, seed=1))
    meta_ic, meta_iw = (pickle.load(open(tmp_path / n / 'meta.pkl', 'rb')) for n in (ic, iw))
    # one style written (special_tokens); the older top-level style still reads the same
    assert 'pause_token' not in meta_ic and 'pause_token' not in meta_iw
    old_iw = {k: v for k, v in meta_iw.items() if k != 'special_tokens'}
    old_iw.update(
        pause_token=meta_iw['special_tokens']['PAUSE'], pad_token=meta_iw['special_tokens']['PAD']
    )
    assert pathstar.pause_pad_ids(meta_ic) == (16, 17) and pathstar.pause_pad_ids(
        normalise_meta(old_iw)
    ) == pathstar.pause_pad_ids(meta_iw) == (
        meta_iw['special_tokens']['PAUSE'],
        meta_iw['special_tokens']['PAD'],
    )
    for name, meta in ((ic, meta_ic), (iw, meta_iw)):
        pause, pad = pathstar.pause_pad_ids(meta)
        for loss_on in ('answer', 'all'):
            src = source(tmp_path, name, pathstar_loss_on=loss_on)
            raw = src.rows['train']  # recover the unmasked targets of the same draw
            raw = raw[torch.randint(len(raw), (64,), generator=torch.Generator().manual_seed(0))]
            src.gen.manual_seed(0)
            b = src.get_batch('train', 64)
            assert torch.equal(b['x'], raw[:, :-1])
            yraw = raw[:, 1:]
            assert ((yraw == pause) | (yraw == pad)).any()  # the check below has something to check
            assert (b['y'][(yraw == pause) | (yraw == pad)] == -1).all()
            sup = b['y'] != -1
            assert torch.equal(b['y'][sup], yraw[sup])
            if loss_on == 'all':
                assert torch.equal(sup, (yraw != pause) & (yraw != pad))
            else:  # only answer tokens: l per path row, 1 per edge row
                want = pathstar.answer_mask(raw, meta)[:, 1:]
                assert torch.equal(sup, want) and not (want & (yraw == pad)).any()
            src.observe()  # a training batch, as train.py says
            d = src.diagnostics()
            assert d['masked_pause'] == pytest.approx((yraw == pause).float().mean().item())
            assert d['masked_pad'] == pytest.approx((yraw == pad).float().mean().item())
            if name == ic and loss_on == 'answer':
                assert sup.sum(1).tolist() == [4] * 64
                assert 1 - sum(d.values()) == pytest.approx(4 / (meta['row_len'] - 1))
    # a dataset whose meta names neither style still trains, with a warning, nothing masked
    bare = {k: v for k, v in meta_ic.items() if k not in ('special_tokens', 'answer_start')}
    nm = write(
        tmp_path,
        'bare',
        pathstar.read_rows(tmp_path / ic, 'train', meta_ic),
        pathstar.read_rows(tmp_path / ic, 'val', meta_ic),
        bare,
    )
    with pytest.warns(UserWarning) as rec:
        src = source(tmp_path, nm)
    msgs = ' '.join(str(w.message) for w in rec)
    assert 'names no PAUSE/PAD token' in msgs and 'no answer span' in msgs
    assert (src.get_batch('train', 8)['y'] != -1).all()


def test_teacherless_inputs():
    tr, va, meta = pathstar.make_incontext(2, 5, 20, 30, 5, quiet=True)
    src = batches.PathStar.__new__(batches.PathStar)
    src.__dict__.update(
        meta=meta,
        rows={'train': torch.from_numpy(tr)},
        gen=torch.Generator(),
        pause=24,
        pad=25,
        loss_on='answer',
        teacherless=True,
        online=False,
    )
    b = src.get_batch('train', 10)
    a = meta['answer_start']
    assert (b['x'][:, a:] == meta['teacherless_token']).all()
    assert (b['x'][:, :a] != meta['teacherless_token']).all()
    assert (b['y'][:, a - 1 :] != -1).all() and (b['y'][:, : a - 1] == -1).all()


class Oracle(torch.nn.Module):
    """Predicts the stored next token of the row whose prefix matches; wrong at answer index
    `bad` for the first half of the rows (so exact-match = 0.5)."""

    def __init__(self, rows, a, V, bad=1):
        super().__init__()
        self.rows, self.a, self.V, self.bad = torch.as_tensor(rows).long(), a, V, bad

    def forward(self, idx, last_only=False):
        keys = self.rows[:, : self.a]
        which = (idx[:, None, : self.a] == keys[None]).all(-1).float().argmax(1)  # (B,)
        T = idx.size(1)
        nxt = torch.cat([self.rows[which, 1 : T + 1]], 1)  # (B, T): the true next tokens
        wrong = (which < len(self.rows) // 2)[:, None] & (torch.arange(T) == self.a - 1 + self.bad)
        nxt = torch.where(wrong, (nxt + 1) % self.V, nxt)
        logits = torch.nn.functional.one_hot(nxt, self.V).float()
        return (logits[:, -1:] if last_only else logits), None


def test_evaluate_paths_greedy_and_parallel():
    tr, va, meta = pathstar.make_incontext(2, 5, 30, 20, 40, quiet=True)
    for mode in ('greedy', 'parallel'):
        model = Oracle(va, meta['answer_start'], meta['vocab_size'])
        r = pathstar.evaluate_paths(model, va, meta, mode, batch_size=16)
        assert r['n'] == 40 and r['exact_match'] == pytest.approx(0.5)
        # greedy feeds its own wrong token back; the oracle still matches by prefix
        assert r['per_position'] == pytest.approx([1, 0.5, 1, 1, 1])
    # teacher-forced: the oracle is wrong only at answer index 1, for half the rows
    assert r.get('tf_per_position') is None
    r = pathstar.evaluate_paths(
        Oracle(va, meta['answer_start'], meta['vocab_size'], bad=2), va, meta, 'greedy'
    )
    assert r['tf_per_position'] == pytest.approx([1, 1, 0.5, 1, 1])


def test_training_on_pathstar_reports_path_accuracy(tmp_path):
    write(tmp_path, 'g', *pathstar.make_incontext(2, 3, 8, 400, 50, quiet=True))
    args = [a for a in TINY if not a.startswith('--block_size')] + [
        '--block_size=17',
        f'--data_root={tmp_path}',
        '--dataset=g',
        '--objective=pathstar',
        f'--out_dir={tmp_path}/out',
        '--max_iters=120',  # p1 is 0.88-1.0 at 120 over seeds 1337/1/2, 0.26 at 60 (too close)
        '--eval_interval=120',
        '--pathstar_eval_rows=50',
        '--batch_size=32',
    ]
    hist = train.main(args)
    ev = hist['eval']
    assert ev[-1]['val'] < ev[0]['val'] - 0.3
    assert 0 <= ev[-1]['val_path_acc'] <= 1 and len(ev[-1]['val_pos_acc'].split()) == 3
    assert (
        float(ev[-1]['val_pos_acc'].split()[0]) > 0.5
    )  # p1 = s, copied from the query (chance 1/8)
    out = pathstar.main([f'--evaluate={tmp_path}/out/ckpt.pt', '--num_eval=50'])
    assert out['val']['exact_match'] == pytest.approx(ev[-1]['val_path_acc'])


def test_training_on_inweights_reports_path_and_edge_accuracy(tmp_path):
    write(tmp_path, 'iw', *pathstar.make_inweights(4, 3, pauses=1, directions=True))
    args = [a for a in TINY if not a.startswith('--block_size')] + [
        '--block_size=6',
        f'--data_root={tmp_path}',
        '--dataset=iw',
        '--objective=pathstar',
        f'--out_dir={tmp_path}/out',
        '--max_iters=80',
        '--eval_interval=80',
    ]
    ev = train.main(args)['eval']
    assert ev[-1]['train'] < ev[0]['train'] - 1.0  # (val = held-out leaves: not learnable here)
    assert {'val_path_acc', 'train_path_acc', 'edge_acc'} <= set(ev[-1])
    assert ev[-1]['train_path_acc'] > 0.5 and ev[-1]['val_pos_acc'].startswith('1.000')  # root
    assert ev[-1]['edge_acc'] > 0.3  # 24 directed edge facts, 9 nodes: chance ~1/9


def test_online_rows_are_fresh_valid_graphs_and_a_function_of_the_generator(tmp_path):
    import torch

    tr, va, meta = pathstar.make_incontext(2, 5, 50, 100, 20, seed=0, quiet=True)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a, b = pathstar.online_rows(meta, 64, g(1)), pathstar.online_rows(meta, 64, g(1))
    assert (a == b).all() and not (a == pathstar.online_rows(meta, 64, g(2))).all()
    assert a.shape == (64, meta['row_len']) and a.shape[1] == tr.shape[1]
    # same layout as stored rows: separators where the stored rows have them, a valid path
    sp = meta['special_tokens']
    assert ((a == sp['|']) == (tr[:64] == sp['|'])).all() and (a[:, 26] == sp['=']).all()
    for row in a[:10]:
        edges = {(int(row[i]), int(row[i + 1])) for i in range(0, 24, 3)}
        path = row[meta['answer_start'] :].tolist()
        assert row[23] == sp["/"] and path[0] == row[24] and path[-1] == row[25]  # s, g
        assert all((u, v) in edges for u, v in zip(path, path[1:]))


def test_demo_runs_load_and_match_their_datasets():
    """Every run of `make demo` (bench/pathstar_demo.py RUNS) is a valid config: no unknown
    key or wrong type, a path-star or denoiser objective, a whole-number steps scale, and
    pathstar.py flags that name the config's graph shape (d, l, N, reverse)."""
    import importlib.util

    from configurator import load_config

    path = os.path.join(os.path.dirname(__file__), '..', 'bench', 'pathstar_demo.py')
    spec = importlib.util.spec_from_file_location('pathstar_demo', path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    for label, config, flags, _, extra, scale in demo.RUNS:
        cfg, _ = load_config(
            train.DEFAULTS, [os.path.join(os.path.dirname(path), '..', config)] + extra
        )
        assert cfg['objective'] in ('pathstar', 'unmasking'), label
        assert isinstance(scale, int) and scale >= 1, label
        name = pathstar.default_name(pathstar.arg_parser().parse_args(['--mode=incontext'] + flags))
        assert cfg['dataset'] == name, (label, cfg['dataset'], name)
