"""Verilog-2001 emission of a (possibly fused, multi-mode) design.

Top module `lego_top` and its interface (all synchronous to `clk`, active-high `rst`):

  load port   load_en, load_sel (input slot), load_addr (line), load_data (one word per bank,
              bank b in bits [b*W +: W]): writes one line of an input buffer per cycle.
  control     start (one cycle, while idle) with start_mode (which dataflow / stage to run): runs one
              pass PRE -> COMP -> FLUSH; `busy` is high meanwhile; `done` pulses for one cycle at the end.
  drain port  drain_en, drain_addr: one cycle later drain_data holds that line of the output buffer
              (bank b in bits [b*ACCW +: ACCW]); the line is cleared as it is read. The output buffer
              accumulates (+=) across passes until drained, so reduction tiles need no host adds.

Inside: one shift register per primitive (its delay line); a consumer taps the depth the delay
matcher chose. Where modes disagree on a source, a `case (mode)` mux selects it; where all modes
agree the mux is trimmed to a wire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .graph import ModePlan
from .interconnect import MEMORY

FU = tuple[int, int]


def _bits(n: int) -> int:
    return max(1, int(n - 1).bit_length()) if n > 1 else 1


@dataclass
class Hardware:
    """Physical resources shared by all modes of a design."""

    rows: int
    cols: int
    acc_width: int
    slot_width: list[int]
    slot_banks: list[int]
    slot_depth: list[int]
    slot_rports: list[dict[int, int]]
    out_banks: int
    out_depth: int
    out_wports: dict[int, int]
    cnt_bits: int

    @property
    def line_width(self) -> int:
        return max(b * w for b, w in zip(self.slot_banks, self.slot_width))

    @property
    def load_addr_bits(self) -> int:
        return _bits(max(self.slot_depth))

    @property
    def out_addr_bits(self) -> int:
        return _bits(self.out_depth)


def hardware_of(modes: list[ModePlan], rows: int, cols: int, acc_width: int) -> Hardware:
    nslots = max(len(m.slots) for m in modes)
    width, banks, depth = [1] * nslots, [1] * nslots, [1] * nslots
    rports: list[dict[int, int]] = [dict() for _ in range(nslots)]
    out_banks, out_depth, wports = 1, 1, {}
    for m in modes:
        for sp in m.slots:
            j = sp.index
            width[j] = max(width[j], sp.width)
            banks[j] = max(banks[j], sp.layout.banks)
            depth[j] = max(depth[j], sp.layout.depth)
            for b, k in sp.bank_port.values():
                rports[j][b] = max(rports[j].get(b, 0), k + 1)
        out_banks = max(out_banks, m.output.layout.banks)
        out_depth = max(out_depth, m.output.layout.depth)
        for b, k in m.output.bank_port.values():
            wports[b] = max(wports.get(b, 0), k + 1)
    cnt_bits = max(m.graph.nodes["cnt"].width - 1 for m in modes)
    return Hardware(rows, cols, acc_width, width, banks, depth, rports, out_banks, out_depth, wports, cnt_bits)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _mode_select(w: _Writer, decl: str, target: str, per_mode: dict[int, str], nmodes: int, default: str) -> None:
    """`wire decl target = expr` where expr may differ per mode (a mux), trimmed to a wire if all agree."""
    vals = [per_mode.get(m, default) for m in range(nmodes)]
    if len(set(vals)) == 1:
        w(f"  wire {decl} {target} = {vals[0]};")
        return
    expr = vals[-1]
    for m in range(nmodes - 2, -1, -1):
        expr = f"(mode == {m}) ? ({vals[m]}) : {expr}"
    w(f"  wire {decl} {target} = {expr};")


def _range(c: str, lo: int, hi: int, cbits: int) -> str:
    if lo > hi or hi < 0 or lo > (1 << cbits) - 1:
        return "1'b0"
    terms = []
    if lo > 0:
        terms.append(f"({c} >= {lo})")
    if hi < (1 << cbits) - 1:
        terms.append(f"({c} <= {hi})")
    return " && ".join(terms) if terms else "1'b1"


def _interval(alpha, gamma, ext) -> tuple[int, int]:
    """Values of c where 0 <= alpha_k c + gamma_k < ext_k for every k (an interval)."""
    lo, hi = -(10**9), 10**9
    for a, g, e in zip(alpha, gamma, ext):
        a, g, e = int(a), int(g), int(e)
        if a == 0:
            if not 0 <= g < e:
                return 1, 0
            continue
        l_, h_ = (-g, e - 1 - g) if a > 0 else (e - 1 - g, -g)
        if a > 0:
            lo, hi = max(lo, -(-l_ // a)), min(hi, h_ // a)
        else:
            a = -a
            lo, hi = max(lo, -(-(g - e + 1) // a)), min(hi, g // a)
    return lo, hi


@dataclass
class _Emission:
    """What every part of the emitter shares: the modes, the hardware, the chosen delay-line taps, and
    the writer the parts append to."""

    modes: list[ModePlan]
    hw: Hardware
    W: _Writer
    taps: list[dict]
    depth: dict[str, int]

    @property
    def nm(self) -> int:
        return len(self.modes)

    @property
    def CB(self) -> int:  # noqa: N802 - the counter width, as in the Verilog
        return self.hw.cnt_bits

    @property
    def ACCW(self) -> int:  # noqa: N802
        return self.hw.acc_width

    def tap(self, mi: int, src: str, dst: str) -> str:
        return f"{src}_d{self.taps[mi][(src, dst)]}"

    def select(self, decl: str, target: str, per_mode: dict[int, str], default: str) -> None:
        _mode_select(self.W, decl, target, per_mode, self.nm, default)

    def delay_line(self, name: str, width: int, signed: bool) -> None:
        _delay_line(self.W, name, width, self.depth.get(name, 0), signed=signed)


def emit(modes: list[ModePlan], hw: Hardware, name: str = "lego_top") -> str:
    """The Verilog of `lego_top`: ports, control, input buffers, the FU array, the output buffer."""
    taps = [m.taps() for m in modes]
    depth: dict[str, int] = {}
    for t in taps:
        for (src, _), k in t.items():
            depth[src] = max(depth.get(src, 0), k)
    e = _Emission(modes, hw, _Writer(), taps, depth)
    _emit_ports(e, name)
    _emit_control(e)
    _emit_input_buffers(e)
    for s in sorted({s for m in modes for s in m.active}):
        _emit_fu(e, s)
    _emit_output_buffer(e)
    e.W("endmodule")
    text = e.W.text()
    helpers = []
    for n in sorted({int(x) for x in re.findall(r"_trunc(\d+)\(", text)}):
        helpers.append(f"  function [{n - 1}:0] _trunc{n}(input [31:0] x); _trunc{n} = x[{n - 1}:0]; endfunction")
    return text.replace(");\n  localparam PH_IDLE", ");\n" + "\n".join(helpers) + "\n  localparam PH_IDLE", 1)


def _emit_ports(e: _Emission, name: str) -> None:
    W, hw, modes = e.W, e.hw, e.modes
    W(f"// LEGO-generated spatial accelerator: {hw.rows}x{hw.cols} FUs, {e.nm} mode(s)")
    for m in modes:
        W(f"//   mode {m.index}: {m.name}  phases PRE/COMP/FLUSH = {m.phases}")
    W("// Interface: see genfoundry/lego/verilog.py (load / start-done / drain).")
    W(f"module {name} (")
    W("  input clk, input rst,")
    W(f"  input load_en, input [{_bits(len(hw.slot_width)) - 1}:0] load_sel,")
    W(f"  input [{hw.load_addr_bits - 1}:0] load_addr, input [{hw.line_width - 1}:0] load_data,")
    W(f"  input start, input [{_bits(e.nm) - 1}:0] start_mode, output busy, output reg done,")
    W(f"  input drain_en, input [{hw.out_addr_bits - 1}:0] drain_addr,")
    W(f"  output reg [{hw.out_banks * e.ACCW - 1}:0] drain_data")
    W(");")


def _emit_control(e: _Emission) -> None:
    """The PRE -> COMP -> FLUSH phase machine and the time counter every address generator taps."""
    W, modes, CB = e.W, e.modes, e.CB
    W("  localparam PH_IDLE = 2'd0, PH_PRE = 2'd1, PH_COMP = 2'd2, PH_FLUSH = 2'd3;")
    pcb = _bits(max(max(m.phases) for m in modes) + 1) + 1
    W(f"  reg [1:0] phase; reg [{pcb - 1}:0] pcnt; reg [{_bits(e.nm) - 1}:0] mode;")
    W(f"  reg [{pcb - 1}:0] first_pre;")
    W("  assign busy = (phase != PH_IDLE);")
    for field, ix in (("len_pre", 0), ("len_comp", 1), ("len_flush", 2)):
        e.select(f"[{pcb - 1}:0]", field, {m.index: str(m.phases[ix]) for m in modes}, "0")
    W("  always @* begin")
    W("    case (start_mode)")
    for m in modes:
        W(f"      {m.index}: first_pre = {m.phases[0]};")
    W("      default: first_pre = 0;")
    W("    endcase")
    W("  end")
    W("  always @(posedge clk) begin")
    W("    done <= 1'b0;")
    W("    if (rst) begin phase <= PH_IDLE; pcnt <= 0; mode <= 0; end")
    W("    else case (phase)")
    W("      PH_IDLE: if (start) begin mode <= start_mode; pcnt <= 0; phase <= (first_pre != 0) ? PH_PRE : PH_COMP; end")
    W("      PH_PRE: if (pcnt == len_pre - 1) begin pcnt <= 0; phase <= PH_COMP; end else pcnt <= pcnt + 1'b1;")
    W("      PH_COMP: if (pcnt == len_comp - 1) begin pcnt <= 0;")
    W("          if (len_flush != 0) phase <= PH_FLUSH; else begin phase <= PH_IDLE; done <= 1'b1; end")
    W("        end else pcnt <= pcnt + 1'b1;")
    W("      default: if (pcnt == len_flush - 1) begin pcnt <= 0; phase <= PH_IDLE; done <= 1'b1; end else pcnt <= pcnt + 1'b1;")
    W("    endcase")
    W("  end")
    # time counter: {run, count}
    W(f"  wire [{CB}:0] cnt_d0 = {{phase == PH_COMP, pcnt[{CB - 1}:0]}};" if pcb >= CB else
      f"  wire [{CB}:0] cnt_d0 = {{phase == PH_COMP, {{{CB - pcb}{{1'b0}}}}, pcnt}};")
    e.delay_line("cnt", CB + 1, signed=False)


def _emit_input_buffers(e: _Emission) -> None:
    """Each input slot's banks, their load port, and their read ports (streaming or preload)."""
    hw = e.hw
    for j, (wd, nb, dp) in enumerate(zip(hw.slot_width, hw.slot_banks, hw.slot_depth)):
        e.W(f"  // input slot {j}: {nb} bank(s) x {dp} words x {wd} bits")
        for b in range(nb):
            mem = f"buf{j}_{b}"
            e.W(f"  reg [{wd - 1}:0] {mem} [0:{dp - 1}];")
            e.W(f"  always @(posedge clk) if (load_en && load_sel == {j}) {mem}[load_addr] <= load_data[{b * wd} +: {wd}];")
            nports = hw.slot_rports[j].get(b, 0)
            has_pre = any((sp := m.slot(j)) is not None and sp.stationary and b in sp.preload for m in e.modes)
            for k in range(max(nports, 1 if has_pre else 0)):
                _emit_read_port(e, j, b, k, wd, dp)


