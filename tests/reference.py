"""A plain, per-edge re-implementation of the supernet forward pass (train mode).

Independent of the supernet's edge grouping/batching: it walks nodes and edges one by
one, slicing each edge's parameters out of the batched (vmapped) parameter stacks and
applying every op of the edge as its own module with its own BatchNorm, weighted
(``discrete=False``; the supernet normalises an edge's ops in one stacked BatchNorm), or
only the genotype's ops (``discrete=True``), and assembles cells as the DARTS reference does.

Also the depthwise convolution written with ``lax.conv_general_dilated``'s
``feature_group_count`` (the reference for :mod:`jaxdarts.kernels`' tap primitives).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from jaxdarts import ops, spaces, supernet


def grouped_conv_depthwise(x, w, stride, dilation):
    """Depthwise conv of NHWC ``x`` with ``(k, k, C)`` filters, DARTS padding."""
    k = w.shape[0]
    p = dilation * (k - 1) // 2
    return lax.conv_general_dilated(x, w[:, :, None, :], (stride, stride), [(p, p), (p, p)],
                                    rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=x.shape[-1])


def _group_of(space, cell_type, reduction, e):
    for g in supernet.edge_groups(space, cell_type, reduction):
        if e in g.edges:
            return g.name, g.edges.index(e)
    raise KeyError(e)


def _apply(module, params, bs, *args):
    variables = {"params": params or {}, "batch_stats": bs or {}}
    return module.apply(variables, *args, mutable=["batch_stats"])[0]


def reference_logits(model: supernet.Supernet, variables, x, weights, genotype=None, lowering=None):
    lowering = lowering or model.lowering  # the ops' lowering (both compute the same function)
    space = spaces.get(model.space)
    p, bs = variables["params"], variables.get("batch_stats", {})
    s = _apply(nn.Conv(model.stem_multiplier * model.C, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False),
               p["stem_conv"], None, x)
    s = _apply(ops.batch_norm(True, True), p["stem_bn"], bs["stem_bn"], s)
    s0 = s1 = s
    C, reduction_prev, counters = model.C, False, {"normal": 0, "reduce": 0}
    for i in range(model.layers):
        ctype = space.cell_type_of(i, model.layers)
        reduction = ctype == "reduce"
        C = C * 2 if reduction else C
        pc, bc = p[f"cell_{i}"], bs[f"cell_{i}"]
        pre0 = ops.FactorizedReduce(C, affine=False) if reduction_prev else ops.ReLUConvBN(C, 1, 1, affine=False)
        states = [_apply(pre0, pc["preprocess0"], bc["preprocess0"], s0, True),
                  _apply(ops.ReLUConvBN(C, 1, 1, affine=False), pc["preprocess1"], bc["preprocess1"], s1, True)]
        w = None
        if weights is not None:
            w = weights[ctype][counters[ctype]] if space.per_cell else weights[ctype]
        gene = None
        if genotype is not None:
            gene = genotype.cell(ctype, counters[ctype])
        counters[ctype] += 1
        padded = space.padded_ops(ctype)
        for node in range(space.steps):
            total = 0.0
            if gene is None:
                chosen = [(None, inp) for (n, inp) in space.edges if n == node]
            else:
                chosen = [gene[2 * node], gene[2 * node + 1]] if space.derive == "top2" else \
                    [g for g, (n, _) in zip(gene, space.edges) if n == node]
            for op_name, inp in chosen:
                e = space.edge_index(node, inp)
                gname, j = _group_of(space, ctype, reduction, e)
                pe = jax.tree.map(lambda a: a[j], pc.get(gname, {}))
                be = jax.tree.map(lambda a: a[j], bc.get(gname, {}))
                stride = 2 if reduction and inp < 2 else 1
                if op_name is None:  # sum_k w_k op_k(x), each op with its own BatchNorm
                    for k, name in enumerate(padded[e]):
                        if name is not None and name != "none":
                            m = ops.make_op(name, C, C, stride, False, lowering=lowering)
                            total = total + w[e][k] * _apply(m, pe.get(name), be.get(name), states[inp], True)
                else:
                    m = ops.make_op(op_name, C, C, stride, False, lowering=lowering)
                    total = total + _apply(m, pe.get(op_name), be.get(op_name), states[inp], True)
            states.append(total)
        s0, s1 = s1, jnp.concatenate(states[2:], axis=-1)  # every intermediate node (DARTS's concat)
        reduction_prev = reduction
    out = jnp.mean(s1, axis=(1, 2))
    return _apply(nn.Dense(model.num_classes), p["classifier"], None, out)


class EVLocalAvgTranscription:
    """RobustDARTS ``src/utils.py::EVLocalAvg``, transcribed line by line (numpy; genotypes
    are the epochs themselves). The independent reference for
    :func:`jaxdarts.methods.robustdarts.code_rule`."""

    def __init__(self, window=5, ev_freq=2, total_epochs=50):
        self.window, self.ev_freq, self.epochs = window, ev_freq, total_epochs
        self.stop_search, self.stop_epoch, self.stop_genotype = False, total_epochs - 1, None
        self.ev, self.ev_local_avg, self.genotypes, self.la_epochs = [], [], {}, {}
        self.la_start_idx, self.la_end_idx = 0, self.window

    def update(self, epoch, ev, genotype):
        self.ev.append(ev)
        self.genotypes.update({epoch: genotype})
        self.stop_genotype = genotype
        if (len(self.ev) >= int(np.ceil(self.window / 2))) and (epoch < self.epochs - 1):
            if len(self.ev) < self.window:
                self.ev_local_avg.append(np.mean(self.ev))
            else:
                assert len(self.ev[self.la_start_idx: self.la_end_idx]) == self.window
                self.ev_local_avg.append(np.mean(self.ev[self.la_start_idx:self.la_end_idx]))
                self.la_start_idx += 1
                self.la_end_idx += 1
            self.la_epochs.update({epoch: int(epoch - int(self.ev_freq * np.floor(self.window / 2)))})
        elif len(self.ev) < int(np.ceil(self.window / 2)):
            self.la_epochs.update({epoch: -1})
        elif epoch == self.epochs - 1:
            for i in range(int(np.ceil(self.window / 2))):
                assert len(self.ev[self.la_start_idx: self.la_end_idx]) == self.window - i
                self.ev_local_avg.append(np.mean(self.ev[self.la_start_idx:self.la_end_idx + 1]))
                self.la_start_idx += 1

    def early_stop(self, epoch, factor=1.3, es_start_epoch=10, delta=4):
        if int(self.la_epochs[epoch] - self.ev_freq * delta) >= es_start_epoch:
            current_la = self.ev_local_avg[-1]
            previous_la = self.ev_local_avg[-1 - delta]
            self.stop_search = current_la / previous_la > factor
            if self.stop_search:
                self.stop_epoch = int(self.la_epochs[epoch] - self.ev_freq * delta)
                self.stop_genotype = self.genotypes[self.stop_epoch]


def reference_darts_es(curve, epochs=50, report_freq_hessian=2, window=5, factor=1.3, es_start_epoch=10, delta=4):
    """``train_search.py``'s DARTS-ES loop (``early_stop=1``) on a synthetic eigenvalue
    ``curve(epoch)``: eigenvalue after epochs ``epoch % freq == 0`` and the last, tracker
    update, test except at the last epoch, break on a stop. Returns ``(record, result)``:
    the ``(epoch, eigenvalue)`` pairs computed and ``(stop epoch, returned epoch)`` or None."""
    tracker = EVLocalAvgTranscription(window, report_freq_hessian, epochs)
    record = []
    for epoch in range(epochs):
        if (epoch % report_freq_hessian == 0) or (epoch == (epochs - 1)):
            ev = curve(epoch)
            record.append((epoch, ev))
            tracker.update(epoch, ev, epoch)
            if epoch != (epochs - 1):
                tracker.early_stop(epoch, factor, es_start_epoch, delta)
        if tracker.stop_search:
            return record, (epoch, tracker.stop_genotype)
    return record, None


class VadamTranscription:
    """``Vadam.step`` of emtiyaz/vadam (``pytorch/vadam/optimizers.py``) line by line in
    NumPy, for one flat parameter tensor, with the Monte-Carlo noise injected
    (``eps[k]`` instead of ``torch.randn_like``) and each sample's gradient kept separately
    (the reference's closure accumulates ``.grad`` across samples; BaLeNAS uses one)."""

    def __init__(self, mu, lr=3e-4, betas=(0.5, 0.999), prior_prec=1.0, prec_init=1.0, train_set_size=100):
        self.p = np.array(mu, np.float64)
        self.lr, (self.b1, self.b2) = lr, betas
        self.prior_prec, self.n = prior_prec, train_set_size
        self.step_ = 0
        self.exp_avg = np.zeros_like(self.p)
        self.exp_avg_sq = np.ones_like(self.p) * (prec_init - prior_prec) / train_set_size

    def sigma(self):
        return 1.0 / np.sqrt(self.n * self.exp_avg_sq + self.prior_prec)

    def step(self, grad_fn, eps):
        self.step_ += 1
        original = self.p.copy()
        sigma = 1.0 / np.sqrt(self.n * self.exp_avg_sq + self.prior_prec)
        grads, grads2 = [], []
        for e in eps:
            self.p = original + e * sigma  # p.data.addcmul_(raw_noise, sigma)
            g = grad_fn(self.p)
            grads.append(g)
            grads2.append(g ** 2)
        self.p = original
        grad = np.mean(grads, 0)
        grad2 = np.mean(grads2, 0)
        tlambda = self.prior_prec / self.n
        grad = grad + tlambda * original  # grad.add_(tlambda, original_values)
        self.exp_avg = self.exp_avg * self.b1 + (1 - self.b1) * grad
        self.exp_avg_sq = self.exp_avg_sq * self.b2 + (1 - self.b2) * grad2
        bias_correction1 = 1 - self.b1 ** self.step_
        bias_correction2 = 1 - self.b2 ** self.step_
        numerator = self.exp_avg / bias_correction1
        denominator = np.sqrt(self.exp_avg_sq) / np.sqrt(bias_correction2) + tlambda
        self.p = self.p - self.lr * numerator / denominator
        return self.p


# ------------------------------------------------------------- MS-DARTS / SDARTS
def clip_transcription(p):
    """SmoothDARTS/MS-DARTS ``model_search.py::clip`` on one arch tensor, row by row
    (NumPy, in place on a copy): argmax before clamping, clamp to [0, 1], an all-zero row
    gets 1 at that argmax, divide by the row sum."""
    p = np.array(p, np.float64)
    for line in p:
        max_index = line.argmax()
        np.clip(line, 0, 1, out=line)
        if line.sum() == 0.0:
            line[max_index] = 1.0
        line /= line.sum()
    return p


def mean_shift_transcription(params, loss, draws, bandwidth):
    """``attacker/perturb_ms.py::Mean_Shift_alpha`` (aaron851113/MS-DARTS) line by line in
    NumPy float64, with the uniform draws injected: ``params`` a list of arch tensors (the
    softmax-ed alphas), ``loss(list of clipped tensors) -> float``, ``draws[t][n][i]`` the
    U(-eps, eps) noise of iteration t, sample n, tensor i. Returns the list of tensors."""
    params = [np.array(p, np.float64) for p in params]
    T, N = len(draws), len(draws[0])
    gaussian = lambda d, bw: (-1 / (bw * math.sqrt(2 * math.pi))) * np.exp(-0.5 * d)
    for t in range(T):
        saved = [p.copy() for p in params]
        omega_list = np.zeros(N)
        kernel_list = np.zeros((N, len(params)))
        perturb_list = []
        for n in range(N):
            cur = [s + draws[t][n][i] for i, s in enumerate(saved)]
            perturb_list.append([c.copy() for c in cur])
            cur = [clip_transcription(c) for c in cur]
            omega_list[n] = loss(cur)
            for i in range(len(params)):
                a_xi = (saved[i] - cur[i]).reshape(-1)
                dist = (np.sqrt((a_xi ** 2).sum(0)) / bandwidth) ** 2
                kernel_list[n][i] = (-1) * gaussian(dist, bandwidth)
        omega_list = np.exp(omega_list - omega_list.max())
        omega_list /= omega_list.sum()
        total_down = omega_list @ kernel_list
        total_up = [np.zeros_like(p) for p in params]
        for i in range(len(params)):
            for n in range(N):
                total_up[i] += perturb_list[n][i] * omega_list[n] * kernel_list[n][i]
        params = [total_up[i] / total_down[i] for i in range(len(params))]
    return params


def linf_pgd_transcription(params, loss, grad, draws, epsilon, steps=7):
    """SmoothDARTS ``Linf_PGD_alpha`` in NumPy float64 with the random start injected
    (``draws[i]`` the U(-eps, eps) noise of tensor i): ``Linf_SGD`` with lr 2 eps / steps on
    ``-loss`` (a step ``p -= lr * sign(-grad)``), projection onto the eps box around the
    saved tensors, then ``clip``; the saved tensors back when the loss went down."""
    saved = [np.array(p, np.float64) for p in params]
    lr = 2 * epsilon / steps
    loss_before = loss(saved)
    cur = [clip_transcription(s + d) for s, d in zip(saved, draws)]
    for _ in range(steps):
        g = [-x for x in grad(cur)]  # loss = -model._loss
        cur = [c - lr * np.sign(gi) for c, gi in zip(cur, g)]
        diff = [np.clip(c - s, -epsilon, epsilon) for c, s in zip(cur, saved)]
        cur = [clip_transcription(d + s) for d, s in zip(diff, saved)]
    if loss_before > loss(cur):
        return saved
    return cur


def nb201_proxy_transcription(params, genotype, x, bn="all"):
    """NAS-Bench-201's ``TinyNetwork`` as the zero-cost-proxy code builds it (search cells:
    ``nor_conv`` = ReLU, conv with bias, BN without parameters; batch-statistics BN
    everywhere), written with ``lax`` from a parameter dict named as
    :class:`jaxdarts.networks.NetworkNB201`'s: stem conv 3x3 + BN, three stages of one cell
    at C, 2C, 4C separated by ResNet basic blocks (ReLU-conv 3x3/2-BN, ReLU-conv 3x3-BN,
    shortcut avg pool 2 + conv 1x1), BN, ReLU, global average pool, linear.

    ``bn``: ``'all'`` (the network), ``'resblocks'`` (Synflow in Z's NB201 model: only
    the ResNet blocks' BatchNorms are kept), ``'none'`` (Synflow's generic BN removal)."""
    def conv(h, k, stride=1, bias=None):
        p = (k.shape[0] - 1) // 2
        y = lax.conv_general_dilated(h, k, (stride, stride), [(p, p), (p, p)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y if bias is None else y + bias

    def norm(h, where, scale=None, shift=None):
        if bn == "none" or (bn == "resblocks" and where != "resblock"):
            return h
        m = h.mean((0, 1, 2))
        v = ((h - m) ** 2).mean((0, 1, 2))
        h = (h - m) / jnp.sqrt(v + 1e-5)
        return h if scale is None else h * scale + shift

    def avg3(h):  # 3x3, stride 1, padding 1, count_include_pad=False
        pad = [(0, 0), (1, 1), (1, 1), (0, 0)]
        s = lax.reduce_window(h, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
        n = lax.reduce_window(jnp.ones_like(h), 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
        return s / n

    def cell(h, p):
        states = [h]
        e = 0
        for node in range(1, 4):
            total = jnp.zeros_like(h)
            for j in range(node):
                op, inp = genotype.normal[e]
                s = states[inp]
                if op == "skip_connect":
                    total = total + s
                elif op == "avg_pool_3x3":
                    total = total + avg3(s)
                elif op.startswith("nor_conv"):
                    q = p[f"edge{e}"]["Conv_0" if op == "nor_conv_3x3" else "PointwiseConv_0"]
                    total = total + norm(conv(jax.nn.relu(s), q["kernel"], 1, q["bias"]), "cell")
                e += 1
            states.append(total)
        return states[-1]

    def resblock(h, p):
        a, b = p["ReLUConvBN_0"], p["ReLUConvBN_1"]
        y = norm(conv(jax.nn.relu(h), a["Conv_0"]["kernel"], 2), "resblock", a["BatchNorm_0"]["scale"],
                 a["BatchNorm_0"]["bias"])
        y = norm(conv(jax.nn.relu(y), b["Conv_0"]["kernel"], 1), "resblock", b["BatchNorm_0"]["scale"],
                 b["BatchNorm_0"]["bias"])
        n, hh, ww, c = h.shape
        sc = h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean((2, 4))
        return conv(sc, p["Conv_0"]["kernel"]) + y

    h = norm(conv(x, params["stem_conv"]["kernel"]), "stem", params["stem_bn"]["scale"], params["stem_bn"]["bias"])
    for stage in range(3):
        if stage:
            h = resblock(h, params[f"resblock_{stage}"])
        h = cell(h, params[f"cell_{stage}_0"])
    h = jax.nn.relu(norm(h, "lastact", params["lastact_bn"]["scale"], params["lastact_bn"]["bias"]))
    return h.mean((1, 2)) @ params["classifier"]["kernel"] + params["classifier"]["bias"]
