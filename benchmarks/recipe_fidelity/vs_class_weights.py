"""Item 4 at the loss level: multi-class VS (gamma 0, tau 1 = logit adjustment) with each class_weights option,
a linear classifier on synthetic long-tailed Gaussian data (10 classes, CIFAR-10-LT profile rho = 100:
500 ... 5 training samples), balanced test set. Full-batch training, 3 seeds."""
import numpy as np
import torch

from lossdial.losses import VSLoss

C, D = 10, 32
counts = [int(500 * 100 ** (-c / (C - 1))) for c in range(C)]


def run(seed, weighting, tau):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, D, generator=g) * 0.55
    xs, ys = [], []
    for c, n in enumerate(counts):
        xs.append(means[c] + torch.randn(n, D, generator=g)); ys.append(torch.full((n,), c))
    x, y = torch.cat(xs), torch.cat(ys)
    xt = torch.cat([means[c] + torch.randn(1000, D, generator=g) for c in range(C)])
    yt = torch.arange(C).repeat_interleave(1000)
    w = torch.zeros(D, C, requires_grad=True); b = torch.zeros(C, requires_grad=True)
    loss_fn = VSLoss(counts, gamma=0.0, tau=tau, class_weights=weighting)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(x @ w + b, y) + 1e-3 * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    pred = (xt @ w + b).argmax(1)
    rec = np.array([(pred[yt == c] == c).float().mean().item() for c in range(C)])
    return rec.mean(), rec.min(), rec[:3].mean(), rec[-3:].mean()


print("counts", counts)
print("| tau | class_weights | balanced acc | worst class | head 3 | tail 3 |")
print("|---|---|---|---|---|---|")
for tau in (0.0, 1.0):
    for wname in ("none", "inverse_frequency", "effective_number"):
        r = np.array([run(s, wname, tau) for s in range(3)])
        m, sd = r.mean(0), r.std(0, ddof=1)
        print(f"| {tau:g} | {wname} | " + " | ".join(f"{a:.3f} ± {b:.3f}" for a, b in zip(m, sd)) + " |")
