"""LEGO front end: IR validation errors, reuse analysis, delay matching, cost model, CLI."""

import json
import shutil

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from genfoundry import lego
from genfoundry.lego import ir, pipelining, reuse
from genfoundry.lego.workloads import parse_workload


def test_non_affine_access_is_rejected():
    with pytest.raises(lego.NonAffineAccessError, match="multiplies two loop indices"):
        ir.parse_stage("C[m,n] += A[m*k,k] * B[k,n]", {"m": 2, "n": 2, "k": 2})
    with pytest.raises(lego.NonAffineAccessError, match="not affine"):
        ir.parse_stage("C[m,n] += A[m/2,k] * B[k,n]", {"m": 2, "n": 2, "k": 2})


def test_singular_and_colliding_dataflows_are_rejected():
    st = parse_workload("gemm:4x4x4").stages[0]
    with pytest.raises(lego.SingularDataflowError, match="singular"):
        ir.bind(st, lego.Dataflow("bad", {"m": 1, "n": 1}, ({"m": 1}, {"n": 1, "k": 0})), 4, 4)
    with pytest.raises(lego.SingularDataflowError, match="determinant 2"):
        ir.bind(st, lego.Dataflow("det2", {"k": 2}, ({"m": 1}, {"n": 1})), 4, 4)
    bst = parse_workload("bgemm:2x4x4x4").stages[0]
    with pytest.raises(lego.DataflowCollisionError, match="same \\(time, space\\)"):
        ir.bind(bst, lego.Dataflow("4d", {"k": 1, "b": 1}, ({"m": 1}, {"n": 1})), 4, 4)


def test_array_too_small():
    st = parse_workload("conv2d:1x8x8x1x3x3").stages[0]
    df = lego.Dataflow("conv-s", {"s": 1}, ({"k": 1}, {"ox": 1, "s": 1}), untiled=("s",))
    with pytest.raises(lego.ArrayTooSmallError, match="needs 3 FUs"):
        ir.bind(st, df, 4, 2)
    mp = ir.bind(st, df, 4, 4)
    assert mp.tile[mp.dims.index("s")] == 3 and mp.tile[mp.dims.index("ox")] == 2


def test_bad_workload_specs():
    for spec in ("gemm:4x4", "conv2d:1x2x2x1x3x3", "foo:1x2", "gemm4x4x4", "conv2d:1x8x8x1x3x3:x2"):
        with pytest.raises(lego.LegoError):
            parse_workload(spec)


def test_reuse_output_stationary_gemm():
    st = parse_workload("gemm:8x8x8").stages[0]
    mp = ir.bind(st, "os", 4, 4)
    a, b = (reuse.analyse(mp, acc) for acc in st.inputs)
    c = reuse.analyse(mp, st.output)
    assert (1, 0, 1) in a.links and not a.stationary  # A moves right one FU per cycle
    assert (1, 1, 0) in b.links and not b.stationary  # B moves down
    assert c.stationary
    ws = ir.bind(st, "ws", 4, 4)
    assert reuse.analyse(ws, st.inputs[1]).stationary  # the weight stays
    assert (1, 1, 0) in reuse.analyse(ws, st.output).links  # partial sums flow down


def test_lp_delay_matching_beats_naive_and_is_integral():
    d = lego.compile("gemm:8x8x8", lego.Arch(4, 4, ("ws",)))
    m = d.modes[0]
    r_lp, r_nv = pipelining.lp_delay_match(m.graph), pipelining.naive_balance(m.graph)
    pipelining.check_schedule(m.graph, r_lp)
    pipelining.check_schedule(m.graph, r_nv)
    lp_bits, nv_bits = pipelining.register_bits(m.graph, r_lp)[1], pipelining.register_bits(m.graph, r_nv)[1]
    assert all(isinstance(v, int) for v in r_lp.values())
    assert lp_bits <= 0.7 * nv_bits, (lp_bits, nv_bits)


def test_lp_on_a_reconvergent_toy_graph():
    g = pipelining.PrimGraph()
    g.add("cnt", 0, 16)
    for i in range(32):  # 32 one-bit valid signals that must wait one cycle for a memory read
        g.add(f"v{i}", 0, 1), g.add(f"rd{i}", 1, 8), g.add(f"m{i}", 1, 32)
        g.connect("cnt", f"v{i}"), g.connect("cnt", f"rd{i}"), g.connect(f"v{i}", f"m{i}"), g.connect(f"rd{i}", f"m{i}")
    naive = pipelining.register_bits(g, pipelining.naive_balance(g))[1]
    lp = pipelining.register_bits(g, pipelining.lp_delay_match(g))[1]
    # naive pads each valid wire (32 x 1 bit); the LP delays the shared 16-bit counter once instead
    assert naive == 32 and lp == 16


