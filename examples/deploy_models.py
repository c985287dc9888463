"""Deployment-style models with random weights (nothing downloaded), for benchmarks and tuning:
the families users deploy and where a compiler is measured against onnxruntime and OpenVINO.

    yolov8n_like       YOLOv8n layout (width 0.25, depth 0.33): Conv-BN-SiLU, C2f blocks with
                       bottlenecks, SPPF (three chained 5x5 max-pools), an FPN/PAN neck with
                       nearest upsampling and concat, three decoupled heads (box 64 + class 80)
                       concatenated to [1, 144, anchors]; input 320x320 (or 640)
    mobilenetv3_like   MobileNetV3-Large: the published bneck table (3x3/5x5 depthwise, squeeze-
                       excite with hard-sigmoid, ReLU/HardSwish), 224x224, 1000 classes
    mobilenetv2_224    MobileNetV2 (width 1.0): the published inverted-residual table, ReLU6,
                       224x224, 1000 classes
    minilm_like        a MiniLM-style encoder: hidden 384, 12 heads, FFN 1536 (GELU), 3 layers,
                       post-LayerNorm, additive attention mask, sequence 64 (minilm_like_6x128:
                       6 layers, sequence 128)
    efficientnet_b0_like  EfficientNet-B0: the published MBConv table (SiLU, squeeze-excite with
                       sigmoid, 3x3/5x5 depthwise), 224x224, 1000 classes
    dbnet_like         a DBNet-style OCR text detector: the MobileNetV3-Large backbone at
                       strides 4-32, an FPN (1x1 lateral convs, nearest upsampling and add, 3x3
                       smoothing, upsample and concat), the probability head (3x3 conv-BN-ReLU,
                       two stride-2 transposed convs, sigmoid); input 640x640
    crnn_like          a CRNN text recognizer: a VGG-style conv stack on a 48x320 crop down to
                       a height of 1, a 2-layer bidirectional LSTM (hidden 128) over the 80
                       columns, a linear layer to 97 classes

They register in examples/torch_models.py's MODELS, so `export(name, path)` and `inputs(name)`
work as for the models there.

Usage: python examples/deploy_models.py OUT_DIR   writes OUT_DIR/<name>.onnx and <name>.npz
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_models as tm  # noqa: E402

# ---------------------------------------------------------------------------------------------
# YOLOv8n-style detector


def conv_bn_silu(cin: int, cout: int, k: int = 1, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.SiLU())


class YoloBottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1, self.cv2 = conv_bn_silu(c, c, 3), conv_bn_silu(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convolutions: split, n bottlenecks, concat all."""

    def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True):
        super().__init__()
        self.c = cout // 2
        self.cv1 = conv_bn_silu(cin, 2 * self.c)
        self.cv2 = conv_bn_silu((2 + n) * self.c, cout)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        c = cin // 2
        self.cv1, self.cv2 = conv_bn_silu(cin, c), conv_bn_silu(4 * c, cout)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class DetectHead(nn.Module):
    def __init__(self, cin: int, box: int = 64, classes: int = 80):
        super().__init__()
        c2, c3 = max(16, cin // 4, box), max(cin, min(classes, 100))
        self.box = nn.Sequential(conv_bn_silu(cin, c2, 3), conv_bn_silu(c2, c2, 3),
                                 nn.Conv2d(c2, box, 1))
        self.cls = nn.Sequential(conv_bn_silu(cin, c3, 3), conv_bn_silu(c3, c3, 3),
                                 nn.Conv2d(c3, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.box(x), self.cls(x)], 1)
        return y.flatten(2)


class YoloV8nLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b0, self.b1 = conv_bn_silu(3, 16, 3, 2), conv_bn_silu(16, 32, 3, 2)
        self.b2, self.b3 = C2f(32, 32, 1), conv_bn_silu(32, 64, 3, 2)
        self.b4, self.b5 = C2f(64, 64, 2), conv_bn_silu(64, 128, 3, 2)
        self.b6, self.b7 = C2f(128, 128, 2), conv_bn_silu(128, 256, 3, 2)
        self.b8, self.b9 = C2f(256, 256, 1), SPPF(256, 256)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n12, self.n15 = C2f(384, 128, 1, False), C2f(192, 64, 1, False)
        self.n16, self.n18 = conv_bn_silu(64, 64, 3, 2), C2f(192, 128, 1, False)
        self.n19, self.n21 = conv_bn_silu(128, 128, 3, 2), C2f(384, 256, 1, False)
        self.heads = nn.ModuleList([DetectHead(64), DetectHead(128), DetectHead(256)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        n12 = self.n12(torch.cat([self.up(p5), p4], 1))
        n15 = self.n15(torch.cat([self.up(n12), p3], 1))
        n18 = self.n18(torch.cat([self.n16(n15), n12], 1))
        n21 = self.n21(torch.cat([self.n19(n18), p5], 1))
        return torch.cat([h(f) for h, f in zip(self.heads, (n15, n18, n21))], 2)


# ---------------------------------------------------------------------------------------------
# MobileNetV3-Large


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        s = max(8, (c // 4 + 4) // 8 * 8)
        self.fc1, self.fc2 = nn.Conv2d(c, s, 1), nn.Conv2d(s, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3),
                                                                           keepdim=True)))))
        return x * w


