"""Real architectures from Hugging Face transformers, as tiny random configurations (no download):
the factories shared by tests/test_hf_models.py and benchmarks/bench_pruning.py."""

from __future__ import annotations

import torch
import transformers as hf
from torch import nn

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


ONNX_MODELS = {
    # torch.onnx's own attention decomposition: softmax, then where(isnan(p), 0, p)
    "distilbert": (lambda: hf.DistilBertModel(hf.DistilBertConfig(**_TEXT, dim=64, n_layers=2, n_heads=4,
                                                                   hidden_dim=128)), False, 4),
    "mistral": (lambda: hf.MistralForCausalLM(hf.MistralConfig(**_LLM)), False, 5),
    # global response normalization: ReduceL2
    "convnextv2": (lambda: hf.ConvNextV2Model(hf.ConvNextV2Config(**_STAGES, image_size=32)), True, 7),
    "segformer": MODELS["segformer"],
}


def example_input(image: bool) -> torch.Tensor:
    return torch.randn(1, 3, 32, 32) if image else torch.randint(0, 100, (1, 16))
