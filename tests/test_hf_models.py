"""Real architectures from Hugging Face transformers (tiny random configs, no download): the trace
equals eager, attention heads and MLPs are prunable, and pruning half the channels passes the
masked-reference contract and exports to onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers as hf
from torch import nn

import graphprune as gp

pytestmark = pytest.mark.slow

_TEXT = dict(vocab_size=100, max_position_embeddings=32)
_LLM = dict(_TEXT, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128)
_STAGES = dict(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1])

# name -> (model factory, takes an image, prunable groups at least)
MODELS = {
    "bert": (lambda: hf.BertModel(hf.BertConfig(**_TEXT, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=128)), False, 4),
    "gpt2": (lambda: hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=100, n_positions=32, n_embd=64, n_layer=2,
                                                       n_head=4)), False, 5),
    "llama": (lambda: hf.LlamaForCausalLM(hf.LlamaConfig(**_LLM)), False, 5),
    "qwen2": (lambda: hf.Qwen2ForCausalLM(hf.Qwen2Config(**_LLM)), False, 5),
    "t5_encoder": (lambda: hf.T5EncoderModel(hf.T5Config(vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                                          num_heads=4)), False, 4),
    "falcon": (lambda: hf.FalconForCausalLM(hf.FalconConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2,
                                                             num_attention_heads=4)), False, 3),
    # ALiBi: an attention bias per head, sliced with the heads
    "bloom": (lambda: hf.BloomForCausalLM(hf.BloomConfig(vocab_size=100, hidden_size=64, n_layer=2, n_head=4)), False, 4),
    # relative position bias per head, windowed attention
    "swin": (lambda: hf.SwinModel(hf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                                window_size=4)), True, 5),
    "beit": (lambda: hf.BeitModel(hf.BeitConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=128,
                                                use_relative_position_bias=True)), True, 4),
    # a single-head stage, sequence-reduced keys and values
    "segformer": (lambda: hf.SegformerModel(hf.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                                               hidden_sizes=[16, 32], num_attention_heads=[1, 2],
                                                               patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2])),
                  True, 7),
    "efficientnet": (lambda: hf.EfficientNetModel(hf.EfficientNetConfig(image_size=32, width_coefficient=0.5,
                                                                        depth_coefficient=0.5, hidden_dim=640)), True, 25),
    "vit": (lambda: hf.ViTModel(hf.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=128)), True, 4),
    "convnext": (lambda: hf.ConvNextModel(hf.ConvNextConfig(**_STAGES, image_size=32)), True, 7),
    "resnet": (lambda: hf.ResNetModel(hf.ResNetConfig(embedding_size=16, **_STAGES, layer_type="bottleneck")), True,
               11),
    "mobilevit": (lambda: hf.MobileViTModel(hf.MobileViTConfig(image_size=32, hidden_sizes=[32, 48, 64],
                                                               neck_hidden_sizes=[16, 16, 24, 24, 32, 32, 64])),
                  True, 40),
}


class FirstOutput(nn.Module):
    """The model's first output (last hidden state or logits) as a plain tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[gp.Graph, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = gp.trace(model, (x,))
        with torch.no_grad():
            return graph, model(x).numpy()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hugging_face_model_prunes_exactly(name, tmp_path):
    factory, image, min_groups = MODELS[name]
    torch.manual_seed(0)
    model = FirstOutput(factory()).eval()
    x = torch.randn(1, 3, 32, 32) if image else torch.randint(0, 100, (1, 16))
    # float64: the trace equals eager (HF computes rotary tables in float32 even in a double model,
    # hence 1e-6), and pruning passes the masked-reference contract
    x64 = x.double() if image else x
    graph, eager = _trace(model.double(), x64)
    np.testing.assert_allclose(graph.run(x64.numpy())[0], eager, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(eager).max()))
    groups = gp.coupling_groups(graph)
    assert sum(g.prunable for g in groups) >= min_groups
    pruned = gp.prune(graph, 0.5, round_to=1, verify=True)
    assert gp.cost(pruned).params < 0.8 * gp.cost(graph).params
    # float32 (what onnxruntime runs): the pruned export equals the interpreter
    graph32, _ = _trace(model.float(), x)
    pruned32 = gp.prune(graph32, 0.5, round_to=1)
    path = tmp_path / f"{name}.onnx"
    gp.save(pruned32, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    want = pruned32.run(x.numpy(), dtype="float32")[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


ONNX_MODELS = {
    # torch.onnx's own attention decomposition: softmax, then where(isnan(p), 0, p)
    "distilbert": (lambda: hf.DistilBertModel(hf.DistilBertConfig(**_TEXT, dim=64, n_layers=2, n_heads=4,
                                                                   hidden_dim=128)), False, 4),
    "mistral": (lambda: hf.MistralForCausalLM(hf.MistralConfig(**_LLM)), False, 5),
    # global response normalization: ReduceL2
    "convnextv2": (lambda: hf.ConvNextV2Model(hf.ConvNextV2Config(**_STAGES, image_size=32)), True, 7),
    "segformer": MODELS["segformer"],
}


@pytest.mark.parametrize("name", sorted(ONNX_MODELS))
def test_hugging_face_onnx_export_prunes_exactly(name, tmp_path):
    """The same through torch.onnx.export (the dynamo exporter, optimized): its decompositions, and its
    deduplicated initializers (the zero biases and unit norm scales of every layer become one tensor)."""
    import contextlib
    import io

    factory, image, min_groups = ONNX_MODELS[name]
    torch.manual_seed(0)
    model = FirstOutput(factory()).eval()
    x = torch.randn(1, 3, 32, 32) if image else torch.randint(0, 100, (1, 16))
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=True, optimize=True)
    graph = gp.load(path)
    assert sum(g.prunable for g in gp.coupling_groups(graph)) >= min_groups
    pruned = gp.prune(graph, 0.5, round_to=1, verify=True)
    assert gp.cost(pruned).params < 0.8 * gp.cost(graph).params
    gp.save(pruned, tmp_path / "pruned.onnx")
    sess = ort.InferenceSession(str(tmp_path / "pruned.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    want = pruned.run(x.numpy(), dtype="float32")[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))
