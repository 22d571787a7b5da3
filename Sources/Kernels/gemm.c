// The GEMM driver (BLIS's five loops around the micro-kernel) and the packing routines. Plain C: everything that
// depends on the ISA is in the micro-kernel files, reached through the dispatch table.
//
// Loops, outermost first (BLIS naming):
//   jc: blocks of NC columns of C/op(B)       - op(B)'s block [KC, NC] is packed (or already is) and reused by
//   pc: blocks of KC of the inner dimension      every row block below; it lives in L2/L3
//   ic: blocks of MC rows of C/op(A)           - op(A)'s block [MC, KC] is packed into L2
//   jr: one B micro-panel [KC, nr]             - stays in L1 while
//   ir: one A micro-panel [KC, mr]             - streams from L2 through the micro-kernel
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// KC * nr * 4 bytes of B micro-panel (32 KiB for the 32-wide AVX-512 panel) must stay in L1 with room for A.
#define KERNELS_KC 256
// Every block of the inner dimension reads and writes C once more. When C is too large to stay in L2 (an LM head's
// [512, 49152] logits, 100 MB), those passes go to memory, so the inner dimension is cut into blocks of up to this
// many instead: the B micro-panel then streams from L2, which the micro-kernel's two loads per 28 FMAs allow
// (`bench gemm`, SmolLM LM head x·W 256 x 49152 x 576, two alternations: 175-201 -> 210-253 GFLOP/s; noisy, a
// third of the LM head shapes alone went the other way).
#define KERNELS_KC_LARGE_C 1024
// C larger than this many bytes takes KERNELS_KC_LARGE_C.
#define KERNELS_LARGE_C_BYTES ((size_t)2 << 20)
// MC * KC * 4 bytes of packed A (344 KiB at 336 rows) fits a 1-2 MiB L2 next to the B micro-panels.
#define KERNELS_MC 336
// NC columns of packed B: KC * NC * 4 = 2 MiB, an L2/L3 share per core.
#define KERNELS_NC 2048

// Cache-line aligned scratch for the packed blocks, one pair per thread, kept across calls (a fresh multi-MiB
// malloc per product would be an mmap and page faults every time) and freed when the thread exits.
typedef struct {
    float *a;
    size_t a_capacity;
    float *b;
    size_t b_capacity;
} scratch_t;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *value) {
    scratch_t *scratch = value;
    if (!scratch) return;
    free(scratch->a);
    free(scratch->b);
    free(scratch);
}

static void scratch_make_key(void) { pthread_key_create(&scratch_key, scratch_free); }

static float *aligned_floats(size_t count) {
    void *pointer = NULL;
    size_t bytes = (count * sizeof(float) + 63) & ~(size_t)63;
    if (posix_memalign(&pointer, 64, bytes ? bytes : 64) != 0) return NULL;
    return pointer;
}

static scratch_t *scratch_get(size_t a_count, size_t b_count) {
    pthread_once(&scratch_once, scratch_make_key);
    scratch_t *scratch = pthread_getspecific(scratch_key);
    if (!scratch) {
        scratch = calloc(1, sizeof *scratch);
        if (!scratch) return NULL;
        pthread_setspecific(scratch_key, scratch);
    }
    if (scratch->a_capacity < a_count) {
        free(scratch->a);
        scratch->a = aligned_floats(a_count);
        scratch->a_capacity = scratch->a ? a_count : 0;
    }
    if (scratch->b_capacity < b_count) {
        free(scratch->b);
        scratch->b = aligned_floats(b_count);
        scratch->b_capacity = scratch->b ? b_count : 0;
    }
    if ((a_count && !scratch->a) || (b_count && !scratch->b)) return NULL;
    return scratch;
}

