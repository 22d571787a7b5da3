"""One-node reference cases for the ops of onnxruntime-genai builder graphs (issue 9): ReduceSum,
SimplifiedLayerNormalization, and the com.microsoft contrib ops SkipSimplifiedLayerNormalization, GroupQueryAttention,
MatMulNBits and GatherBlockQuantized. Same format as tools/op_cases/*.py (see tools/make_op_references.py); written by
`tools/make_builder_fixtures.py ops` into fixtures/builder/ops/, references computed by onnxruntime."""
import numpy as np
from onnx import TensorProto

from _builder import make_case

CASES = []
MS = "com.microsoft"


def case(name, op, opset, inputs, attrs=None, outputs=None, domain=None, output_type=None):
    entry = make_case(name, op, opset, inputs, attrs, outputs)
    if domain:
        entry["domain"] = domain
    if output_type is not None:
        entry["output_type"] = output_type
    CASES.append(entry)


rng = np.random.default_rng(9)


def normal(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# --- ReduceSum (13; the builder's seqlens_k = ReduceSum(mask, [1]) - 1 at opset 21/22) -------------------------
mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=np.int64)
case("reducesum_int64_mask", "ReduceSum", 22, [("x", mask), ("axes", np.array([1], dtype=np.int64))],
     attrs={"keepdims": 0})
case("reducesum_keepdims", "ReduceSum", 13, [("x", normal(2, 3, 4)), ("axes", np.array([-1, 0], dtype=np.int64))])
case("reducesum_all_axes", "ReduceSum", 18, [("x", normal(2, 3, 4))], attrs={"keepdims": 0})
case("reducesum_noop", "ReduceSum", 13, [("x", normal(2, 3)), ("axes", np.array([], dtype=np.int64))],
     attrs={"noop_with_empty_axes": 1})

# --- SimplifiedLayerNormalization (default domain, as onnxruntime registers it) --------------------------------
case("simplified_layernorm", "SimplifiedLayerNormalization", 22, [("x", normal(2, 3, 8)), ("scale", normal(8))],
     attrs={"epsilon": 1e-5, "axis": -1}, outputs=["y", "inv_std_var"], output_type=TensorProto.FLOAT)
case("simplified_layernorm_axis1", "SimplifiedLayerNormalization", 22,
     [("x", normal(2, 3, 4)), ("scale", normal(3, 4))], attrs={"epsilon": 1e-3, "axis": 1}, outputs=["y"],
     output_type=TensorProto.FLOAT)

# --- SkipSimplifiedLayerNormalization -----------------------------------------------------------------------
case("skip_simplified_layernorm", "SkipSimplifiedLayerNormalization", 22,
     [("x", normal(2, 3, 16)), ("skip", normal(2, 3, 16)), ("gamma", normal(16))], attrs={"epsilon": 1e-5},
     outputs=["y", "mean", "inv_std_var", "input_skip_bias_sum"], domain=MS, output_type=TensorProto.FLOAT)
case("skip_simplified_layernorm_bias", "SkipSimplifiedLayerNormalization", 22,
     [("x", normal(2, 3, 16)), ("skip", normal(2, 3, 16)), ("gamma", normal(16)), ("bias", normal(16))],
     attrs={"epsilon": 1e-6}, outputs=["y", "mean", "inv_std_var", "input_skip_bias_sum"], domain=MS,
     output_type=TensorProto.FLOAT)
case("skip_simplified_layernorm_output_only", "SkipSimplifiedLayerNormalization", 22,
     [("x", normal(1, 4, 16)), ("skip", normal(1, 4, 16)), ("gamma", normal(16))], attrs={"epsilon": 1e-5},
     domain=MS, output_type=TensorProto.FLOAT)


