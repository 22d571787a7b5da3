"""One-node reference cases for the attention ops of issue 9 beside GroupQueryAttention: com.microsoft
MultiHeadAttention (as onnxruntime's CPU kernel computes it) and ONNX Attention (opsets 23 and 24). Same format as
tools/op_cases/*.py (see tools/make_op_references.py); written by `tools/make_attention_fixtures.py ops` into
fixtures/attention/ops/, references computed by onnxruntime.

Covered: separate 3D and per-head 4D key/value, bias, every key_padding_mask form the CPU kernel reads ([B],
[3B + 2], [B, T], [B, S, T]), attention_bias broadcast over batch or heads, past/present KV, unidirectional and
is_causal (with a past: the frontier moves by the past length), scale, softcap, mask_filter_value, GQA and MQA
grouping, 3D and 4D Attention, bool and float attn_mask (fully masked rows included), Attention-24's
nonpad_kv_seqlen (with is_causal: bottom-right aligned), the qk outputs of both ops
and every qk_matmul_output_mode."""
import numpy as np
from onnx import TensorProto

from _builder import make_case

CASES = []
MS = "com.microsoft"


def case(name, op, opset, inputs, attrs=None, outputs=None, domain=None):
    entry = make_case(name, op, opset, inputs, attrs, outputs)
    if domain:
        entry["domain"] = domain
    entry["output_type"] = TensorProto.FLOAT
    CASES.append(entry)


rng = np.random.default_rng(23)


