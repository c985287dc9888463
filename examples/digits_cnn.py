"""A small CNN trained on the handwritten digits that ship with scikit-learn (8x8 images, 10
classes; nothing downloaded), exported to ONNX: the real-data check of INT8 quantization.

    python examples/digits_cnn.py OUT_DIR      writes OUT_DIR/digits_cnn.onnx and digits.npz
                                               (x_train, y_train, x_test, y_test)

Conv-BN-ReLU x2, a depthwise-separable block, global average pooling and a linear layer;
about a minute of CPU training (seeded) reaches ~98% held-out top-1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as float32 [N, 1, 8, 8] in [0, 1], split 80/20 (stratified, seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return xtr, ytr, xte, yte


def build() -> "object":
    import torch
    from torch import nn

    def cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> list:
        return [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU()]

    torch.manual_seed(0)
    return nn.Sequential(*cbr(1, 32), *cbr(32, 64), *cbr(64, 64, 3, groups=64), *cbr(64, 128, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def train(epochs: int = 30, seed: int = 0) -> tuple["object", tuple]:
    import torch

    xtr, ytr, xte, yte = data(seed)
    net = build()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    X, Y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(X), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(X[idx]), Y[idx])
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    return net, (xtr, ytr, xte, yte)


def export(out_dir: str | Path, epochs: int = 30) -> tuple[Path, Path]:
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net, (xtr, ytr, xte, yte) = train(epochs)
    onnx_path, npz = out / "digits_cnn.onnx", out / "digits.npz"
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), str(onnx_path), input_names=["x"],
                      output_names=["logits"], dynamo=False, opset_version=17)
    np.savez(npz, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    with torch.no_grad():
        acc = float((net(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
    print(f"wrote {onnx_path} and {npz}; PyTorch held-out top-1 {acc:.4f}")
    return onnx_path, npz


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[3], file=sys.stderr)
        sys.exit(2)
    export(sys.argv[1])
