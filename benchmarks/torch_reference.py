"""PyTorch baseline: the DARTS search network and search step, written from
``../shared/REFERENCE.md`` (quark0/darts ``model_search.py`` / ``architect.py`` semantics),
for side-by-side timing with jaxdarts (``benchmarks/vs_pytorch.py``). Bench-only
dependency: ``pip install torch==2.13.0``.

    python benchmarks/torch_reference.py --mode first_order --batch 64
    python benchmarks/torch_reference.py --mode second_order --batch 32

Prints one JSON line: median seconds per step over ``--steps`` steps after 2 warm-up
steps, peak RSS, parameter count (1,930,618 at C=16, 8 cells, 10 classes: checked).
"""

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


class ReLUConvBN(nn.Sequential):
    def __init__(self, C_in, C_out, k, stride, pad, affine):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(C_in, C_out, k, stride, pad, bias=False),
                         nn.BatchNorm2d(C_out, affine=affine))


class DilConv(nn.Sequential):
    def __init__(self, C_in, C_out, k, stride, pad, dil, affine):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(C_in, C_in, k, stride, pad, dilation=dil, groups=C_in, bias=False),
                         nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine))


class SepConv(nn.Sequential):
    def __init__(self, C_in, C_out, k, stride, pad, affine):
        super().__init__(DilConv(C_in, C_in, k, stride, pad, 1, affine), DilConv(C_in, C_out, k, 1, pad, 1, affine))


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x.mul(0.0) if self.stride == 1 else x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    def __init__(self, C_in, C_out, affine):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.c1 = nn.Conv2d(C_in, C_out // 2, 1, 2, bias=False)
        self.c2 = nn.Conv2d(C_in, C_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.c1(x), self.c2(x[:, :, 1:, 1:])], dim=1))


def make_op(name, C, stride):
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.BatchNorm2d(C, affine=False))
    if name == "avg_pool_3x3":
        return nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=False), nn.BatchNorm2d(C, affine=False))
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(C, C, False)
    k = int(name[-1])
    if name.startswith("sep"):
        return SepConv(C, C, k, stride, k // 2, False)
    return DilConv(C, C, k, stride, k - 1, 2, False)


class MixedOp(nn.Module):
    def __init__(self, C, stride):
        super().__init__()
        self._ops = nn.ModuleList([make_op(p, C, stride) for p in PRIMITIVES])

    def forward(self, x, w):
        return sum(wi * op(x) for wi, op in zip(w, self._ops))


class Cell(nn.Module):
    def __init__(self, C_pp, C_p, C, reduction, reduction_prev, steps=4, multiplier=4):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(C_pp, C, False) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, False)
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, 0, False)
        self.steps, self.multiplier = steps, multiplier
        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                self._ops.append(MixedOp(C, 2 if reduction and j < 2 else 1))

    def forward(self, s0, s1, weights):
        states = [self.pre0(s0), self.pre1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier:], dim=1)


class Network(nn.Module):
    def __init__(self, C=16, num_classes=10, layers=8, steps=4, multiplier=4, stem_multiplier=3):
        super().__init__()
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(C_pp, C_p, C_curr, reduction, reduction_prev, steps, multiplier)
            reduction_prev = reduction
            self.cells.append(cell)
            C_pp, C_p = C_p, multiplier * C_curr
        self.classifier = nn.Linear(C_p, num_classes)
        k = sum(2 + i for i in range(steps))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(k, len(PRIMITIVES)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(k, len(PRIMITIVES)))

    def arch_parameters(self):
        return [self.alphas_normal, self.alphas_reduce]

    def weights(self):
        return [p for n, p in self.named_parameters() if not n.startswith("alphas")]

    def forward(self, x):
        s0 = s1 = self.stem(x)
        wn, wr = F.softmax(self.alphas_normal, -1), F.softmax(self.alphas_reduce, -1)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, wr if cell.reduction else wn)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="first_order", choices=("weight_only", "first_order", "second_order"))
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="0: torch default")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    net = Network(a.C, 10, a.layers).to(dev)
    n_params = sum(p.numel() for p in net.weights())
    w_opt = torch.optim.SGD(net.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(net.arch_parameters(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)

    def batch():
        return (torch.randn(a.batch, 3, a.size, a.size, device=dev),
                torch.randint(0, 10, (a.batch,), device=dev))

    def arch_step(xt, yt, xv, yv):
        a_opt.zero_grad()
        if a.mode == "first_order":
            F.cross_entropy(net(xv), yv).backward()
        else:  # architect.py: virtual step, dalpha = g_val(w') - lr * finite-difference mixed term
            lr = w_opt.param_groups[0]["lr"]
            ws = net.weights()
            backup = [p.detach().clone() for p in ws]
            g = torch.autograd.grad(F.cross_entropy(net(xt), yt), ws)
            with torch.no_grad():
                for p, gi in zip(ws, g):
                    buf = w_opt.state[p].get("momentum_buffer") if p in w_opt.state else None
                    m = 0.9 * buf if buf is not None else 0.0
                    p.sub_(lr * (m + gi + 3e-4 * p))
            loss = F.cross_entropy(net(xv), yv)
            grads = torch.autograd.grad(loss, net.arch_parameters() + ws)
            da, dw = grads[:2], grads[2:]
            eps = 0.01 / torch.cat([d.flatten() for d in dw]).norm()
            def mixed(sign):
                with torch.no_grad():
                    for p, b, d in zip(ws, backup, dw):
                        p.copy_(b + sign * eps * d)
                return torch.autograd.grad(F.cross_entropy(net(xt), yt), net.arch_parameters())
            gp, gn = mixed(+1), mixed(-1)
            with torch.no_grad():
                for p, b in zip(ws, backup):
                    p.copy_(b)
            for al, d, p_, n_ in zip(net.arch_parameters(), da, gp, gn):
                al.grad = d - lr * (p_ - n_) / (2 * eps)
        a_opt.step()

    def step():
        xt, yt = batch()
        if a.mode != "weight_only":
            xv, yv = batch()
            arch_step(xt, yt, xv, yv)
        w_opt.zero_grad()
        F.cross_entropy(net(xt), yt).backward()
        nn.utils.clip_grad_norm_(net.weights(), 5.0)
        w_opt.step()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    for _ in range(a.steps + 2):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "mode": a.mode, "C": a.C,
                      "layers": a.layers, "batch": a.batch, "size": a.size, "threads": torch.get_num_threads(),
                      "params": n_params, "median_step_s": round(statistics.median(times[2:]), 3),
                      "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                      "peak_device_gb": (round(torch.cuda.max_memory_allocated() / 2**30, 2)
                                         if dev.type == "cuda" else None),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


if __name__ == "__main__":
    main()
