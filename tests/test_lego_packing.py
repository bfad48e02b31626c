"""Sub-word packing (four int4 products per FU), the SVDQuant operator on it, and the scratchpad model."""

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genfoundry import lego
from genfoundry.lego import baseline, cost, packing

needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")


def test_pack_tensor_lanes_hold_the_values_in_order():
    x = np.array([[-8, 7, -1, 0, 3], [1, -2, 5, -7, -8]])
    words = packing.pack_tensor(x, packing.PackedTensor(axis=1, lanes=4, lane_width=4))
    assert words.shape == (2, 2)
    for i in range(2):
        lanes = [(int(words[i, j]) >> (4 * l)) & 0xF for j in range(2) for l in range(4)]
        signed = [v - 16 if v >= 8 else v for v in lanes]
        assert signed == list(x[i]) + [0, 0, 0]  # zero padding to a multiple of four lanes
    col = packing.pack_tensor(x.T, packing.PackedTensor(axis=0, lanes=4, lane_width=4))
    assert np.array_equal(col, words.T)


def test_pack_workload_packs_narrow_and_slices_wide_stages():
    wl = lego.parse_workload("svdq:5x6x11x3")
    hw, derived = packing.pack_workload(wl, mac_bits=8)
    w4a4, *slices = hw.stages
    assert (w4a4.lanes, w4a4.lane_width, w4a4.bound("k")) == (4, 4, 3)
    assert hw.shapes["X"] == (5, 3) and hw.shapes["W"] == (3, 6)
    assert hw.widths["X"] == 16 and wl.widths["X"] == 4  # the logical workload is untouched
    # the int16 x int16 branch: four int8 slice stages, lower slices unsigned, shifted to their weight
    assert [(s.name, s.shift, s.unsigned) for s in slices] == [
        ("lowrank.s00", 0, (True, True)), ("lowrank.s01", 8, (True, False)),
        ("lowrank.s10", 8, (False, True)), ("lowrank.s11", 16, (False, False))]
    assert {n: p.source for n, p in derived.items() if isinstance(p, packing.SlicedTensor)} == {
        "L_b0": "L", "L_b1": "L", "U_b0": "U", "U_b1": "U"}
    assert all(max(hw.widths[a.tensor] for a in st.inputs) <= 8 for st in slices)
    for spec in ("gemm:4x4x8", "mttkrp:2x2x2x2", "conv2d:2x5x5x3x3x3"):
        assert packing.pack_workload(lego.parse_workload(spec))[1] == {}
    assert packing.pack_workload(lego.parse_workload("gemm:4x4x8:w2"))[0].stages[0].lanes == 16
    assert packing.pack_workload(lego.parse_workload("gemm:4x4x8:w4"), mac_bits=16)[0].stages[0].lanes == 16
    assert lego.compile("svdq:5x6x11x3", lego.Arch(2, 2, pack_subwords=False), emit_verilog=False).packed == {}


def test_byte_slices_sum_back_to_the_value():
    x = np.array([-32768, -257, -1, 0, 1, 255, 256, 32767])
    lo = packing.slice_tensor(x, packing.SlicedTensor("x", 0, 8, top=False))
    hi = packing.slice_tensor(x, packing.SlicedTensor("x", 1, 8, top=True))
    assert lo.min() >= 0 and lo.max() <= 255 and hi.min() >= -128 and hi.max() <= 127
    assert np.array_equal(hi * 256 + lo, x)


def test_bad_operand_width_suffix():
    for spec in ("gemm:4x4x4:w1", "gemm:4x4x4:w17", "gemm:4x4x4:x4", "gemm:4x4x4:w"):
        with pytest.raises(lego.LegoError, match="operand-width suffix"):
            lego.parse_workload(spec)
    assert lego.parse_workload("gemm:4x4x4:w16").widths == {"A": 16, "B": 16, "C": 32}


