"""`genfoundry serve`: the web app (gradio), bound to 127.0.0.1 by default.

Tabs: Generate (SANA, 16-bit and W4A4 side by side, layout guidance), Ask & Imagine (VILA-U), Quantize
(method, format, rank on the SANA model; images and PSNR), RTL (workload, array, dataflows -> report and
the Verilog to download). `studio.Studio` does the work; `app.build_app` is the page.
"""