def _emit_read_port(e: _Emission, j: int, b: int, k: int, wd: int, dp: int) -> None:
    W, CB, mem = e.W, e.CB, f"buf{j}_{b}"
    ab = _bits(dp)
    ag, rd = f"ag{j}_{b}_{k}", f"rd{j}_{b}_{k}"
    per_mode = {}
    for m in e.modes:
        sp = m.slot(j)
        if sp is None:
            continue
        fu = next((s for s, bp in sp.bank_port.items() if bp == (b, k) and not sp.stationary), None)
        if fu is None:
            continue
        port = sp.ports[fu]
        t = e.tap(m.index, "cnt", ag)
        c = f"{t}[{CB - 1}:0]"
        gamma = port.alpha * m.t0 + port.beta
        offs = sp.layout.offset_coords
        lo, hi = _interval([port.alpha[i] for i in offs], [gamma[i] for i in offs], [sp.layout.ext[i] for i in offs])
        a_off, b_off = port.offset_affine(sp.layout)
        b_off += a_off * m.t0
        ok = f"{t}[{CB}] && " + _range(c, lo, hi, CB)
        per_mode[m.index] = f"{{{ok}, _trunc{ab}(({c}) * {a_off} + {b_off})}}"
    if per_mode:
        e.select(f"[{ab}:0]", f"{ag}_d0", per_mode, f"{{1'b0, {ab}'d0}}")
        e.delay_line(ag, ab + 1, signed=False)
        e.select(f"[{ab}:0]", f"{rd}_a", {mi: e.tap(mi, ag, rd) for mi in per_mode}, f"{ab + 1}'d0")
    pre_mode = {}
    for m in e.modes:
        sp = m.slot(j)
        if sp is not None and sp.stationary and b in sp.preload and k == 0:
            cases = " ".join(f"{q}: pa = {off};" for q, (off, _) in enumerate(sp.preload[b]))
            pre_mode[m.index] = cases
    W(f"  reg signed [{wd - 1}:0] {rd}_d0;")
    if pre_mode:
        pa = f"pre_addr{j}_{b}"
        W(f"  reg [{ab - 1}:0] {pa};")
        W("  always @* begin")
        W(f"    {pa} = 0;")
        for mi, cases in pre_mode.items():
            W(f"    if (mode == {mi}) case (pcnt) {cases.replace('pa =', pa + ' =')} default: {pa} = 0; endcase")
        W("  end")
    stream = f"({rd}_a[{ab}] ? {mem}[{rd}_a[{ab - 1}:0]] : {wd}'d0)" if per_mode else f"{wd}'d0"
    if pre_mode:
        W(f"  always @(posedge clk) {rd}_d0 <= (phase == PH_PRE) ? {mem}[pre_addr{j}_{b}] : {stream};")
    else:
        W(f"  always @(posedge clk) {rd}_d0 <= {stream};")
    e.delay_line(rd, wd, signed=True)


