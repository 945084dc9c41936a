"""SPEECH2IMAGE_CPU_ISA: the project's feature detection capped, so `auto` chooses as on an older CPU.

Fast: reads /proc/cpuinfo (or a given one) and resolves choices; no model is loaded.
"""

import subprocess
import sys

import pytest

from speech2image import hardware
from speech2image.errors import ConfigurationError
from speech2image.imaging.diffusion import resolve_device
from speech2image.imaging.options import DiffusionConfig

# /proc/cpuinfo's first processor on three kinds of machine (the fields the code reads)
AMX_XEON = {"vendor_id": "GenuineIntel", "model name": "Intel(R) Xeon(R) Platinum 8488C",
            "flags": "fpu sse2 avx avx2 fma avx512f avx512dq avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8"}
ZEN4_EPYC = {"vendor_id": "AuthenticAMD", "model name": "AMD EPYC 9R14",
             "flags": "fpu sse2 avx avx2 fma avx512f avx512dq avx512_vnni avx512_bf16"}
ZEN2_EPYC = {"vendor_id": "AuthenticAMD", "model name": "AMD EPYC 7R32", "flags": "fpu sse2 avx avx2 fma"}


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to run on the CPU of the given /proc/cpuinfo fields, SPEECH2IMAGE_CPU_ISA unset."""
    monkeypatch.delenv(hardware.CPU_ISA_VARIABLE, raising=False)

    def on(fields: dict):
        monkeypatch.setattr(hardware, "_cpuinfo", lambda: dict(fields))
        monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")

    return on


def test_the_avx2_cap_hides_avx512_bfloat16_and_amx(cpu, monkeypatch):
    cpu(AMX_XEON)
    assert {"avx512_bf16", "amx_tile"} <= set(hardware.cpu_features())
    monkeypatch.setenv(hardware.CPU_ISA_VARIABLE, "avx2")
    assert hardware.cpu_features() == ("avx2",)
    assert not hardware.cpu_has_native_bfloat16()
    assert "capped by SPEECH2IMAGE_CPU_ISA=avx2" in hardware.describe_cpu()


@pytest.mark.parametrize("fields,cap,bfloat16", [
    (AMX_XEON, "avx512", False), (AMX_XEON, "avx512_bf16", True), (ZEN4_EPYC, "avx512_bf16", True),
    (ZEN2_EPYC, "avx512_bf16", False),  # a cap never adds what the CPU lacks
])
def test_each_cap_keeps_only_what_the_cpu_has_within_it(cpu, monkeypatch, fields, cap, bfloat16):
    cpu(fields)
    monkeypatch.setenv(hardware.CPU_ISA_VARIABLE, cap)
    assert "amx_tile" not in hardware.cpu_features()
    assert set(hardware.cpu_features()) <= set(hardware.CPU_ISA_CAPS[cap])
    assert hardware.cpu_has_native_bfloat16() is bfloat16


def test_auto_chooses_float32_on_a_capped_cpu_and_bfloat16_where_the_cap_allows(monkeypatch):
    monkeypatch.setenv(hardware.CPU_ISA_VARIABLE, "avx2")
    assert resolve_device(DiffusionConfig(device="cpu")) == ("cpu", "float32", "tiny")
    monkeypatch.setenv(hardware.CPU_ISA_VARIABLE, "native")
    native = "bfloat16" if hardware.cpu_has_native_bfloat16() else "float32"
    assert resolve_device(DiffusionConfig(device="cpu")) == ("cpu", native, "tiny")


def test_an_unknown_cap_stops_with_the_choices(monkeypatch):
    monkeypatch.setenv(hardware.CPU_ISA_VARIABLE, "avx3")
    with pytest.raises(ConfigurationError, match="invalid SPEECH2IMAGE_CPU_ISA='avx3': allowed native, avx2, "):
        resolve_device(DiffusionConfig(device="cpu"))


def test_a_child_with_the_emulation_environment_knows_it_emulates(monkeypatch):
    monkeypatch.delenv(hardware.CPU_ISA_VARIABLE, raising=False)
    assert hardware.emulated_cpu() is None
    monkeypatch.setenv(hardware.CPU_ISA_VARIABLE, "avx2")
    assert hardware.emulated_cpu() is None  # the choices are pinned, the kernels are not held
    code = "import torch; from speech2image import hardware; print(hardware.emulated_cpu(), " \
           "torch.backends.cpu.get_cpu_capability())"
    env = {**hardware.os.environ, **hardware.emulation_environment("avx2")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["avx2", "AVX2"]  # ATen, as the project, computes as an AVX2 CPU
