"""What TensorRT and TensorRT-RTX share: the build path, the GPU engine, option mapping.

Both libraries expose the same Python API for parsing ONNX, optimization profiles,
serialization and execution (TRT-RTX is a specialization of TensorRT). The modules here
are written against small Protocols of that API, so one code path serves both and the
backends (`tensorrt_rtx.py`, `tensorrt.py`) only add what differs: RTX sets compute
capability targets, full TensorRT sets precision flags, calibration, timing cache and
hardware compatibility. Nothing here imports a TensorRT library; the backends pass in
the objects they created.
"""