def _emit_fu(e: _Emission, s: FU) -> None:
    """One function unit: its stationary registers, operand routing, multiplier and accumulator."""
    sid = f"{s[0]}_{s[1]}"
    e.W(f"  // FU ({s[0]}, {s[1]})")
    st_name = _emit_stationary(e, s, sid)
    _emit_operand_routing(e, s, sid)
    _emit_multiply_accumulate(e, s, sid, st_name)


def _emit_stationary(e: _Emission, s: FU, sid: str) -> dict[tuple[int, int], str]:
    """Stationary operands share a small register pool: a mode's k-th stationary slot uses stk.
    Returns (mode, slot) -> register name."""
    st_name: dict[tuple[int, int], str] = {}
    captures: dict[int, list] = {}
    for m in e.modes:
        if s not in m.active:
            continue
        k = 0
        for sp in m.slots:
            if sp.stationary:
                b, _ = sp.bank_port[s]
                q = next(q for q, (_, who) in enumerate(sp.preload[b]) if s in who)
                captures.setdefault(k, []).append((m.index, q + 1, f"rd{sp.index}_{b}_0_d0"))
                st_name[(m.index, sp.index)] = f"st{k}_{sid}"
                k += 1
    stw = max(e.hw.slot_width)
    for k, capture in sorted(captures.items()):
        st = f"st{k}_{sid}"
        e.W(f"  reg signed [{stw - 1}:0] {st};")
        conds = " else ".join(f"if (phase == PH_PRE && mode == {mi} && pcnt == {q}) {st} <= {src};"
                              for mi, q, src in capture)
        e.W(f"  always @(posedge clk) {conds}")
    return st_name


