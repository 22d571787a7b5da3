// Few-row products with a block-quantised weight read where it lies (onnxruntime's MatMulNBits layout): decoding,
// where A is one token per sequence and reading the weight is the whole cost. Each weight is made in a register
// as (float(q) - z) * s, exactly the value a dequantised GEMM reads, and multiplied into up to four rows of A at
// once, so the weight is read and widened once per four rows.
//
// Per ISA: AVX-512F (16 lanes), AVX2 + FMA (8 lanes), and a portable loop for the rest (NEON builds vectorise it).
// The vector paths unpack 32 four-bit codes from 16 bytes: widened to 16-bit lanes as (high nibble << 8 | low
// nibble), the 32 bytes are the codes in k order (a byte's low nibble is the even k, its high nibble the odd one).
#include "internal.h"

#include <stdlib.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

// The geometry of one product, shared by every ISA's loop.
typedef struct {
    size_t k, block_size, blocks, blob_bytes;
    int bits;
    const uint8_t *b;
    const float *scales, *zero_points;
    float default_zero_point;
} nbits_weight;

static inline float nbits_zero_point(const nbits_weight *w, size_t index) {
    return w->zero_points ? w->zero_points[index] : w->default_zero_point;
}

// One block of output n's weights: its first k, how many codes it holds (fewer in a ragged last block), its bytes,
// zero point and scale.
typedef struct {
    size_t k0, count;
    const uint8_t *blob;
    float z, s;
} nbits_block;

static inline nbits_block nbits_block_at(const nbits_weight *w, size_t n, size_t block) {
    const size_t index = n * w->blocks + block, k0 = block * w->block_size;
    const nbits_block result = {k0, w->k - k0 < w->block_size ? w->k - k0 : w->block_size,
                                w->b + index * w->blob_bytes, nbits_zero_point(w, index), w->scales[index]};
    return result;
}

// Code `i` of a block's bytes.
static inline unsigned nbits_code(const uint8_t *blob, size_t i, int bits) {
    return bits == 4 ? (blob[i >> 1] >> ((i & 1) * 4)) & 0x0F : blob[i];
}

// Weights i0 ..< count of one block, one at a time (tails, and every weight on the portable path): each row's
// running sum gets (float(q) - z) * s * a.
static inline void nbits_scalar_run(int rows, const float *const *a, size_t k0, const uint8_t *blob, int bits,
                                    size_t i0, size_t count, float z, float s, float *sums) {
    for (size_t i = i0; i < count; i++) {
        const float w = ((float)nbits_code(blob, i, bits) - z) * s;
        for (int r = 0; r < rows; r++) sums[r] += w * a[r][k0 + i];
    }
}

static void portable_rows(const nbits_weight *w, int rows, const float *const *a, const float *halves, size_t n,
                          float *sums) {
    (void)halves;
    for (int r = 0; r < rows; r++) sums[r] = 0;
    for (size_t block = 0; block < w->blocks; block++) {
        const nbits_block at = nbits_block_at(w, n, block);
        nbits_scalar_run(rows, a, at.k0, at.blob, w->bits, 0, at.count, at.z, at.s, sums);
    }
}

#if defined(__x86_64__) || defined(_M_X64)

#define INLINE static inline __attribute__((always_inline))
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))

// 8 bytes -> their 16 four-bit codes in k order, one per byte: each byte widened to 16 bits as
// (high nibble << 8 | low nibble). Used by the AVX2 loop and, inlined, by the AVX-512 one.
INLINE AVX2 __m128i nbits_codes16(const uint8_t *bytes) {
    const __m128i wide = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)bytes));
    return _mm_or_si128(_mm_and_si128(wide, _mm_set1_epi16(0x0F)), _mm_slli_epi16(_mm_srli_epi16(wide, 4), 8));
}