class Bneck(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, hs: bool, s: int):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if exp != cin:
            layers += [nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), act()]
        layers += [nn.Conv2d(exp, exp, k, s, k // 2, groups=exp, bias=False),
                   nn.BatchNorm2d(exp), act()]
        if se:
            layers.append(SqueezeExcite(exp))
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.res else y


# (kernel, expansion, out, squeeze-excite, hard-swish, stride): MobileNetV3-Large, Table 1
V3_LARGE = [(3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2),
            (3, 72, 24, False, False, 1), (5, 72, 40, True, False, 2),
            (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
            (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1),
            (3, 184, 80, False, True, 1), (3, 184, 80, False, True, 1),
            (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
            (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1),
            (5, 960, 160, True, True, 1)]


class MobileNetV3Like(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                   nn.Hardswish()]
        cin = 16
        for k, e, c, se, hs, s in V3_LARGE:
            layers.append(Bneck(cin, k, e, c, se, hs, s))
            cin = c
        layers += [nn.Conv2d(cin, 960, 1, bias=False), nn.BatchNorm2d(960), nn.Hardswish()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x).mean((2, 3)), 1))


# ---------------------------------------------------------------------------------------------
# MiniLM-style encoder


class MiniLMLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, self.dh).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh) + bias, -1)
        ctx = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.fc2(nn.functional.gelu(self.fc1(x))))