def _emit_operand_routing(e: _Emission, s: FU, sid: str) -> None:
    """Streaming operands: from a memory read port or from the neighbour the reuse tree names."""
    for j, wd in enumerate(e.hw.slot_width):
        op = f"op{j}_{sid}"
        stream_src = {}
        for m in e.modes:
            sp = m.slot(j)
            if s not in m.active or sp is None or sp.stationary:
                continue
            p = sp.tree.parent[s]
            if p == MEMORY:
                b, k = sp.bank_port[s]
                stream_src[m.index] = e.tap(m.index, f"rd{j}_{b}_{k}", op)
            else:
                stream_src[m.index] = e.tap(m.index, f"op{j}_{p[0][0]}_{p[0][1]}", op)
        if stream_src:
            e.select(f"signed [{wd - 1}:0]", f"{op}_d0", stream_src, f"{wd}'sd0")
            e.delay_line(op, wd, signed=True)


def _emit_multiply_accumulate(e: _Emission, s: FU, sid: str, st_name: dict[tuple[int, int], str]) -> None:
    W, CB, ACCW, hw, modes = e.W, e.CB, e.ACCW, e.hw, e.modes
    val, mul, acc = f"val_{sid}", f"mul_{sid}", f"acc_{sid}"
    # operands are muxed per mode first, so every mode shares one multiplier and one adder chain
    vsel, mtaps = {}, {}
    opsel: list[dict[int, str]] = [dict() for _ in hw.slot_width]
    accsel: list[dict[int, str]] = [dict()]
    for m in modes:
        if s not in m.active:
            continue
        lo, hi = m.active[s]
        t = e.tap(m.index, "cnt", val)
        vsel[m.index] = f"{t}[{CB}] && " + _range(f"{t}[{CB - 1}:0]", lo - m.t0, hi - m.t0, CB)
        for j in range(len(hw.slot_width)):
            if m.slot(j) is None:
                opsel[j][m.index] = f"{hw.slot_width[j]}'sd1"
            elif m.slot(j).stationary:
                opsel[j][m.index] = st_name[(m.index, j)]
            else:
                opsel[j][m.index] = e.tap(m.index, f"op{j}_{sid}", mul)
        mtaps[m.index] = e.tap(m.index, mul, acc)
        if m.output.stationary:
            addends = [f"{acc}_d0"]
        else:
            addends = [e.tap(m.index, f"acc_{c[0]}_{c[1]}", acc) for c, pa in sorted(m.output.tree.parent.items())
                       if pa != MEMORY and pa[0] == s]
        while len(accsel) < len(addends):
            accsel.append(dict())
        for i, a in enumerate(addends):
            accsel[i][m.index] = a
    e.select("", f"{val}_d0", vsel, "1'b0")
    e.delay_line(val, 1, signed=False)
    W(f"  reg signed [{ACCW - 1}:0] {mul}_d0, {acc}_d0;")
    for j, wd in enumerate(hw.slot_width):
        e.select(f"signed [{wd - 1}:0]", f"opm{j}_{sid}", opsel[j], f"{wd}'sd0")
    _emit_products(e, s, sid)
    vt = {m.index: e.tap(m.index, val, mul) for m in modes if s in m.active}
    e.select("", f"{mul}_v", vt, "1'b0")
    W(f"  always @(posedge clk) {mul}_d0 <= {mul}_v ? {mul}_p : {ACCW}'sd0;")
    e.delay_line(mul, ACCW, signed=True)
    e.select(f"signed [{ACCW - 1}:0]", f"{mul}_t", mtaps, f"{ACCW}'sd0")
    terms = [f"{mul}_t"]
    for i, sel in enumerate(accsel):
        if sel:
            e.select(f"signed [{ACCW - 1}:0]", f"{acc}_a{i}", sel, f"{ACCW}'sd0")
            terms.append(f"{acc}_a{i}")
    W(f"  wire signed [{ACCW - 1}:0] {acc}_n = {' + '.join(terms)};")
    W(f"  always @(posedge clk) {acc}_d0 <= (phase == PH_IDLE) ? {ACCW}'sd0 : {acc}_n;")
    e.delay_line(acc, ACCW, signed=True)