// `rows` (1-4, a constant where inlined) sums of one output n on AVX-512.
INLINE AVX512 void avx512_rows_n(const nbits_weight *w, const int rows, const float *const *a, const float *halves,
                                 size_t n, float *sums) {
    // Two sums per row (even and odd 16-weight groups) so that consecutive FMAs do not wait on each other.
    __m512 acc[4], odd[4];
    float tail[4] = {0, 0, 0, 0};
    for (int r = 0; r < rows; r++) acc[r] = odd[r] = _mm512_setzero_ps();
    const __m256i low_nibbles = _mm256_set1_epi16(0x0F);
    size_t first_ragged = 0;
    if (halves) {
        // Whole blocks of 4-bit codes (every block but a ragged last one), 32 codes per step. 16 bytes widen to 16
        // lanes, each lane's low nibble an even k and its high nibble the odd k after it, so each half meets the
        // even or odd elements of A (`halves`: A's rows split once per call). A code becomes its weight by a lookup
        // in the block's table of the 16 values (float(q) - z) * s, one permute instead of convert, subtract and
        // multiply.
        const size_t whole = w->k / w->block_size, steps = w->block_size / 32, half_k = w->k / 2;
        const __m512 codes_0_15 = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        const __m512i nibble = _mm512_set1_epi32(0x0F);
        const float *even[4], *odd_a[4];
        for (int r = 0; r < rows; r++) even[r] = halves + ((size_t)r * 2) * half_k, odd_a[r] = even[r] + half_k;
        for (size_t block = 0; block < whole; block++) {
            const nbits_block at = nbits_block_at(w, n, block);
            const __m512 table = _mm512_mul_ps(_mm512_sub_ps(codes_0_15, _mm512_set1_ps(at.z)), _mm512_set1_ps(at.s));
            for (size_t step = 0; step < steps; step++) {
                const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(at.blob + step * 16)));
                const __m512 low = _mm512_permutexvar_ps(_mm512_and_si512(bytes, nibble), table);
                const __m512 high = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table);
                const size_t pair = at.k0 / 2 + step * 16;  // the first (even, odd) pair of k this step covers
                for (int r = 0; r < rows; r++) {
                    acc[r] = _mm512_fmadd_ps(low, _mm512_loadu_ps(even[r] + pair), acc[r]);
                    odd[r] = _mm512_fmadd_ps(high, _mm512_loadu_ps(odd_a[r] + pair), odd[r]);
                }
            }
        }
        first_ragged = whole;
    }
    for (size_t block = first_ragged; block < w->blocks; block++) {
        const nbits_block at = nbits_block_at(w, n, block);
        const size_t k0 = at.k0, count = at.count;
        const uint8_t *blob = at.blob;
        const __m512 z = _mm512_set1_ps(at.z), s = _mm512_set1_ps(at.s);
        size_t i = 0;
        if (w->bits == 4) {
            for (; i + 32 <= count; i += 32) {
                const __m256i wide = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(blob + i / 2)));
                const __m256i codes = _mm256_or_si256(_mm256_and_si256(wide, low_nibbles),
                                                      _mm256_slli_epi16(_mm256_srli_epi16(wide, 4), 8));
                const __m512 w0 = _mm512_mul_ps(
                    _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(codes))), z), s);
                const __m512 w1 = _mm512_mul_ps(
                    _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(codes, 1))), z), s);
                for (int r = 0; r < rows; r++) {
                    acc[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(a[r] + k0 + i), acc[r]);
                    odd[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(a[r] + k0 + i + 16), odd[r]);
                }
            }
            if (i + 16 <= count) {
                const __m128i codes = nbits_codes16(blob + i / 2);
                const __m512 w0 = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes)), z), s);
                for (int r = 0; r < rows; r++) acc[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(a[r] + k0 + i), acc[r]);
                i += 16;
            }
        } else {
            for (; i + 16 <= count; i += 16) {
                const __m512 w0 = _mm512_mul_ps(
                    _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blob + i)))), z), s);
                for (int r = 0; r < rows; r++) acc[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(a[r] + k0 + i), acc[r]);
            }
        }
        if (i < count) nbits_scalar_run(rows, a, k0, blob, w->bits, i, count, at.z, at.s, tail);
    }
    for (int r = 0; r < rows; r++) sums[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r], odd[r])) + tail[r];
}

static AVX512 void avx512_rows(const nbits_weight *w, int rows, const float *const *a, const float *halves, size_t n,
                               float *sums) {
    switch (rows) {
    case 1: avx512_rows_n(w, 1, a, halves, n, sums); break;
    case 2: avx512_rows_n(w, 2, a, halves, n, sums); break;
    case 3: avx512_rows_n(w, 3, a, halves, n, sums); break;
    default: avx512_rows_n(w, 4, a, halves, n, sums); break;
    }
}

// Eight floats of int32 lanes -> (float(q) - z) * s.
INLINE AVX2 __m256 avx2_weights(__m128i codes8, __m256 z, __m256 s) {
    return _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes8)), z), s);
}

