import Foundation
import Kernels
import TestSupport
import XCTest

// The elementwise kernels (Kernels.h, "Elementwise") on every ISA this machine runs, against references in Double over
// odd lengths and special values. Where the kernel rounds an intermediate that the result is sensitive to (x − max
// before a softmax's exp, alpha·x before a sigmoid), the reference rounds it the same way in Float and computes the rest
// in Double, so the tolerance only has to cover the kernel's own rounding. u = 2⁻²⁴ (half an ulp at 1). The bounds:
//   exp: within 1 ulp of the correctly rounded e^x (Cephes' expf; checked as a distance in representable floats);
//     below ln(FLT_MIN) exactly +0, above ln(FLT_MAX) +inf, NaN the same NaN, by contract.
//   sums of k terms kept in 32 partial sums added pairwise: each partial adds ceil(k/32) terms, then 5 pairwise levels,
//     so |error| <= (ceil(k/32) + 5)·u·Σ|terms| (the standard γ_n bound of a recursive sum).
//   softmax: each term within 1.5 ulp = 3u of e^d, the sum's bound above, the reciprocal and the product u each:
//     relative (3 + 3 + ceil(n/32) + 5 + 2)·u.
//   sigmoid: e^-|x| 3u, 1 + e, the division and the product u each: relative 6u, plus FLT_MIN absolute where e^-|x|
//     flushes to 0 by contract.
//   Softmax's gradient and QuickGelu's: derived at the check (error propagation through the formula).
final class VectorMathKernelTests: ISATestCase {
    static let lengths = [1, 7, 15, 16, 17, 63, 1031]
    static let u = 0x1p-24
    static let upper: Float = 88.72283935546875    // ln(FLT_MAX) rounded up to a float: above it, +inf
    static let lower: Float = -87.33654022216797   // ln(FLT_MIN): below it, 0
    static let specials: [Float] = [
        .infinity, -.infinity, .nan, 88.7, -88.7, upper, upper.nextUp, 89, lower, lower.nextDown, -87.4, -1e30, 1e30,
        0x1p-133, -0x1p-133, .leastNonzeroMagnitude, .leastNormalMagnitude, 0, -0.0, 1, -1, 20, -20,
    ]

