import Dispatch
import Kernels
import ONNXGraph

/// `onnx-dpo bench gemm`: GFLOP/s of `BLAS.sgemm` (our kernels, split across `Parallel`'s threads as in a training
/// step) on the products of a DPO step of the two benchmark models, per ISA the machine runs.
///
/// Letters: M rows of activations (2 pairs × 2 sequences × 128 tokens = 512; the LM head sees only the 256
/// completion positions), K the product's inner dimension, N its output width. Forward products are `x · W` with W
/// stored `[K, N]` (MatMul's layout); the backward input gradients are `dY · Wᵀ` on the same stored W.
public enum GEMMBenchmark {
    /// The name of the best ISA this machine runs.
    public static var bestISA: String { String(cString: kernels_isa_name(kernels_best_isa())) }

    /// One product to time.
    public struct Shape: Codable, Sendable {
        /// Model and projection, e.g. "smollm q/o x·W".
        public var name: String
        /// Rows of C and op(A).
        public var m: Int
        /// Columns of C and op(B).
        public var n: Int
        /// The inner dimension.
        public var k: Int
        /// A is stored `[k, m]`.
        public var transposeA: Bool
        /// B is stored `[n, k]` (a weight W `[k_forward, n_forward]` read as Wᵀ).
        public var transposeB: Bool
    }

    /// The timing of one shape on one ISA.
    public struct Measurement: Codable, Sendable {
        /// The ISA forced for this measurement.
        public var isa: String
        /// "plain" for `BLAS.sgemm` on a row-major B (packed per call); "packed" for W packed once (`PackedMatrix`,
        /// `Session.packWeights`): `x · W` reads the panels, `dY · Wᵀ` repacks blocks of the same panels.
        public var bPath: String
        /// The product timed.
        public var shape: Shape
        /// The fastest run.
        public var seconds: Double
        /// 2·m·n·k / seconds / 10⁹.
        public var gflops: Double
    }

    /// Everything one run measured (encoded with snake_case keys).
    public struct Result: Codable, Sendable {
        /// The best ISA this machine runs (what products use unless forced lower).
        public var bestIsa: String
        /// Threads each product was split across.
        public var threads: Int
        /// Every shape asked for, measured or not (`--isa none` lists them).
        public var shapeNames: [String]
        /// Every shape on every ISA asked for, in order.
        public var measurements: [Measurement]
    }

    /// The projections of a Llama-style decoder layer plus its LM head, forward and backward input gradient.
    static func modelShapes(model: String, hidden: Int, kvWidth: Int, ffn: Int, vocab: Int, rows: Int = 512,
                            headRows: Int = 256) -> [Shape] {
        let projections = [("q/o", rows, hidden, hidden), ("k/v", rows, hidden, kvWidth),
                           ("gate/up", rows, hidden, ffn), ("down", rows, ffn, hidden), ("lm head", headRows, hidden, vocab)]
        var shapes: [Shape] = []
        for (name, m, k, n) in projections {
            shapes.append(Shape(name: "\(model) \(name) x·W", m: m, n: n, k: k, transposeA: false, transposeB: false))
        }
        for (name, m, k, n) in projections {
            // dX [M, K] = dY [M, N] · Wᵀ, W stored [K, N].
            shapes.append(Shape(name: "\(model) \(name) dY·Wᵀ", m: m, n: k, k: n, transposeA: false, transposeB: true))
        }
        return shapes
    }

    /// The products of a rank-`rank` LoRA adapter on a `[hidden, hidden]` projection (`x·A·B`, A `[d, r]`, B `[r, d]`):
    /// forward `x·A` and `(x·A)·B`, backward `d(xA) = dY·Bᵀ`, `dB = (xA)ᵀ·dY`, `dA = xᵀ·d(xA)`, `dX += d(xA)·Aᵀ`.
    static func adapterShapes(model: String, hidden: Int, rank: Int = 8, rows: Int = 512) -> [Shape] {
        [Shape(name: "\(model) lora x·A", m: rows, n: rank, k: hidden, transposeA: false, transposeB: false),
         Shape(name: "\(model) lora xA·B", m: rows, n: hidden, k: rank, transposeA: false, transposeB: false),
         Shape(name: "\(model) lora dY·Bᵀ", m: rows, n: rank, k: hidden, transposeA: false, transposeB: true),
         Shape(name: "\(model) lora (xA)ᵀ·dY", m: rank, n: hidden, k: rows, transposeA: true, transposeB: false),
         Shape(name: "\(model) lora xᵀ·d(xA)", m: hidden, n: rank, k: rows, transposeA: true, transposeB: false),
         Shape(name: "\(model) lora d(xA)·Aᵀ", m: rows, n: hidden, k: rank, transposeA: false, transposeB: true)]
    }