# --- GroupQueryAttention --------------------------------------------------------------------------------------
def rotary_tables(max_position, half, base=10000.0):
    inverse = 1.0 / base ** (np.arange(half, dtype=np.float64) * 2 / (2 * half))
    angles = np.outer(np.arange(max_position, dtype=np.float64), inverse)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def gqa(name, batch=2, seq=5, heads=4, kv_heads=2, head=16, past=0, seqlens=None, total=None, packed=True,
        rotary=True, half=None, interleaved=False, scale=None, softcap=None, window=None):
    total = seq + past if total is None else total
    seqlens = [total - 1] * batch if seqlens is None else seqlens
    cos, sin = rotary_tables(32, half or head // 2)
    inputs = []
    if packed:
        inputs += [("qkv", normal(batch, seq, (heads + 2 * kv_heads) * head)), ("key", None), ("value", None)]
    else:
        inputs += [("query", normal(batch, seq, heads * head)), ("key", normal(batch, seq, kv_heads * head)),
                   ("value", normal(batch, seq, kv_heads * head))]
    inputs += [("past_key", normal(batch, kv_heads, past, head)), ("past_value", normal(batch, kv_heads, past, head)),
               ("seqlens_k", np.array(seqlens, dtype=np.int32)), ("total_sequence_length", np.array(total, dtype=np.int32))]
    if rotary:
        inputs += [("cos_cache", cos), ("sin_cache", sin)]
    attrs = {"num_heads": heads, "kv_num_heads": kv_heads, "do_rotary": int(rotary), "rotary_interleaved": int(interleaved)}
    if scale is not None:
        attrs["scale"] = scale
    if softcap is not None:
        attrs["softcap"] = softcap
    if window is not None:
        attrs["local_window_size"] = window
    case(name, "GroupQueryAttention", 22, inputs, attrs=attrs, outputs=["output", "present_key", "present_value"],
         domain=MS, output_type=TensorProto.FLOAT)


gqa("gqa_packed_rotary")  # the builder's form: packed qkv, rotary, empty past
gqa("gqa_packed_rotary_interleaved", interleaved=True)
gqa("gqa_separate_no_rotary", packed=False, rotary=False)
gqa("gqa_separate_rotary_scale", packed=False, scale=0.4)
gqa("gqa_softcap", softcap=2.0, seq=4)
gqa("gqa_local_window", window=2, seq=6)
gqa("gqa_partial_rotary", head=32, half=8, heads=2, kv_heads=1, seq=3)
gqa("gqa_heads_equal", heads=2, kv_heads=2, seq=3)
gqa("gqa_decode_with_past", seq=1, past=4)  # one new token after 4 cached ones
gqa("gqa_decode_ragged_past", seq=1, past=5, seqlens=[5, 3], total=6)  # sequence 1 uses 3 of its 5 past rows
gqa("gqa_subsequent_prompt", batch=1, seq=3, past=4)

# --- MatMulNBits -----------------------------------------------------------------------------------------------


def matmulnbits(name, K, N, bits=4, block=32, zero_points=None, bias=False, a_shape=None, accuracy_level=0):
    blocks = (K + block - 1) // block
    packed = rng.integers(0, 256, (N, blocks, block * bits // 8), dtype=np.uint8)
    scales = (rng.random(N * blocks) * 0.1 + 0.01).astype(np.float32)
    inputs = [("a", normal(*(a_shape or (3, K)))), ("b", packed), ("scales", scales)]
    if zero_points == "packed":
        inputs.append(("zero_points", rng.integers(0, 256, (N * ((blocks * bits + 7) // 8),), dtype=np.uint8)))
    elif zero_points == "float":
        inputs.append(("zero_points", (rng.random(N * blocks) * 2 ** bits).astype(np.float32)))
    elif bias:
        inputs.append(("zero_points", None))
    if bias:
        inputs += [("g_idx", None), ("bias", normal(N))]
    case(name, "MatMulNBits", 22, inputs,
         attrs={"K": K, "N": N, "bits": bits, "block_size": block, "accuracy_level": accuracy_level},
         domain=MS, output_type=TensorProto.FLOAT)


matmulnbits("matmulnbits_4bit_block32", 64, 24)  # the builder's form: symmetric (default zero point 8)
matmulnbits("matmulnbits_4bit_block16_ragged_k", 40, 8, block=16, a_shape=(2, 3, 40))
matmulnbits("matmulnbits_4bit_zero_points", 64, 10, block=16, zero_points="packed")
matmulnbits("matmulnbits_4bit_odd_blocks_zero_points", 48, 6, block=16, zero_points="packed")
matmulnbits("matmulnbits_4bit_float_zero_points", 64, 8, block=32, zero_points="float")
matmulnbits("matmulnbits_4bit_bias", 64, 12, block=64, bias=True)
matmulnbits("matmulnbits_4bit_block128", 256, 4, block=128, a_shape=(2, 256))
matmulnbits("matmulnbits_4bit_block256", 256, 4, block=256, a_shape=(2, 256))
matmulnbits("matmulnbits_8bit", 64, 8, bits=8, block=32)
matmulnbits("matmulnbits_8bit_zero_points", 48, 8, bits=8, block=16, zero_points="packed")

# --- GatherBlockQuantized -------------------------------------------------------------------------------------


def gatherblockquantized(name, rows=10, columns=64, bits=4, block=32, zero_points=False, indices=None):
    blocks = (columns + block - 1) // block
    data = rng.integers(0, 256, (rows, columns * bits // 8), dtype=np.uint8)
    inputs = [("data", data), ("indices", np.array(indices or [[0, 3, 9], [9, 1, 3]], dtype=np.int64)),
              ("scales", (rng.random((rows, blocks)) * 0.1 + 0.01).astype(np.float32))]
    if zero_points:
        inputs.append(("zero_points", rng.integers(0, 256, (rows, (blocks * bits + 7) // 8), dtype=np.uint8)))
    case(name, "GatherBlockQuantized", 22, inputs,
         attrs={"bits": bits, "block_size": block, "gather_axis": 0, "quantize_axis": 1}, domain=MS,
         output_type=TensorProto.FLOAT)


gatherblockquantized("gatherblockquantized_4bit")  # the builder's tied-embedding form
gatherblockquantized("gatherblockquantized_4bit_block16_zero_points", block=16, zero_points=True)
gatherblockquantized("gatherblockquantized_8bit", bits=8, block=16, columns=32)
gatherblockquantized("gatherblockquantized_8bit_zero_points", bits=8, block=32, columns=64, zero_points=True)

# --- Other fused ops of onnxruntime-optimised and builder graphs ----------------------------------------------
case("rmsnormalization", "RMSNormalization", 23, [("x", normal(2, 3, 8)), ("scale", normal(8))],
     attrs={"epsilon": 1e-5}, output_type=TensorProto.FLOAT)
case("rmsnormalization_axis1", "RMSNormalization", 23, [("x", normal(2, 3, 4)), ("scale", normal(3, 4))],
     attrs={"epsilon": 1e-3, "axis": 1}, output_type=TensorProto.FLOAT)
case("fastgelu", "FastGelu", 22, [("x", normal(2, 3, 8, scale=2.0))], domain=MS, output_type=TensorProto.FLOAT)
case("fastgelu_bias", "FastGelu", 22, [("x", normal(2, 3, 8, scale=2.0)), ("bias", normal(8))], domain=MS,
     output_type=TensorProto.FLOAT)
case("biasgelu", "BiasGelu", 22, [("a", normal(2, 3, 8, scale=2.0)), ("b", normal(8))], domain=MS,
     output_type=TensorProto.FLOAT)
case("skip_layernorm", "SkipLayerNormalization", 22,
     [("x", normal(2, 3, 16)), ("skip", normal(2, 3, 16)), ("gamma", normal(16)), ("beta", normal(16)),
      ("bias", normal(16))], attrs={"epsilon": 1e-5}, outputs=["y", "mean", "inv_std_var", "input_skip_bias_sum"],
     domain=MS, output_type=TensorProto.FLOAT)
case("skip_layernorm_no_beta", "SkipLayerNormalization", 22,
     [("x", normal(1, 4, 16)), ("skip", normal(1, 4, 16)), ("gamma", normal(16))], attrs={"epsilon": 1e-6},
     domain=MS, output_type=TensorProto.FLOAT)


def rotary(name, shape, position_ids, heads=0, half=8, interleaved=False):
    cos, sin = rotary_tables(32, half)
    attrs = {"interleaved": int(interleaved)}
    if heads:
        attrs["num_heads"] = heads
        if 2 * half < shape[-1] // heads:
            attrs["rotary_embedding_dim"] = 2 * half
    case(name, "RotaryEmbedding", 22, [("x", normal(*shape)), ("position_ids", np.array(position_ids, dtype=np.int64)),
                                       ("cos_cache", cos), ("sin_cache", sin)],
         attrs=attrs, domain=MS, output_type=TensorProto.FLOAT)


rotary("rotary_embedding_3d", (2, 3, 64), [[0, 1, 2], [4, 5, 6]], heads=4)
rotary("rotary_embedding_3d_offset_interleaved", (2, 3, 64), [2], heads=4, interleaved=True)
rotary("rotary_embedding_4d", (2, 4, 3, 16), [[0, 1, 2], [5, 7, 9]])
rotary("rotary_embedding_partial", (1, 3, 64), [[1, 2, 3]], heads=2, half=8)


def rotary23(name, shape, position_ids, heads=0, half=8, interleaved=False):
    """ONNX RotaryEmbedding-23: inputs (X, cos_cache, sin_cache, position_ids); without position_ids the tables
    are per token, [B, S, R/2]."""
    cos, sin = rotary_tables(32, half)
    batch, sequence = shape[0], shape[2] if len(shape) == 4 else shape[1]
    inputs = [("x", normal(*shape))]
    if position_ids is None:
        rows = rng.integers(0, 32, (batch, sequence))
        inputs += [("cos_cache", cos[rows]), ("sin_cache", sin[rows])]
    else:
        inputs += [("cos_cache", cos), ("sin_cache", sin), ("position_ids", np.array(position_ids, dtype=np.int64))]
    attrs = {"interleaved": int(interleaved)}
    if heads:
        attrs["num_heads"] = heads
    case(name, "RotaryEmbedding", 23, inputs, attrs=attrs, output_type=TensorProto.FLOAT)


rotary23("rotary_embedding23_4d", (2, 4, 3, 16), [[0, 1, 2], [5, 7, 9]])
rotary23("rotary_embedding23_3d_interleaved", (2, 3, 64), [[0, 1, 2], [3, 4, 5]], heads=4, interleaved=True)
rotary23("rotary_embedding23_tables_per_token", (2, 4, 3, 16), None)

# --- DequantizeLinear (int8/uint8 onnx-community files: a quantised embedding Gather, then this) --------------
case("dequantizelinear_per_tensor_uint8", "DequantizeLinear", 13,
     [("x", rng.integers(0, 256, (3, 8), dtype=np.uint8)), ("x_scale", np.array(0.02, dtype=np.float32)),
      ("x_zero_point", np.array(128, dtype=np.uint8))], output_type=TensorProto.FLOAT)
case("dequantizelinear_per_tensor_int8_no_zero_point", "DequantizeLinear", 10,
     [("x", rng.integers(-128, 128, (2, 5), dtype=np.int8)), ("x_scale", np.array(0.5, dtype=np.float32))],
     output_type=TensorProto.FLOAT)
case("dequantizelinear_per_axis", "DequantizeLinear", 13,
     [("x", rng.integers(-128, 128, (4, 6), dtype=np.int8)), ("x_scale", (rng.random(6) * 0.1 + 0.01).astype(np.float32)),
      ("x_zero_point", rng.integers(-5, 5, (6,), dtype=np.int8))], attrs={"axis": 1}, output_type=TensorProto.FLOAT)
case("dequantizelinear_per_axis_0", "DequantizeLinear", 19,
     [("x", rng.integers(0, 256, (4, 6), dtype=np.uint8)), ("x_scale", (rng.random(4) * 0.1 + 0.01).astype(np.float32)),
      ("x_zero_point", rng.integers(100, 150, (4,), dtype=np.uint8))], attrs={"axis": 0}, output_type=TensorProto.FLOAT)
case("dequantizelinear_blocked", "DequantizeLinear", 21,
     [("x", rng.integers(-128, 128, (4, 10), dtype=np.int8)),
      ("x_scale", (rng.random((4, 3)) * 0.1 + 0.01).astype(np.float32)),
      ("x_zero_point", rng.integers(-5, 5, (4, 3), dtype=np.int8))], attrs={"axis": 1, "block_size": 4},
     output_type=TensorProto.FLOAT)

# --- Pad (constant; LoRA places a packed projection's part Bᵀ [r, part] into its columns with it) ----------------
case("pad_lora_placement", "Pad", 21, [("x", normal(4, 6)), ("pads", np.array([0, 3, 0, 5], dtype=np.int64))])
case("pad_axes_value_and_crop", "Pad", 18,
     [("x", normal(2, 3, 5)), ("pads", np.array([1, -1, 2, 0], dtype=np.int64)),
      ("constant_value", np.array(0.5, dtype=np.float32)), ("axes", np.array([0, -1], dtype=np.int64))])
case("pad_rank0_rows", "Pad", 13, [("x", np.zeros((0, 6), dtype=np.float32)), ("pads", np.array([0, 2, 0, 1], dtype=np.int64))])

# --- MatMulNBits over many rows of A (more than the 16 read directly): the GEMM path, W dequantised one panel of
# 128 rows at a time per thread (its backward 512 at a time), so N spans several panels; appended last (after Pad)
# to keep the random draws of the cases above.
matmulnbits("matmulnbits_4bit_many_rows_panels", 32, 520, a_shape=(1, 17, 32))
matmulnbits("matmulnbits_4bit_many_rows_ragged_zero_points", 40, 260, block=16, zero_points="packed", a_shape=(17, 40))
matmulnbits("matmulnbits_8bit_many_rows_bias", 32, 140, bits=8, block=16, bias=True, a_shape=(17, 32))
