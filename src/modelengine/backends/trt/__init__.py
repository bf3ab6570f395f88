"""What TensorRT and TensorRT-RTX share: the build path, the GPU engine, option mapping.

Both libraries expose the same Python API for parsing ONNX, optimization profiles,
serialization and execution (TRT-RTX is a specialization of TensorRT), so one backend
class serves both: `family.TrtFamilyBackend` imports the library, sets up builder,
network, parser and config, builds (`build.py`) and loads (`runtime.py`); the two
backends, `full.TensorRTBackend` and `rtx.TensorRTRTXBackend`, only add what differs
through a per-build `BuildRecipe`: full TensorRT sets precision flags (`options.py`),
int8 calibration (`calibration.py`), timing cache and hardware compatibility; TRT-RTX,
strongly typed, converts the graph to fp16 and sets a compute-capability target.
`build.py` and `runtime.py` are written against small Protocols of the shared API and
import no TensorRT library: the backend passes in the objects it created.
"""