def _check(spec, dataflows, rows=2, cols=2, seed=0, extremes=False):
    d = lego.compile(spec, lego.Arch(rows, cols, dataflows))
    x = lego.random_inputs(d.workload, seed)
    if extremes == "max":  # all-ones low slices and nibbles (unsigned parts at their largest)
        x = {n: np.full_like(v, (1 << (d.workload.widths[n] - 1)) - 1) for n, v in x.items()}
    elif extremes:  # the most negative int4 value in every lane exercises the sign of each nibble
        x = {n: np.full_like(v, -(1 << (d.workload.widths[n] - 1))) for n, v in x.items()}
    out, cycles = d.simulate(x, simulator="icarus")
    ref = lego.reference(d.workload, x)
    for name in ref:
        assert np.array_equal(out[name], ref[name]), (spec, dataflows, name)
    est = d.estimate()["rtl_cycles"]
    assert abs(est - cycles) <= 0.05 * cycles, (spec, dataflows, est, cycles)
    return d


@needs_iverilog
@pytest.mark.parametrize("df", [("os",), ("ws",), ("is",), ("ws-tree",), ("os", "ws", "is")])
def test_svdq_on_int4_lanes_is_bit_exact(df):
    d = _check("svdq:5x6x11x3", df)
    assert d.hw_workload.stages[0].lanes == 4
    assert "+: 4]" in d.verilog  # the lane dot product, not a 16-bit multiply of packed words
    _check("svdq:3x4x8x2", df, extremes=True)
    _check("svdq:3x4x8x2", df, extremes="max")


@needs_iverilog
@pytest.mark.parametrize("spec,df", [("gemm:4x5x6:w16", ("ws",)), ("gemm:3x4x5:w12", ("ws-tree",)),
                                     ("gemm:3x3x4:w16", ("os", "ws"))])
def test_wide_gemm_on_byte_slices_is_bit_exact(spec, df):
    d = _check(spec, df)
    assert len(d.stages) == 4 and d.groups == [[0, 1, 2, 3]]  # one drain per output tile
    assert "<<< 16" in d.verilog and " * $signed(opx" in d.verilog  # one shared multiplier, shifted
    _check(spec, df, extremes=True)


@needs_iverilog
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(m=st.integers(1, 4), n=st.integers(1, 4), k=st.integers(1, 9), bits=st.sampled_from([2, 3, 4]),
       df=st.sampled_from(["os", "ws", "ws-tree"]))
def test_narrow_gemm_random_shapes(m, n, k, bits, df):
    _check(f"gemm:{m}x{n}x{k}:w{bits}", (df,))


def test_packing_cuts_cycles_and_multiply_energy():
    spec = "gemm:256x256x256:w4"
    packed = lego.compile(spec, lego.Arch(16, 16, ("ws-tree",)), emit_verilog=False).estimate()
    plain = lego.compile(spec, lego.Arch(16, 16, ("ws-tree",), pack_subwords=False), emit_verilog=False).estimate()
    assert packed["macs"] == plain["macs"] == 256 ** 3
    assert 3.0 < plain["system_cycles"] / packed["system_cycles"] <= 4.0
    assert packed["energy_pj"]["mac"] == pytest.approx(plain["energy_pj"]["mac"])  # energy per int4 MAC, either way
    int8 = lego.compile("gemm:256x256x256", lego.Arch(16, 16, ("ws-tree",)), emit_verilog=False).estimate()
    assert int8["energy_pj"]["mac"] / packed["energy_pj"]["mac"] == pytest.approx(0.3 / 0.15)


def test_svdq_against_the_gemmini_lowering():
    assert baseline.gemm_lowering("svdq:64x32x128x8") == ["gemm:64x32x128", "gemm:64x32x32"]
    assert baseline.gemm_lowering("gemm:8x8x16:w16") == ["gemm:8x8x64"]
    assert baseline.gemm_lowering("gemm:8x8x16:w4") == ["gemm:8x8x16"]
    grouped = lego.compile("svdq:256x256x256x32", lego.Arch(16, 16, ("ws-tree",)), emit_verilog=False)
    assert grouped.groups == [[0, 1, 2, 3, 4]]
    # the output leaves the chip once for the whole group: 256 x 256 int32
    y_bytes = 256 * 256 * 4
    plans = [grouped.modes[grouped.choice[s]] for s in range(5)]
    alone = sum(cost.dram_blocking(p).dram_bytes for p in plans)
    assert grouped.estimate()["dram_bytes"] == alone - 4 * y_bytes
    c = baseline.compare("svdq:512x512x512x32")
    assert c.lego["macs"] == c.gemmini["macs"] == 512 * 512 * (512 + 32)
    assert c.speedup > 2.5 and c.energy_ratio > 1.0
    for est in (c.lego, c.gemmini):
        assert 0 < est["utilisation"] <= 1