def _emit_products(e: _Emission, s: FU, sid: str) -> None:
    """`mul_<fu>_p`: the multiply of each mode, one product, or for a packed stage the dot product of
    its lanes."""
    W, ACCW = e.W, e.ACCW
    mul = f"mul_{sid}"
    products: dict[int, str] = {}
    mine = [m for m in e.modes if s in m.active]
    if any(any(m.stage.unsigned) or m.stage.shift for m in mine):
        # byte slices: every non-lane mode shares one multiplier whose operands are extended per mode
        # (lower slices zero-extended, others sign-extended); the shift to a slice's weight is wiring
        plain = [m for m in mine if m.stage.lanes == 1]
        for j in sorted({sp.index for m in plain for sp in m.slots}):
            xw = 1 + max(sp.width for m in plain for sp in m.slots if sp.index == j)
            ext = {}
            for m in plain:
                sp = m.slot(j)
                if sp is None:
                    ext[m.index] = f"{xw}'sd1"
                    continue
                q = m.slots.index(sp)
                src = f"opm{j}_{sid}[{sp.width - 1}:0]"
                fill = "1'b0" if (m.stage.unsigned or (False,) * len(m.slots))[q] else f"opm{j}_{sid}[{sp.width - 1}]"
                ext[m.index] = f"{{{{{xw - sp.width}{{{fill}}}}}, {src}}}"
            e.select(f"signed [{xw - 1}:0]", f"opx{j}_{sid}", ext, f"{xw}'sd0")
        shared = " * ".join(f"$signed(opx{j}_{sid})" for j in sorted({sp.index for m in plain for sp in m.slots}))
        W(f"  wire signed [{ACCW - 1}:0] {mul}_q = {shared};")
        for m in plain:
            products[m.index] = f"{mul}_q <<< {m.stage.shift}" if m.stage.shift else f"{mul}_q"
    for m in mine:
        st = m.stage
        if st.lanes > 1:
            a, b = (f"opm{sp.index}_{sid}" for sp in m.slots)
            w = st.lane_width
            products[m.index] = " + ".join(f"$signed({a}[{l * w} +: {w}]) * $signed({b}[{l * w} +: {w}])"
                                           for l in range(st.lanes))
        elif m.index not in products:
            products[m.index] = " * ".join(f"$signed(opm{j}_{sid})" for j in range(len(e.hw.slot_width)))
    if len(set(products.values())) == 1:
        W(f"  wire signed [{ACCW - 1}:0] {mul}_p = {next(iter(products.values()))};")
    else:
        names = {}
        for mi, expr in products.items():
            names.setdefault(expr, f"{mul}_p{len(names)}")
        for expr, wire in names.items():
            W(f"  wire signed [{ACCW - 1}:0] {wire} = {expr};")
        e.select(f"signed [{ACCW - 1}:0]", f"{mul}_p", {mi: names[e_] for mi, e_ in products.items()}, f"{ACCW}'sd0")


