"""Small but realistic PyTorch models, exported to ONNX, as a check of the ONNX frontend and the
reference interpreter (tests/e2e/test_torch_models.py uses them).

Every model has random weights from a fixed seed and a deterministic input set, and is exported
with the legacy TorchScript exporter (`dynamo=False`, opset 17):

    resnet18_like       ResNet-18 layout (conv-bn-relu stem, maxpool, 4 stages x 2 BasicBlocks,
                        1x1 downsampling convs, global average pool, fc), widths 16/32/64/128
    mobilenetv2_like    inverted residual blocks: 1x1 expansion, depthwise 3x3, ReLU6 (Clip),
                        1x1 projection, residual add where shapes allow
    bert_like           2-layer BERT-style encoder: token + position embeddings, additive
                        attention mask, hand-written multi-head self-attention, GELU (erf) FFN,
                        post-LayerNorm; hidden 64, 4 heads, seq 16, vocab 100
    lstm                2-layer nn.LSTM + Linear on every time step; input [seq, batch, features]
    lstm_bidirectional  the same, bidirectional

`export(name, path, dynamic=True)` marks the batch dimension dynamic (supported for every model),
so the exported graph computes shapes at run time (Shape/Gather/Concat arithmetic).

Usage: python examples/torch_models.py OUT_DIR   writes OUT_DIR/<name>.onnx (+ <name>_dynamic.onnx)
and OUT_DIR/<name>.npz with the inputs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

OPSET = 17

# ---------------------------------------------------------------------------------------------
# ResNet-18-like


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Like(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        layers = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(cin, w, stride), BasicBlock(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.layers(self.stem(x)))
        # view(batch, -1) rather than flatten: with a dynamic batch this exports as
        # Shape/Gather/Unsqueeze/Concat/Reshape, the shape arithmetic the frontend must fold
        return self.fc(x.view(x.shape[0], -1))


# ---------------------------------------------------------------------------------------------
# MobileNetV2-like


def conv_bn_relu6(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu6(cin, hidden, 1))
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Like(nn.Module):
    # (expansion, out channels, repeats, first stride), a shortened MobileNetV2 table
    SETTINGS = ((1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 2, 2), (6, 32, 1, 1))

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu6(3, 16, 3, 2)]
        cin = 16
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 128, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.mean(dim=(2, 3))
        return self.classifier(x)


# ---------------------------------------------------------------------------------------------
# BERT-like encoder


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.dh = heads, hidden // heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.dh).transpose(1, 2)  # [b, h, s, dh]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.dh)
        probs = torch.softmax(scores + mask, dim=-1)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, h)
        return self.o(ctx)


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.attn = SelfAttention(hidden, heads)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ff1 = nn.Linear(hidden, ffn)
        self.act = nn.GELU()  # exact (erf) form
        self.ff2 = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, mask))
        return self.ln2(x + self.ff2(self.act(self.ff1(x))))


class BertLike(nn.Module):
    def __init__(self, vocab: int = 100, hidden: int = 64, heads: int = 4, layers: int = 2,
                 max_pos: int = 32):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(max_pos, hidden)
        self.ln = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, 4 * hidden)
                                    for _ in range(layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        pos = torch.arange(seq, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        x = self.ln(self.tok(input_ids) + self.pos(pos))
        # [b, s] of 1 (attend) / 0 (padding) -> additive [b, 1, 1, s]
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return x


# ---------------------------------------------------------------------------------------------
# LSTM


class LSTMModel(nn.Module):
    def __init__(self, features: int = 16, hidden: int = 32, layers: int = 2,
                 bidirectional: bool = False, out: int = 8):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, layers, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)  # [seq, batch, dirs * hidden]
        return self.fc(y)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(nn.Module):
    """The full ResNet-50 (the light_resnet50 architecture), for GPU benchmarks against
    PyTorch eager on the same model."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))


# ---------------------------------------------------------------------------------------------
# Registry and export


class Spec:
    """How to build, feed and export one model."""

    def __init__(self, build: Callable[[], nn.Module], inputs: Callable[[int], dict],
                 outputs: list[str], batch_axis: dict[str, int]):
        self.build = build
        self.inputs = inputs  # batch size -> {name: np.ndarray}
        self.outputs = outputs
        self.batch_axis = batch_axis  # input/output name -> batch axis


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _image(batch: int) -> dict:
    return {"x": _rng(1234 + batch).standard_normal((batch, 3, 64, 64)).astype(np.float32)}


