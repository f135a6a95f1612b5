"""bench/gpu_check.py in its CPU mode: the command a GPU machine runs first cannot rot."""

import contextlib
import importlib.util
import io

from conftest import ROOT

_spec = importlib.util.spec_from_file_location('gpu_check', f'{ROOT}/bench/gpu_check.py')
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


def test_gpu_check_passes_in_cpu_mode(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = gpu_check.main(['--device=cpu', f'--work={tmp_path}'])
    lines = out.getvalue().splitlines()
    checks = [l for l in lines if l.split(' ', 1)[0] in ('PASS', 'FAIL', 'SKIP')]
    assert code == 0, out.getvalue()
    assert [l.split()[1] for l in checks] == list(gpu_check.CHECKS)  # every check reported
    assert all(not l.startswith('FAIL') for l in checks)
    # what CPU mode can check, it checks: only the CUDA-only ones are skipped
    assert [l.split()[1] for l in checks if l.startswith('SKIP')] == ['flex', 'torchrun']