def _emit_output_buffer(e: _Emission) -> None:
    """The accumulating output banks: streaming writes, the flush of stationary results, and drain."""
    hw = e.hw
    ob = _bits(hw.out_depth)
    e.W(f"  // output buffer: {hw.out_banks} bank(s) x {hw.out_depth} words x {e.ACCW} bits, accumulating")
    for b in range(hw.out_banks):
        mem = f"obuf_{b}"
        e.W(f"  reg signed [{e.ACCW - 1}:0] {mem} [0:{hw.out_depth - 1}];")
        e.W(f"  integer i_{mem}; initial for (i_{mem} = 0; i_{mem} < {hw.out_depth}; i_{mem} = i_{mem} + 1) {mem}[i_{mem}] = 0;")
        body = [_emit_stream_writer(e, b, k, ob) for k in range(hw.out_wports.get(b, 0))]
        flush = _emit_flush(e, b, ob)
        if flush is not None:
            body.insert(0, flush)
        _emit_bank_ports(e, b, ob, body)


def _emit_stream_writer(e: _Emission, b: int, k: int, ob: int) -> tuple[str, str, str]:
    """Write port k of output bank b (address generator + data mux); returns (enable, address, data)."""
    CB = e.CB
    agw, wr = f"agw_{b}_{k}", f"wr_{b}_{k}"
    asel, dsel = {}, {}
    for m in e.modes:
        fu = next((s for s, bp in m.output.bank_port.items() if bp == (b, k)), None)
        if fu is None or m.output.stationary:
            continue
        port = m.output.writers[fu]
        t = e.tap(m.index, "cnt", agw)
        c = f"{t}[{CB - 1}:0]"
        gamma = port.alpha * m.t0 + port.beta
        offs = m.output.layout.offset_coords
        lo, hi = _interval([port.alpha[i] for i in offs], [gamma[i] for i in offs],
                           [m.output.layout.ext[i] for i in offs])
        wl, wh = m.output.windows[fu]
        lo, hi = max(lo, wl - m.t0), min(hi, wh - m.t0)
        a_off, b_off = port.offset_affine(m.output.layout)
        b_off += a_off * m.t0
        asel[m.index] = f"{{{t}[{CB}] && {_range(c, lo, hi, CB)}, _trunc{ob}(({c}) * {a_off} + {b_off})}}"
        dsel[m.index] = e.tap(m.index, f"acc_{fu[0]}_{fu[1]}", wr)
    e.select(f"[{ob}:0]", f"{agw}_d0", asel, f"{{1'b0, {ob}'d0}}")
    e.delay_line(agw, ob + 1, signed=False)
    e.select(f"signed [{e.ACCW - 1}:0]", f"{wr}_data", dsel, f"{e.ACCW}'sd0")
    e.select(f"[{ob}:0]", f"{wr}_addr", {mi: e.tap(mi, agw, wr) for mi in asel}, f"{ob + 1}'d0")
    wa = f"{wr}_addr"
    return (f"(phase == PH_COMP && {wa}[{ob}])", f"{wa}[{ob - 1}:0]", f"{wr}_data")


def _emit_flush(e: _Emission, b: int, ob: int) -> tuple[str, str, str] | None:
    """The FLUSH-phase writer of bank b (stationary outputs leave their FUs one per cycle), if any mode has one."""
    W = e.W
    flush_modes = [m for m in e.modes if m.output.stationary and b in m.output.flush]
    if not flush_modes:
        return None
    fa, fd = f"fl_addr_{b}", f"fl_data_{b}"
    W(f"  reg [{ob - 1}:0] {fa}; reg signed [{e.ACCW - 1}:0] {fd}; reg fl_en_{b};")
    W("  always @* begin")
    W(f"    {fa} = 0; {fd} = 0; fl_en_{b} = 1'b0;")
    for m in flush_modes:
        W(f"    if (mode == {m.index}) case (pcnt)")
        for q, (off, fu) in enumerate(m.output.flush[b]):
            W(f"      {q}: begin {fa} = {off}; {fd} = acc_{fu[0]}_{fu[1]}_d0; fl_en_{b} = 1'b1; end")
        W("      default: ;")
        W("    endcase")
    W("  end")
    return (f"(phase == PH_FLUSH && fl_en_{b})", fa, fd)


def _emit_bank_ports(e: _Emission, b: int, ob: int, body: list[tuple[str, str, str]]) -> None:
    """One read-modify-write port per bank serves drain (clear), flush and the first stream writer;
    further stream writers of a multi-port bank get their own ports."""
    W, ACCW, mem = e.W, e.ACCW, f"obuf_{b}"
    drain = "(drain_en && phase == PH_IDLE)"
    merged = body[:2] if body and "PH_FLUSH" in body[0][0] else body[:1]
    addr_expr, data_expr = "drain_addr", f"{ACCW}'sd0"
    for cond, addr, data in reversed(merged):
        addr_expr = f"{cond} ? {addr} : {addr_expr}"
    W(f"  wire [{ob - 1}:0] wa_{b} = {drain} ? drain_addr : {addr_expr if merged else 'drain_addr'};")
    for cond, addr, data in reversed(merged):
        data_expr = f"{cond} ? {data} : {data_expr}"
    W(f"  wire signed [{ACCW - 1}:0] wd_{b} = {drain} ? {ACCW}'sd0 : {mem}[wa_{b}] + ({data_expr});")
    enables = " || ".join([drain] + [c for c, _, _ in merged])
    W("  always @(posedge clk) begin")
    W(f"    if ({drain}) drain_data[{b * ACCW} +: {ACCW}] <= {mem}[drain_addr];")
    W(f"    if ({enables}) {mem}[wa_{b}] <= wd_{b};")
    for cond, addr, data in body[len(merged):]:
        W(f"    if ({cond}) {mem}[{addr}] <= {mem}[{addr}] + {data};")
    W("  end")


def _delay_line(W: _Writer, name: str, width: int, depth: int, signed: bool) -> None:
    if depth <= 0:
        return
    sg = "signed " if signed else ""
    regs = ", ".join(f"{name}_d{i}" for i in range(1, depth + 1))
    W(f"  reg {sg}[{width - 1}:0] {regs};")
    W("  always @(posedge clk) begin " + " ".join(f"{name}_d{i} <= {name}_d{i - 1};" for i in range(1, depth + 1)) + " end")