def normal(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# --- com.microsoft MultiHeadAttention ---------------------------------------------------------------------------
def mha(name, batch=2, seq=3, heads=2, head=4, kv_seq=None, value_head=None, bias=False, mask=None, attention_bias=None,
        past=0, per_head_kv=False, qk=False, **attrs):
    kv_seq = seq if kv_seq is None else kv_seq
    value_head = value_head or head
    total = past + kv_seq
    inputs = [("query", normal(batch, seq, heads * head))]
    if per_head_kv:
        inputs += [("key", normal(batch, heads, kv_seq, head)), ("value", normal(batch, heads, kv_seq, value_head))]
    else:
        inputs += [("key", normal(batch, kv_seq, heads * head)), ("value", normal(batch, kv_seq, heads * value_head))]
    inputs.append(("bias", normal(2 * heads * head + heads * value_head, scale=0.5) if bias else None))
    inputs.append(("key_padding_mask", None if mask is None else np.asarray(mask, dtype=np.int32)))
    inputs.append(("attention_bias", None if attention_bias is None else normal(*attention_bias(batch, heads, seq, total))))
    if past:
        inputs += [("past_key", normal(batch, heads, past, head)), ("past_value", normal(batch, heads, past, value_head))]
    while inputs[-1][1] is None:
        inputs.pop()
    outputs = ["output", "present_key", "present_value"] if past or qk else ["output"]
    if qk:
        outputs.append("qk")
    case(name, "MultiHeadAttention", 22, inputs, attrs={"num_heads": heads, **attrs}, outputs=outputs, domain=MS)


mha("mha_separate")
mha("mha_bias", bias=True, seq=4)
mha("mha_mask_lengths", mask=[2, 3])                                   # [B]: key counts (right padding)
mha("mha_mask_lengths_with_starts", mask=[2, 3, 1, 0, 0, 0, 0, 0])     # [3B + 2]: the CPU kernel reads [B]
mha("mha_mask_2d", mask=[[1, 1, 0], [1, 1, 1]], bias=True)            # [B, T]: the exporters' padding mask
mha("mha_mask_3d", mask=rng.integers(0, 2, (2, 3, 3)) | np.eye(3, dtype=np.int64))
mha("mha_mask_fully_masked_row", mask=[[0, 0, 0], [1, 1, 0]])         # a sequence with no key: -10000 everywhere
mha("mha_mask_filter_value", mask=[[1, 0, 1], [1, 1, 1]], mask_filter_value=-3.0)
mha("mha_attention_bias_per_head", attention_bias=lambda b, n, s, t: (1, n, s, t))
mha("mha_attention_bias_per_batch", attention_bias=lambda b, n, s, t: (b, 1, s, t), mask=[[1, 1, 1], [1, 1, 0]])
mha("mha_unidirectional", unidirectional=1, seq=4)
mha("mha_unidirectional_past", unidirectional=1, past=2, bias=True, mask=[[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
mha("mha_decode_past", unidirectional=1, seq=1, past=4)                # one new token after 4 cached ones
mha("mha_scale", scale=0.3, heads=4, head=2)
mha("mha_cross_attention", kv_seq=5, value_head=6)                     # L != S, Hv != H
mha("mha_per_head_key_value", per_head_kv=True, kv_seq=5)
mha("mha_qk_output", qk=True, attention_bias=lambda b, n, s, t: (1, 1, s, t))


# --- ONNX Attention (23, 24) -----------------------------------------------------------------------------------
def attention(name, batch=2, seq=3, q_heads=2, kv_heads=2, head=4, value_head=None, kv_seq=None, three_d=False,
              mask=None, past=0, opset=23, qk_mode=None, nonpad=None, **attrs):
    kv_seq = seq if kv_seq is None else kv_seq
    value_head = value_head or head
    total = past + kv_seq
    if three_d:
        inputs = [("Q", normal(batch, seq, q_heads * head)), ("K", normal(batch, kv_seq, kv_heads * head)),
                  ("V", normal(batch, kv_seq, kv_heads * value_head))]
        attrs.update(q_num_heads=q_heads, kv_num_heads=kv_heads)
    else:
        inputs = [("Q", normal(batch, q_heads, seq, head)), ("K", normal(batch, kv_heads, kv_seq, head)),
                  ("V", normal(batch, kv_heads, kv_seq, value_head))]
    inputs.append(("attn_mask", None if mask is None else mask(batch, q_heads, seq, total)))
    if past:
        inputs += [("past_key", normal(batch, kv_heads, past, head)), ("past_value", normal(batch, kv_heads, past, value_head))]
    if nonpad is not None:
        inputs += [("past_key", None), ("past_value", None), ("nonpad_kv_seqlen", np.array(nonpad, dtype=np.int64))]
    while inputs[-1][1] is None:
        inputs.pop()
    outputs = ["Y", "present_key", "present_value"] if past or qk_mode is not None else ["Y"]
    if qk_mode is not None:
        outputs.append("qk_matmul_output")
        attrs["qk_matmul_output_mode"] = qk_mode
    case(name, "Attention", opset, inputs, attrs=attrs, outputs=outputs)


def bool_mask(*shape):
    keep = rng.random(shape) < 0.7
    keep[..., 0] = True  # every row attends somewhere unless a case says otherwise
    return keep


attention("attention_4d")
attention("attention_4d_gqa", q_heads=4, kv_heads=2)
attention("attention_3d_gqa", q_heads=4, kv_heads=2, three_d=True)
attention("attention_mqa", q_heads=4, kv_heads=1, value_head=6, kv_seq=5)
attention("attention_causal", is_causal=1, seq=4, q_heads=4, kv_heads=2)
attention("attention_bool_mask", mask=lambda b, n, s, t: bool_mask(s, t))
attention("attention_bool_mask_fully_masked_row",
          mask=lambda b, n, s, t: np.array([[False] * t] + [[True] * t] * (s - 1)), is_causal=1)
attention("attention_float_mask_per_batch", mask=lambda b, n, s, t: normal(b, 1, s, t))
attention("attention_float_mask_per_head", mask=lambda b, n, s, t: normal(1, n, s, t), q_heads=4, kv_heads=2)
attention("attention_float_mask_minus_infinity_row",
          mask=lambda b, n, s, t: np.where(np.arange(s)[:, None] == 1, -np.inf, 0).astype(np.float32) + np.zeros((s, t), np.float32))
attention("attention_past_causal", past=2, is_causal=1, q_heads=4, kv_heads=2)
attention("attention_3d_decode_past", three_d=True, seq=1, past=4, is_causal=1, q_heads=4, kv_heads=2)
attention("attention_3d_past_bool_mask", three_d=True, past=2, mask=lambda b, n, s, t: bool_mask(b, 1, s, t))
attention("attention_scale_softcap", scale=0.6, softcap=1.5, is_causal=1)
attention("attention_softcap_float_mask", softcap=2.0, mask=lambda b, n, s, t: normal(s, t))
attention("attention_softmax_precision", softmax_precision=1, q_heads=4, kv_heads=2)
attention("attention_opset24_gqa_causal", opset=24, q_heads=4, kv_heads=2, is_causal=1, seq=4)
# Attention-24's external cache: K and V hold 5 slots, nonpad_kv_seqlen says how many are real per sequence; is_causal
# aligns bottom-right (offset nonpad - S; sequence 0's offset -1 leaves its first query row with no key).
attention("attention24_nonpad_kv_seqlen", opset=24, kv_seq=5, nonpad=[5, 3], q_heads=4, kv_heads=2)
attention("attention24_nonpad_kv_seqlen_causal", opset=24, kv_seq=5, nonpad=[2, 4], is_causal=1)
attention("attention24_nonpad_kv_seqlen_mask", opset=24, kv_seq=5, nonpad=[4, 3], is_causal=1, three_d=True,
          mask=lambda b, n, s, t: normal(s, t))
for mode in range(4):
    attention(f"attention_qk_mode_{mode}", qk_mode=mode, softcap=2.0, mask=lambda b, n, s, t: normal(s, t))