def test_fusion_shares_the_array_and_counts_muxes():
    single = lego.compile("gemm:6x6x6", lego.Arch(3, 3, ("os",)))
    fused = lego.compile("gemm:6x6x6", lego.Arch(3, 3, ("os", "ws")))
    assert single.muxes == 0 and fused.muxes > 0
    assert len(fused.modes) == 2 and "mode == 1" not in single.verilog


def _rtl_app():
    from genfoundry.lego.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app


def test_cli_compile(tmp_path):
    runner = CliRunner()
    out = tmp_path / "rtl"
    res = runner.invoke(_rtl_app(), ["rtl", "gemm:3x5x4", "--array", "2x2", "--dataflow", "os,ws", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "lego_top.v").exists() and json.loads((out / "report.json").read_text())["array"] == "2x2"
    res = runner.invoke(_rtl_app(), ["rtl", "gemm:3x5", "--array", "2x2", "-o", str(out)])
    assert res.exit_code == 2 and "expected MxNxK" in res.output


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog (apt-get install iverilog)")
def test_cli_simulate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "rtl"
    res = runner.invoke(_rtl_app(), ["rtl", "gemm:3x5x4", "--array", "2x2", "--dataflow", "os,ws", "-o", str(out)])
    assert res.exit_code == 0, res.output
    wl = parse_workload("gemm:3x5x4")
    x = lego.random_inputs(wl, 3)
    np.savez(tmp_path / "in.npz", **x)
    res = runner.invoke(_rtl_app(), ["rtl", "simulate", str(out), "--inputs", str(tmp_path / "in.npz"),
                                     "--outputs", str(tmp_path / "out.npz"), "--simulator", "icarus"])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "out.npz") as z:
        assert np.array_equal(z["C"], lego.reference(wl, x)["C"])


def test_model_shapes_and_tracing():
    import torch

    from genfoundry.lego import workloads

    sana = {l.name: l for l in workloads.model_layers("sana-0.6b")}
    assert sana["Mix-FFN depthwise 3x3"].spec == "dwconv:5760x34x34x3x3" and sana["self-attn qkv"].count == 28
    assert sana["self-attn qkv"].spec == "gemm:1024x3456x1152"
    for layer in workloads.model_layers("vila-u") + workloads.model_layers("sana-svdq"):
        parse_workload(layer.spec)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
                              torch.nn.Flatten(), torch.nn.Linear(128, 5))
    specs = [l.spec for l in workloads.trace(net, torch.zeros(1, 3, 8, 8))]
    assert specs == ["conv2d:3x10x10x8x3x3:s2", "dwconv:8x6x6x3x3", "gemm:1x5x128"]
    with pytest.raises(lego.LegoError, match="unknown model"):
        workloads.model_layers("gpt-5")


def test_cost_model_bounds_and_gemmini_lowering():
    from genfoundry.lego import baseline

    assert baseline.gemm_lowering("conv2d:3x8x8x4x3x3") == ["gemm:36x4x27"]
    assert baseline.gemm_lowering("dwconv:5x6x6x3x3:s2") == ["bgemm:5x4x1x9"]
    arch = lego.Arch(4, 4, ("os", "ws", "is"))
    c = baseline.compare("conv2d:3x8x8x4x3x3", arch=arch)
    for est in (c.lego, c.gemmini):
        assert est["system_cycles"] >= est["macs"] / 256 and est["energy_pj"]["total"] > 0
    d = lego.compile("conv2d:3x8x8x4x3x3", arch)
    e = d.estimate()
    assert e["system_cycles"] >= e["roofline_cycles"] and 0 < e["utilisation"] <= 1
    assert e["macs"] == 36 * 4 * 27


def test_balanced_reduction_tree_is_shallower_and_cheaper_than_a_chain():
    from genfoundry.lego import interconnect

    designs = {r: lego.compile("gemm:16x8x8", lego.Arch(8, 8, ("ws-tree",), reduction=r), emit_verilog=False)
               for r in ("chain", "tree")}
    chain, tree = designs["chain"].modes[0], designs["tree"].modes[0]
    assert interconnect.depth(chain.output.tree) == 7  # 8 rows reduced neighbour to neighbour
    assert interconnect.depth(tree.output.tree) == 3  # ceil(log2 8)
    assert max(len(v) for v in tree.output.tree.children().values()) <= 2
    assert designs["tree"].lp_register_bits < designs["chain"].lp_register_bits
    assert tree.phases[1] < chain.phases[1]  # the compute phase no longer waits for a long chain
    with pytest.raises(lego.LegoError, match="reduction"):
        lego.Arch(4, 4, ("os",), reduction="ring")
