"""Tiny ONNX models for backend tests: a torch-exported conv net and onnx.helper graphs.

Kept tiny so a TensorRT-RTX build on the CPU takes well under a second. The conv net
covers the example models' ops (Conv with fused BatchNorm, Relu, MaxPool, Concat,
GlobalAveragePool, Flatten, Gemm); the helper graphs cover If/ReduceMean/Neg/Add,
Resize with float32 scales, and a custom-domain op no backend knows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelengine.api.models import BackendName
from modelengine.api.targets import ResolvedTarget
from modelengine.api.tensors import TensorInfo

CONV_INPUT = TensorInfo(
    name="input",
    dtype="float32",
    shape=[-1, 3, 16, 16],
    min=[1, 3, 16, 16],
    opt=[4, 3, 16, 16],
    max=[8, 3, 16, 16],
)


def make_model(graph: onnx.GraphProto, *domains: str) -> onnx.ModelProto:
    """An opset-17 model with IR version 9, which every ONNX Runtime since 1.16 reads
    (onnx.helper would stamp the newest IR version, newer than some installed runtimes)."""
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=9)


def rtx_target(cc: str | None) -> ResolvedTarget:
    return ResolvedTarget(BackendName.TENSORRT_RTX, cc)


@pytest.fixture(scope="session")
def conv_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch conv net exported with the TorchScript exporter, dynamic batch."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.relu(self.bn(self.conv1(x)))
            b = torch.relu(self.conv2(a))
            y = nn.functional.max_pool2d(torch.cat([a, b], 1), 2)
            y = nn.functional.adaptive_avg_pool2d(y, (1, 1))
            return self.fc(torch.flatten(y, 1))  # type: ignore[no-any-return]

    torch.manual_seed(0)
    net = Net().eval()
    mean, var = net.bn.running_mean, net.bn.running_var
    assert mean is not None and var is not None
    with torch.no_grad():  # non-trivial BatchNorm statistics, folded into the Conv on export
        mean.uniform_(-0.5, 0.5)
        var.uniform_(0.5, 1.5)
    out = tmp_path_factory.mktemp("conv") / "model.onnx"
    torch.onnx.export(
        net,
        (torch.randn(2, 3, 16, 16),),
        str(out),
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=17,
    )
    return out


@pytest.fixture(scope="session")
def conv_external_onnx(conv_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conv net with every weight in an external data file beside the .onnx."""
    model = onnx.load(str(conv_onnx))
    out = tmp_path_factory.mktemp("conv-external") / "model.onnx"
    onnx.save(model, str(out), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    return out


@pytest.fixture(scope="session")
def gate_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = If(mean(x) > 0, -x * w, x + w): a data-dependent branch kept as an ONNX If."""
    w = numpy_helper.from_array(np.linspace(0.5, 1.5, 4, dtype=np.float32), "w")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    neg = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["nx"]), helper.make_node("Mul", ["nx", "w"], ["then_y"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, ["b", 4])],
    )
    add = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, ["b", 4])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
            helper.make_node("Greater", ["m", "zero"], ["c"]),
            helper.make_node("If", ["c"], ["y"], then_branch=neg, else_branch=add, name="gate"),
        ],
        "gate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
        [w, zero],
    )
    model = make_model(graph)
    onnx.checker.check_model(model)
    out = tmp_path_factory.mktemp("gate") / "gate.onnx"
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="session")
def resize_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conv then Resize by scales (1, 1, 1.5, 1.5): scales must stay float32 in fp16."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), "k"),
        numpy_helper.from_array(np.array([1, 1, 1.5, 1.5], dtype=np.float32), "scales"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "k"], ["c"]),
            helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest", name="up"),
        ],
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2, 9, 9])],
        inits,
    )
    model = make_model(graph)
    onnx.checker.check_model(model)
    out = tmp_path_factory.mktemp("resize") / "resize.onnx"
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="session")
def custom_op_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Relu then a com.example FancyOp that no backend implements."""
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu0"),
            helper.make_node("FancyOp", ["r"], ["y"], name="my_fancy", domain="com.example"),
        ],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    model = make_model(graph, "com.example")
    out = tmp_path_factory.mktemp("custom") / "custom.onnx"
    onnx.save(model, str(out))
    return out
