"""Exercise 3.9: the mixture of experts against a PyTorch version written here with the same routing rule
(softmax router, each token's top_k experts by probability, ties to the lower index, weights renormalised to
sum 1, SwiGLU experts) and the same load-balancing loss: outputs, aux_loss, and the gradients of x and of
every parameter, the router's through the mixing weights and through aux_loss."""

import numpy as np
import pytest
import torch

from stage3_transformer import nn
from tests.helpers import assert_close, assert_tensor
from tests.stage3.torch_parity import TorchSwiGLU, compare_modules, load_ours_into_torch, load_torch_into_ours

pytestmark = [pytest.mark.exercise("3.9"), pytest.mark.under_test("MoE.forward")]

D, FF, E = 8, 16, 4  # d_model, d_ff of each expert, number of experts


class TorchMoE(torch.nn.Module):
    """The reference: every expert runs on every token (simple, not fast), then each token keeps its top_k."""

    def __init__(self, d_model, d_ff, num_experts, top_k):
        super().__init__()
        self.router = torch.nn.Linear(d_model, num_experts, bias=False, dtype=torch.float64)
        self.experts = torch.nn.ModuleList([TorchSwiGLU(d_model, d_ff) for _ in range(num_experts)])
        self.num_experts, self.top_k = num_experts, top_k
        self.aux_loss = None

    def forward(self, x):
        tokens = x.reshape(-1, x.shape[-1])  # (N, d)
        probs = torch.softmax(self.router(tokens), dim=-1)  # (N, E)
        # Sorting -probs stably puts equal probabilities in index order: ties go to the lower index.
        chosen = np.argsort(-probs.detach().numpy(), axis=-1, kind="stable")[:, :self.top_k]  # (N, k)
        top = probs.gather(-1, torch.tensor(chosen))  # (N, k)
        weights = top / top.sum(dim=-1, keepdim=True)  # renormalised to sum 1 (Mixtral)
        every = torch.stack([expert(tokens) for expert in self.experts], dim=1)  # (N, E, d)
        picked = every.gather(1, torch.tensor(chosen)[..., None].expand(-1, -1, tokens.shape[-1]))  # (N, k, d)
        y = (weights[..., None] * picked).sum(dim=1)
        # Switch Transformer: E * sum_i f_i P_i, f_i the share of (token, slot) assignments to expert i (a constant).
        f = torch.tensor(np.bincount(chosen.ravel(), minlength=self.num_experts) / chosen.size)
        self.aux_loss = self.num_experts * (f * probs.mean(dim=0)).sum()
        return y.reshape(x.shape)


def dense_mixture(m, x):
    """sum_i softmax(router(x))_i expert_i(x): what top_k == num_experts must give."""
    probs = torch.softmax(m.router(x), dim=-1)  # (..., E)
    every = torch.stack([expert(x) for expert in m.experts], dim=-2)  # (..., E, d)
    return (probs[..., None] * every).sum(dim=-2)


def pair(top_k, seed=0, num_experts=E):
    torch.manual_seed(seed)
    theirs = TorchMoE(D, FF, num_experts, top_k)
    with torch.no_grad():
        theirs.router.weight.mul_(4)  # decisive routing: clear winners, far from ties
    ours = nn.MoE(D, FF, num_experts, top_k, rng=seed, dtype=np.float64)
    load_torch_into_ours(ours, theirs, f"MoE({D}, {FF}, num_experts={num_experts}, top_k={top_k})")
    return ours, theirs


def with_aux(m, x):
    return m(x), m.aux_loss


def check(ours, theirs, x, what, call_ours=with_aux, call_theirs=with_aux):
    # An expert that no token was routed to may have no gradient at all: PyTorch's dense reference gives it zeros.
    return compare_modules(ours, theirs, [x], call_ours=call_ours, call_theirs=call_theirs, what=what,
                           input_names=["x"], unused_may_be_none=True)