// Packs op(A)[row0 ..< row0+rows, p0 ..< p0+kc] into micro-panels of mr rows: panel i holds
// out[i * kc * mr + p * mr + r] = op(A)[row0 + i*mr + r][p0 + p], rows past the end zero.
static void pack_a(int transpose, const float *a, size_t lda, size_t row0, size_t rows, size_t p0, size_t kc,
                   int mr, float *out) {
    for (size_t i = 0; i < rows; i += (size_t)mr) {
        size_t panel_rows = rows - i < (size_t)mr ? rows - i : (size_t)mr;
        float *panel = out + (i / (size_t)mr) * kc * (size_t)mr;
        if (!transpose) {
            // op(A) = A: row r is contiguous in A; write it down a column of the panel.
            for (size_t r = 0; r < panel_rows; r++) {
                const float *source = a + (row0 + i + r) * lda + p0;
                for (size_t p = 0; p < kc; p++) panel[p * (size_t)mr + r] = source[p];
            }
        } else {
            // op(A) = Aᵀ: the panel's rows at one p are contiguous in A.
            for (size_t p = 0; p < kc; p++) {
                memcpy(panel + p * (size_t)mr, a + (p0 + p) * lda + row0 + i, panel_rows * sizeof(float));
            }
        }
        if (panel_rows < (size_t)mr) {
            for (size_t p = 0; p < kc; p++) {
                for (size_t r = panel_rows; r < (size_t)mr; r++) panel[p * (size_t)mr + r] = 0;
            }
        }
    }
}

// Packs op(B)[p0 ..< p0+kc, col0 ..< col0+cols] into micro-panels of nr columns, each `panel_stride` elements
// apart: out[j/nr * panel_stride + p * nr + j%nr] = op(B)[p0 + p][col0 + j], columns past the end zero. Elements
// are copied as they are (`size` bytes each), so half-precision panels keep their bits.
static void pack_b(int transpose, const void *b, size_t ldb, size_t size, size_t p0, size_t kc, size_t col0,
                   size_t cols, int nr, void *out, size_t panel_stride) {
    const char *source = b;
    char *destination = out;
    for (size_t j = 0; j < cols; j += (size_t)nr) {
        size_t panel_cols = cols - j < (size_t)nr ? cols - j : (size_t)nr;
        char *panel = destination + (j / (size_t)nr) * panel_stride * size;
        if (!transpose) {
            // op(B) = B: a panel row is a contiguous run of B's row.
            for (size_t p = 0; p < kc; p++) {
                char *row = panel + p * (size_t)nr * size;
                memcpy(row, source + ((p0 + p) * ldb + col0 + j) * size, panel_cols * size);
                if (panel_cols < (size_t)nr) memset(row + panel_cols * size, 0, ((size_t)nr - panel_cols) * size);
            }
        } else {
            // op(B) = Bᵀ: column jj of the panel is row col0+j+jj of B, contiguous over p. Done in blocks of 16
            // steps of p so the panel rows being written (16 x nr elements) stay in L1: a whole column at a time
            // strides over k * nr elements (72 KiB for k = 576) and misses on every store.
            if (panel_cols < (size_t)nr) memset(panel, 0, kc * (size_t)nr * size);
            for (size_t p_block = 0; p_block < kc; p_block += 16) {
                const size_t steps = kc - p_block < 16 ? kc - p_block : 16;
                for (size_t jj = 0; jj < panel_cols; jj++) {
                    const char *row = source + ((col0 + j + jj) * ldb + p0 + p_block) * size;
                    if (size == 4) {
                        float *column = (float *)panel + p_block * (size_t)nr + jj;
                        for (size_t p = 0; p < steps; p++) column[p * (size_t)nr] = ((const float *)row)[p];
                    } else {
                        uint16_t *column = (uint16_t *)panel + p_block * (size_t)nr + jj;
                        for (size_t p = 0; p < steps; p++) column[p * (size_t)nr] = ((const uint16_t *)row)[p];
                    }
                }
            }
        }
    }
}

struct kernels_packed_b {
    kernels_type type;
    kernels_isa isa;     // the micro-kernels the panel width was chosen for
    int nr;
    size_t k, n;
    size_t panel_stride; // elements per packed panel: k * nr
    void *data;          // ceil(n / nr) panels, [k][nr] each
};

// Packs op(B)[p0 ..< p0+kc, col0 ..< col0+cols] like pack_b, where op(B) is the transpose of what `from` holds
// packed: op(B)[p][j] = from[j][p] (a weight packed for x·W serving dY·Wᵀ). An output panel's nr columns over one
// of `from`'s panels are an [nr, nr] block, contiguous there, transposed here one output row at a time. The element
// type (and size) stays `from`'s.
static void pack_b_from_panels(const kernels_packed_b *from, size_t p0, size_t kc, size_t col0, size_t cols, int nr,
                               void *out, size_t panel_stride) {
    const size_t size = kernels_type_size(from->type), from_nr = (size_t)from->nr;
    const char *source = from->data;
    char *destination = out;
    for (size_t j = 0; j < cols; j += (size_t)nr) {
        size_t panel_cols = cols - j < (size_t)nr ? cols - j : (size_t)nr;
        char *panel = destination + (j / (size_t)nr) * panel_stride * size;
        if (panel_cols < (size_t)nr) memset(panel, 0, kc * (size_t)nr * size);
        for (size_t p = 0; p < kc;) {
            const size_t column = p0 + p, within = column % from_nr;
            const size_t run = from_nr - within < kc - p ? from_nr - within : kc - p;
            const char *block = source + ((column / from_nr) * from->panel_stride + within) * size;
            const char *rows = block + (col0 + j) * from_nr * size;  // row jj of the block is rows + jj * from_nr
            // Output rows are written whole (contiguous stores); the reads stride through the block, which is in L1.
            for (size_t q = 0; q < run; q++) {
                if (size == 4) {
                    const float *from_column = (const float *)rows + q;
                    float *to_row = (float *)panel + (p + q) * (size_t)nr;
                    for (size_t jj = 0; jj < panel_cols; jj++) to_row[jj] = from_column[jj * from_nr];
                } else {
                    const uint16_t *from_column = (const uint16_t *)rows + q;
                    uint16_t *to_row = (uint16_t *)panel + (p + q) * (size_t)nr;
                    for (size_t jj = 0; jj < panel_cols; jj++) to_row[jj] = from_column[jj * from_nr];
                }
            }
            p += run;
        }
    }
}

// C = beta * C over [m, n], with beta == 0 writing zeros (NaN in C ignored): the product when k == 0.
static void scale_c(size_t m, size_t n, float beta, float *c, ptrdiff_t rs_c, ptrdiff_t cs_c) {
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
            float *out = c + (ptrdiff_t)i * rs_c + (ptrdiff_t)j * cs_c;
            *out = beta == 0 ? 0 : beta * *out;
        }
    }
}

// Splits `total` into the fewest blocks of at most `limit`, of near-equal size rounded up to `multiple`: K = 576
// becomes 3 x 192 rather than 256 + 256 + 64, whose short last block would run the micro-kernel's loop briefly.
static size_t block_size(size_t total, size_t limit, size_t multiple) {
    size_t blocks = (total + limit - 1) / limit;
    size_t size = (total + blocks - 1) / blocks;
    return (size + multiple - 1) / multiple * multiple;
}

// Where op(B) comes from: a packed operand; or, packed block by block, a plain row-major matrix or the transpose of
// a packed operand.
typedef struct {
    const kernels_packed_b *packed;
    size_t column0;      // first column of op(B) in `packed` (a multiple of its nr) or `transposed`
    int transpose;
    const float *b;
    size_t ldb;
    const kernels_packed_b *transposed;  // op(B) is this operand's op transposed (see pack_b_from_panels)
} b_source;