def _bert_inputs(batch: int, seq: int = 16, vocab: int = 100) -> dict:
    r = _rng(4321 + batch)
    ids = r.integers(0, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(batch):  # pad the tail of every other sequence
        if b % 2 == 0:
            mask[b, seq - 3 - b % 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _seq(batch: int) -> dict:
    return {"x": _rng(777 + batch).standard_normal((10, batch, 16)).astype(np.float32)}


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (fresh ones are 0/1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _seeded(cls: Callable[..., nn.Module], seed: int, bn: bool = False, **kw) -> Callable:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        m = cls(**kw)
        if bn:
            _randomize_bn(m, seed + 1)
        return m.eval()
    return build


MODELS: dict[str, Spec] = {
    "resnet18_like": Spec(_seeded(ResNet18Like, 0, bn=True), _image, ["logits"],
                          {"x": 0, "logits": 0}),
    "mobilenetv2_like": Spec(_seeded(MobileNetV2Like, 1, bn=True), _image, ["logits"],
                             {"x": 0, "logits": 0}),
    "bert_like": Spec(_seeded(BertLike, 2), _bert_inputs, ["hidden_states"],
                      {"input_ids": 0, "attention_mask": 0, "hidden_states": 0}),
    "lstm": Spec(_seeded(LSTMModel, 3), _seq, ["y"], {"x": 1, "y": 1}),
    "lstm_bidirectional": Spec(_seeded(LSTMModel, 4, bidirectional=True), _seq, ["y"],
                               {"x": 1, "y": 1}),
    "resnet50": Spec(_seeded(ResNet50, 5, bn=True), lambda b: {
        "x": _rng(99 + b).standard_normal((b, 3, 224, 224)).astype(np.float32)},
        ["logits"], {"x": 0, "logits": 0}),
}


# the small models the test suite runs (resnet50 is for the GPU benchmark)
TEST_MODELS = ["resnet18_like", "mobilenetv2_like", "bert_like", "lstm", "lstm_bidirectional"]


def build(name: str) -> nn.Module:
    """The model in eval() mode, with its fixed random weights."""
    return MODELS[name].build()


def inputs(name: str, batch: int = 1) -> dict[str, np.ndarray]:
    """Deterministic inputs for `name` with the given batch size."""
    return MODELS[name].inputs(batch)


def torch_outputs(name: str, feeds: dict[str, np.ndarray],
                  model: nn.Module | None = None) -> dict[str, np.ndarray]:
    """Run the PyTorch model itself; outputs by ONNX output name."""
    spec = MODELS[name]
    model = model if model is not None else build(name)
    args = [torch.from_numpy(feeds[k]) for k in spec.inputs(1)]
    with torch.no_grad():
        out = model(*args)
    outs = out if isinstance(out, tuple) else (out,)
    return {n: o.numpy() for n, o in zip(spec.outputs, outs)}


def export(name: str, path: str | Path, dynamic: bool = False,
           dynamic_image: bool = False) -> dict[str, np.ndarray]:
    """Export model `name` to ONNX at `path` (batch dimension dynamic when `dynamic`; with
    `dynamic_image` also the height and width of 4-D inputs); returns the inputs to run it with
    (numpy, deterministic, batch 1)."""
    spec = MODELS[name]
    model = spec.build()
    feeds = spec.inputs(1)
    args = tuple(torch.from_numpy(a) for a in feeds.values())
    dynamic_axes = ({n: {ax: "batch"} for n, ax in spec.batch_axis.items()} if dynamic
                    else None)
    if dynamic_image and dynamic_axes is not None:
        for n, a in feeds.items():
            if a.ndim == 4:
                dynamic_axes[n].update({2: "height", 3: "width"})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=list(feeds),
                          output_names=spec.outputs, opset_version=OPSET,
                          dynamic_axes=dynamic_axes, dynamo=False, do_constant_folding=True)
    return feeds


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/torch_models.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name in TEST_MODELS:
        feeds = export(name, out / f"{name}.onnx")
        export(name, out / f"{name}_dynamic.onnx", dynamic=True)
        np.savez(out / f"{name}.npz", **feeds)
        print(f"wrote {out / name}.onnx, {name}_dynamic.onnx, {name}.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