INLINE AVX2 void avx2_rows_n(const nbits_weight *w, const int rows, const float *const *a, size_t n, float *sums) {
    __m256 acc[4], odd[4];
    float tail[4] = {0, 0, 0, 0};
    for (int r = 0; r < rows; r++) acc[r] = odd[r] = _mm256_setzero_ps();
    for (size_t block = 0; block < w->blocks; block++) {
        const nbits_block at = nbits_block_at(w, n, block);
        const size_t k0 = at.k0, count = at.count;
        const uint8_t *blob = at.blob;
        const __m256 z = _mm256_set1_ps(at.z), s = _mm256_set1_ps(at.s);
        size_t i = 0;
        if (w->bits == 4) {
            for (; i + 16 <= count; i += 16) {
                // 16 codes, as two groups of eight.
                const __m128i codes = nbits_codes16(blob + i / 2);
                const __m256 w0 = avx2_weights(codes, z, s), w1 = avx2_weights(_mm_srli_si128(codes, 8), z, s);
                for (int r = 0; r < rows; r++) {
                    acc[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a[r] + k0 + i), acc[r]);
                    odd[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(a[r] + k0 + i + 8), odd[r]);
                }
            }
        } else {
            for (; i + 8 <= count; i += 8) {
                const __m256 w0 = avx2_weights(_mm_loadl_epi64((const __m128i *)(blob + i)), z, s);
                for (int r = 0; r < rows; r++) acc[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a[r] + k0 + i), acc[r]);
            }
        }
        if (i < count) nbits_scalar_run(rows, a, k0, blob, w->bits, i, count, at.z, at.s, tail);
    }
    for (int r = 0; r < rows; r++) {
        const __m256 both = _mm256_add_ps(acc[r], odd[r]);
        const __m128 quad = _mm_add_ps(_mm256_castps256_ps128(both), _mm256_extractf128_ps(both, 1));
        const __m128 pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        sums[r] = _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1))) + tail[r];
    }
}

static AVX2 void avx2_rows(const nbits_weight *w, int rows, const float *const *a, const float *halves, size_t n,
                             float *sums) {
    (void)halves;
    switch (rows) {
    case 1: avx2_rows_n(w, 1, a, n, sums); break;
    case 2: avx2_rows_n(w, 2, a, n, sums); break;
    case 3: avx2_rows_n(w, 3, a, n, sums); break;
    default: avx2_rows_n(w, 4, a, n, sums); break;
    }
}

#endif

void kernels_nbits_rows(size_t m, size_t n0, size_t n1, size_t k, size_t block_size, int bits, const float *a,
                        size_t lda, const uint8_t *b, const float *scales, const float *zero_points,
                        float default_zero_point, float *c, size_t ldc) {
    if (m == 0 || n0 >= n1) return;
    const size_t blocks = block_size ? (k + block_size - 1) / block_size : 0;
    const nbits_weight w = {k, block_size, blocks, block_size * (size_t)bits / 8, bits, b, scales, zero_points,
                            default_zero_point};
    void (*rows_fn)(const nbits_weight *, int, const float *const *, const float *, size_t, float *) = portable_rows;
    int split = 0;
#if defined(__x86_64__) || defined(_M_X64)
    // The vector paths need whole bytes per 16 codes: 4 or 8 bits.
    const kernels_isa isa = kernels_active_isa();
    if (bits == 4 || bits == 8) {
        if (isa >= KERNELS_ISA_AVX512) {
            rows_fn = avx512_rows;
            split = bits == 4 && block_size % 32 == 0 && k >= block_size;
        } else if (isa >= KERNELS_ISA_AVX2) {
            rows_fn = avx2_rows;
        }
    }
#endif
    // A's rows split into even and odd elements (up to the last whole block) for the AVX-512 4-bit path, four rows
    // at a time: [row][even | odd], k / 2 each.
    const size_t half_k = k / 2, whole_k = block_size ? k / block_size * block_size : 0;
    float *halves = NULL;
    if (split) {
        halves = malloc(4 * 2 * half_k * sizeof(float));
        if (!halves) split = 0;
    }
    for (size_t r0 = 0; r0 < m; r0 += 4) {
        const int rows = m - r0 < 4 ? (int)(m - r0) : 4;
        const float *row_a[4];
        for (int r = 0; r < rows; r++) row_a[r] = a + (r0 + (size_t)r) * lda;
        if (split) {
            for (int r = 0; r < rows; r++) {
                float *even = halves + (size_t)r * 2 * half_k, *odd = even + half_k;
                for (size_t p = 0; p < whole_k / 2; p++) even[p] = row_a[r][2 * p], odd[p] = row_a[r][2 * p + 1];
            }
        }
        for (size_t n = n0; n < n1; n++) {
            float sums[4];
            rows_fn(&w, rows, row_a, split ? halves : NULL, n, sums);
            for (int r = 0; r < rows; r++) c[(r0 + (size_t)r) * ldc + n] = sums[r];
        }
    }
    free(halves);
}