    func testExpIsWithinOneUlpWithItsSpecialValuesOnEveryISA() {
        // And 2¹⁹ values evenly spaced over the range that is neither flushed nor infinite.
        let sweep = (0..<(1 << 19)).map { Self.lower + (Self.upper - Self.lower) * Float($0) / Float(1 << 19) }
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            for x in Self.inputSets(scale: 100, seed: 1) + [sweep] {
                let y = Self.exp(x)
                XCTAssertNil(Self.expProblem(x, y), "\(Self.name(isa)) n=\(x.count): \(Self.expProblem(x, y) ?? "")")
            }
        }
    }

    func testMaximumSumAndShiftedExponentialsOnEveryISA() {
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            XCTAssertEqual(kernels_max(0, nil), -.infinity)
            XCTAssertEqual(kernels_sum(0, nil), 0)
            XCTAssertEqual(kernels_max(3, [Float.nan, .nan, .nan]), -.infinity, "NaN is ignored")
            for x in Self.inputSets(scale: 30, seed: 2) + Self.inputSets(scale: 30, seed: 3, specials: false) {
                let label = "\(Self.name(isa)) n=\(x.count)"
                XCTAssertEqual(kernels_max(x.count, x).bitPattern, Self.referenceMaximum(x).bitPattern, label)
                XCTAssertNil(Self.sumProblem(kernels_sum(x.count, x), terms: x.map(Double.init)), label)
                // Shifted by the maximum (a log-sum-exp) and by a value above it (no term reaches 1).
                for shift in [Self.referenceMaximum(x), Self.referenceMaximum(x) + 5] {
                    var terms = [Float](repeating: -1, count: x.count)
                    let stored = kernels_exp_shifted_sum(x.count, x, shift, &terms)
                    let unstored = kernels_exp_shifted_sum(x.count, x, shift, nil)
                    let differences = x.map { $0 - shift }
                    XCTAssertEqual(stored.bitPattern, unstored.bitPattern, "\(label): storing the terms changes nothing")
                    XCTAssertNil(Self.expProblem(differences, terms), "\(label) shift \(shift): \(Self.expProblem(differences, terms) ?? "")")
                    let expected = differences.map(Self.expReference)
                    XCTAssertNil(Self.sumProblem(stored, terms: expected, termError: 3), "\(label) shift \(shift)")
                    let scale: Float = -0.37
                    var scaled = [Float](repeating: 0, count: x.count)
                    kernels_exp_shifted_scaled(x.count, x, shift, scale, &scaled)
                    // 1.5 ulp (3u) for the exponential, u for the product.
                    let problem = Self.problem(scaled, expected.map { Double(scale) * $0 }) { _, e in 4 * Self.u * abs(e) }
                    XCTAssertNil(problem, "\(label) scaled: \(problem ?? "")")
                }
            }
        }
    }

    func testSoftmaxRowsWithInfinitiesAndFullyMaskedRowsOnEveryISA() {
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            for n in Self.lengths {
                let x = Self.softmaxRows(n: n, seed: UInt64(n))
                let rows = x.count / n
                var y = [Float](repeating: 0, count: x.count)
                kernels_softmax_rows(rows, n, x, &y)
                let problem = Self.softmaxProblem(x, y, n: n)
                XCTAssertNil(problem, "\(Self.name(isa)) n=\(n): \(problem ?? "")")
                // The fully masked row (row 1) is NaN throughout; -inf entries of row 2 are exactly 0.
                XCTAssert(y[n..<(2 * n)].allSatisfy(\.isNaN), "\(Self.name(isa)) n=\(n): an all -inf row is NaN")
                for k in 0..<n where x[2 * n + k] == -.infinity { XCTAssertEqual(y[2 * n + k].bitPattern, 0) }
                // In place (y == x) gives the same.
                var inPlace = x
                inPlace.withUnsafeMutableBufferPointer { kernels_softmax_rows(rows, n, $0.baseAddress, $0.baseAddress) }
                XCTAssertEqual(inPlace.map(\.bitPattern), y.map(\.bitPattern), "\(Self.name(isa)) n=\(n) in place")
            }
        }
    }

    func testSoftmaxGradientRowsOnEveryISA() {
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            for n in Self.lengths {
                var generator = Generator(seed: 40 + UInt64(n))
                let x = (0..<(3 * n)).map { _ in generator.float() * 8 }
                var y = [Float](repeating: 0, count: 3 * n)
                kernels_softmax_rows(3, n, x, &y)
                var dy = (0..<(3 * n)).map { _ in generator.float() }
                // Row 1: a fully masked row (NaN in the forward pass) that no loss reads: dY is zero, -0 included.
                for k in 0..<n { y[n + k] = .nan; dy[n + k] = k % 2 == 0 ? 0 : -0.0 }
                var dx = [Float](repeating: .nan, count: 3 * n)
                kernels_softmax_backward_rows(3, n, y, dy, &dx)
                let problem = Self.softmaxGradientProblem(y, dy, dx, n: n)
                XCTAssertNil(problem, "\(Self.name(isa)) n=\(n): \(problem ?? "")")
                XCTAssert(dx[n..<(2 * n)].allSatisfy { $0 == 0 }, "\(Self.name(isa)) n=\(n): a zero-gradient row gets 0")
            }
        }
    }

    func testSigmoidAndQuickGeluWithTheirGradientOnEveryISA() {
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            for x in Self.inputSets(scale: 30, seed: 5) {
                let label = "\(Self.name(isa)) n=\(x.count)"
                var y = [Float](repeating: 0, count: x.count)
                kernels_sigmoid(x.count, x, &y)
                XCTAssertNil(Self.sigmoidProblem(x, y), "\(label) sigmoid: \(Self.sigmoidProblem(x, y) ?? "")")
                var generator = Generator(seed: 50 + UInt64(x.count))
                let dy = x.map { _ in generator.float() * 2 }
                for alpha: Float in [1, 1.702, 0.5] {
                    kernels_quick_gelu(x.count, alpha, x, &y)
                    let forward = Self.quickGeluProblem(x, y, alpha: alpha)
                    XCTAssertNil(forward, "\(label) quick_gelu alpha \(alpha): \(forward ?? "")")
                    var dx = [Float](repeating: 0, count: x.count)
                    kernels_quick_gelu_backward(x.count, alpha, dy, x, &dx)
                    let backward = Self.quickGeluGradientProblem(x, dy, dx, alpha: alpha)
                    XCTAssertNil(backward, "\(label) quick_gelu_backward alpha \(alpha): \(backward ?? "")")
                }
            }
        }
    }

    /// Every function gives the same bits on every ISA (no FMA contraction, sums in one fixed order): a result never
    /// depends on the machine or on `ONNX_DPO_ISA`.
    func testEveryISAGivesTheSameBits() {
        var results: [[UInt32]] = []
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var bits: [UInt32] = []
            for x in Self.inputSets(scale: 50, seed: 6) {
                var y = [Float](repeating: 0, count: x.count), dx = y
                kernels_exp(x.count, x, &y); bits += y.map(\.bitPattern)
                kernels_sigmoid(x.count, x, &y); bits += y.map(\.bitPattern)
                kernels_quick_gelu(x.count, 1.702, x, &y); bits += y.map(\.bitPattern)
                kernels_quick_gelu_backward(x.count, 1.702, y, x, &dx); bits += dx.map(\.bitPattern)
                kernels_exp_shifted_scaled(x.count, x, 3, 0.5, &y); bits += y.map(\.bitPattern)
                bits += [kernels_max(x.count, x), kernels_sum(x.count, x), kernels_exp_shifted_sum(x.count, x, 60, nil)]
                    .map(\.bitPattern)
            }
            for n in Self.lengths {
                let x = Self.softmaxRows(n: n, seed: 60 + UInt64(n))
                var y = [Float](repeating: 0, count: x.count), dx = y
                kernels_softmax_rows(x.count / n, n, x, &y); bits += y.map(\.bitPattern)
                let dy = x.map { $0.isFinite ? $0 / 100 : 0.5 }
                kernels_softmax_backward_rows(x.count / n, n, y, dy, &dx); bits += dx.map(\.bitPattern)
            }
            results.append(bits)
        }
        for (index, isa) in isas.enumerated().dropFirst() {
            let differing = zip(results[0], results[index]).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(Self.name(isa)) differs from \(Self.name(isas[0])) in \(differing) values")
        }
    }

    /// The checks above fail on a kernel that is slightly wrong: each broken output below (a correct one with one
    /// value moved just past what the tolerance allows, or a special value mishandled) is reported.
    func testTheChecksCatchABrokenKernel() {
        let x = Self.inputSets(scale: 100, seed: 7).last!
        var y = Self.exp(x)
        XCTAssertNil(Self.expProblem(x, y))
        let finite = x.firstIndex { $0 > -80 && $0 < 80 && $0 != 0 }!
        var broken = y
        broken[finite] = Float(bitPattern: Float(Self.expReference(x[finite])).bitPattern + 2)  // 2 ulp off
        XCTAssertNotNil(Self.expProblem(x, broken), "an exp 2 ulp off")
        broken = y
        broken[x.firstIndex(of: -87.4)!] = .leastNormalMagnitude  // no flush to 0 below ln(FLT_MIN)
        XCTAssertNotNil(Self.expProblem(x, broken), "an exp that does not flush")
        broken = y
        broken[x.firstIndex { $0.isNaN }!] = 0
        XCTAssertNotNil(Self.expProblem(x, broken), "an exp that loses NaN")

        let n = 63
        let rows = Self.softmaxRows(n: n, seed: 8)
        y = [Float](repeating: 0, count: rows.count)
        kernels_softmax_rows(rows.count / n, n, rows, &y)
        XCTAssertNil(Self.softmaxProblem(rows, y, n: n))
        broken = y
        broken[4] *= 1 + Float(30 * Self.u)  // past (3 + 3 + 2 + 5 + 2)·u
        XCTAssertNotNil(Self.softmaxProblem(rows, broken, n: n), "a softmax 30u off in one value")
        broken = y
        for k in n..<(2 * n) { broken[k] = 1 / Float(n) }  // a fully masked row made uniform
        XCTAssertNotNil(Self.softmaxProblem(rows, broken, n: n), "a masked row that is not NaN")

        var generator = Generator(seed: 9)
        let dy = y.map { _ in generator.float() }
        var clean = y
        for k in n..<(2 * n) { clean[k] = 0.01 }  // NaN rows have no defined gradient to check
        var dx = [Float](repeating: 0, count: y.count)
        kernels_softmax_backward_rows(y.count / n, n, clean, dy, &dx)
        XCTAssertNil(Self.softmaxGradientProblem(clean, dy, dx, n: n))
        broken = dx
        broken[5] += 1e-4
        XCTAssertNotNil(Self.softmaxGradientProblem(clean, dy, broken, n: n), "a softmax gradient 1e-4 off")

        let values = Self.inputSets(scale: 30, seed: 10).last!
        var sigmoid = [Float](repeating: 0, count: values.count)
        kernels_sigmoid(values.count, values, &sigmoid)
        XCTAssertNil(Self.sigmoidProblem(values, sigmoid))
        broken = sigmoid
        let middle = values.firstIndex { abs($0) > 0.5 && abs($0) < 5 }!
        broken[middle] *= 1 + Float(12 * Self.u)
        XCTAssertNotNil(Self.sigmoidProblem(values, broken), "a sigmoid 12u off")
        var quick = [Float](repeating: 0, count: values.count), gradient = quick
        kernels_quick_gelu(values.count, 1.702, values, &quick)
        broken = quick
        broken[middle] *= 1 + Float(20 * Self.u)
        XCTAssertNotNil(Self.quickGeluProblem(values, broken, alpha: 1.702), "a quick_gelu 20u off")
        let dyValues = values.map { _ in generator.float() + 2 }
        kernels_quick_gelu_backward(values.count, 1.702, dyValues, values, &gradient)
        XCTAssertNil(Self.quickGeluGradientProblem(values, dyValues, gradient, alpha: 1.702))
        broken = gradient
        broken[middle] += 1e-3
        XCTAssertNotNil(Self.quickGeluGradientProblem(values, dyValues, broken, alpha: 1.702), "a gradient 1e-3 off")
    }

    // MARK: - Inputs

    private static func name(_ isa: kernels_isa) -> String { String(cString: kernels_isa_name(isa)) }

    /// For each length: random values in [-scale, scale), then (with `specials`) the same with the special values laid
    /// over them, as many arrays as it takes for every special value to appear at every length.
    static func inputSets(scale: Float, seed: UInt64, specials: Bool = true) -> [[Float]] {
        var generator = Generator(seed: seed)
        var sets: [[Float]] = []
        for n in lengths {
            let random = (0..<n).map { _ in generator.float() * scale }
            sets.append(random)
            guard specials else { continue }
            for start in stride(from: 0, to: Self.specials.count, by: n) {
                var x = random
                for (offset, value) in Self.specials[start..<min(start + n, Self.specials.count)].enumerated() {
                    // Spread over the row so that specials land in vector bodies and in tails.
                    x[(offset * 7919) % n] = value
                }
                sets.append(x)
            }
        }
        return sets
    }

    /// Three rows of `n`: random logits with a few -inf entries (masked), a fully masked row (all -inf), a row whose
    /// other entries are -inf and -1e30 (two masking conventions); then rows with +inf, with NaN, of equal values and
    /// of widely spread ones.
    static func softmaxRows(n: Int, seed: UInt64) -> [Float] {
        var generator = Generator(seed: seed)
        var rows: [[Float]] = []
        rows.append((0..<n).map { k in k % 5 == 3 ? -.infinity : generator.float() * 10 })
        rows.append([Float](repeating: -.infinity, count: n))
        rows.append((0..<n).map { k in k == n / 2 ? generator.float() : (k % 2 == 0 ? -.infinity : -1e30) })
        rows.append((0..<n).map { k in k == n - 1 ? .infinity : generator.float() })
        rows.append((0..<n).map { k in k == n / 3 ? .nan : generator.float() })
        rows.append([Float](repeating: 2.5, count: n))
        rows.append((0..<n).map { _ in generator.float() * 80 })
        return rows.flatMap { $0 }
    }

    // MARK: - References and checks

    private static func exp(_ x: [Float]) -> [Float] {
        var y = [Float](repeating: 0, count: x.count)
        kernels_exp(x.count, x, &y)
        return y
    }

    /// e^x as the contract gives it: 0 below ln(FLT_MIN), +inf above ln(FLT_MAX), NaN for NaN, else libm in Double.
    static func expReference(_ x: Float) -> Double {
        if x.isNaN { return .nan }
        if x > upper { return .infinity }
        if x < lower { return 0 }
        return Foundation.exp(Double(x))
    }

    /// The largest value, NaN ignored; -inf for none.
    static func referenceMaximum(_ x: [Float]) -> Float {
        var maximum = -Float.infinity
        for value in x where value > maximum { maximum = value }
        return maximum
    }

    /// Where `y` is not e^x within 1 ulp of the correctly rounded value (a distance in representable floats; +inf is
    /// one past FLT_MAX), is not exactly +0 where the contract flushes, or loses a NaN's bits.
    static func expProblem(_ x: [Float], _ y: [Float]) -> String? {
        var failures: [String] = []
        for (index, (input, output)) in zip(x, y).enumerated() {
            if input.isNaN {
                if output.bitPattern != input.bitPattern { failures.append("[\(index)] e^NaN = \(output)") }
                continue
            }
            let expected = Float(expReference(input))
            if expected == 0 {
                if output.bitPattern != 0 { failures.append("[\(index)] e^\(input) = \(output), expected +0") }
                continue
            }
            let distance = output.sign == .plus && !output.isNaN
                ? abs(Int64(output.bitPattern) - Int64(expected.bitPattern)) : Int64.max
            if distance > 1 { failures.append("[\(index)] e^\(input) = \(output), expected \(expected) (\(distance) ulp)") }
        }
        return failures.isEmpty ? nil : "\(failures.count) bad: " + failures.prefix(5).joined(separator: "; ")
    }

    /// A sum against its Double reference, terms each within `termError`·u relative of `terms` (0: exact), with the
    /// 32-partial-sum bound.
    static func sumProblem(_ sum: Float, terms: [Double], termError: Double = 0) -> String? {
        let expected = terms.reduce(0, +)
        if expected.isNaN { return sum.isNaN ? nil : "sum \(sum), expected NaN" }
        if expected.isInfinite { return Double(sum) == expected ? nil : "sum \(sum), expected \(expected)" }
        let magnitude = terms.map(abs).reduce(0, +)
        let tolerance = (termError + Double((terms.count + 31) / 32 + 5)) * u * magnitude
        let difference = abs(Double(sum) - expected)
        return difference <= tolerance ? nil : "sum \(sum), expected \(expected): off by \(difference) > \(tolerance)"
    }

    /// Values against Double references: NaN where the reference is NaN, equal infinities, else within
    /// `tolerance(index, expected)` plus one subnormal ulp (2⁻¹⁴⁹: a result in the subnormal range is a multiple of it,
    /// whatever its relative bound says).
    static func problem(_ actual: [Float], _ expected: [Double], tolerance: (Int, Double) -> Double) -> String? {
        var failures: [String] = []
        var worst = 0.0
        for (index, (a, e)) in zip(actual, expected).enumerated() {
            let ok: Bool
            if e.isNaN {
                ok = a.isNaN
            } else if e.isInfinite {
                ok = Double(a) == e
            } else {
                let difference = abs(Double(a) - e)
                ok = a.isFinite && difference <= tolerance(index, e) + Double(Float.leastNonzeroMagnitude)
                if a.isFinite { worst = max(worst, difference) }
            }
            if !ok { failures.append("[\(index)] \(a), expected \(e)") }
        }
        return failures.isEmpty ? nil
            : "\(failures.count) bad (max difference \(worst)): " + failures.prefix(5).joined(separator: "; ")
    }

    /// Softmax rows against a Double reference on the kernel's own `x − max` (rounded in Float: the exponential
    /// magnifies its rounding by |x − max|).
    static func softmaxProblem(_ x: [Float], _ y: [Float], n: Int) -> String? {
        var expected: [Double] = []
        for row in 0..<(x.count / n) {
            let values = Array(x[(row * n)..<((row + 1) * n)])
            let maximum = referenceMaximum(values)
            let terms = values.map { expReference($0 - maximum) }
            let sum = terms.reduce(0, +)
            expected += terms.map { $0 / sum }
        }
        let relative = Double(3 + 3 + (n + 31) / 32 + 5 + 2) * u
        return problem(y, expected) { _, e in relative * abs(e) }
    }

    /// dX = Y·(dY − Σ dY·Y) against Double. The kernel's dot product is off by at most (ceil(n/32) + 5 + 1)·u·Σ|dY·Y|
    /// (one more u for each product), the difference adds u·(|dY| + |dot|), and the product with Y u of the result:
    /// per element |Y|·((ceil(n/32) + 6)·u·Σ|dY·Y| + 2u·(|dY| + |dot|)) + u·|dX|. All-zero dY rows must give 0.
    static func softmaxGradientProblem(_ y: [Float], _ dy: [Float], _ dx: [Float], n: Int) -> String? {
        var expected: [Double] = [], tolerances: [Double] = []
        for row in 0..<(y.count / n) {
            let range = (row * n)..<((row + 1) * n)
            if dy[range].allSatisfy({ $0 == 0 }) {
                expected += [Double](repeating: 0, count: n)
                tolerances += [Double](repeating: 0, count: n)
                continue
            }
            let dot = range.map { Double(dy[$0]) * Double(y[$0]) }.reduce(0, +)
            let magnitude = range.map { abs(Double(dy[$0]) * Double(y[$0])) }.reduce(0, +)
            for k in range {
                let value = Double(y[k]) * (Double(dy[k]) - dot)
                expected.append(value)
                tolerances.append(abs(Double(y[k])) * (Double((n + 31) / 32 + 6) * u * magnitude
                                                       + 2 * u * (abs(Double(dy[k])) + abs(dot))) + u * abs(value))
            }
        }
        return problem(dx, expected) { index, _ in tolerances[index] }
    }

    /// sigmoid(z) in Double on the kernel's contract: e^-|z| flushes to 0 below ln(FLT_MIN).
    static func sigmoidReference(_ z: Float) -> Double {
        if z.isNaN { return .nan }
        let e = expReference(z > 0 ? -z : z)
        return z < 0 ? e / (1 + e) : 1 / (1 + e)
    }

    /// Sigmoid within 6u relative (see the file's comment) and FLT_MIN absolute.
    static func sigmoidProblem(_ x: [Float], _ y: [Float]) -> String? {
        problem(y, x.map(sigmoidReference)) { _, e in 6 * u * abs(e) + Double(Float.leastNormalMagnitude) }
    }

    /// x·sigmoid(z), z = alpha·x rounded in Float as the kernel rounds it: the sigmoid's 6u and the product's u, and
    /// |x|·FLT_MIN absolute for the flushed exponential.
    static func quickGeluProblem(_ x: [Float], _ y: [Float], alpha: Float) -> String? {
        let expected = x.map { Double($0) * sigmoidReference(alpha * $0) }
        return problem(y, expected) { index, e in
            7 * u * abs(e) + abs(Double(x[index])) * Double(Float.leastNormalMagnitude)
        }
    }

    /// dY·(s + z·s·(1 − s)) with z = alpha·x rounded in Float and s = sigmoid(z) in Double. The kernel's s is within 6u
    /// relative; it reaches z·s·(1 − s) through both factors (|z|·s·((1 − s)·9u + 6u·s) <= 9u·|z|·s with the
    /// products' roundings) and the sum and the product with dY add u of the result each: |dY|·s·(6 + 9|z|)·u +
    /// 2u·|dX|, taken with margin as |dY|·s·(8 + 12|z|)·u + 2u·|dX|, plus |dY|·(1 + |z|)·FLT_MIN for the flushed
    /// exponential.
    static func quickGeluGradientProblem(_ x: [Float], _ dy: [Float], _ dx: [Float], alpha: Float) -> String? {
        var expected: [Double] = [], tolerances: [Double] = []
        for (value, gradient) in zip(x, dy) {
            let z = alpha * value
            let s = sigmoidReference(z)
            let result = Double(gradient) * (s + Double(z) * s * (1 - s))
            expected.append(result)
            let scale = abs(Double(gradient))
            tolerances.append(scale * s * (8 + 12 * abs(Double(z))) * u + 2 * u * abs(result)
                              + scale * (1 + abs(Double(z))) * Double(Float.leastNormalMagnitude))
        }
        return problem(dx, expected) { index, _ in tolerances[index] }
    }
}