class MiniLMLike(nn.Module):
    def __init__(self, layers: int = 3, d: int = 384, heads: int = 12, ffn: int = 1536,
                 vocab: int = 8000, seq: int = 128):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.ln = nn.LayerNorm(d)
        self.layers = nn.ModuleList(MiniLMLayer(d, heads, ffn) for _ in range(layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.ln(self.tok(ids) + self.pos(torch.arange(t).unsqueeze(0)))
        bias = (1.0 - mask[:, None, None, :].to(torch.float32)) * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return x


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0 as published: (expansion, channels, repeats, first stride) per stage."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [tm.conv_bn_relu6(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(tm.InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(tm.conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# EfficientNet-B0


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, s: int, expand: int):
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU()]
        layers += [nn.Conv2d(mid, mid, k, s, k // 2, groups=mid, bias=False),
                   nn.BatchNorm2d(mid), nn.SiLU()]
        self.pre = nn.Sequential(*layers)
        sq = max(1, cin // 4)
        self.se1, self.se2 = nn.Conv2d(mid, sq, 1), nn.Conv2d(sq, mid, 1)
        self.post = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pre(x)
        w = torch.sigmoid(self.se2(nn.functional.silu(self.se1(y.mean((2, 3), keepdim=True)))))
        y = self.post(y * w)
        return x + y if self.res else y


# (expansion, kernel, stride, out channels, repeats): EfficientNet-B0, Table 1
B0 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
      (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class EfficientNetB0Like(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_silu(3, 32, 3, 2)]
        cin = 32
        for e, k, s, c, n in B0:
            for i in range(n):
                layers.append(MBConv(cin, c, k, s if i == 0 else 1, e))
                cin = c
        layers.append(conv_bn_silu(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


# ---------------------------------------------------------------------------------------------
# DBNet-style OCR detector (MobileNetV3 backbone, FPN, probability head)


class DBNetLike(nn.Module):
    def __init__(self, inner: int = 96):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                   nn.Hardswish()]
        cin, self.taps, stride = 16, [], 2
        for k, e, c, se, hs, s in V3_LARGE:
            if s == 2 and stride >= 4:
                self.taps.append(len(layers) - 1)     # the last block at each stride
            layers.append(Bneck(cin, k, e, c, se, hs, s))
            cin, stride = c, stride * s
        self.taps.append(len(layers) - 1)
        self.body = nn.ModuleList(layers)
        chans = [24, 40, 112, 160]
        self.lateral = nn.ModuleList(nn.Conv2d(c, inner, 1, bias=False) for c in chans)
        self.smooth = nn.ModuleList(nn.Conv2d(inner, inner // 4, 3, 1, 1, bias=False)
                                    for _ in chans)
        self.head = nn.Sequential(
            nn.Conv2d(inner, inner // 4, 3, 1, 1, bias=False), nn.BatchNorm2d(inner // 4),
            nn.ReLU(), nn.ConvTranspose2d(inner // 4, inner // 4, 2, 2),
            nn.BatchNorm2d(inner // 4), nn.ReLU(), nn.ConvTranspose2d(inner // 4, 1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):             # top-down: upsample and add
            lat[i] = lat[i] + nn.functional.interpolate(lat[i + 1], scale_factor=2.0,
                                                        mode="nearest")
        outs = [sm(p) for sm, p in zip(self.smooth, lat)]
        up = [nn.functional.interpolate(o, scale_factor=2.0 ** i, mode="nearest")
              for i, o in enumerate(outs)]
        return torch.sigmoid(self.head(torch.cat(up[::-1], 1)))


# ---------------------------------------------------------------------------------------------
# CRNN text recognizer


class CRNNLike(nn.Module):
    def __init__(self, classes: int = 97, hidden: int = 128):
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int] | None) -> list[nn.Module]:
            out: list[nn.Module] = [nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                                    nn.BatchNorm2d(cout), nn.ReLU()]
            return out + ([nn.MaxPool2d(pool, pool)] if pool else [])
        self.cnn = nn.Sequential(*block(3, 32, (2, 2)), *block(32, 64, (2, 2)),
                                 *block(64, 128, None), *block(128, 128, (2, 1)),
                                 *block(128, 256, None), *block(256, 256, (2, 1)),
                                 nn.Conv2d(256, 256, (3, 1), 1, 0), nn.ReLU())
        self.rnn = nn.LSTM(256, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x)                                   # [b, 256, 1, 80]
        seq = f.squeeze(2).transpose(1, 2)                # [b, 80, 256]
        y, _ = self.rnn(seq)
        return self.fc(y)


def _image(size: int):  # type: ignore[no-untyped-def]
    return lambda b: {"x": np.random.default_rng(7 + b).standard_normal(
        (b, 3, size, size)).astype(np.float32)}


def _crop(h: int, w: int):  # type: ignore[no-untyped-def]
    return lambda b: {"x": np.random.default_rng(9 + b).standard_normal(
        (b, 3, h, w)).astype(np.float32)}


def _tokens(seq: int):  # type: ignore[no-untyped-def]
    def feed(b: int) -> dict:
        r = np.random.default_rng(11 + b)
        mask = np.ones((b, seq), np.int64)
        mask[:, seq - seq // 8:] = 0
        return {"input_ids": r.integers(0, 8000, (b, seq), dtype=np.int64),
                "attention_mask": mask}
    return feed


MODELS = {
    "yolov8n_like": tm.Spec(tm._seeded(YoloV8nLike, 10, bn=True), _image(320), ["preds"],
                            {"x": 0, "preds": 0}),
    "yolov8n_like_640": tm.Spec(tm._seeded(YoloV8nLike, 10, bn=True), _image(640), ["preds"],
                                {"x": 0, "preds": 0}),
    "mobilenetv3_like": tm.Spec(tm._seeded(MobileNetV3Like, 11, bn=True), _image(224),
                                ["logits"], {"x": 0, "logits": 0}),
    "mobilenetv2_224": tm.Spec(tm._seeded(MobileNetV2, 13, bn=True), _image(224), ["logits"],
                               {"x": 0, "logits": 0}),
    "minilm_like": tm.Spec(tm._seeded(MiniLMLike, 12), _tokens(64), ["hidden_states"],
                           {"input_ids": 0, "attention_mask": 0, "hidden_states": 0}),
    "minilm_like_6x128": tm.Spec(tm._seeded(MiniLMLike, 12, layers=6), _tokens(128),
                                 ["hidden_states"],
                                 {"input_ids": 0, "attention_mask": 0, "hidden_states": 0}),
    "efficientnet_b0_like": tm.Spec(tm._seeded(EfficientNetB0Like, 14, bn=True), _image(224),
                                    ["logits"], {"x": 0, "logits": 0}),
    "dbnet_like": tm.Spec(tm._seeded(DBNetLike, 15, bn=True), _image(640), ["prob"],
                          {"x": 0, "prob": 0}),
    "crnn_like": tm.Spec(tm._seeded(CRNNLike, 16, bn=True), _crop(48, 320), ["logits"],
                         {"x": 0, "logits": 0}),
}
tm.MODELS.update(MODELS)
export, inputs, build, torch_outputs = tm.export, tm.inputs, tm.build, tm.torch_outputs


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/deploy_models.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for name in MODELS:
        feeds = export(name, out / f"{name}.onnx")
        np.savez(out / f"{name}.npz", **feeds)
        print(f"wrote {out / name}.onnx and {name}.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