static void gemm(const kernels_table *table, int transpose_a, size_t m, size_t n, size_t k, float alpha,
                 const float *a, size_t lda, b_source source, float beta, float *c, ptrdiff_t rs_c, ptrdiff_t cs_c) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        scale_c(m, n, beta, c, rs_c, cs_c);
        return;
    }
    const int mr = table->mr, nr = table->nr;
    const size_t kc_max = block_size(k, m * n * sizeof(float) > KERNELS_LARGE_C_BYTES ? KERNELS_KC_LARGE_C : KERNELS_KC, 1);
    const size_t mc_max = block_size(m, KERNELS_MC, (size_t)mr);
    const size_t nc_max = source.packed ? n : (n < KERNELS_NC ? (n + nr - 1) / nr * nr : KERNELS_NC);
    scratch_t *scratch = scratch_get(mc_max * kc_max, source.packed ? 0 : kc_max * nc_max);
    if (!scratch) abort();  // out of memory for a few MiB of scratch: nothing sensible to return
    const kernels_type type = source.packed ? source.packed->type
                            : source.transposed ? source.transposed->type : KERNELS_TYPE_F32;
    const size_t size = kernels_type_size(type);
    const kernels_tile_fn tile = table->tile[type];
    const kernels_direct_tile_fn direct_tile = transpose_a ? NULL : table->direct_tile[type];

    for (size_t jc = 0; jc < n; jc += nc_max) {
        const size_t nc = n - jc < nc_max ? n - jc : nc_max;
        for (size_t pc = 0; pc < k; pc += kc_max) {
            const size_t kc = k - pc < kc_max ? k - pc : kc_max;
            const char *b_block;
            size_t panel_stride;
            if (source.packed) {
                panel_stride = source.packed->panel_stride;
                b_block = (const char *)source.packed->data
                    + (((source.column0 + jc) / (size_t)nr) * panel_stride + pc * (size_t)nr) * size;
            } else {
                panel_stride = kc * (size_t)nr;
                if (source.transposed) {
                    pack_b_from_panels(source.transposed, pc, kc, source.column0 + jc, nc, nr, scratch->b, panel_stride);
                } else {
                    pack_b(source.transpose, source.b, source.ldb, 4, pc, kc, jc, nc, nr, scratch->b, panel_stride);
                }
                b_block = (const char *)scratch->b;
            }
            // The first block of the inner dimension applies the caller's beta; later ones accumulate.
            const float beta_block = pc == 0 ? beta : 1.0f;
            for (size_t ic = 0; ic < m; ic += mc_max) {
                const size_t mc = m - ic < mc_max ? m - ic : mc_max;
                if (!direct_tile) pack_a(transpose_a, a, lda, ic, mc, pc, kc, mr, scratch->a);
                for (size_t jr = 0; jr < nc; jr += (size_t)nr) {
                    const int cols = (int)(nc - jr < (size_t)nr ? nc - jr : (size_t)nr);
                    const char *b_panel = b_block + (jr / (size_t)nr) * panel_stride * size;
                    for (size_t ir = 0; ir < mc; ir += (size_t)mr) {
                        const int rows = (int)(mc - ir < (size_t)mr ? mc - ir : (size_t)mr);
                        float *c_tile = c + (ptrdiff_t)(ic + ir) * rs_c + (ptrdiff_t)(jc + jr) * cs_c;
                        if (direct_tile) {
                            direct_tile(kc, a + (ic + ir) * lda + pc, lda, b_panel, alpha, beta_block, c_tile, rs_c,
                                        cs_c, rows, cols);
                        } else {
                            tile(kc, scratch->a + (ir / (size_t)mr) * kc * (size_t)mr, b_panel, alpha, beta_block,
                                 c_tile, rs_c, cs_c, rows, cols);
                        }
                    }
                }
            }
        }
    }
}

