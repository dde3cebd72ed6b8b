"""The C++ binary's input parsers (cpp_inference/src/inputs.cc) on their own,
built with AddressSanitizer + UndefinedBehaviorSanitizer (no TensorFlow), on
the fuzz seed corpus: valid and hostile PNG headers, .npy files (dimensions
whose product overflows, 40-digit sizes, truncated data, a header length past
the end of the file) and file names (region ids beyond int)."""

import importlib.util
import shutil
import subprocess

import pytest

from tests.conftest import ROOT, SANITIZER_ENV

FUZZ = ROOT / "cpp_inference" / "fuzz"


def _corpus():
    spec = importlib.util.spec_from_file_location("make_corpus", FUZZ / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_input_parsers_under_sanitizers_on_the_fuzz_corpus(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "fuzz_inputs"
    cmd = [
        cxx,
        "-std=c++17",
        "-O1",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined",
        "-fno-omit-frame-pointer",
        "-I",
        str(ROOT / "cpp_inference" / "include"),
        str(ROOT / "cpp_inference" / "src" / "inputs.cc"),
        str(FUZZ / "fuzz_inputs.cc"),
        "-o",
        str(exe),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    seeds = _corpus().corpus()
    for name, data in seeds.items():
        (tmp_path / name).write_bytes(data)
    import os

    r = subprocess.run([str(exe), *(str(tmp_path / n) for n in seeds)], capture_output=True, text=True, timeout=120, env={**os.environ, **SANITIZER_ENV})
    assert r.returncode == 0 and r.stdout.strip() == f"ran {len(seeds)} inputs", r.stdout + r.stderr[-3000:]
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr
