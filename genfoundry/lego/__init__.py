"""LEGO: spatial accelerators from affine tensor dataflows, emitted as verified, synthesizable Verilog.

Passes (each does one thing): ir.bind (dataflow -> tile mapping) -> reuse.analyse (null space of A F)
-> interconnect.build_tree (Edmonds arborescence per tensor) -> memory (banking, address generators)
-> graph.plan_mode (architecture + primitive graph) -> fuse.plan_fused (several dataflows, one array)
-> pipelining (LP delay matching) -> verilog.emit -> simulate (Verilator / Icarus) / synth (Yosys)
-> cost (analytical cycles and energy).
"""

from .design import Arch, Design, compile, load_design
from .ir import (ArrayTooSmallError, DataflowCollisionError, Dataflow, LegoError, NonAffineAccessError,
                 SingularDataflowError)
from .workloads import parse_workload, random_inputs, reference

__all__ = ["Arch", "Design", "compile", "load_design", "Dataflow", "LegoError", "NonAffineAccessError",
           "SingularDataflowError", "DataflowCollisionError", "ArrayTooSmallError", "parse_workload",
           "random_inputs", "reference"]