@pytest.mark.parametrize("x_shape", [(2, 6, D), (10, D), (2, 2, 3, D)], ids=str)
def test_outputs_aux_loss_and_every_gradient(x_shape):
    ours, theirs = pair(top_k=2)
    x = np.random.default_rng(1).standard_normal(x_shape)
    got, _ = check(ours, theirs, x, f"MoE({D}, {FF}, num_experts={E}, top_k=2) -> (y, aux_loss)")
    assert_tensor(got[0], "MoE's output", shape=x_shape)
    assert_tensor(got[1], "MoE's aux_loss (a 0-d Tensor)", shape=())


def test_router_gradient_through_the_mixing_weights_alone():
    ours, theirs = pair(top_k=2, seed=1)
    x = np.random.default_rng(2).standard_normal((3, 5, D))
    check(ours, theirs, x, f"MoE({D}, {FF}, num_experts={E}, top_k=2) -> y only (the router learns through the "
                           "renormalised weights)", call_ours=lambda m, t: m(t), call_theirs=lambda m, t: m(t))


def test_router_gradient_through_aux_loss_alone():
    ours, theirs = pair(top_k=2, seed=2)
    x = np.random.default_rng(3).standard_normal((3, 5, D))
    aux_only = lambda m, t: (m(t), m.aux_loss)[1]  # noqa: E731
    check(ours, theirs, x, f"MoE({D}, {FF}, num_experts={E}, top_k=2) -> aux_loss only (num_experts * sum_i f_i P_i: "
                           "the router's gradient through P_i, f_i a constant)", call_ours=aux_only, call_theirs=aux_only)


def test_top_1():
    ours, theirs = pair(top_k=1, seed=3)
    x = np.random.default_rng(4).standard_normal((2, 7, D))
    check(ours, theirs, x, f"MoE({D}, {FF}, num_experts={E}, top_k=1) -> (y, aux_loss) (each token's single "
                           "expert, weight 1)")


def test_all_experts_is_the_dense_mixture():
    ours, theirs = pair(top_k=E, seed=4)
    x = np.random.default_rng(5).standard_normal((2, 5, D))
    got, _ = check(ours, theirs, x, f"MoE({D}, {FF}, num_experts={E}, top_k={E}) vs sum_i softmax(router(x))_i "
                                    "expert_i(x)", call_ours=lambda m, t: m(t), call_theirs=dense_mixture)
    assert_close(ours.aux_loss, np.array(1.0), "MoE with top_k = num_experts: aux_loss (every f_i = 1/num_experts, "
                                               "so num_experts * sum_i f_i P_i = sum_i P_i = 1)")


def test_ties_go_to_the_lower_index():
    # A zero router gives every expert the probability 1/E exactly: each token must go to experts 0..top_k-1.
    ours, theirs = pair(top_k=2, seed=5)
    with torch.no_grad():
        theirs.router.weight.zero_()
    load_torch_into_ours(ours, theirs, f"MoE({D}, {FF}, num_experts={E}, top_k=2) with a zero router")
    x = np.random.default_rng(6).standard_normal((2, 4, D))
    check(ours, theirs, x, f"MoE({D}, {FF}, num_experts={E}, top_k=2) with a zero router (all probabilities tie: "
                           "experts 0 and 1 for every token, each with weight 1/2)")


@pytest.mark.under_test("MoE.__init__", "MoE.forward")
def test_float32_and_our_state_dict_loads_into_the_reference():
    ours = nn.MoE(D, FF, E, 2, rng=7)
    theirs = TorchMoE(D, FF, E, 2)
    load_ours_into_torch(theirs, ours, f"MoE({D}, {FF}, num_experts={E}, top_k=2)")
    for name, p in ours.named_parameters():
        assert_tensor(p, f"MoE.{name}", dtype=np.float32)
    x = np.random.default_rng(8).standard_normal((2, 6, D))
    compare_modules(ours, theirs, [x], call_ours=with_aux, call_theirs=with_aux,
                    what=f"MoE({D}, {FF}, num_experts={E}, top_k=2) in float32, our initial state -> (y, aux_loss)",
                    input_names=["x"], dtype=np.float32, unused_may_be_none=True)