void kernels_portable_gemv(int transpose_a, int transpose_b, size_t m, size_t j0, size_t j1, size_t k, float alpha,
                           const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    kernels_gemv_body(0, transpose_a, transpose_b, m, j0, j1, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Whether an [m, n, k] product takes the few-row path.
static int few_rows(size_t m, size_t n, size_t k) { return m >= 1 && m <= KERNELS_GEMV_MAX_ROWS && n > 0 && k > 0; }

static kernels_gemv_fn gemv_of(const kernels_table *table) { return table->gemv ? table->gemv : kernels_portable_gemv; }

void kernels_sgemm(int transpose_a, int transpose_b, size_t m, size_t n, size_t k, float alpha,
                   const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    const kernels_table *table = kernels_table_for(kernels_active_isa());
    if (few_rows(m, n, k)) {
        gemv_of(table)(transpose_a, transpose_b, m, 0, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    b_source source = {NULL, 0, transpose_b, b, ldb, NULL};
    gemm(table, transpose_a, m, n, k, alpha, a, lda, source, beta, c, (ptrdiff_t)ldc, 1);
}

kernels_packed_b *kernels_pack_b(kernels_type type, int transpose_b, size_t k, size_t n, const void *b, size_t ldb) {
    const kernels_isa isa = kernels_active_isa();
    const kernels_table *table = kernels_table_for(isa);
    kernels_packed_b *packed = calloc(1, sizeof *packed);
    if (!packed) return NULL;
    packed->type = type;
    packed->isa = isa;
    packed->nr = table->nr;
    packed->k = k;
    packed->n = n;
    packed->panel_stride = k * (size_t)table->nr;
    const size_t panels = (n + (size_t)table->nr - 1) / (size_t)table->nr;
    const size_t bytes = panels * packed->panel_stride * kernels_type_size(type);
    if (posix_memalign(&packed->data, 64, bytes ? bytes : 64) != 0) {
        free(packed);
        return NULL;
    }
    if (k && n) pack_b(transpose_b, b, ldb, kernels_type_size(type), 0, k, 0, n, table->nr, packed->data, packed->panel_stride);
    return packed;
}

void kernels_packed_b_free(kernels_packed_b *packed) {
    if (!packed) return;
    free(packed->data);
    free(packed);
}

size_t kernels_packed_b_k(const kernels_packed_b *packed) { return packed->k; }

size_t kernels_packed_b_n(const kernels_packed_b *packed) { return packed->n; }

size_t kernels_packed_b_bytes(const kernels_packed_b *packed) {
    return (packed->n + (size_t)packed->nr - 1) / (size_t)packed->nr * packed->panel_stride * kernels_type_size(packed->type);
}

size_t kernels_packed_b_column_alignment(const kernels_packed_b *packed) { return (size_t)packed->nr; }

void kernels_packed_b_column(const kernels_packed_b *packed, size_t column, float *out) {
    const size_t nr = (size_t)packed->nr;
    const size_t base = (column / nr) * packed->panel_stride + column % nr;
    for (size_t p = 0; p < packed->k; p++) out[p] = kernels_panel_element(packed->data, base + p * nr, packed->type);
}

void kernels_sgemm_packed(int transpose_a, size_t m, size_t n_begin, size_t n_end, float alpha,
                          const float *a, size_t lda, const kernels_packed_b *b, float beta, float *c, size_t ldc) {
    if (n_end > b->n) n_end = b->n;
    if (n_begin >= n_end) return;
    if (n_begin % (size_t)b->nr != 0) abort();  // a caller bug: ranges start on panel boundaries
    // The panels were laid out for the ISA active at packing time; its micro-kernels read them.
    const kernels_table *table = kernels_table_for(b->isa);
    b_source source = {b, n_begin, 0, NULL, 0, NULL};
    gemm(table, transpose_a, m, n_end - n_begin, b->k, alpha, a, lda, source, beta, c + n_begin, (ptrdiff_t)ldc, 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Splitting a product across the caller's threads.
//
// Rows of C are the cheap split when op(B) is packed once and shared: every row block packs only its own rows of
// op(A), and nothing is packed twice. That holds while op(B) fits comfortably in the last-level cache; beyond
// (an LM head: 576 x 49152 floats is 113 MB) each row block would stream all of it from memory, so the split goes
// by columns instead, each column range packing its own part of op(B) (and, duplicated, op(A): a few percent when
// ranges are >= 1024 columns wide).

// Products with fewer multiply-adds run on the calling thread.
#define KERNELS_PARALLEL_MIN_WORK ((size_t)1 << 21)
// op(B) up to this many bytes is packed once and shared by row blocks.
#define KERNELS_SHARED_B_MAX_BYTES ((size_t)16 << 20)
// Pieces per thread of the few-row split: more pieces balance better when a core is shared.
#define KERNELS_PIECES_PER_THREAD 4
// The most pieces a GEMM is cut into (see `guided_pieces`).
#define KERNELS_MAX_PIECES 64

typedef struct {
    const kernels_table *table;
    int transpose_a;
    size_t m, n, k;
    float alpha, beta;
    const float *a;
    size_t lda;
    b_source source;        // packed (shared) or plain
    float *c;
    size_t ldc;
    int by_rows;            // pieces are ranges of rows (else of columns)
    size_t unit;            // rows (mr) or columns (nr) in one step of `starts`
    size_t pieces;
    size_t starts[KERNELS_MAX_PIECES + 1];  // piece i covers units starts[i] ..< starts[i+1]
} split_t;

static void run_piece(void *context, size_t index) {
    const split_t *split = context;
    const size_t first = split->starts[index] * split->unit, end = split->starts[index + 1] * split->unit;
    if (split->by_rows) {
        if (first >= split->m) return;
        size_t rows = (end < split->m ? end : split->m) - first;
        const float *a = split->transpose_a ? split->a + first : split->a + first * split->lda;
        gemm(split->table, split->transpose_a, rows, split->n, split->k, split->alpha, a, split->lda, split->source,
             split->beta, split->c + first * split->ldc, (ptrdiff_t)split->ldc, 1);
    } else {
        if (first >= split->n) return;
        size_t columns = (end < split->n ? end : split->n) - first;
        b_source source = split->source;
        if (source.packed || source.transposed) {
            source.column0 += first;
        } else {
            source.b = source.transpose ? source.b + first * source.ldb : source.b + first;
        }
        gemm(split->table, split->transpose_a, split->m, columns, split->k, split->alpha, split->a, split->lda, source,
             split->beta, split->c + first, (ptrdiff_t)split->ldc, 1);
    }
}

typedef struct {
    kernels_packed_b *packed;
    b_source source;  // plain or transposed
    size_t panels_per_piece;
} pack_split_t;

static void pack_piece(void *context, size_t index) {
    const pack_split_t *split = context;
    kernels_packed_b *packed = split->packed;
    size_t column0 = index * split->panels_per_piece * (size_t)packed->nr;
    if (column0 >= packed->n) return;
    size_t columns = split->panels_per_piece * (size_t)packed->nr;
    if (columns > packed->n - column0) columns = packed->n - column0;
    const size_t size = kernels_type_size(packed->type);
    char *out = (char *)packed->data + (column0 / (size_t)packed->nr) * packed->panel_stride * size;
    if (split->source.transposed) {
        pack_b_from_panels(split->source.transposed, 0, packed->k, column0, columns, packed->nr, out, packed->panel_stride);
    } else {
        pack_b(split->source.transpose, split->source.b, split->source.ldb, 4, 0, packed->k, column0, columns,
               packed->nr, out, packed->panel_stride);
    }
}

// Cuts `units` (micro-tiles of rows, or panels of columns) into pieces handed out in order to whichever thread asks
// next, largest first: each takes 1/(2·threads) of what is left, never fewer than `minimum` units, so that the last
// pieces are small and a thread finishing early waits for at most a small piece of the other's work (equal pieces
// of 1/(4·threads) left one thread idle for ~4% of a forward pass). Returns the number of pieces.
static size_t guided_pieces(size_t units, size_t threads, size_t minimum, size_t *starts) {
    size_t pieces = 0, start = 0;
    while (start < units && pieces < KERNELS_MAX_PIECES) {
        size_t size = (units - start + 2 * threads - 1) / (2 * threads);
        if (size < minimum) size = minimum;
        if (pieces == KERNELS_MAX_PIECES - 1 || size > units - start) size = units - start;
        starts[pieces++] = start;
        start += size;
    }
    starts[pieces] = units;
    return pieces;
}

// Picks the split for an [m, n, k] product (rows when op(B) is shared, else columns) and runs it.
static void run_split(split_t *split, size_t threads, kernels_parallel_for loop, void *loop_context, int shared_b) {
    const size_t mr = (size_t)split->table->mr, nr = (size_t)split->table->nr;
    split->by_rows = shared_b;
    if (shared_b) {
        // Row blocks of whole micro-tiles.
        split->unit = mr;
        split->pieces = guided_pieces((split->m + mr - 1) / mr, threads, 1, split->starts);
    } else {
        // Each piece packs op(A) again when A is packed (transposed A): keep those pieces wide. A read in place
        // costs a piece nothing extra, so narrow pieces are fine (an LM head's input gradient has n = 576).
        size_t minimum = split->transpose_a || !split->table->direct_tile[0] ? (1024 + nr - 1) / nr : 4;
        split->unit = nr;
        split->pieces = guided_pieces((split->n + nr - 1) / nr, threads, minimum, split->starts);
    }
    if (split->pieces <= 1) {
        run_piece(split, 0);
    } else {
        loop(loop_context, split->pieces, split, run_piece);
    }
}

// A few-row product split by columns: memory-bound, so worth splitting from far smaller sizes than the GEMM.
#define KERNELS_GEMV_PARALLEL_MIN_B ((size_t)1 << 17)
// The same for a packed op(B), whose panels stream faster: 2 MiB and up.
#define KERNELS_PACKED_FEW_ROWS_PARALLEL_MIN_B ((size_t)1 << 19)

typedef struct {
    kernels_gemv_fn gemv;
    int transpose_a, transpose_b;
    size_t m, n, k;
    float alpha, beta;
    const float *a;
    size_t lda;
    const float *b;
    size_t ldb;
    float *c;
    size_t ldc;
    size_t columns_per_piece;
} gemv_split_t;

static void run_gemv_piece(void *context, size_t index) {
    const gemv_split_t *split = context;
    const size_t j0 = index * split->columns_per_piece;
    if (j0 >= split->n) return;
    const size_t j1 = split->n - j0 < split->columns_per_piece ? split->n : j0 + split->columns_per_piece;
    split->gemv(split->transpose_a, split->transpose_b, split->m, j0, j1, split->k, split->alpha, split->a, split->lda,
                split->b, split->ldb, split->beta, split->c, split->ldc);
}

// A product whose op(B) is packed block by block (`source` plain or transposed), split across the threads: by rows
// sharing one packing of op(B) when it is small enough, otherwise by columns each packing their own.
static void parallel_gemm(const kernels_table *table, kernels_isa isa, int transpose_a, size_t m, size_t n, size_t k,
                          float alpha, const float *a, size_t lda, b_source source, float beta, float *c, size_t ldc,
                          size_t threads, kernels_parallel_for loop, void *loop_context) {
    if (threads <= 1 || !loop || m * n * k < KERNELS_PARALLEL_MIN_WORK || m == 0 || n == 0 || k == 0) {
        gemm(table, transpose_a, m, n, k, alpha, a, lda, source, beta, c, (ptrdiff_t)ldc, 1);
        return;
    }
    split_t split = {table, transpose_a, m, n, k, alpha, beta, a, lda, source, c, ldc, 0, 0, 0, {0}};
    const kernels_type type = source.transposed ? source.transposed->type : KERNELS_TYPE_F32;
    const size_t nr = (size_t)table->nr;
    const size_t panels = (n + nr - 1) / nr;
    const size_t b_bytes = panels * k * nr * kernels_type_size(type);
    // Row blocks sharing one packing of op(B) need enough rows to go round; otherwise split columns.
    const int shared_b = b_bytes <= KERNELS_SHARED_B_MAX_BYTES && m >= threads * (size_t)table->mr * 2;
    if (!shared_b) {
        run_split(&split, threads, loop, loop_context, 0);
        return;
    }
    // Pack op(B) once into this thread's scratch, in parallel by panel ranges, then share it.
    scratch_t *scratch = scratch_get(0, panels * k * nr);
    if (!scratch) abort();
    kernels_packed_b packed = {type, isa, table->nr, k, n, k * nr, scratch->b};
    pack_split_t pack = {&packed, source, (panels + threads * 2 - 1) / (threads * 2)};
    loop(loop_context, (panels + pack.panels_per_piece - 1) / pack.panels_per_piece, &pack, pack_piece);
    split.source = (b_source){&packed, 0, 0, NULL, 0, NULL};
    run_split(&split, threads, loop, loop_context, 1);
}

void kernels_sgemm_parallel(int transpose_a, int transpose_b, size_t m, size_t n, size_t k, float alpha,
                            const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc,
                            size_t threads, kernels_parallel_for loop, void *loop_context) {
    const kernels_isa isa = kernels_active_isa();
    const kernels_table *table = kernels_table_for(isa);
    if (few_rows(m, n, k) && threads > 1 && loop && n * k >= KERNELS_GEMV_PARALLEL_MIN_B) {
        // Pieces of whole 64-byte lines of C, a few per thread so a shared core balances.
        const size_t pieces_wanted = threads * KERNELS_PIECES_PER_THREAD;
        size_t columns = (n + pieces_wanted - 1) / pieces_wanted;
        columns = (columns + 15) / 16 * 16;
        gemv_split_t split = {gemv_of(table), transpose_a, transpose_b, m, n, k, alpha, beta, a, lda, b, ldb, c, ldc,
                              columns};
        loop(loop_context, (n + columns - 1) / columns, &split, run_gemv_piece);
        return;
    }
    if (few_rows(m, n, k)) {
        gemv_of(table)(transpose_a, transpose_b, m, 0, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    b_source source = {NULL, 0, transpose_b, b, ldb, NULL};
    parallel_gemm(table, isa, transpose_a, m, n, k, alpha, a, lda, source, beta, c, ldc, threads, loop, loop_context);
}

void kernels_sgemm_packed_parallel(int transpose_a, size_t m, float alpha, const float *a, size_t lda,
                                   const kernels_packed_b *b, float beta, float *c, size_t ldc,
                                   size_t threads, kernels_parallel_for loop, void *loop_context) {
    const kernels_table *table = kernels_table_for(b->isa);
    // A few rows (decoding) are bound by reading the panels, which two threads do faster than one once they are
    // large enough to pay for the hand-off; more rows split by work, as the GEMM does.
    const int worth_splitting = few_rows(m, b->n, b->k) ? b->n * b->k >= KERNELS_PACKED_FEW_ROWS_PARALLEL_MIN_B
                                              : m * b->n * b->k >= KERNELS_PARALLEL_MIN_WORK;
    if (threads <= 1 || !loop || !worth_splitting || m == 0 || b->n == 0 || b->k == 0) {
        kernels_sgemm_packed(transpose_a, m, 0, b->n, alpha, a, lda, b, beta, c, ldc);
        return;
    }
    split_t split = {table, transpose_a, m, b->n, b->k, alpha, beta, a, lda, {b, 0, 0, NULL, 0, NULL}, c, ldc, 0, 0, 0, {0}};
    const int shared_b = kernels_packed_b_bytes(b) <= KERNELS_SHARED_B_MAX_BYTES && m >= threads * (size_t)table->mr * 2;
    run_split(&split, threads, loop, loop_context, shared_b);
}

void kernels_sgemm_packed_transposed_parallel(size_t m, float alpha, const float *a, size_t lda,
                                              const kernels_packed_b *b, float beta, float *c, size_t ldc,
                                              size_t threads, kernels_parallel_for loop, void *loop_context) {
    // The panels were laid out for the ISA active at packing time; its micro-kernels read the repacked blocks.
    b_source source = {NULL, 0, 0, NULL, 0, b};
    parallel_gemm(kernels_table_for(b->isa), b->isa, 0, m, b->k, b->n, alpha, a, lda, source, beta, c, ldc, threads,
                  loop, loop_context);
}