def test_scratchpad_blocking():
    d = lego.compile("gemm:64x64x64", lego.Arch(4, 4, ("os",)), emit_verilog=False)
    plan = d.modes[0]
    whole = cost.dram_blocking(plan, scratchpad_kib=1024)
    assert whole.dram_bytes == 64 * 64 * (1 + 1 + 4)  # every tensor moves once
    traffic = [cost.dram_blocking(plan, scratchpad_kib=k).dram_bytes for k in (0, 1, 4, 16, 64, 1024)]
    assert all(a >= b for a, b in zip(traffic, traffic[1:])) and traffic[0] > 3 * traffic[-1]
    # overlapping convolution windows are fetched once per block, not once per filter tap
    conv = lego.compile("dwconv:16x18x18x3x3", lego.Arch(4, 4, ("os",)), emit_verilog=False)
    assert cost.dram_blocking(conv.modes[0], scratchpad_kib=1024).dram_bytes == 16 * 18 * 18 + 16 * 9 + 16 * 16 * 16 * 4


@needs_iverilog
@pytest.mark.parametrize("df", [("ws",), ("ws-tree",)])
def test_svdq_with_an_int8_low_rank_branch_is_bit_exact(df):
    d = _check("svdq:5x6x11x3:r8", df)
    assert [s.lanes for s in d.hw_workload.stages] == [4, 1]  # int4 lanes, then one int8 stage: no slices
    _check("svdq:3x4x8x2:r8", df, extremes=True)


def test_int8_low_rank_branch_spec_lowering_and_speedup():
    assert lego.parse_workload("svdq:4x4x8x2:r8").widths == {"X": 4, "W": 4, "L": 8, "U": 8, "Y": 32}
    assert lego.parse_workload("svdq:4x4x8x2").widths["L"] == 16
    for bad in ("svdq:4x4x8x2:r1", "svdq:4x4x8x2:r17", "svdq:4x4x8x2:w8"):
        with pytest.raises(lego.LegoError, match="low-rank width suffix"):
            lego.parse_workload(bad)
    assert baseline.gemm_lowering("svdq:64x32x128x8:r8") == ["gemm:64x32x128", "gemm:64x32x8"]
    wide, narrow = baseline.compare("svdq:512x512x512x32"), baseline.compare("svdq:512x512x512x32:r8")
    assert narrow.lego["macs"] == wide.lego["macs"]
    assert narrow.lego["system_cycles"] < wide.lego["system_cycles"] and narrow.speedup > wide.speedup


def test_generation_counts_text_only_layers_once():
    from genfoundry.lego import workloads

    layers = workloads.model_layers("sana-svdq")
    once = [layer.name for layer in layers if layer.once_per_image]
    assert once == ["cross-attn kv (int16)"]
    assert [layer.name for layer in workloads.model_layers("sana-0.6b") if layer.once_per_image] == ["cross-attn kv"]
    assert not any(layer.once_per_image for layer in workloads.model_layers("vila-u"))
    r8 = workloads.model_layers("sana-svdq-r8")
    assert all(":w16" not in l.spec and ":r16" not in l.spec for l in r8 if not l.once_per_image)
    rows = [(layer, 10) for layer in layers]
    per_step = sum(layer.count * 10 for layer in layers)
    kv = next(layer for layer in layers if layer.once_per_image)
    assert workloads.generation_cycles(rows, 20) == 20 * per_step - 19 * kv.count * 10
