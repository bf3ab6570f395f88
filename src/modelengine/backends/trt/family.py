"""One backend for the TensorRT family: what `tensorrt` and `tensorrt_rtx` do alike, once.

Both libraries expose the same Python API (TRT-RTX is a specialization of TensorRT), so
`TrtFamilyBackend` does everything they share: import the library or say in one line why
not (`library()`), the version, the logger, the builder / network / parser / config
setup, the build itself (`build.build_plan`), writing the engine, and loading it
(`runtime.load_engine`). A concrete backend names its module and install hint and
overrides the small hooks where the two really differ:

- `_recipe_impl`: check the spec against what this library can do (before or after the
  import, as the library allows) and return a `BuildRecipe`, the per-build part: the
  ONNX to parse (TRT-RTX converts it to fp16 first), how to finish the config
  (precision flags, hardware compatibility and timing cache for TensorRT; the
  compute-capability target for TRT-RTX, which is strongly typed and has no precision
  flags), what to do once the profile exists (TensorRT's int8 calibrator), and what to
  hand back (the updated timing cache, build details);
- `_can_execute_impl`: whether this machine's GPUs can run its engines.

A recipe is an object per build, not backend state, because one backend instance serves
many builds and a calibrator or a temporary fp16 ONNX belongs to one of them.
"""

from __future__ import annotations

import abc
import importlib
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from modelengine.api.tensors import TensorInfo
from modelengine.backends import versions
from modelengine.backends.base import Backend, BackendUnavailable, BuildRequest, BuildResult, Engine
from modelengine.backends.cuda_exec import GpuStatus, gpu_status
from modelengine.backends.trt.build import LogSink, build_plan, make_logger


class BuildRecipe:
    """What one backend adds to one build; the defaults add nothing."""

    def __init__(self, source: Path) -> None:
        self.source = source  # the ONNX the parser reads
        self.details: dict[str, Any] = {}

    def configure(self, config: Any) -> None:
        """Finish the builder config before parsing."""

    def before_build(self, profile: Any, inputs: list[TensorInfo]) -> None:
        """Called once the optimization profile exists (None when every input is static)."""

    def timing_cache(self, config: Any) -> bytes | None:
        """The timing cache to store after the build, if this library keeps one."""
        return None

    def close(self) -> None:
        """Free what the build held (a calibrator's device buffers)."""


class TrtFamilyBackend(Backend):
    module_name: str  # "tensorrt" | "tensorrt_rtx"
    library_name: str  # as messages name it: "tensorrt" | "tensorrt-rtx"
    install_hint: str  # how to install the module, for the one-line reason

    def __init__(self, *, contexts: int = 2) -> None:
        self._contexts = contexts

    def library(self) -> ModuleType:
        """The imported library; BackendUnavailable (one line) when it cannot be imported."""
        try:
            return importlib.import_module(self.module_name)
        except ImportError as err:
            raise BackendUnavailable(
                f"{self.module_name} cannot be imported ({err}); {self.install_hint}"
            ) from None

    def version(self) -> str:
        trt = self.library()
        return versions.installed_version(self.name) or str(trt.__version__)

    def can_execute(self) -> tuple[bool, str]:
        try:
            self.library()
        except BackendUnavailable as err:
            return False, str(err)
        return self._can_execute_impl(gpu_status())

    def _can_execute_impl(self, status: GpuStatus) -> tuple[bool, str]:
        return status.available, status.reason

    @abc.abstractmethod
    def _recipe_impl(self, request: BuildRequest, work_dir: Path) -> BuildRecipe:
        """Refuse what this library cannot build (one line) and return the build's own part;
        `work_dir` lives as long as the build."""

    def _logger(self, sink: LogSink) -> Any:
        return make_logger(self.library(), sink)

    def _build_impl(self, request: BuildRequest) -> BuildResult:
        with tempfile.TemporaryDirectory(prefix=f"modelengine-{self.library_name}-") as tmp:
            recipe = self._recipe_impl(request, Path(tmp))
            try:
                return self._build_with(recipe, request)
            finally:
                recipe.close()

    def _build_with(self, recipe: BuildRecipe, request: BuildRequest) -> BuildResult:
        target, options = request.target, request.options
        trt = self.library()
        sink = LogSink()
        logger = self._logger(sink)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        config = builder.create_builder_config()
        recipe.configure(config)
        plan = build_plan(
            builder=builder,
            network=network,
            parser=parser,
            config=config,
            workspace_pool=trt.MemoryPoolType.WORKSPACE,
            onnx_path=recipe.source,
            options=options,
            sink=sink,
            progress=request.progress,
            library=self.library_name,
            before_build=recipe.before_build,
        )
        out = request.out_dir / self.engine_file
        out.write_bytes(plan.engine)
        details: dict[str, Any] = {
            "compute_capability": target.compute_capability,
            "precision": options.precision.value,
            **recipe.details,
            "warnings": sink.warnings()[:20],
        }
        return BuildResult(
            engine_path=out,
            inputs=plan.inputs,
            outputs=plan.outputs,
            timing_cache=recipe.timing_cache(config),
            details=details,
        )

    def _load_impl(self, engine_path: Path, *, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Engine:
        from modelengine.backends.trt.runtime import load_engine

        sink = LogSink()
        logger = self._logger(sink)
        return load_engine(
            self.library().Runtime(logger),
            engine_path,
            sink=sink,
            inputs=inputs,
            outputs=outputs,
            contexts=self._contexts,
            keepalive=(logger,),
            library=self.library_name,
        )
