"""exporter.cpu: /proc/cpuinfo as x86 and ARM Linux hosts print it, parsed into the int8 kernel family ONNX Runtime
will pick on them; and the real host."""

import json
import platform
from typing import get_args

import pytest

from exporter import cpu
from exporter.cpu import INT8_KERNELS, CpuInfo, Int8Kind, cpu_info, int8_expectation

# EPYC 7B12 (Zen 2): AVX2, no AVX-512 at all.
EPYC_AVX2 = """\
processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 23
model		: 49
model name	: AMD EPYC 7B12
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save umip rdpid
bugs		: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass retbleed smt_rsb

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B12
flags		: fpu vme avx2
"""

# Zen 4 EPYC as a 2-vCPU VM (this project's measurement box): AVX-512 with VNNI, no AMX.
EPYC_VNNI = """\
processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero xsaveerptr arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC
"""

# Sapphire Rapids (GCP C3): AMX, AVX-512 VNNI and AVX-VNNI all present.
XEON_SPR = """\
processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 arat avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid cldemote movdiri movdir64b fsrm md_clear serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities
vmx flags	: vnmi preemption_timer invvpid ept_x_only ept_ad ept_1gb
"""

# Alder Lake desktop: AVX-VNNI on 256-bit registers, AVX-512 fused off.
ALDER_LAKE = """\
processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 151
model name	: 12th Gen Intel(R) Core(TM) i7-12700K
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 monitor ds_cpl vmx est tm2 ssse3 sdbg fma cx16 xtpr pdcm sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb ssbd ibrs ibpb stibp ibrs_enhanced tpr_shadow flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb intel_pt sha_ni xsaveopt xsavec xgetbv1 xsaves split_lock_detect avx_vnni dtherm ida arat pln pts hwp hwp_notify hwp_act_window hwp_epp hwp_pkg_req hfi umip pku ospke waitpkg gfni vaes vpclmulqdq rdpid movdiri movdir64b fsrm md_clear serialize arch_lbr ibt flush_l1d arch_capabilities
"""

# Graviton3 (Neoverse V1): no 'model name'; 'svei8mm' must not be mistaken for 'i8mm' (both are present here).
GRAVITON3 = """\
processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x1
CPU part	: 0xd40
CPU revision	: 1

processor	: 1
BogoMIPS	: 2100.00
CPU implementer	: 0x41
CPU part	: 0xd40
"""

# Graviton2 (Neoverse N1): dot product, no I8MM.
GRAVITON2 = """\
processor	: 0
BogoMIPS	: 243.75
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x3
CPU part	: 0xd0c
CPU revision	: 1
"""

# Cortex-A72 (Raspberry Pi 4): plain NEON, neither dot product nor I8MM.
CORTEX_A72 = """\
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3
"""


@pytest.mark.parametrize("text,machine,model,cores,features,kind", [
    (EPYC_AVX2, "x86_64", "AMD EPYC 7B12", 2, ("avx2",), "avx2"),
    (EPYC_VNNI, "x86_64", "AMD EPYC", 2, ("avx2", "avx512f", "avx512bw", "avx512_vnni"), "avx512_vnni"),
    (XEON_SPR, "x86_64", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", 1,
     ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"), "amx"),
    (ALDER_LAKE, "x86_64", "12th Gen Intel(R) Core(TM) i7-12700K", 1, ("avx2", "avx_vnni"), "avx_vnni"),
    (GRAVITON3, "aarch64", "ARM implementer 0x41 part 0xd40", 2, ("asimddp", "i8mm"), "arm64_i8mm"),
    (GRAVITON2, "aarch64", "ARM implementer 0x41 part 0xd0c", 1, ("asimddp",), "arm64_dotprod"),
    (CORTEX_A72, "aarch64", "ARM implementer 0x41 part 0xd08", 1, (), "arm64"),
], ids=["epyc-avx2", "epyc-avx512-vnni", "xeon-sapphire-rapids", "alder-lake", "graviton3", "graviton2",
        "cortex-a72"])
def test_cpuinfo_parsed_into_features_and_kind(text, machine, model, cores, features, kind):
    info = cpu_info(text, machine)
    assert info == CpuInfo(model, machine, cores, features, kind)
    assert info.describe() == f"{model} ({machine}, {cores} cores; int8: {' '.join(features) or 'none'} -> {kind})"
    assert json.loads(json.dumps(info.to_dict())) == info.to_dict()
    assert info.to_dict()["int8_features"] == list(features)


def test_avx512_without_bw_is_the_avx2_kernel():
    # Knights Landing: avx512f without avx512bw, which MLAS's AVX-512 int8 kernel needs.
    assert cpu_info("model name\t: Intel(R) Xeon Phi(TM) CPU 7210\nflags\t\t: avx2 avx512f avx512cd\n",
                    "x86_64").int8_kind == "avx2"


def test_describe_reads_as_documented():
    assert cpu_info(EPYC_VNNI, "x86_64").describe() == \
        "AMD EPYC (x86_64, 2 cores; int8: avx2 avx512f avx512bw avx512_vnni -> avx512_vnni)"


@pytest.mark.parametrize("machine,kind", [("x86_64", "other"), ("arm64", "arm64")])
def test_unreadable_cpuinfo_falls_back_to_platform(monkeypatch, machine, kind):
    def unreadable(*args, **kwargs):
        raise PermissionError("/proc/cpuinfo")

    monkeypatch.setattr(cpu.platform, "machine", lambda: machine)  # arm64 is how macOS names Apple silicon
    monkeypatch.setattr("builtins.open", unreadable)
    info = cpu._host_cpu_info.__wrapped__()  # uncached: the real host's answer stays as it was
    monkeypatch.undo()
    assert info.model == (platform.processor() or "unknown") and info.cores >= 1
    assert (info.machine, info.int8_features, info.int8_kind) == (machine, (), kind)


def test_every_kind_has_a_one_line_expectation():
    assert list(INT8_KERNELS) == list(get_args(Int8Kind))
    assert all(int8_expectation(k) and "\n" not in int8_expectation(k) for k in get_args(Int8Kind))
    assert "vpdpbusd" in int8_expectation("avx512_vnni") == int8_expectation("avx_vnni")
    assert "vpmaddubsw" in int8_expectation("avx2") == int8_expectation("avx512")


def test_real_host():
    info = cpu_info()
    assert info is cpu_info()  # cached
    assert info.model and info.machine == platform.machine() and info.cores >= 1
    assert info.int8_kind in INT8_KERNELS
    assert set(info.int8_features) <= set(cpu.X86_INT8_FEATURES + cpu.ARM_INT8_FEATURES)
