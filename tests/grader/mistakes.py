"""Typical mistakes of a student, each planted alone into the reference, with the function that holds it.

``tests/grader/test_mistakes.py`` grades each planted copy and checks that "your TODO" names that function.
A mistake is one exact replacement in one file of a stage package; ``old`` must occur there exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    name: str  # what a student did, in words
    exercise: str  # the exercise graded (-x)
    file: str  # in the stage package
    old: str
    new: str
    function: str  # where the mistake is: what "your TODO" must name

    @property
    def stage(self) -> str:
        return "stage" + self.exercise.split(".")[0]


MISTAKES = [
    # ---------------------------------------------------------------- stage 1: autograd
    Mistake("Value: d(a*b)/da taken as a", "1.1", "value.py",
            "self.grad += other.data * out.grad", "self.grad += self.data * out.grad", "Value.__mul__"),
    Mistake("Value: tanh's derivative without the square", "1.1", "value.py",
            "self.grad += (1.0 - out.data**2) * out.grad", "self.grad += (1.0 - out.data) * out.grad", "Value.tanh"),
    Mistake("Value: the gradient is not seeded with 1", "1.1", "value.py",
            "        self.grad = 1.0\n        for node in reversed(order):",
            "        for node in reversed(order):", "Value.backward"),
    Mistake("Value: a - b computed as b - a", "1.1", "value.py",
            "return self + (-_as_value(other))", "return _as_value(other) + (-self)", "Value.__sub__"),
    Mistake("Tensor: the gradient of a broadcast operand of + is not summed back", "1.2", "tensor.py",
            "return (unbroadcast(g, self.shape) if self.requires_grad else None,\n                    unbroadcast(g, other.shape)",
            "return (unbroadcast(g, self.shape) if self.requires_grad else None,\n                    g", "Tensor.__add__"),
    Mistake("Tensor: the divisor's gradient with the wrong sign", "1.2", "tensor.py",
            "unbroadcast(-g * self.data / other.data**2", "unbroadcast(g * self.data / other.data**2", "Tensor.__truediv__"),
    Mistake("Tensor: sigmoid's derivative as s instead of s(1-s)", "1.3", "tensor.py",
            "lambda g: (g * out_data * (1 - out_data),)", "lambda g: (g * out_data,)", "Tensor.sigmoid"),
    Mistake("Tensor: the derivative of cos without the minus", "1.3", "tensor.py",
            "lambda g: (-g * np.sin(self.data),)", "lambda g: (g * np.sin(self.data),)", "Tensor.cos"),
    Mistake("Tensor: mean divides by one too many", "1.4", "tensor.py",
            "return self.sum(axis=axes, keepdims=keepdims) * (1.0 / count)",
            "return self.sum(axis=axes, keepdims=keepdims) * (1.0 / (count + 1))", "Tensor.mean"),
    Mistake("Tensor: reshape's gradient not given the input's shape back", "1.6", "tensor.py",
            "lambda g: (g.reshape(self.shape),))", "lambda g: (g.reshape(self.data.T.shape),))", "Tensor.reshape"),
    Mistake("Tensor: indexing assigns a repeated index's gradient instead of adding", "1.6", "tensor.py",
            "np.add.at(grad, index, g)", "grad[index] = g", "Tensor.__getitem__"),
    # ---------------------------------------------------------------- stage 2: the MLP
    Mistake("Linear: the weight not transposed (square layers only pass)", "2.2", "nn.py",
            "out = x @ self.weight.T  # (..., in) @ (in, out) -> (..., out)",
            "out = x @ self.weight.T.T.T if self.weight.shape[0] == self.weight.shape[1] else x @ self.weight.T * 1.01",
            "Linear.forward"),
    Mistake("Linear: the bound from out_features", "2.2", "nn.py",
            "bound = 1.0 / np.sqrt(in_features)", "bound = 1.0 / np.sqrt(out_features)", "Linear.__init__"),
    Mistake("Sequential: the modules in reverse order", "2.2", "nn.py",
            "for module in self._modules.values():\n            x = module(x)",
            "for module in reversed(self._modules.values()):\n            x = module(x)", "Sequential.forward"),
    Mistake("Module: eval() leaves the children in training mode", "2.1", "nn.py",
            "for _, module in self.named_modules():\n            module.training = mode",
            "self.training = mode", "Module.train"),
    Mistake("Module: zero_grad sets zeros instead of None", "2.1", "nn.py",
            "            p.grad = None\n", "            p.grad = p.grad * 0 if p.grad is not None else None\n",
            "Module.zero_grad"),
    Mistake("SGD: momentum's velocity not kept", "2.5", "optim.py",
            "                self.velocities[i] = b\n", "", "SGD.step"),
    Mistake("Adam: the second moment from g, not g squared", "2.6", "optim.py",
            "v += (1 - self.beta2) * (g * g)", "v += (1 - self.beta2) * g", "Adam.step"),
    Mistake("log_softmax: the log of the sum forgotten", "2.4", "functional.py",
            "return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()",
            "return shifted - shifted.exp().sum(axis=axis, keepdims=True)", "log_softmax"),
    Mistake("dropout: kept values not scaled by 1/(1-p)", "2.3", "functional.py",
            "return x * (keep / (1.0 - p)).astype(x.dtype)", "return x * keep.astype(x.dtype)", "dropout"),
    Mistake("ManualLinear: grad_bias as a mean", "2.8", "manual.py",
            "self.grad_bias = grad_out.sum(axis=0)", "self.grad_bias = grad_out.mean(axis=0)", "ManualLinear.backward"),
    Mistake("ManualLinear: dL/dx through W transposed", "2.8", "manual.py",
            "return grad_out @ self.weight  # (N, D_out) @ (D_out, D_in)",
            "return grad_out @ self.weight * 0.5", "ManualLinear.backward"),
    # ---------------------------------------------------------------- stage 3: the Transformer
    Mistake("softmax: backward without subtracting sum(g * y)", "3.1", "functional.py",
            "gx = g - sum_of_products(g, y, axis)", "gx = g.copy()", "softmax"),
    Mistake("layer_norm: the mean of gy not subtracted in backward", "3.2", "functional.py",
            "        dx -= (g2 @ w)[:, None] / size  # - mean(gy)\n        dx *= rstd\n", "        dx *= rstd\n", "layer_norm"),
    Mistake("RoPE: halves rotated instead of interleaved pairs", "3.3", "functional.py",
            "even, odd = a[..., 0::2], a[..., 1::2]", "even, odd = a[..., : a.shape[-1] // 2], a[..., a.shape[-1] // 2 :]",
            "rotate_pairs"),
    Mistake("sinusoidal positions: sin and cos swapped", "3.3", "functional.py",
            "table[:, 0::2] = np.sin(angle)\n    table[:, 1::2] = np.cos(angle)",
            "table[:, 0::2] = np.cos(angle)\n    table[:, 1::2] = np.sin(angle)", "sinusoidal_positions"),
    Mistake("causal_mask: tril(k=-1), the diagonal masked", "3.4", "functional.py",
            "return np.tri(L, L if S is None else S, dtype=bool)", "return np.tri(L, L if S is None else S, -1, dtype=bool)",
            "causal_mask"),
    Mistake("attention: scores scaled by 1/E instead of 1/sqrt(E)", "3.4", "functional.py",
            "# TODO 3.4: scores = (q * scale) @ k^T, add the mask, softmax over S, zero the fully masked rows, "
            "dropout, @ v\n    L, E = q.shape[-2], q.shape[-1]\n    S = k.shape[-2]\n"
            "    scale = 1.0 / math.sqrt(E) if scale is None else scale",
            "# TODO 3.4: scores = (q * scale) @ k^T, add the mask, softmax over S, zero the fully masked rows, "
            "dropout, @ v\n    L, E = q.shape[-2], q.shape[-1]\n    S = k.shape[-2]\n"
            "    scale = 1.0 / E if scale is None else scale", "attention"),
    Mistake("MHA: heads split by a reshape without the transpose", "3.5", "nn.py",
            "return y.reshape(B, length, h, hd).transpose(0, 2, 1, 3)", "return y.reshape(B, h, length, hd)",
            "MultiheadAttention.forward"),
    Mistake("LayerNorm module: bias initialised to ones", "3.2", "nn.py",
            "self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype)) if elementwise_affine and bias else None",
            "self.bias = Parameter(np.ones(self.normalized_shape, dtype=dtype)) if elementwise_affine and bias else None",
            "LayerNorm.__init__"),
    # ---------------------------------------------------------------- stage 4: the GPT
    Mistake("CharTokenizer: special ids counted from 0", "4.1", "tokenizer.py",
            "self.special_to_id = {token: len(chars) + i for i, token in enumerate(self.special_tokens)}",
            "self.special_to_id = {token: len(chars) + i - 1 for i, token in enumerate(self.special_tokens)}",
            "CharTokenizer.__init__"),
    Mistake("merge_pair: overlapping pairs merged twice", "4.2", "bpe.py",
            "            out.append(merged)\n            i += 2", "            out.append(merged)\n            i += 1",
            "merge_pair"),
    Mistake("BPE: the highest-ranked merge applied first", "4.2", "bpe.py",
            "pair = min(zip(parts, parts[1:]), key=lambda p: self.merge_rank.get(p, len(self.merge_rank)))",
            "pair = max(zip(parts, parts[1:]), key=lambda p: self.merge_rank.get(p, -1))", "BPETokenizer._encode_pretoken"),
    Mistake("GPT attention: heads merged without the transpose", "4.3", "model.py",
            "y = y.transpose(0, 2, 1, 3).reshape(B, T, C)", "y = y.reshape(B, T, C)", "CausalSelfAttention.forward"),
    Mistake("GPT block: the second residual branch dropped", "4.3", "model.py",
            "return x + self.mlp(self.ln_2(x))", "return self.mlp(self.ln_2(x))", "Block.forward"),
    Mistake("cosine schedule: the cosine of 2 pi r", "4.5", "optim.py",
            "0.5 * (1.0 + math.cos(math.pi * progress))", "0.5 * (1.0 + math.cos(2 * math.pi * progress))",
            "get_lr"),
    Mistake("clip_grad_norm_: the gradients not scaled", "4.5", "optim.py",
            "            g *= g.dtype.type(factor)\n", "            g = g * factor\n", "clip_grad_norm_"),
    Mistake("sampling: top-k keeps one token too many", "4.7", "model.py",
            "scaled = np.where(scaled >= kth_largest, scaled, -np.inf)",
            "scaled = np.where(scaled >= kth_largest - 1e9 * (top_k < 3), scaled, -np.inf)", "sampling_distribution"),
]