    /// SmolLM-135M (d 576, 9 q / 3 kv heads of 64, ffn 1536, vocab 49152), Qwen2.5-0.5B (d 896, 14 q / 2 kv heads of
    /// 64, ffn 4864, vocab 151936), and one attention head's products at 128 tokens.
    public static let defaultShapes: [Shape] =
        modelShapes(model: "smollm", hidden: 576, kvWidth: 192, ffn: 1536, vocab: 49152)
        + modelShapes(model: "qwen", hidden: 896, kvWidth: 128, ffn: 4864, vocab: 151936)
        + [Shape(name: "attention q·kᵀ (one head)", m: 128, n: 128, k: 64, transposeA: false, transposeB: true),
           Shape(name: "attention p·v (one head)", m: 128, n: 64, k: 128, transposeA: false, transposeB: false)]

    /// The LoRA r 8 products of the q projection of both models (`--only lora`; not in the default run, whose shapes
    /// are the ones compared with MKL).
    public static let adapterProductShapes: [Shape] = adapterShapes(model: "smollm", hidden: 576) + adapterShapes(model: "qwen", hidden: 896)

    /// Times every shape on every ISA in `isas` (names as `kernels_isa_name` gives them; unsupported ones are
    /// skipped), each repeated until `minimumSeconds` have passed, reporting the fastest run. With `packed`, the products
    /// are also timed with W packed once (see `Measurement.bPath`). Restores the active ISA afterwards.
    /// `threads` (default: every core, as `BLAS.sgemm` uses) sets how many threads a product is split across.
    public static func run(isas: [String], shapes: [Shape] = defaultShapes, minimumSeconds: Double = 0.3,
                           packed: Bool = true, threads: Int = Parallel.threadCount,
                           progress: ((Measurement) -> Void)? = nil) -> Result {
        let saved = kernels_active_isa()
        defer { _ = kernels_force_isa(saved) }
        var measurements: [Measurement] = []
        for name in isas {
            let parsed = kernels_isa_from_name(name)
            guard parsed >= 0, kernels_isa_supported(kernels_isa(rawValue: UInt32(parsed))) != 0 else { continue }
            let isa = kernels_isa(rawValue: UInt32(parsed))
            _ = kernels_force_isa(isa)
            for shape in shapes {
                var paths = ["plain"]
                if packed && !shape.transposeA { paths.append("packed") }
                for path in paths {
                    let seconds = time(shape, packed: path == "packed", threads: threads, minimumSeconds: minimumSeconds)
                    let flops = 2.0 * Double(shape.m) * Double(shape.n) * Double(shape.k)
                    let measurement = Measurement(isa: name, bPath: path, shape: shape, seconds: seconds,
                                                  gflops: flops / seconds / 1e9)
                    progress?(measurement)
                    measurements.append(measurement)
                }
            }
        }
        return Result(bestIsa: String(cString: kernels_isa_name(kernels_best_isa())), threads: threads,
                      shapeNames: shapes.map(\.name), measurements: measurements)
    }

    /// Seconds of one product: the fastest of the timed runs (after one untimed run).
    static func time(_ shape: Shape, packed: Bool, threads: Int, minimumSeconds: Double) -> Double {
        let (m, n, k) = (shape.m, shape.n, shape.k)
        var generator = SeededGenerator(seed: 7)
        let a = (0..<(m * k)).map { _ in Float.random(in: -1..<1, using: &generator) }
        let b = (0..<(k * n)).map { _ in Float.random(in: -1..<1, using: &generator) }
        var c = [Float](repeating: 0, count: m * n)
        let (lda, ldb) = (shape.transposeA ? m : k, shape.transposeB ? k : n)
        return a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    let (a, b, c) = (a.baseAddress!, b.baseAddress!, c.baseAddress!)
                    // An input gradient dY·Wᵀ reads the panels W was packed into for x·W (as a training session's
                    // backward pass does), repacked block by block; a forward product reads its panels directly.
                    let forwardPanels = packed && shape.transposeB && !shape.transposeA
                        ? PackedMatrix(transposed: false, rows: n, columns: k, floats: b, ld: ldb) : nil
                    let packedB = packed && forwardPanels == nil
                        ? PackedMatrix(transposed: shape.transposeB, rows: k, columns: n, floats: b, ld: ldb) : nil
                    // What BLAS.sgemm does, with the thread count as a parameter.
                    let product = {
                        Parallel.withParallelFor(threads: threads) { loop, loopContext in
                            if let forwardPanels {
                                kernels_sgemm_packed_transposed_parallel(m, 1, a, lda, forwardPanels.pointer, 0, c, n,
                                                                         threads, loop, loopContext)
                            } else if let packedB {
                                kernels_sgemm_packed_parallel(shape.transposeA ? 1 : 0, m, 1, a, lda, packedB.pointer,
                                                              0, c, n, threads, loop, loopContext)
                            } else {
                                kernels_sgemm_parallel(shape.transposeA ? 1 : 0, shape.transposeB ? 1 : 0, m, n, k, 1,
                                                       a, lda, b, ldb, 0, c, n, threads, loop, loopContext)
                            }
                        }
                    }
                    product()
                    var times: [Double] = []
                    var total = 0.0
                    while total < minimumSeconds || times.count < 3 {
                        let start = DispatchTime.now().uptimeNanoseconds
                        product()
                        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                        times.append(seconds)
                        total += seconds
                    }
                    // The fastest run: on a machine shared with other work the slower ones measure the others.
                    return times.min()!
                }
            }
        }
    }
}
