"""What the web app does, without the web: one `Studio` holds the models (loaded when first needed) and
has one method per tab. Each returns plain values (PIL images, text, file paths) and raises the
project's errors (`GenfoundryError`, or ValueError / TypeError from the models) for bad input; the app
turns those into a message in the page."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from genfoundry.errors import InputError

DATAFLOWS = ("os", "ws", "is", "os-bcast", "ws-tree")
METHODS = ("svdquant", "smoothquant", "rtn", "w4a16", "w8a8")
WEIGHT_FORMATS = ("auto", "int4", "nvfp4", "nf4", "int8")
MAX_RTL_MACS = 2_000_000  # a bigger workload takes minutes to generate: the command line is the place for it


@dataclass
class StudioConfig:
    sana_model: str = "sana-shapes"
    vilau_model: str = "vila-u-shapes"
    device: str = "auto"
    quantized: str | None = None  # a SANA W4A4 file for the Generate tab (default: made once and cached)
    calib_prompts: int = 8  # calibration of the W4A4 models the app makes itself
    calib_steps: int = 10
    cache: str | None = None  # where those go (default: $GENFOUNDRY_CACHE or ~/.cache/genfoundry, /serve)


def _cache_dir(config: StudioConfig) -> Path:
    base = config.cache or os.environ.get("GENFOUNDRY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genfoundry")
    folder = Path(base) / "serve"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _verdict(image, caption: str) -> str:
    from genfoundry.shapes import evaluate

    try:
        verdict = evaluate(image, caption)
    except ValueError:  # a caption outside the ShapeWorld grammar cannot be judged
        return "not judged (the caption is outside the ShapeWorld grammar)"
    failed = sorted({c["type"] for c in verdict["constraints"] if not c["ok"]})
    return "pass" if verdict["correct"] else f"fail ({', '.join(failed)})"


def _check_prompt(text: str, what: str = "prompt") -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"the {what} is empty; write e.g. 'a red circle to the left of a blue square'")
    return text.strip()


def _int(value, name: str, low: int, high: int | None = None) -> int:
    """A whole number from a page field (numbers arrive as floats or text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not number.is_integer():
        raise InputError(f"{name} must be a whole number, got {value!r}")
    if number < low or (high is not None and number > high):
        raise InputError(f"{name} must be in [{low}, {high if high is not None else 'inf'}], got {value!r}")
    return int(number)


class Studio:
    def __init__(self, config: StudioConfig) -> None:
        from genfoundry.devices import resolve_device

        self.config = config
        self.device = resolve_device(config.device)
        self._lock = threading.Lock()  # one model call at a time: the models are not re-entrant
        self._sana = self._sana_w4a4 = self._vila = None
        self._quantized: dict[tuple, object] = {}

    # ---------------------------------------------------------------- models
    def _load_sana(self):
        from genfoundry.sana import SanaPipeline

        return SanaPipeline.from_pretrained(self.config.sana_model, device=self.device)

    def sana(self):
        if self._sana is None:
            self._sana = self._load_sana()
        return self._sana

    def sana_w4a4(self):
        """SANA with the recommended SVDQuant W4A4 transformer (from --quantized, or made once and cached)."""
        if self._sana_w4a4 is None:
            if self.config.quantized:
                from genfoundry.svdquant import load_quantized

                pipe = self._load_sana()
                load_quantized(pipe.transformer, self.config.quantized)
                self._sana_w4a4 = pipe
            else:
                self._sana_w4a4 = self._quantize("svdquant", "auto", None)
        return self._sana_w4a4

    def _quantize(self, method: str, weight: str, rank: int | None):
        from genfoundry import hub
        from genfoundry.models import Calibration, folder_fingerprint, load_quantized_cached
        from genfoundry.svdquant import QuantConfig

        config = QuantConfig(method=method, weight=weight, rank=rank, progress=False, indivisible="skip")
        config.resolved()  # a bad combination fails here, before any work
        key = (method, weight, rank)
        if key not in self._quantized:
            name = f"{folder_fingerprint(hub.resolve(self.config.sana_model))[:16]}-{method}-{weight}-r{rank}.safetensors"
            calibration = Calibration(prompts=self.config.calib_prompts, steps=self.config.calib_steps)
            self._quantized[key], _ = load_quantized_cached(self.config.sana_model, _cache_dir(self.config) / name,
                                                            config, calibration, self.device)
        return self._quantized[key]

    def vila(self):
        if self._vila is None:
            from genfoundry.vilau import VilaU

            self._vila = VilaU.from_pretrained(self.config.vilau_model, device=self.device)
        return self._vila

    # ---------------------------------------------------------------- tabs
    def generate(self, prompt: str, steps, cfg, seed, layout_guidance) -> tuple:
        """Generate tab: the same prompt and seed through 16-bit SANA and its W4A4 copy."""
        from genfoundry.svdquant.metrics import image_distance

        prompt = _check_prompt(prompt)
        steps, seed = _int(steps, "steps", 1, 100), _int(seed, "seed", 0, 2**31 - 1)
        kwargs = dict(steps=steps, guidance_scale=float(cfg), seed=[seed], layout_guidance=float(layout_guidance),
                      progress=False, warn_unknown_words=False)
        with self._lock:
            reference = self.sana()([prompt], **kwargs)[0]
            quantized = self.sana_w4a4()([prompt], **kwargs)[0]
        d = image_distance([quantized], [reference])
        text = (f"16-bit: {_verdict(reference, prompt)} · W4A4: {_verdict(quantized, prompt)} · "
                f"PSNR {d['psnr_db']:.2f} dB, SSIM {d['ssim']:.4f} (W4A4 against 16-bit)")
        return reference, quantized, text

    def ask(self, image, question: str) -> str:
        """Ask tab: VILA-U answers a question about an image."""
        if image is None:
            raise InputError("no image: upload one (or draw one in Imagine first)")
        question = _check_prompt(question, "question")
        with self._lock:
            return self.vila().answer(image, question, max_new_tokens=16)

    def imagine(self, caption: str, seed, candidates) -> tuple:
        """Imagine tab: VILA-U draws a caption."""
        caption = _check_prompt(caption, "caption")
        seed, candidates = _int(seed, "seed", 0, 2**31 - 1), _int(candidates, "candidates", 1, 16)
        with self._lock:
            image = self.vila().generate_image(caption, cfg=3.0, seed=seed, candidates=candidates)
        return image, f"detector: {_verdict(image, caption)}"

    def quantize(self, method: str, weight: str, rank, prompt: str, seed) -> tuple:
        """Quantize tab: quantize SANA's transformer as asked and draw a prompt with both."""
        from genfoundry.svdquant.metrics import deployed_bytes, image_distance

        if method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if weight not in WEIGHT_FORMATS:
            raise InputError(f"weight format must be one of {', '.join(WEIGHT_FORMATS)}, got {weight!r}")
        rank = None if rank in (None, "") else _int(rank, "rank", 0, 256)
        prompt, seed = _check_prompt(prompt), _int(seed, "seed", 0, 2**31 - 1)
        kwargs = dict(seed=[seed], progress=False, warn_unknown_words=False)
        with self._lock:
            pipe = self._quantize(method, weight, rank)
            reference = self.sana()([prompt], **kwargs)[0]
            quantized = pipe([prompt], **kwargs)[0]
        d = image_distance([quantized], [reference])
        cfg = pipe.transformer.svdquant_config
        size_16, size_q = deployed_bytes(self.sana().transformer), deployed_bytes(pipe.transformer)
        text = (f"{cfg['method']} weight {cfg['weight']} act {cfg['act']} rank {cfg['rank']}: PSNR {d['psnr_db']:.2f} dB, "
                f"SSIM {d['ssim']:.4f} against 16-bit; {size_q / 2**20:.2f} MiB vs {size_16 / 2**20:.2f} MiB; "
                f"detector {_verdict(quantized, prompt)}")
        return reference, quantized, text

    def rtl(self, workload: str, array: str, dataflows: list[str], simulate: bool, folder: Path) -> tuple[str, str]:
        """RTL tab: generate the accelerator -> (markdown report, path of lego_top.v)."""
        import numpy as np

        from genfoundry import lego
        from genfoundry.lego import baseline
        from genfoundry.lego.simulate import SimulationError, available_simulator

        workload = _check_prompt(workload, "workload")
        if not dataflows:
            raise InputError("choose at least one dataflow")
        unknown = sorted(set(dataflows) - set(DATAFLOWS))
        if unknown:
            raise InputError(f"unknown dataflow(s) {unknown}; expected some of {', '.join(DATAFLOWS)}")
        parsed = lego.parse_workload(workload)
        if parsed.macs > MAX_RTL_MACS:
            raise InputError(f"{workload} has {parsed.macs:,} multiply-accumulates; the page builds up to "
                             f"{MAX_RTL_MACS:,} (use `genfoundry rtl` for bigger ones)")
        arch = lego.Arch.parse(array.strip(), ",".join(dataflows))
        design = lego.compile(workload, arch)
        design.write_verilog(folder)
        est = design.estimate()
        lines = [f"**{workload}** on a {arch.rows}x{arch.cols} array ({' + '.join(dataflows)}): "
                 f"{len(design.verilog.splitlines())} lines of Verilog, compiled in {design.compile_seconds:.1f} s",
                 "", "| | value |", "| --- | ---: |",
                 f"| RTL cycles (model) | {est['rtl_cycles']:,} |", f"| system cycles (16 GB/s) | {est['system_cycles']:,} |",
                 f"| FU utilisation | {est['utilisation']:.1%} |"]
        lines += [f"| {k.replace('_', ' ')} | {v:,} |" for k, v in design.resources().items() if isinstance(v, int)]
        lines.append(f"| schedule | {', '.join(f'{s}: {m}' for s, m in design.report()['schedule'].items())} |")
        try:
            gemmini = baseline.estimate_gemmini(workload)
            lines.append(f"| Gemmini-like system cycles (16x16) | {gemmini['system_cycles']:,} |")
        except lego.LegoError:
            pass
        if simulate:
            try:
                kind = available_simulator("auto")
            except SimulationError as err:
                lines += ["", f"Not simulated: {err}"]
            else:
                inputs = lego.random_inputs(design.workload, 0)
                outputs, cycles = design.simulate(inputs, simulator=kind)
                reference = lego.reference(design.workload, inputs)
                exact = all(np.array_equal(outputs[k], reference[k]) for k in reference)
                lines += ["", f"Simulated with {kind} on random inputs: {cycles:,} cycles, "
                              f"{'bit-exact' if exact else 'NOT bit-exact'} against numpy."]
        return "\n".join(lines), str(folder / "lego_top.v")

