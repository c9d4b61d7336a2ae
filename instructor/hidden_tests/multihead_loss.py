# hidden: random logits, heads of different K; the gradient reaches every head
import torch
import torch.nn.functional as F

_g = torch.Generator().manual_seed(10)
_scores = [torch.randn(32, k, generator=_g, requires_grad=True) for k in (10, 20, 50)]
_labels = torch.stack([torch.randint(0, 10, (32,), generator=_g) for _ in range(3)])
_loss = multihead_loss(_scores, _labels)
_want = torch.stack([F.cross_entropy(s, y) for s, y in zip(_scores, _labels)]).mean()
assert torch.allclose(_loss, _want, atol=1e-5), f"{float(_loss):.4f} vs {float(_want):.4f}"
_loss.backward()
assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in _scores), "every head must get a gradient"
